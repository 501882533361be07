"""Edit-aware image-to-audio generation.

Given I_0 (e.g. cat + rocket) and an edited I_1 (astronaut + rocket), make audio that follows the edit:
SAM2 masks of the removed and added objects -> all 257 CLIP tokens of each image -> SVD suppression of the
removed region, SVD boost of the added one -> mix with background and plain CLIP -> global slot of SSV2A's
remixer next to YOLO crops of I_1 -> AudioLDM -> CLAP scores against the two baselines.

    python main.py                                      # the example pair in images/
    python main.py --SVD_K=8 --original=a.jpg           # override any constant below
    python main.py --smoke                              # tiny random models, CPU, no checkpoints: checks the plumbing
    python main.py --sweep SVD_K=1,5,10 SVD_ALPHA=0.1,0.3   # a grid; masks, tokens and detections computed once
    python main.py --manifest pairs.csv                 # many edit pairs, models loaded once

Every run writes a new folder outputs/<timestamp>_<name>/; nothing is ever overwritten.
"""
import ast
import contextlib
import csv
import functools
import itertools
import json
import platform
import random
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path

# -----------------------------------------------------------------------------
# configuration: every constant can be overridden as --NAME=value (names are case-insensitive)
IMAGE_DIR = "images"                 # folder of ORIGINAL / EDITED when they are bare file names
ORIGINAL = "original.jpg"            # I_0: the image before the edit
EDITED = "edited.jpg"                # I_1: the image after the edit
OUTPUT_DIR = "outputs"               # each run gets its own sub-folder here
RUN_NAME = ""                        # suffix of the run folder; '' = '<removed>-to-<added>'
CONFIG_PATH = "ssv2a.json"           # SSV2A configuration (the release's ssv2a.json)
CHECKPOINT_PATH = "checkpoints/ssv2a.pth"  # SSV2A weights (python -m model.checkpoints ssv2a says where)
# SAM2 point prompts: first entry = object to REMOVE (points in I_0), second = object to ADD (points in I_1).
# x/y are pixels (lists for several points); labels 1 = on the object, 0 = not on it. Find them with
# verify_masks.py. The names also name the CLAP labels (see EVAL_LABELS).
SAM2_PROMPTS = {
    "cat": {"x": [448], "y": [330], "labels": [1]},
    "astronaut": {"x": [410, 370], "y": [130, 460], "labels": [1, 1]},
}
KEPT_SOURCES = ["rocket"]            # sound sources in both images: their CLAP score should stay put
# CLAP zero-shot label per source name; a source without an entry gets "the sound of a <name>"; extra
# entries are extra labels to choose from (distractors)
EVAL_LABELS = {"cat": "a cat meowing", "astronaut": "a person talking", "rocket": "a rocket engine roaring"}
EVAL_TOLERANCE = 0.05                # kept sources may move this much in probability and still pass, 0.0-0.2
SVD_K = 5                            # top singular values to modify, 1-15 (must stay below the region's rank)
SVD_ALPHA = 0.3                      # suppression factor for the removed object, 0.1-0.5 (1 = no effect)
SVD_BETA = 1.5                       # boost factor for the added object, 1.1-3.0 (1 = no effect)
MIX_ALPHA = 0.1                      # weight of the suppressed embedding, 0.0-0.3
MIX_BETA = 0.4                       # weight of the boosted embedding, 0.2-0.6
MIX_GAMMA = 0.1                      # weight of the background embedding, 0.0-0.3
MIX_DIRECT = 0.4                     # weight of the plain CLIP embedding of I_1, 0.2-0.6 (weights sum to 1)
MASK_THRESHOLD = 0.5                 # a patch belongs to the object when this fraction is masked, 0.3-0.7
CYCLE_ITS = 64                       # SSV2A cycle-mix rounds, 0-128 (more = closer to the detected sources)
CYCLE_SAMPLES = 64                   # remixes drawn per cycle-mix round, 1-128
VAR_SAMPLES = 64                     # variational draws averaged per sample, 1-128 (more = less random)
DURATION = 10.0                      # seconds of audio, 2.5-20 (AudioLDM was trained on 10 s)
DDIM_STEPS = 200                     # AudioLDM denoising steps, 50-400 (fewer = faster, rougher)
GUIDANCE = 2.5                       # AudioLDM classifier-free guidance, 1.0-5.0
AUDIO_BATCH = 8                      # audios per AudioLDM call in sweeps and manifests, 1-32 (GPU memory)
SEED = 42                            # one seed for masks-to-audio, so a run can be repeated exactly
DEVICE = ""                          # '' = cuda if present, else mps, else cpu; or 'cuda', 'cuda:1', 'cpu'
SMOKE = False                        # tiny random-weight models on the CPU: tests the plumbing, audio is noise
# grid for --sweep, e.g. {"SVD_K": [1, 5, 10], "SVD_ALPHA": [0.1, 0.3]}; the command line's --sweep wins
SWEEP = {}
# -----------------------------------------------------------------------------

CONFIG_KEYS = [k for k, v in list(globals().items()) if k.isupper() and not k.startswith("_")
               and isinstance(v, (int, float, str, bool, list, dict))]
# a smoke run finishes in well under a minute on a CPU; only these differ from a real run
SMOKE_SETTINGS = dict(CYCLE_ITS=2, CYCLE_SAMPLES=4, VAR_SAMPLES=4, DURATION=2.0, DDIM_STEPS=4, DEVICE="cpu")
# what a sweep may vary: everything after the masks and tokens and before cycle_mix
SWEEPABLE = ["SVD_K", "SVD_ALPHA", "SVD_BETA", "MIX_ALPHA", "MIX_BETA", "MIX_GAMMA", "MIX_DIRECT", "MASK_THRESHOLD"]
AUDIO_NAMES = ("baseline_original", "baseline_edited", "manipulated")


class UserError(Exception):
    """Bad input or a missing file: main() prints the message (which says what to do) without a traceback."""


