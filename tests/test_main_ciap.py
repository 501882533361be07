"""The CIAP back end (CIAP_CHECKPOINT): step 7 through a trained CIAP head instead of SSV2A's remixer.

The oracle: with CIAP, the three rows of a seed are AudioLDM driven by head(CLIP(I_0)), head(CLIP(I_1)) and
head(E_final) with that seed, nothing else. Here CLIP's embeddings and E_final come from the plan's formulas
(test_main_wiring's), the head is applied by hand from the checkpoint's tensors (LayerNorm, Linear, GELU, Linear,
L2 norm) and AudioLDM is called directly. The checkpoints are trained by train_ciap.py --smoke on a small
synthetic set (two epochs: this tests the wiring, not what CIAP learns). Mis-wired copies of the code (a source
edit each) must be caught, and bad checkpoints refused before any model loads.
"""
import contextlib
import csv
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from test_main_wiring import (IMAGES, close, clip_tokens, installed_mutant, mutant, patch_weights, sam2_mask,
                              svd_embedding)

import audio_io
import inputs
import loader
import main
import settings
import train_ciap
from model import aldm, ciap

ARGS = ["--smoke", "--EVAL_SEEDS=2"]
# the manifest's and sweep's runs made smaller still
FAST = ["--smoke", "--EVAL_SEEDS=1", "--DDIM_STEPS=2", "--CYCLE_ITS=1", "--CYCLE_SAMPLES=2", "--VAR_SAMPLES=2",
        "--DURATION=1.0"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """ciap.safetensors of three smoke trainings on 12 synthetic pairs: the CLIP head into CLAP's space (the back
    end's), a ResNet18 head and a CLIP head against a scratch audio encoder (both to be refused)."""
    tmp = tmp_path_factory.mktemp("ciap")
    pairs = train_ciap.make_synthetic_pairs(tmp / "synthetic", 12)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # the tiny head trains several times faster so on a shared CPU
    found = {}
    try:
        for kind, extra in (("clip-head", []), ("resnet18", ["--ENCODER=resnet18"]), ("scratch", ["--TARGET=scratch"])):
            out = tmp / kind
            with contextlib.redirect_stdout(io.StringIO()):
                assert train_ciap.main(["--smoke", f"--OUTPUT_DIR={out}", "--pairs", str(pairs), "--EPOCHS=2",
                                        *extra]) == 0
            (run_dir,) = out.iterdir()
            found[kind] = run_dir / "ciap.safetensors"
    finally:
        torch.set_num_threads(threads)
    return found


def run_main(args, module=main):
    """(exit code, printout, the one run folder made) of main.main(args) with a fresh OUTPUT_DIR in args."""
    out = Path(next(a for a in args if a.startswith("--OUTPUT_DIR=")).split("=", 1)[1])
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        code = module.main(args)
    made = list(out.iterdir()) if out.exists() else []
    assert len(made) <= 1, made
    return code, text.getvalue(), made[0] if made else None


@pytest.fixture(scope="module")
def ciap_run(checkpoints, tmp_path_factory):
    code, printout, run_dir = run_main([*ARGS, f"--CIAP_CHECKPOINT={checkpoints['clip-head']}",
                                        f"--OUTPUT_DIR={tmp_path_factory.mktemp('ciap_run')}"])
    assert code == 0, printout[-3000:]
    return run_dir, printout


@pytest.fixture(scope="module")
def ssv2a_run(tmp_path_factory):
    code, printout, run_dir = run_main([*ARGS, f"--OUTPUT_DIR={tmp_path_factory.mktemp('ssv2a_run')}"])
    assert code == 0, printout[-3000:]
    return run_dir, printout


def cfg_of(args):
    cfg = settings.default_config(main)
    with contextlib.redirect_stdout(io.StringIO()):
        settings.parse_args(args, cfg)
    return cfg


# -----------------------------------------------------------------------------
# the oracle, written out


def head_by_hand(path, x):
    """The checkpoint's head on [N, 768]: LayerNorm, Linear, GELU, Linear, L2 norm, from its tensors alone."""
    t = load_file(str(path))
    x = F.layer_norm(x.float(), (x.shape[-1],), t["image_head.norm.weight"], t["image_head.norm.bias"], eps=1e-5)
    h = F.gelu(x @ t["image_head.fc1.weight"].T + t["image_head.fc1.bias"])
    return F.normalize(h @ t["image_head.fc2.weight"].T + t["image_head.fc2.bias"], dim=-1)


@pytest.fixture(scope="module")
def plan_embeddings():
    """CLIP(I_0), CLIP(I_1) and E_final of the smoke settings from the plan's formulas (test_main_wiring's)."""
    cfg = cfg_of(ARGS)
    prompts = inputs.parse_prompts(cfg["SAM2_PROMPTS"])
    t0, t1 = clip_tokens(IMAGES[0]), clip_tokens(IMAGES[1])
    M_neg, M_pos = (sam2_mask(img, p.points, p.labels) for img, p in zip(IMAGES, prompts))
    m_neg, m_pos = patch_weights(M_neg, cfg["MASK_THRESHOLD"]), patch_weights(M_pos, cfg["MASK_THRESHOLD"])
    bg = t1[1:][((1 - m_neg) * (1 - m_pos)) > 0.5].double().mean(0)
    suppress = svd_embedding(t0[0], t0[1:], m_neg, cfg["SVD_K"], cfg["SVD_ALPHA"])
    boost = svd_embedding(t1[0], t1[1:], m_pos, cfg["SVD_K"], cfg["SVD_BETA"])
    mix = (cfg["MIX_DIRECT"] * t1[0].double() + cfg["MIX_BETA"] * boost + cfg["MIX_ALPHA"] * suppress
           + cfg["MIX_GAMMA"] * bg / bg.norm())
    return t0[0], t1[0], (mix / mix.norm()).float()


@pytest.fixture(scope="module")
def expected(checkpoints, plan_embeddings):
    """What step 7 must give with the smoke settings: the head vectors [3, 512] and, per seed, AudioLDM's three
    audios on them drawn with that seed alone (one call per seed)."""
    cfg = cfg_of(ARGS)
    want = head_by_hand(checkpoints["clip-head"], torch.stack(plan_embeddings))
    pipe = aldm.tiny_audioldm()
    audio = {seed: aldm.emb_to_audio(pipe, want, duration=cfg["DURATION"], steps=cfg["DDIM_STEPS"],
                                     guidance=cfg["GUIDANCE"], seed=seed) for seed in settings.eval_seeds(cfg)}
    return want, audio


def row_problems(audio, claps, seeds, expected):
    """Every way step 7's rows disagree with AudioLDM on head(CLIP(I_0)), head(CLIP(I_1)), head(E_final) per seed."""
    want, want_audio = expected
    problems = []
    for s, seed in enumerate(seeds):
        for r, name in enumerate(audio_io.AUDIO_NAMES):
            if not close(claps[s, r], want[r], atol=1e-5):
                problems.append(f"seed {seed}: row {name}'s CLAP-space vector is not the head of its CLIP embedding")
            if not close(audio[s, r], want_audio[seed][r], atol=1e-4):
                problems.append(f"seed {seed}: {name}'s audio is not AudioLDM on its head vector with seed {seed}")
    return problems


@pytest.fixture(scope="module")
def step7_inputs(ciap_run, checkpoints):
    """Step 7's inputs as the CIAP run had them (its tokens and E_final), its settings and one set of models for
    every call of step 7 on its own."""
    run_dir, _ = ciap_run
    cfg = cfg_of([*ARGS, f"--CIAP_CHECKPOINT={checkpoints['clip-head']}"])
    e = torch.load(run_dir / "embeddings.pt", weights_only=True)
    tok = {k: e[k] for k in ("cls_0", "patches_0", "cls_1", "patches_1")}
    return tok, e["emb_final"][None], loader.Models(cfg), cfg


# -----------------------------------------------------------------------------
# a run, against the oracle and against the SSV2A back end


def test_the_ciap_rows_are_audioldm_on_the_head_of_clip_and_e_final(ciap_run, expected):
    run_dir, _ = ciap_run
    cfg = cfg_of(ARGS)
    e = torch.load(run_dir / "embeddings.pt", weights_only=True)
    seeds = settings.eval_seeds(cfg)
    assert e["seeds"].tolist() == seeds
    problems = row_problems(e["audio"].numpy(), e["claps"], seeds, expected)
    assert problems == [], "\n".join(problems)
    # and the wavs are those rows (16-bit)
    for s, seed in enumerate(seeds):
        for r, name in enumerate(audio_io.AUDIO_NAMES):
            wav, _ = sf.read(run_dir / audio_io.wav_name(name, seed, seeds[0]), dtype="float32")
            assert close(wav, np.clip(e["audio"][s, r].numpy(), -1, 1), atol=2 / 32767), (name, seed)


def test_a_ciap_run_writes_what_an_ssv2a_run_writes_and_records_its_back_end(ciap_run, ssv2a_run, checkpoints):
    (c_dir, c_out), (s_dir, s_out) = ciap_run, ssv2a_run
    assert sorted(p.name for p in c_dir.iterdir()) == sorted(p.name for p in s_dir.iterdir())
    c_res, s_res = (json.loads((d / "results.json").read_text()) for d in (c_dir, s_dir))
    assert c_res.keys() == s_res.keys() and c_res["audios"] == s_res["audios"]
    c_rec, s_rec = (json.loads((d / "run.json").read_text()) for d in (c_dir, s_dir))
    assert c_rec["status"] == s_rec["status"] == "finished"
    assert c_rec["verdict"].keys() == s_rec["verdict"].keys()
    path = checkpoints["clip-head"]
    assert c_rec["back_end"] == "ciap" and s_rec["back_end"] == "ssv2a" and "ciap_checkpoint" not in s_rec
    assert c_rec["ciap_checkpoint"] == {"path": str(path), "bytes": path.stat().st_size,
                                        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                                        "describe": ciap.describe(ciap.read_ciap(path)[1])}
    assert c_rec["config"]["CIAP_CHECKPOINT"] == str(path)
    # no YOLO and no SSV2A loaded for CIAP, and the printout says so
    assert set(c_rec["model_load_s"]) == {"clip", "sam2", "ciap", "aldm", "ast", "clap"}
    assert {"yolo", "ssv2a"} <= set(s_rec["model_load_s"])
    assert c_rec["detections"] == [[], []]
    assert "audio via CIAP" in c_out and "YOLO detection is not used" in c_out and "audio via CIAP" not in s_out
    # steps 1-6 do not depend on the back end; step 7's rows do
    c_e, s_e = (torch.load(d / "embeddings.pt", weights_only=True) for d in (c_dir, s_dir))
    assert torch.equal(c_e["emb_final"], s_e["emb_final"]) and torch.equal(c_e["M_pos"], s_e["M_pos"])
    assert not torch.allclose(c_e["claps"], s_e["claps"])
    for line in ("HEADLINE: method's own effect", "Edit followed:"):
        assert line in c_out and line in s_out


def test_a_sweep_and_a_manifest_run_on_the_ciap_back_end(checkpoints, plan_embeddings, tmp_path):
    path = checkpoints["clip-head"]
    code, printout, run_dir = run_main([*FAST, f"--CIAP_CHECKPOINT={path}", f"--OUTPUT_DIR={tmp_path / 'sweep'}",
                                        "--sweep", "SVD_K=1,5"])
    assert code == 0, printout[-3000:]
    with open(run_dir / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(row["SVD_K"]) for row in rows if row["seed role"] == "chose") == [1, 5]
    assert {row["seed role"] for row in rows} == {"chose", "confirmed"}   # the winner rerun on fresh seeds
    e = torch.load(run_dir / "embeddings.pt", weights_only=True)
    (claps,) = e["claps"].values()   # one group: [seeds, 2 baselines + 2 settings, 512]
    clip_0, clip_1, _ = plan_embeddings
    want = head_by_hand(path, torch.cat([torch.stack([clip_0, clip_1]), e["emb_final"]]))
    assert claps.shape == (1, 4, 512) and close(claps[0], want, atol=1e-5)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["back_end"] == "ciap" and "yolo" not in record["model_load_s"]

    manifest = tmp_path / "pairs.csv"
    manifest.write_text("original,edited,remove,remove_x,remove_y,add,add_x,add_y,kept\n"
                        f"{IMAGES[0]},{IMAGES[1]},cat,448,330,astronaut,410;370,130;460,rocket\n")
    code, printout, run_dir = run_main([*FAST, f"--CIAP_CHECKPOINT={path}", f"--OUTPUT_DIR={tmp_path / 'manifest'}",
                                        "--manifest", str(manifest)])
    assert code == 0, printout[-3000:]
    pair = json.loads((run_dir / "pair001_cat-to-astronaut" / "run.json").read_text())
    assert pair["status"] == "finished" and pair["back_end"] == "ciap"
    assert pair["ciap_checkpoint"]["path"] == str(path)
    with open(run_dir / "pairs.csv") as f:
        assert [row["status"] for row in csv.DictReader(f)] == ["finished"]


def test_the_browser_bench_runs_on_the_ciap_back_end(checkpoints, tmp_path):
    """app.py's engine started with --CIAP_CHECKPOINT (no browser: test_app.py drives the page): its run and its
    reproduce command keep the back end."""
    import app
    path = checkpoints["clip-head"]
    with contextlib.redirect_stdout(io.StringIO()):
        bench = app.Bench([*FAST, f"--CIAP_CHECKPOINT={path}", f"--OUTPUT_DIR={tmp_path}"])
    argv, command = app.reproduce_command(bench.cfg, {})
    assert f"--CIAP_CHECKPOINT={path}" in argv
    with contextlib.redirect_stdout(io.StringIO()):
        run_cfg, mode = app.run_config(argv)
        run_dir, _ = bench.run(run_cfg, command, mode=mode)
    record = json.loads((Path(run_dir) / "run.json").read_text())
    assert record["status"] == "finished" and record["back_end"] == "ciap" and record["command"] == command


# -----------------------------------------------------------------------------
# refusals, before any model loads


def with_metadata(src, dst, **changes):
    """A copy of a checkpoint with metadata entries changed (what another training would have written there)."""
    from safetensors import safe_open
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    save_file(load_file(str(src)), str(dst), {**meta, **{k: json.dumps(v) for k, v in changes.items()}})
    return dst


def refusal(args, tmp_path, monkeypatch, capsys, module=main):
    """(exit code, stderr) of a run that must stop before any model; None when a model was about to load."""
    def no_models(*a, **k):
        raise AssertionError("a model was loaded")
    monkeypatch.setattr(loader.Models, "__init__", no_models)
    inputs._check_ciap_file.cache_clear()   # a mis-wired check may have let a file through into the cache
    out = tmp_path / "out"
    capsys.readouterr()
    try:
        code = module.main([*args, f"--OUTPUT_DIR={out}"])
    except AssertionError:
        return None
    assert not out.exists() or not any(out.iterdir()), "a run folder was made"
    return code, capsys.readouterr().err


def refusal_cases(checkpoints, tmp_path):
    smoke = checkpoints["clip-head"]
    real = with_metadata(smoke, tmp_path / "real.safetensors", image_model=ciap.REAL_CLIP_NAME,
                         audio_model="laion-clap 630k-audioset-best.pt")
    return {
        "a ResNet18 checkpoint": (["--smoke", f"--CIAP_CHECKPOINT={checkpoints['resnet18']}"],
                                  "is a ResNet18 CIAP checkpoint"),
        "a scratch-target checkpoint": (["--smoke", f"--CIAP_CHECKPOINT={checkpoints['scratch']}"],
                                        "trained against its own audio encoder"),
        "a missing file": (["--smoke", f"--CIAP_CHECKPOINT={tmp_path / 'nope.safetensors'}"],
                           "CIAP checkpoint not found"),
        "a file that is no CIAP checkpoint": (["--smoke", f"--CIAP_CHECKPOINT={IMAGES[0]}"],
                                              "not a readable safetensors file"),
        "a folder": (["--smoke", f"--CIAP_CHECKPOINT={IMAGES[0].parent}"], "is a folder"),
        "a smoke checkpoint with the real models": ([f"--CIAP_CHECKPOINT={smoke}"],
                                                    "was trained on the features of CLIP 'tiny random CLIP"),
        "a real-model checkpoint with the smoke models": (
            ["--smoke", f"--CIAP_CHECKPOINT={real}"],
            "but 'tiny random CLIP (seed 0)' is used here"),
    }


@pytest.mark.parametrize("case", ["a ResNet18 checkpoint", "a scratch-target checkpoint", "a missing file",
                                  "a file that is no CIAP checkpoint", "a folder", "a smoke checkpoint with the real models",
                                  "a real-model checkpoint with the smoke models"])
def test_a_bad_checkpoint_is_refused_before_any_model_loads(case, checkpoints, tmp_path, monkeypatch, capsys):
    args, words = refusal_cases(checkpoints, tmp_path)[case]
    result = refusal(args, tmp_path, monkeypatch, capsys)
    assert result is not None, f"{case}: a model began to load"
    code, err = result
    assert code == 2 and "CIAP_CHECKPOINT" in err and words in err, err
    assert len(err.strip().splitlines()) <= 2, err   # 'Error: ...' and the message: one line of reason


def test_a_bad_checkpoint_refuses_a_manifest_once(checkpoints, tmp_path, monkeypatch, capsys):
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("original,edited,remove,remove_x,remove_y,add,add_x,add_y\n"
                        f"{IMAGES[0]},{IMAGES[1]},cat,448,330,astronaut,410,130\n")
    result = refusal(["--smoke", f"--CIAP_CHECKPOINT={checkpoints['resnet18']}", "--manifest", str(manifest)],
                     tmp_path, monkeypatch, capsys)
    assert result is not None and result[0] == 2 and "ResNet18 CIAP checkpoint" in result[1], result


def test_string_setting_and_home_expansion(checkpoints):
    cfg = cfg_of(["--smoke", "--CIAP_CHECKPOINT=~/ciap.safetensors"])
    assert cfg["CIAP_CHECKPOINT"] == str(Path.home() / "ciap.safetensors")
    cfg["CIAP_CHECKPOINT"] = 3
    with pytest.raises(settings.UserError, match="CIAP_CHECKPOINT=3 must be the path"):
        settings.check_settings(cfg)


# -----------------------------------------------------------------------------
# the test of the test: mis-wired copies, each caught


# step 7 on its own (its inputs from the CIAP run): a mis-wired row shows in its audio and CLAP-space rows
STEP7_MUTANTS = {
    "the baselines swapped": (('torch.cat([torch.stack([tok["cls_0"], tok["cls_1"]])',
                               'torch.cat([torch.stack([tok["cls_1"], tok["cls_0"]])'), "main.py"),
    "plain CLIP of I_1 in E_final's row": (('emb_finals.to(tok["cls_0"])])', 'tok["cls_1"].expand_as(emb_finals)])'),
                                           "main.py"),
    "SSV2A's remixer used despite the constant": (('if cfg["CIAP_CHECKPOINT"]:', "if False:"), "main.py"),
    "a seed's rows drawn with the batch's first seed": (("seed=row_seeds, sampler", "seed=row_seeds[0], sampler"),
                                                        "main.py"),
    "the rows not passed through the head": (("claps = head(clips).float().cpu()",
                                              "claps = clips[:, :512].float().cpu()"), "model/ciap.py"),
}


@pytest.mark.parametrize("name", list(STEP7_MUTANTS))
def test_a_miswired_ciap_step7_is_caught(name, step7_inputs, expected, monkeypatch):
    edit, filename = STEP7_MUTANTS[name]
    tok, emb_finals, models, cfg = step7_inputs
    plan = main
    if filename == "main.py":
        plan = mutant(edit)
    else:   # main imports model.ciap's function when step 7 runs: the mis-wired one is found there
        monkeypatch.setattr(ciap, "clips_to_audio", mutant(edit, filename).clips_to_audio)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            audio, claps, _, _ = plan.step7_audio(IMAGES, tok, emb_finals, models, cfg)
    finally:
        sys.modules.pop("main_mutant", None)
        sys.modules.pop("ciap_mutant", None)
    assert row_problems(audio, claps, settings.eval_seeds(cfg), expected), f"the row check missed: {name}"


def test_the_unbroken_step7_passes_the_same_check(step7_inputs, expected):
    """The control of the mutants above: step 7 called the same way, unbroken, has no problem."""
    tok, emb_finals, models, cfg = step7_inputs
    with contextlib.redirect_stdout(io.StringIO()):
        audio, claps, _, _ = main.step7_audio(IMAGES, tok, emb_finals, models, cfg)
    assert row_problems(audio, claps, settings.eval_seeds(cfg), expected) == []


# the checks before any model loads, mis-wired
REFUSAL_MUTANTS = {
    "the checkpoint checked without the run's model names": (
        ('ciap.check_ciap_file(path, "clip-head", *run_model_names(smoke))',
         'ciap.check_ciap_file(path, "clip-head")'),
        "inputs.py", "a smoke checkpoint with the real models"),
    "the checkpoint not checked at all": (
        ('    if cfg["CIAP_CHECKPOINT"]:\n        check_ciap_checkpoint(',
         '    if False:\n        check_ciap_checkpoint('),
        "inputs.py", "a ResNet18 checkpoint"),
    "the scratch target let through": (('if encoder == "clip-head" and meta["target"] != "clap":',
                                        'if encoder == "clip-head" and meta["target"] == "nothing":'),
                                       "model/ciap.py", "a scratch-target checkpoint"),
}


@pytest.mark.parametrize("name", list(REFUSAL_MUTANTS))
def test_a_miswired_refusal_is_caught(name, checkpoints, tmp_path, monkeypatch, capsys):
    edit, filename, case = REFUSAL_MUTANTS[name]
    args, words = refusal_cases(checkpoints, tmp_path)[case]
    if filename == "inputs.py":
        with installed_mutant(edit, filename) as plan:
            result = refusal(args, tmp_path, monkeypatch, capsys, plan)
    else:
        monkeypatch.setattr(ciap, "check_ciap_meta", mutant(edit, filename).check_ciap_meta)
        try:
            result = refusal(args, tmp_path, monkeypatch, capsys)
        finally:
            sys.modules.pop("ciap_mutant", None)
    assert result is None or words not in result[1], f"the refusal test missed: {name}"
