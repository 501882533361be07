"""Is main.py wired right? Every intermediate of a smoke run, recomputed from the images and the saved tensors.

The formulas of the research plan are written out here (not by calling util's functions); the models are
the same tiny random-weight ones the smoke run loads, called through their own libraries (sam2's predictor,
openai-clip's CLIP, ultralytics' predict). A step that got the other image's tokens, the other mask, a
swapped weight, the wrong crops, or another row's seed shows up as a named problem.

check_wiring() is also run on deliberately mis-wired copies of main.py (a source edit each, executed as
its own module), which it must catch: the test of the test.
"""
import contextlib
import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image

import audio_io
import inputs
import main
import mask
import settings
import util
from model import aldm, detect, pipeline

ROOT = Path(__file__).resolve().parent.parent
IMAGES = [ROOT / "images" / "original.jpg", ROOT / "images" / "edited.jpg"]
ARGS = ["--smoke", "--EVAL_SEEDS=2"]


def smoke_cfg():
    cfg = settings.default_config(main)
    settings.parse_args(ARGS, cfg)
    return cfg


def close(a, b, atol=1e-5):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return a.shape == b.shape and bool((a - b).abs().max() <= atol)


# -----------------------------------------------------------------------------
# the plan's formulas, written out

def sam2_mask(image, points, labels):
    """Plan step 1: SAM2 on the image with the point prompt, its single mask (sam2's own predictor)."""
    predictor = mask.tiny_sam2_predictor().predictor
    predictor.set_image(np.array(Image.open(image).convert("RGB")))
    masks, _, _ = predictor.predict(point_coords=np.array(points, dtype=np.float64), point_labels=np.array(labels),
                                    multimask_output=False)
    return torch.from_numpy(masks[0] > 0.5)


def clip_tokens(image):
    """Plan step 2: all 257 tokens of CLIP's last layer, through ln_post and proj, L2-normalised."""
    model, preprocess = util.tiny_clip()
    captured = {}
    hook = model.visual.transformer.register_forward_hook(lambda m, i, out: captured.setdefault("x", out))
    with torch.no_grad():
        cls = model.encode_image(preprocess(Image.open(image).convert("RGB"))[None])
    hook.remove()
    x = captured["x"].permute(1, 0, 2)                       # openai-clip's transformer is sequence-first
    tokens = F.normalize((model.visual.ln_post(x) @ model.visual.proj)[0], dim=-1)
    assert close(tokens[0], F.normalize(cls[0], dim=0))      # token 0 is encode_image's CLS
    return tokens                                            # [257, 768]