# -----------------------------------------------------------------------------
# command line


def default_config():
    return {k: json.loads(json.dumps(globals()[k])) for k in CONFIG_KEYS}   # deep copy of the constants


def coerce(name, text, default):
    """The value of --NAME=text, as the type of the constant's default; UserError when it does not fit."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text   # a bare word: a string (paths, names)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default)) and not (isinstance(value, bool) and not isinstance(default, bool))
    if not ok:
        raise UserError(f"{name}={text}: {name} takes a {type(default).__name__} (default {default!r}), "
                        f"got {type(value).__name__} {value!r}")
    return value


def parse_args(argv, config):
    """Apply the command line to config (a dict of the constants). Returns (mode, mode_argument).

    --NAME=value overrides a constant (nanoGPT style), --smoke selects the tiny models (and SMOKE_SETTINGS,
    which explicit overrides still beat), --sweep NAME=v1,v2 ... runs a grid, --manifest FILE runs many pairs.
    """
    by_lower = {k.lower(): k for k in config}
    overrides, sweep, mode, manifest = [], {}, "run", None
    args = list(argv)
    if "--smoke" in args:
        args.remove("--smoke")
        config["SMOKE"] = True
        config.update(SMOKE_SETTINGS)
        print("Smoke run: " + ", ".join(f"{k}={v!r}" for k, v in SMOKE_SETTINGS.items()))
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-h", "--help"):
            return "help", None
        if arg == "--sweep":
            mode = "sweep"
            while i + 1 < len(args) and not args[i + 1].startswith("--"):
                i += 1
                key, _, values = args[i].partition("=")
                name = by_lower.get(key.lower())
                if name is None or not values:
                    raise UserError(f"--sweep takes NAME=v1,v2,... pairs; got {args[i]!r}. "
                                    f"Sweepable: {', '.join(SWEEPABLE)}")
                sweep[name] = values
        elif arg == "--manifest":
            if i + 1 >= len(args):
                raise UserError("--manifest needs a CSV file: python main.py --manifest pairs.csv")
            mode, manifest = "manifest", args[i + 1]
            i += 1
        elif arg.startswith("--") and "=" in arg:
            key, value_text = arg[2:].split("=", 1)
            name = by_lower.get(key.lower())
            if name is None:
                raise UserError(f"unknown setting --{key}. Settings: {', '.join(sorted(config))}")
            overrides.append((name, value_text))
        else:
            raise UserError(f"unknown argument {arg!r}; see python main.py --help")
        i += 1
    for name, value_text in overrides:
        config[name] = coerce(name, value_text, config[name])
        print(f"Overriding: {name} = {config[name]!r}")
    if mode == "sweep":
        grid = {name: [coerce(name, v, config[name]) for v in values.split(",")] for name, values in sweep.items()}
        config["SWEEP"] = grid or config["SWEEP"]
    return mode, manifest


def usage():
    lines = [__doc__.strip(), "", "Settings (defaults):"]
    lines += [f"  --{k}={globals()[k]!r}" for k in CONFIG_KEYS]
    return "\n".join(lines)


# -----------------------------------------------------------------------------
# helpers


def set_seed(seed):
    """Seed every random generator the pipeline draws from (Python, numpy, torch on all devices)."""
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def resolve_image(name, image_dir):
    """A path for an image given as a bare file name in IMAGE_DIR or as a path; UserError if missing."""
    path = Path(name)
    if not path.is_file() and not path.is_absolute():
        path = Path(image_dir) / name
    if not path.is_file():
        raise UserError(f"image not found: {name} (looked at {Path(name).resolve()} and {path.resolve()}). "
                        f"Set --ORIGINAL/--EDITED to an image file, or put it in {image_dir}/")
    return path


def new_run_dir(output_dir, name):
    """outputs/<timestamp>_<name>/, created fresh: a run never writes into an earlier run's folder."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "run"
    for i in range(1000):
        run_dir = Path(output_dir) / (f"{stamp}_{safe}" + (f"_{i}" if i else ""))
        try:
            run_dir.mkdir(parents=True, exist_ok=False)
            return run_dir
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run folder in {output_dir}")


def visualize_mask(image, mask, path, title="", points=None, labels=None):
    """Save the 3-panel figure (image with the prompt points, mask, overlay) as a PNG; returns the path."""
    from mask import save_mask_figure
    save_mask_figure(image, mask, path=path, points=points, labels=labels, title=title)
    return path


def parse_prompts(prompts):
    """SAM2_PROMPTS -> [(name, points [[x, y], ...], labels [...]) for removed, added]; UserError when malformed."""
    example = '{"cat": {"x": [448], "y": [330], "labels": [1]}, "duck": {"x": [410], "y": [130], "labels": [1]}}'
    if not isinstance(prompts, dict) or len(prompts) != 2:
        raise UserError(f"SAM2_PROMPTS needs exactly two entries (object to remove in I_0, then object to add in "
                        f"I_1), got {prompts!r}. Example: {example}")
    parsed = []
    for name, p in prompts.items():
        if not isinstance(p, dict) or "x" not in p or "y" not in p:
            raise UserError(f"SAM2_PROMPTS[{name!r}] needs 'x' and 'y' (and optional 'labels'), got {p!r}")
        xs = p["x"] if isinstance(p["x"], (list, tuple)) else [p["x"]]
        ys = p["y"] if isinstance(p["y"], (list, tuple)) else [p["y"]]
        labels = p.get("labels", [1] * len(xs))
        labels = labels if isinstance(labels, (list, tuple)) else [labels] * len(xs)
        if not xs or len(xs) != len(ys) or len(labels) != len(xs):
            raise UserError(f"SAM2_PROMPTS[{name!r}]: x, y and labels must have the same length, got {p!r}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in list(xs) + list(ys)):
            raise UserError(f"SAM2_PROMPTS[{name!r}]: x and y must be pixel numbers, got {p!r}")
        if any(lab not in (0, 1) for lab in labels):
            raise UserError(f"SAM2_PROMPTS[{name!r}]: labels must be 1 (on the object) or 0 (not on it), got {labels}")
        if 1 not in labels:
            raise UserError(f"SAM2_PROMPTS[{name!r}] has no positive point (label 1): SAM2 needs one on the object")
        parsed.append((str(name), [[float(x), float(y)] for x, y in zip(xs, ys)], [int(v) for v in labels]))
    return parsed


def check_points(image_path, points, name):
    from mask import check_points_inside
    from util import load_image_rgb
    try:
        check_points_inside(points, load_image_rgb(image_path).size, str(image_path))
    except ValueError as err:
        raise UserError(f"SAM2_PROMPTS[{name!r}]: {err}") from err


def eval_labels(cfg, removed, added):
    """(labels, removed_label, added_label, kept_labels) for CLAP from EVAL_LABELS and the source names."""
    texts = dict(cfg["EVAL_LABELS"])
    label = lambda name: texts.get(name) or f"the sound of a {name}"   # noqa: E731
    sources = [removed, added] + [k for k in cfg["KEPT_SOURCES"] if k not in (removed, added)]
    labels = [label(s) for s in sources]
    labels += [t for n, t in texts.items() if t not in labels]   # distractors
    if len(set(labels)) != len(labels):
        raise UserError(f"EVAL_LABELS give two sources the same label: {labels}")
    return labels, label(removed), label(added), [label(k) for k in sources[2:]]


def unit_norm_report(**embs):
    return ", ".join(f"{name} {tuple(e.shape)} |e|={float(e.float().norm()):.4f}" for name, e in embs.items())


class Timer:
    """Wall-clock seconds per named step, for run.json."""

    def __init__(self):
        self.seconds = {}

    @contextlib.contextmanager
    def __call__(self, name):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)


@contextlib.contextmanager
def recorded_warnings(store):
    """Show each warning as it happens and keep it for run.json: a warning is part of the run's result."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        store.append(f"{category.__name__}: {message}")
        print(f"WARNING: {message}")

    warnings.showwarning = show
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", UserWarning)
            # library notices about their own internals say nothing about this run
            for notice in ("pkg_resources is deprecated", "`torch.jit.script` is deprecated"):
                warnings.filterwarnings("ignore", message=notice)
            warnings.showwarning = show
            yield store
    finally:
        warnings.showwarning = shown


def write_json(path, data):
    with open(path, "x") as f:   # 'x': never replace a file
        json.dump(data, f, indent=2, default=str)


# -----------------------------------------------------------------------------
# models: each loaded on first use, then kept for every step, pair and setting of the run


class Models:
    """Every model the pipeline uses, loaded lazily and once. smoke=True: tiny random-weight models, CPU."""

    def __init__(self, cfg):
        from util import get_device
        self.smoke = bool(cfg["SMOKE"])
        try:
            self.device = get_device(cfg["DEVICE"] or None)
        except RuntimeError as err:   # DEVICE='cuda' on a machine without one
            raise UserError(f"DEVICE={cfg['DEVICE']!r}: {err}") from err
        self.config_path = Path(cfg["CONFIG_PATH"])
        self.checkpoint_path = Path(cfg["CHECKPOINT_PATH"])

    @functools.cached_property
    def clip(self):
        import util
        return util.tiny_clip() if self.smoke else util.load_clip(self.device)   # (model, preprocess)

    @functools.cached_property
    def sam2(self):
        import mask
        return mask.tiny_sam2_predictor() if self.smoke else mask.load_sam2_predictor(self.device)

    @functools.cached_property
    def yolo(self):
        from model import detect
        # class_bias 0: the random detector then finds boxes, so smoke runs exercise the crop path
        return detect.tiny_yolo(class_bias=0.0) if self.smoke else detect.load_yolo(
            self.ssv2a.config["detector"]["detection_model"], self.device)

    @functools.cached_property
    def ssv2a(self):
        from model import pipeline
        if self.smoke:
            return pipeline.tiny_ssv2a()
        return pipeline.load_ssv2a(self.config_path, self.checkpoint_path, self.device)

    @functools.cached_property
    def aldm(self):
        from model import aldm
        return aldm.tiny_audioldm() if self.smoke else aldm.load_audioldm(self.device)

    @functools.cached_property
    def clap(self):
        import evaluation
        return evaluation.tiny_clap() if self.smoke else evaluation.load_clap(self.device)


def check_checkpoints(cfg):
    """Every checkpoint a real run needs, fetched now (when online) or listed with its fix: before any work."""
    from model.checkpoints import CHECKPOINTS, CheckpointError, checkpoint_path, hf_model_dir
    problems = []
    if not Path(cfg["CONFIG_PATH"]).is_file():
        problems.append(f"SSV2A config {cfg['CONFIG_PATH']} not found (the repo ships ssv2a.json at its root; "
                        f"set --CONFIG_PATH)")
    ssv2a = Path(cfg["CHECKPOINT_PATH"])
    if not ssv2a.is_file():
        problems.append(f"SSV2A checkpoint not found: {ssv2a}\n  " + CHECKPOINTS["ssv2a"].manual.format(path=ssv2a))
    for name in ["clip", "sam2", "yolo", "audioldm", "clap", "roberta"]:
        try:
            hf_model_dir(name) if CHECKPOINTS[name].hf_repo else checkpoint_path(name, check_hash=False)
        except CheckpointError as err:
            problems.append(str(err))
    if problems:
        raise UserError(f"{len(problems)} checkpoint(s) missing; nothing was run.\n\n" + "\n\n".join(problems)
                        + "\n\nOn a machine with internet, `python -m model.checkpoints` fetches all but ssv2a.pth."
                        + "\nTo check the pipeline without any weights: python main.py --smoke")


# -----------------------------------------------------------------------------
# the 7 steps of the research plan (each prints its header and the shapes it produced)


def step1_masks(images, prompts, models, run_dir=None):
    """SAM2 masks: M_neg = the removed object in I_0, M_pos = the added object in I_1 ([H, W] float32 {0, 1})."""
    import torch
    from mask import get_mask
    print("\n=== STEP 1: SAM2 masks ===")
    masks = []
    for image, (name, points, labels), role in zip(images, prompts, ("remove", "add")):
        m = get_mask(image, [p[0] for p in points], [p[1] for p in points], labels, predictor=models.sam2)
        print(f"  M_{'neg' if role == 'remove' else 'pos'} ({role} '{name}' in {Path(image).name}): "
              f"{tuple(m.shape)}, {m.mean() * 100:.1f}% of pixels")
        if m.sum() == 0:
            raise UserError(f"SAM2 found nothing at {points} in {image} for '{name}'; check the point with "
                            f"python verify_masks.py --image {image} --interactive")
        if run_dir is not None:
            fig = visualize_mask(image, m, run_dir / f"mask_{role}_{name}.png",
                                 title=f"{role} '{name}' ({Path(image).name})", points=points, labels=labels)
            print(f"  figure: {fig}")
        masks.append(torch.from_numpy(m)[None])   # [1, H, W], the batch the mask functions take
    return masks


def step2_clip_tokens(images, models):
    """All 257 CLIP tokens of I_0 and I_1 -> cls_0, patches_0, cls_1, patches_1."""
    from util import extract_full_clip_tokens
    print("\n=== STEP 2: CLIP tokens ===")
    model, preprocess = models.clip
    tokens = extract_full_clip_tokens(images, model=model, preprocess=preprocess)
    tok = dict(cls_0=tokens[0, 0], patches_0=tokens[0, 1:], cls_1=tokens[1, 0], patches_1=tokens[1, 1:])
    print(f"  tokens {tuple(tokens.shape)} -> " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in tok.items()))
    return tok


def step3_patch_weights(M_neg, M_pos, threshold):
    """Masks on CLIP's 16x16 patch grid, aligned with CLIP's resize + centre crop: m_neg, m_pos [1, 256]."""
    from util import mask_to_patch_weights
    print("\n=== STEP 3: masks -> CLIP patch grid ===")
    m_neg = mask_to_patch_weights(M_neg, threshold=threshold)
    m_pos = mask_to_patch_weights(M_pos, threshold=threshold)
    print(f"  m_neg {tuple(m_neg.shape)}: {int((m_neg > 0).sum())} patches; "
          f"m_pos {tuple(m_pos.shape)}: {int((m_pos > 0).sum())} patches (threshold {threshold})")
    return m_neg, m_pos


def step4_background(patches_1, m_neg, m_pos):
    """E_bg: mean of I_1's patches outside both masks, L2-normalised [768]."""
    from util import background_embedding
    print("\n=== STEP 4: background embedding ===")
    emb_bg = background_embedding(patches_1, m_neg[0], m_pos[0])
    n_bg = int((((1 - m_neg[0]) * (1 - m_pos[0])) > 0.5).sum())
    print(f"  {n_bg} background patches -> {unit_norm_report(emb_bg=emb_bg)}")
    return emb_bg