def patch_weights(M, threshold):
    """Plan step 3 in CLIP's geometry: the mask through CLIP's resize (short side 224, bicubic, antialiased)
    and centre crop, the fraction of each 14 x 14 patch covered, binarised at the threshold."""
    m = TF.resize(M.float()[None], 224, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    m = TF.center_crop(m, [224, 224]).clamp(0, 1)
    coverage = F.avg_pool2d(m[None], 14, 14).flatten()
    return (coverage >= threshold - 1e-5).float()


def svd_embedding(cls, patches, weights, k, scale):
    """Plan step 5-6: X = [CLS; masked patches], top-k singular values scaled, weighted mean, L2-normalised."""
    keep = weights > 0.5
    X = torch.cat([cls[None], patches[keep]]).double()
    U, S, Vt = torch.linalg.svd(X, full_matrices=False)
    S = S.clone()
    S[:k] *= scale
    Xn = U @ torch.diag(S) @ Vt
    w = torch.cat([torch.ones(1, dtype=torch.float64), weights[keep].double()])
    e = (w[:, None] * Xn).sum(0) / w.sum()
    return e / e.norm()


def crops_embeddings(image, boxes):
    """SSV2A's object slots: each box cropped (PIL, rounded), bicubic-resized to the image size, CLIP-embedded."""
    model, preprocess = util.tiny_clip()
    img = Image.open(image).convert("RGB")
    out = []
    for x0, y0, x1, y1 in boxes.tolist():
        crop = img.crop(tuple(int(round(v)) for v in (x0, y0, x1, y1))).resize(img.size, Image.Resampling.BICUBIC)
        with torch.no_grad():
            out.append(F.normalize(model.encode_image(preprocess(crop)[None])[0], dim=0))
    return torch.stack(out) if out else torch.zeros(0, 768)


def check_wiring(run_dir, cfg):
    """Every way this run's folder can disagree with the plan, as a list of problems ([] = wired right)."""
    e = torch.load(run_dir / "embeddings.pt", weights_only=True)
    prompts = inputs.parse_prompts(cfg["SAM2_PROMPTS"])
    problems = []

    def expect(ok, what):
        if not ok:
            problems.append(what)

    # step 1: M_neg is SAM2 on I_0 at the removed object's points, M_pos on I_1 at the added object's
    M_neg, M_pos = (sam2_mask(img, p.points, p.labels) for img, p in zip(IMAGES, prompts))
    expect(torch.equal(e["M_neg"][0], M_neg), "M_neg is not SAM2's mask of the removed object in I_0")
    expect(torch.equal(e["M_pos"][0], M_pos), "M_pos is not SAM2's mask of the added object in I_1")
    # step 2: tokens of I_0 and I_1
    t0, t1 = clip_tokens(IMAGES[0]), clip_tokens(IMAGES[1])
    expect(close(e["cls_0"], t0[0]) and close(e["patches_0"], t0[1:]), "cls_0/patches_0 are not I_0's CLIP tokens")
    expect(close(e["cls_1"], t1[0]) and close(e["patches_1"], t1[1:]), "cls_1/patches_1 are not I_1's CLIP tokens")
    # step 3: the patch weights of each mask
    m_neg, m_pos = patch_weights(M_neg, cfg["MASK_THRESHOLD"]), patch_weights(M_pos, cfg["MASK_THRESHOLD"])
    expect(torch.equal(e["m_neg"][0], m_neg), "m_neg is not M_neg on CLIP's patch grid")
    expect(torch.equal(e["m_pos"][0], m_pos), "m_pos is not M_pos on CLIP's patch grid")
    # step 4: the background is I_1's patches outside both masks
    bg = t1[1:][((1 - m_neg) * (1 - m_pos)) > 0.5].double().mean(0)
    expect(close(e["emb_bg"], bg / bg.norm()), "emb_bg is not the mean of I_1's patches outside both masks")
    # step 5: suppress I_0's removed region by SVD_ALPHA, boost I_1's added region by SVD_BETA
    suppress = svd_embedding(t0[0], t0[1:], m_neg, cfg["SVD_K"], cfg["SVD_ALPHA"])
    boost = svd_embedding(t1[0], t1[1:], m_pos, cfg["SVD_K"], cfg["SVD_BETA"])
    expect(close(e["emb_suppress"], suppress), "emb_suppress is not [cls_0; patches_0[m_neg]] with top-K x SVD_ALPHA")
    expect(close(e["emb_boost"], boost), "emb_boost is not [cls_1; patches_1[m_pos]] with top-K x SVD_BETA")
    # step 6: E_final
    mix = (cfg["MIX_DIRECT"] * t1[0].double() + cfg["MIX_BETA"] * boost + cfg["MIX_ALPHA"] * suppress
           + cfg["MIX_GAMMA"] * bg / bg.norm())
    expect(close(e["emb_final"], mix / mix.norm()), "emb_final is not the plan's mix of cls_1, boost, suppress, bg")
    # step 7: the slots. Row 0 = I_0 as SSV2A hears it, row 1 = I_1, row 2 = I_1's crops with slot 0 = E_final
    slots = e["slots"]
    expect(close(slots[0, 0], t0[0]), "slot 0 of baseline_original is not I_0's CLIP embedding")
    expect(close(slots[1, 0], t1[0]), "slot 0 of baseline_edited is not I_1's CLIP embedding")
    expect(close(slots[2, 0], e["emb_final"]), "slot 0 of the manipulated row is not E_final")
    yolo, threads = detect.tiny_yolo(class_bias=0.0), torch.get_num_threads()
    for i, (image, boxes) in enumerate(zip(IMAGES, e["boxes"])):
        found = yolo.predict(Image.open(image).convert("RGB"), imgsz=640, conf=0.25, iou=0.0, max_det=64,
                             augment=True, verbose=False)[0].boxes
        torch.set_num_threads(threads)   # ultralytics' first predict lowers torch's thread count process-wide
        order = torch.argsort(found.conf, descending=True, stable=True)[:16]
        expect(close(boxes, found.xyxy[order], atol=1e-3), f"the saved detections of image {i} are not YOLO's on it")
    c0, c1 = crops_embeddings(IMAGES[0], e["boxes"][0]), crops_embeddings(IMAGES[1], e["boxes"][1])
    expect(close(slots[0, 1:1 + len(c0)], c0, atol=1e-4), "slots 1.. of baseline_original are not I_0's crops")
    expect(close(slots[1, 1:1 + len(c1)], c1, atol=1e-4), "slots 1.. of baseline_edited are not I_1's crops")
    expect(close(slots[2, 1:1 + len(c1)], c1, atol=1e-4), "slots 1.. of the manipulated row are not I_1's crops")
    expect(slots[0, 1 + len(c0):].abs().sum() == 0 and slots[1:, 1 + len(c1):].abs().sum() == 0,
           "slots after the crops are not zero")
    # step 7: each row of each seed through cycle_mix and AudioLDM with that seed alone
    ssv2a, pipe = pipeline.tiny_ssv2a(), aldm.tiny_audioldm()
    seeds = settings.eval_seeds(cfg)
    expect(e["seeds"].tolist() == seeds, f"the run's seeds {e['seeds'].tolist()} are not {seeds}")
    for s, seed in enumerate(seeds):
        claps = torch.cat([ssv2a.cycle_mix(slots[r:r + 1], its=cfg["CYCLE_ITS"], samples=cfg["CYCLE_SAMPLES"],
                                           var_samples=cfg["VAR_SAMPLES"], pin_global=cfg["PIN_GLOBAL"],
                                           generator=torch.Generator().manual_seed(seed)) for r in range(3)])
        expect(close(e["claps"][s], claps, atol=1e-5), f"the remix CLAPs of seed {seed} are not cycle_mix of its rows")
        audio = aldm.emb_to_audio(pipe, claps, duration=cfg["DURATION"], steps=cfg["DDIM_STEPS"],
                                  guidance=cfg["GUIDANCE"], seed=seed)
        for r, name in enumerate(audio_io.AUDIO_NAMES):
            wav, _ = sf.read(run_dir / audio_io.wav_name(name, seed, seeds[0]), dtype="float32")
            expect(close(wav, np.clip(audio[r], -1, 1), atol=2 / 32767),
                   f"{audio_io.wav_name(name, seed, seeds[0])} is not the audio of row {name}, seed {seed}")
    return problems


# -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("wiring")
    assert main.main([*ARGS, f"--OUTPUT_DIR={out}"]) == 0
    (run_dir,) = out.iterdir()
    return run_dir


def test_every_intermediate_of_steps_1_to_7_is_the_plans(smoke_run):
    problems = check_wiring(smoke_run, smoke_cfg())
    assert problems == [], "\n".join(problems)


def mutant(edit, filename="main.py"):
    """A module of ours with one source edit, imported as its own module (the tests' mis-wired copies)."""
    old, new = edit
    source = (ROOT / filename).read_text()
    assert source.count(old) == 1, f"the edit must match once: {old!r}"
    name = Path(filename).stem + "_mutant"
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(ROOT / filename)
    sys.modules[name] = module
    exec(compile(source.replace(old, new), str(ROOT / filename), "exec"), module.__dict__)
    return module


@contextlib.contextmanager
def installed_mutant(edit, filename):
    """main, with a mis-wired copy of one of the modules below it (sweep.py, runs.py, ...) put in place of the
    real one: in sys.modules and in every module of ours that holds the module or one of its functions. main.py
    itself is mutated with mutant() and called directly; everything is restored afterwards."""
    name = Path(filename).stem
    real = importlib.import_module(name)
    module = mutant(edit, filename)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(sys.modules, name, module)
            for other in list(sys.modules.values()):
                if other is module or not str(getattr(other, "__file__", "") or "").startswith(str(ROOT)):
                    continue
                for attr, value in list(vars(other).items()):
                    if value is real:
                        mp.setattr(other, attr, module)
                    elif getattr(value, "__module__", None) == name and getattr(real, attr, None) is value:
                        mp.setattr(other, attr, getattr(module, attr))
            yield main
    finally:
        sys.modules.pop(name + "_mutant", None)


# wirings broken on purpose; each must be caught (more handoff breaks after step 7: test_main_handoff.py)
MUTANTS = {
    "boost from I_0's patches": ('tok["cls_1"], tok["patches_1"], m_pos[0]', 'tok["cls_1"], tok["patches_0"], m_pos[0]'),
    "masks swapped in step 3": ("step3_patch_weights(M_neg, M_pos, cfg", "step3_patch_weights(M_pos, M_neg, cfg"),
    "plain CLIP of I_0 in the mix": ('emb_final = step6_mix(tok["cls_1"]', 'emb_final = step6_mix(tok["cls_0"]'),
    "manipulated row on I_0's crops": ("slots_manip = slots_base[1:2]", "slots_manip = slots_base[0:1]"),
    "every row drawn with the first seed": ("[s for s, _ in chunk])", "[seeds[0] for _ in chunk])"),
}


@pytest.mark.parametrize("name", list(MUTANTS))
def test_a_miswired_pipeline_is_caught(name, tmp_path):
    module = mutant(MUTANTS[name])
    try:
        assert module.main([*ARGS, f"--OUTPUT_DIR={tmp_path}"]) == 0
    finally:
        sys.modules.pop("main_mutant", None)
    (run_dir,) = tmp_path.iterdir()
    problems = check_wiring(run_dir, smoke_cfg())
    assert problems, f"the wiring check missed: {name}"