def step5_svd(tok, m_neg, m_pos, cfg):
    """emb_suppress (removed object, top-K singular values x SVD_ALPHA), emb_boost (added object, x SVD_BETA)."""
    from util import svd_manipulate_embeddings
    print("\n=== STEP 5: SVD manipulation ===")
    emb_suppress, info_suppress = svd_manipulate_embeddings(
        tok["cls_0"], tok["patches_0"], m_neg[0], k=cfg["SVD_K"], mode="suppress", alpha=cfg["SVD_ALPHA"],
        return_info=True)
    emb_boost, info_boost = svd_manipulate_embeddings(
        tok["cls_1"], tok["patches_1"], m_pos[0], k=cfg["SVD_K"], mode="boost", beta=cfg["SVD_BETA"],
        return_info=True)
    for name, info in (("suppress", info_suppress), ("boost", info_boost)):
        print(f"  {name}: [CLS; {info['n_patches']} patches] -> k={info['k_effective']} of rank {info['rank']} "
              f"x{info['scale']:g} (top-k energy {info['topk_energy']:.1%})" + ("  NO-OP" if info["no_op"] else ""))
    print("  " + unit_norm_report(emb_suppress=emb_suppress, emb_boost=emb_boost))
    return emb_suppress, emb_boost, {"suppress": info_suppress, "boost": info_boost}


def step6_mix(normal_clip, emb_boost, emb_suppress, emb_bg, cfg):
    """E_final = MIX_DIRECT*normal + MIX_BETA*boost + MIX_ALPHA*suppress + MIX_GAMMA*bg, L2-normalised [768]."""
    import torch.nn.functional as F
    from util import mix_embeddings
    print("\n=== STEP 6: mix ===")
    emb_final = mix_embeddings(normal_clip, emb_boost, emb_suppress, emb_bg, w_direct=cfg["MIX_DIRECT"],
                               w_boost=cfg["MIX_BETA"], w_suppress=cfg["MIX_ALPHA"], w_bg=cfg["MIX_GAMMA"])
    cos = float(F.cosine_similarity(emb_final, normal_clip, dim=0))
    print(f"  {unit_norm_report(emb_final=emb_final)}; cosine to plain CLIP of I_1: {cos:.4f}")
    return emb_final


def detect_sources(images, tok, models):
    """YOLO on I_0 and I_1 -> SSV2A remix slots [2, 64, 768], slot 0 = each image's CLS from step 2."""
    import torch
    from model.detect import image_remix_slots
    model, preprocess = models.clip
    # the CLS tokens are the plain CLIP embeddings SSV2A puts in slot 0: no second CLIP pass over the images
    global_embs = torch.stack([tok["cls_0"], tok["cls_1"]])
    slots, detections = image_remix_slots(images, yolo=models.yolo, clip_model=model, preprocess=preprocess,
                                          detector_cfg=models.ssv2a.config["detector"], global_embs=global_embs,
                                          slot=models.ssv2a.slot, device=models.device)
    return slots, detections


def step7_audio(images, tok, emb_finals, models, cfg, sources=None):
    """Hybrid SSV2A: baselines (I_0, I_1 as SSV2A hears them) and I_1's slots with slot 0 = E_final.

    emb_finals: [n, 768] manipulated embeddings (one per setting). Returns (audio [2 + n, samples] numpy,
    claps [2 + n, 512], slots [2 + n, 64, 768], detections). Rows 0 and 1 are the baselines. sources: the
    (slots, detections) of detect_sources, when already computed.
    """
    import numpy as np
    import torch
    from model.pipeline import slots_to_audio
    print("\n=== STEP 7: audio via hybrid SSV2A (YOLO -> slots -> cycle_mix -> AudioLDM) ===")
    slots_base, detections = sources if sources is not None else detect_sources(images, tok, models)
    slots_manip = slots_base[1:2].repeat(len(emb_finals), 1, 1)
    slots_manip[:, 0] = emb_finals.to(slots_manip)   # plan step 8.2: our embedding is the global context
    slots = torch.cat([slots_base, slots_manip])
    print(f"  slots {tuple(slots.shape)}: rows = baseline_original, baseline_edited, {len(emb_finals)} manipulated; "
          f"objects per image: {[len(d) for d in detections]}")
    audio, claps = [], []
    batch = max(1, int(cfg["AUDIO_BATCH"]))
    for start in range(0, len(slots), batch):
        a, c = slots_to_audio(slots[start:start + batch], models.ssv2a, models.aldm, its=cfg["CYCLE_ITS"],
                              samples=cfg["CYCLE_SAMPLES"], var_samples=cfg["VAR_SAMPLES"], duration=cfg["DURATION"],
                              steps=cfg["DDIM_STEPS"], guidance=cfg["GUIDANCE"], seed=cfg["SEED"])
        audio.append(a)
        claps.append(c)
        if len(slots) > batch:
            print(f"  audio {min(start + batch, len(slots))}/{len(slots)}")
    audio, claps = np.concatenate(audio), torch.cat(claps)
    print(f"  remix CLAPs {tuple(claps.shape)} -> audio {audio.shape} at {sample_rate(models)} Hz")
    return audio, claps, slots, detections


def sample_rate(models):
    return int(models.aldm.vocoder.config.sampling_rate)


# -----------------------------------------------------------------------------
# the pipeline


def generate_baseline_audio(images, models, cfg):
    """The original SSV2A on each image (detect -> global + crop CLIPs -> cycle_mix -> AudioLDM): numpy [B, n]."""
    from model.pipeline import image_to_audio
    model, preprocess = models.clip
    out = image_to_audio(images, model=models.ssv2a, aldm=models.aldm, yolo=models.yolo, clip_model=model,
                         preprocess=preprocess, its=cfg["CYCLE_ITS"], samples=cfg["CYCLE_SAMPLES"],
                         var_samples=cfg["VAR_SAMPLES"], duration=cfg["DURATION"], steps=cfg["DDIM_STEPS"],
                         guidance=cfg["GUIDANCE"], seed=cfg["SEED"], device=models.device)
    return out["audio"]


def manipulated_image_to_audio(edited, emb_final, models, cfg):
    """SSV2A on I_1 with slot 0 = our manipulated embedding (plan step 8.2): numpy [n]."""
    from model import pipeline
    model, preprocess = models.clip
    out = pipeline.manipulated_image_to_audio(
        edited, emb_final, model=models.ssv2a, aldm=models.aldm, yolo=models.yolo, clip_model=model,
        preprocess=preprocess, its=cfg["CYCLE_ITS"], samples=cfg["CYCLE_SAMPLES"], var_samples=cfg["VAR_SAMPLES"],
        duration=cfg["DURATION"], steps=cfg["DDIM_STEPS"], guidance=cfg["GUIDANCE"], seed=cfg["SEED"],
        device=models.device)
    return out["audio"][0]


def prepare_inputs(cfg):
    """Images and prompts checked before any model loads: (images [I_0, I_1], prompts [removed, added])."""
    images = [resolve_image(cfg["ORIGINAL"], cfg["IMAGE_DIR"]), resolve_image(cfg["EDITED"], cfg["IMAGE_DIR"])]
    prompts = parse_prompts(cfg["SAM2_PROMPTS"])
    for image, (name, points, _) in zip(images, prompts):
        try:
            check_points(image, points, name)
        except (ValueError, OSError) as err:   # unreadable image
            raise UserError(str(err)) from err
    eval_labels(cfg, prompts[0][0], prompts[1][0])   # label clashes fail now, not after the audio
    return images, prompts


def main_pipeline(cfg, models, run_dir, images, prompts):
    """Steps 1-7 of the plan, then the evaluation; writes everything into run_dir. Returns the run record."""
    import torch
    from model.aldm import save_wav
    timer, caught = Timer(), []
    removed, added = prompts[0][0], prompts[1][0]
    set_seed(cfg["SEED"])
    with recorded_warnings(caught):
        with timer("step1_masks"):
            M_neg, M_pos = step1_masks(images, prompts, models, run_dir)
        with timer("step2_clip_tokens"):
            tok = step2_clip_tokens(images, models)
        with timer("step3_patch_weights"):
            m_neg, m_pos = step3_patch_weights(M_neg, M_pos, cfg["MASK_THRESHOLD"])
        with timer("step4_background"):
            emb_bg = step4_background(tok["patches_1"], m_neg, m_pos)
        with timer("step5_svd"):
            emb_suppress, emb_boost, svd_info = step5_svd(tok, m_neg, m_pos, cfg)
        with timer("step6_mix"):
            emb_final = step6_mix(tok["cls_1"], emb_boost, emb_suppress, emb_bg, cfg)
        with timer("step7_audio"):
            audio, claps, slots, detections = step7_audio(images, tok, emb_final[None], models, cfg)

        sr = sample_rate(models)
        audios = dict(zip(AUDIO_NAMES, audio))
        for name, wave in audios.items():
            save_wav(run_dir / f"{name}.wav", wave, sr)
        torch.save({"cls_0": tok["cls_0"], "patches_0": tok["patches_0"], "cls_1": tok["cls_1"],
                    "patches_1": tok["patches_1"], "M_neg": M_neg.bool(), "M_pos": M_pos.bool(), "m_neg": m_neg,
                    "m_pos": m_pos, "emb_bg": emb_bg, "emb_suppress": emb_suppress, "emb_boost": emb_boost,
                    "emb_final": emb_final, "slots": slots, "claps": dict(zip(AUDIO_NAMES, claps))},
                   run_dir / "embeddings.pt")

        print("\n=== Evaluation: CLAP scores of the three audios ===")
        with timer("evaluation"):
            results = evaluate(audios, cfg, removed, added, models, run_dir)

    record = run_record(cfg, models, images, prompts, timer.seconds, caught)
    record.update(svd=svd_info, detections=detection_record(detections), audio_seconds=cfg["DURATION"],
                  sample_rate=sr, verdict=results.get("verdict", {}).get("passed_all"),
                  outputs=sorted(p.name for p in run_dir.iterdir()) + ["run.json"])
    write_json(run_dir / "run.json", record)
    return record


def evaluate(audios, cfg, removed, added, models, run_dir):
    import evaluation
    labels, removed_label, added_label, kept_labels = eval_labels(cfg, removed, added)
    return evaluation.evaluate_run(audios, labels, removed_label, added_label, kept_labels, run_dir, models.clap,
                                   sample_rate=sample_rate(models), tolerance=cfg["EVAL_TOLERANCE"])


def detection_record(detections):
    return [[{"label": d.label, "score": round(d.score, 4), "box": [round(v, 1) for v in d.box]} for d in dets]
            for dets in detections]


def run_record(cfg, models, images, prompts, timings, caught):
    import torch
    return {
        "command": " ".join(sys.argv),
        "finished": datetime.now().isoformat(timespec="seconds"),
        "config": cfg,
        "images": {"original": str(images[0]), "edited": str(images[1])},
        "removed": prompts[0][0], "added": prompts[1][0],
        "seed": cfg["SEED"],
        "device": str(models.device),
        "smoke": models.smoke,
        "timings_s": timings,
        "warnings": caught,
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }


# -----------------------------------------------------------------------------
# sweeps: masks, tokens and detections once; steps 3-6 per setting; cycle_mix + AudioLDM batched


def sweep_settings(grid):
    bad = [k for k in grid if k not in SWEEPABLE]
    if bad:
        raise UserError(f"cannot sweep {', '.join(bad)}: only {', '.join(SWEEPABLE)} vary after the shared work. "
                        "Run separate runs for the others")
    if not grid or any(not isinstance(v, list) or not v for v in grid.values()):
        raise UserError(f"the sweep grid needs at least one setting with a list of values, got {grid!r}. "
                        "Example: python main.py --sweep SVD_K=1,5,10 SVD_ALPHA=0.1,0.3")
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*grid.values())]


def setting_name(setting):
    return "_".join(f"{k}-{v:g}" if isinstance(v, float) else f"{k}-{v}" for k, v in setting.items())


def run_sweep(cfg, models, run_dir, images, prompts):
    """Every setting of cfg['SWEEP']: sweep.csv, a heat map of the target score, one wav per setting."""
    import torch
    import evaluation
    from model.aldm import save_wav
    settings = sweep_settings(cfg["SWEEP"])
    timer, caught = Timer(), []
    removed, added = prompts[0][0], prompts[1][0]
    labels, removed_label, added_label, kept_labels = eval_labels(cfg, removed, added)
    print(f"Sweep: {len(settings)} settings over {', '.join(cfg['SWEEP'])}")
    set_seed(cfg["SEED"])
    with recorded_warnings(caught):
        with timer("shared: masks, tokens, detection"):
            M_neg, M_pos = step1_masks(images, prompts, models, run_dir)
            tok = step2_clip_tokens(images, models)
            sources = detect_sources(images, tok, models)
        emb_finals, infos = [], []
        with timer("per setting: steps 3-6"):
            for setting in settings:
                s_cfg = {**cfg, **setting}
                print(f"\n--- setting {setting_name(setting)} ---")
                m_neg, m_pos = step3_patch_weights(M_neg, M_pos, s_cfg["MASK_THRESHOLD"])
                emb_bg = step4_background(tok["patches_1"], m_neg, m_pos)
                emb_suppress, emb_boost, info = step5_svd(tok, m_neg, m_pos, s_cfg)
                emb_finals.append(step6_mix(tok["cls_1"], emb_boost, emb_suppress, emb_bg, s_cfg))
                infos.append(info)
        with timer("per setting: cycle_mix + AudioLDM"):
            audio, claps, _, detections = step7_audio(images, tok, torch.stack(emb_finals), models, cfg, sources)
        sr = sample_rate(models)
        with timer("evaluation"):
            scores = evaluation.score_audios({i: a for i, a in enumerate(audio)}, labels, models.clap, sample_rate=sr)
        save_wav(run_dir / "baseline_original.wav", audio[0], sr)
        save_wav(run_dir / "baseline_edited.wav", audio[1], sr)
        rows = []
        for i, setting in enumerate(settings):
            save_wav(run_dir / f"manipulated_{setting_name(setting)}.wav", audio[2 + i], sr)
            probs = {"baseline_original": scores["probs"][0], "baseline_edited": scores["probs"][1],
                     "manipulated": scores["probs"][2 + i]}
            embs = {"baseline_original": scores["audio_embs"][0], "baseline_edited": scores["audio_embs"][1],
                    "manipulated": scores["audio_embs"][2 + i]}
            v = evaluation.verdict(probs, embs, labels, removed_label, added_label, kept_labels, cfg["EVAL_TOLERANCE"])
            rows.append({**setting, **verdict_row(v, probs, labels, removed_label, added_label),
                         "k_effective_suppress": infos[i]["suppress"]["k_effective"],
                         "k_effective_boost": infos[i]["boost"]["k_effective"],
                         "no_op": infos[i]["suppress"]["no_op"] or infos[i]["boost"]["no_op"],
                         "audio": f"manipulated_{setting_name(setting)}.wav"})
        write_csv(run_dir / "sweep.csv", rows)
        plot_sweep_heatmap(rows, list(cfg["SWEEP"]), run_dir / "sweep_heatmap.png")
    torch.save({"settings": settings, "emb_final": torch.stack(emb_finals), "claps": claps}, run_dir / "embeddings.pt")
    record = run_record(cfg, models, images, prompts, timer.seconds, caught)
    record.update(mode="sweep", settings=settings, detections=detection_record(detections),
                  outputs=sorted(p.name for p in run_dir.iterdir()) + ["run.json"])
    write_json(run_dir / "run.json", record)
    best = max(rows, key=lambda r: r["target"])
    best_setting = setting_name({k: best[k] for k in cfg["SWEEP"]})
    print(f"\nBest target (P(added) - P(removed), manipulated) {best['target']:.4f} at {best_setting}")
    print(f"Sweep table: {run_dir / 'sweep.csv'}; heat map: {run_dir / 'sweep_heatmap.png'}")
    return rows


def verdict_row(v, probs, labels, removed_label, added_label):
    """One flat table row: each label's probability per audio, each check's pass/fail and numbers."""
    row = {}
    ia, ir = labels.index(added_label), labels.index(removed_label)
    row["target"] = round(float(probs["manipulated"][ia] - probs["manipulated"][ir]), 6)
    for name in AUDIO_NAMES:
        for label, p in zip(labels, probs[name]):
            row[f"P[{label}] {name}"] = round(float(p), 6)
    for check, c in v["checks"].items():
        row[f"{check} passed"] = bool(c["passed"])
        for key, value in (c.get("numbers") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row[f"{check} {key}"] = round(float(value), 6)
    row["checks passed"] = sum(bool(c["passed"]) for c in v["checks"].values())
    row["passed_all"] = bool(v["passed_all"])
    return row


def write_csv(path, rows):
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "x", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def plot_sweep_heatmap(rows, names, path, key="target"):
    """Heat map of `key` over the first two swept constants (mean over any others); one row for one constant."""
    import numpy as np
    from matplotlib.figure import Figure
    x_name, y_name = names[0], (names[1] if len(names) > 1 else None)
    xs = sorted({r[x_name] for r in rows})
    ys = sorted({r[y_name] for r in rows}) if y_name else [None]
    grid = np.full((len(ys), len(xs)), np.nan)
    for j, y in enumerate(ys):
        for i, x in enumerate(xs):
            vals = [r[key] for r in rows if r[x_name] == x and (y_name is None or r[y_name] == y)]
            grid[j, i] = np.mean(vals) if vals else np.nan
    fig = Figure(figsize=(1.2 * len(xs) + 3, 0.8 * len(ys) + 2.5))
    ax = fig.add_subplot()
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
    ax.set_yticks(range(len(ys)), [f"{y:g}" for y in ys] if y_name else [""])
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name or "")
    for j in range(len(ys)):
        for i in range(len(xs)):
            ax.text(i, j, f"{grid[j, i]:.3f}", ha="center", va="center", color="w", fontsize=8)
    extra = f" (mean over {', '.join(names[2:])})" if len(names) > 2 else ""
    ax.set_title(f"P(added) - P(removed), manipulated{extra}")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    with open(path, "xb") as f:
        fig.savefig(f, format="png", dpi=100)
    return path


# -----------------------------------------------------------------------------
# manifests: many edit pairs, models loaded once

MANIFEST_COLUMNS = ["original", "edited", "remove", "remove_x", "remove_y", "add", "add_x", "add_y"]
MANIFEST_HELP = ("columns: original, edited, remove, remove_x, remove_y, [remove_labels], add, add_x, add_y, "
                 "[add_labels], [kept], [eval_labels]; several points as 410;370, kept as dog;rocket, "
                 "eval_labels as cat=a cat meowing;duck=a duck quacking")


def read_manifest(path):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"manifest not found: {path}. A CSV with a header row; {MANIFEST_HELP}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in MANIFEST_COLUMNS if not rows or c not in rows[0]]
    if not rows or missing:
        raise UserError(f"manifest {path} " + (f"lacks columns {', '.join(missing)}" if rows else "has no rows")
                        + f"; {MANIFEST_HELP}")
    return rows


def pair_config(cfg, row, manifest_dir):
    """The run config of one manifest row (paths relative to the manifest's folder, then IMAGE_DIR)."""
    def numbers(text, what):
        try:
            return [float(v) if "." in v else int(v) for v in str(text).replace(",", ";").split(";") if v.strip()]
        except ValueError:
            raise UserError(f"{what}={text!r} is not a number or a ;-separated list of numbers") from None

    def image(name):
        p = Path(name)
        return str(manifest_dir / p) if not p.is_absolute() and (manifest_dir / p).is_file() else name

    prompts = {}
    for role in ("remove", "add"):
        xs, ys = numbers(row[f"{role}_x"], f"{role}_x"), numbers(row[f"{role}_y"], f"{role}_y")
        labels = numbers(row.get(f"{role}_labels") or ";".join(["1"] * len(xs)), f"{role}_labels")
        prompts[row[role].strip()] = {"x": xs, "y": ys, "labels": labels}
    labels = dict(cfg["EVAL_LABELS"])
    for item in (row.get("eval_labels") or "").split(";"):
        if "=" in item:
            name, text = item.split("=", 1)
            labels[name.strip()] = text.strip()
    kept = [k.strip() for k in (row.get("kept") or "").split(";") if k.strip()]
    return {**cfg, "ORIGINAL": image(row["original"].strip()), "EDITED": image(row["edited"].strip()),
            "SAM2_PROMPTS": prompts, "EVAL_LABELS": labels,
            "KEPT_SOURCES": kept if row.get("kept") is not None else cfg["KEPT_SOURCES"]}


def run_manifest(cfg, models, run_dir, manifest):
    """Each pair of the manifest in its own sub-folder; broken rows are reported and skipped."""
    import numpy as np
    rows = read_manifest(manifest)
    table, failures = [], []
    print(f"Manifest {manifest}: {len(rows)} pairs")
    for i, row in enumerate(rows, start=1):
        print(f"\n##### pair {i}/{len(rows)}: {row.get('original')} -> {row.get('edited')} #####")
        try:
            p_cfg = pair_config(cfg, row, Path(manifest).resolve().parent)
            images, prompts = prepare_inputs(p_cfg)
            pair_dir = run_dir / f"pair{i:03d}_{prompts[0][0]}-to-{prompts[1][0]}"
            pair_dir.mkdir()
            main_pipeline(p_cfg, models, pair_dir, images, prompts)
            results = json.loads((pair_dir / "results.json").read_text())
            labels, removed_label, added_label, _ = eval_labels(p_cfg, prompts[0][0], prompts[1][0])
            table.append({"pair": i, "original": str(images[0]), "edited": str(images[1]),
                          "removed": prompts[0][0], "added": prompts[1][0], "folder": pair_dir.name,
                          **verdict_row(results["verdict"], results["probs"], results["labels"], removed_label,
                                        added_label)})
        except (UserError, ValueError, FileNotFoundError) as err:
            print(f"SKIPPED pair {i}: {err}")
            failures.append({"pair": i, "original": row.get("original"), "edited": row.get("edited"),
                             "error": str(err)})
    if table:
        write_csv(run_dir / "pairs.csv", table)
    summary = {"manifest": str(manifest), "pairs": len(rows), "completed": len(table), "skipped": failures,
               "metrics": {}}
    numeric = [k for k in (table[0] if table else {}) if k != "pair" and isinstance(table[0][k], (int, float))]
    for key in numeric:
        values = np.array([float(r[key]) for r in table])
        summary["metrics"][key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1
                                   else 0.0, "n": len(values)}
    write_json(run_dir / "summary.json", summary)
    print(f"\nManifest done: {len(table)} of {len(rows)} pairs completed, {len(failures)} skipped")
    for key in [k for k in numeric if k == "target" or k.endswith("passed") or k == "passed_all"]:
        m = summary["metrics"][key]
        print(f"  {key:40s} mean {m['mean']:.4f}  std {m['std']:.4f}  (n={m['n']})")
    print(f"Per-pair table: {run_dir / 'pairs.csv'}; means and stds: {run_dir / 'summary.json'}")
    return summary


# -----------------------------------------------------------------------------


def main(argv=None):
    """Parse the command line, check inputs and checkpoints, then run / sweep / manifest into a new run folder."""
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    cfg = default_config()
    try:
        mode, manifest = parse_args(sys.argv[1:] if argv is None else argv, cfg)
        if mode == "help":
            print(usage())
            return 0
        return run(cfg, mode, manifest)
    except UserError as err:
        print(f"\nError: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        from model.checkpoints import CheckpointError
        if isinstance(err, CheckpointError):
            print(f"\nError: {err}", file=sys.stderr)
            return 2
        raise


def run(cfg, mode, manifest):
    import torch
    if cfg["SMOKE"]:
        print("=" * 78 + "\nSMOKE RUN: tiny RANDOM-WEIGHT models (CLIP, SAM2, YOLO, SSV2A, AudioLDM, CLAP) on the "
              "CPU.\nThe masks are arbitrary and the audio is noise: this checks the plumbing, not the method.\n"
              + "=" * 78)
    if mode == "manifest":
        images = prompts = None
    else:
        images, prompts = prepare_inputs(cfg)
        if mode == "sweep":
            sweep_settings(cfg["SWEEP"])
    models = Models(cfg)
    if models.device.type == "cpu" and not cfg["SMOKE"]:
        print("WARNING: no CUDA GPU found, running on the CPU. Expect tens of minutes per run "
              "(--DDIM_STEPS=50 --CYCLE_ITS=8 for a quicker look).")
    if not cfg["SMOKE"]:
        check_checkpoints(cfg)
    if mode == "manifest":
        name = cfg["RUN_NAME"] or f"manifest-{Path(manifest).stem}"
    else:
        name = cfg["RUN_NAME"] or f"{prompts[0][0]}-to-{prompts[1][0]}"
        name += "_sweep" if mode == "sweep" else ""
    run_dir = new_run_dir(cfg["OUTPUT_DIR"], name + ("_smoke" if cfg["SMOKE"] else ""))
    print(f"Run folder: {run_dir}\nDevice: {models.device}")
    start = time.perf_counter()
    torch.set_grad_enabled(False)
    try:
        if mode == "sweep":
            run_sweep(cfg, models, run_dir, images, prompts)
        elif mode == "manifest":
            run_manifest(cfg, models, run_dir, manifest)
        else:
            main_pipeline(cfg, models, run_dir, images, prompts)
    finally:
        torch.set_grad_enabled(True)
    print(f"\nDone in {time.perf_counter() - start:.1f} s. Everything is in {run_dir}/")
    if mode == "run":
        print("  " + ", ".join(sorted(p.name for p in run_dir.iterdir())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
