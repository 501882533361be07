"""main.py: command line, input checks, and the whole pipeline (run, sweep, manifest) with the smoke models."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import main

ROOT = Path(__file__).resolve().parent.parent


# -----------------------------------------------------------------------------
# command line


def test_overrides_are_typed_printed_and_case_insensitive(capsys):
    cfg = main.default_config()
    mode, _ = main.parse_args(["--svd_k=8", "--SVD_ALPHA=1", "--original=a.jpg", "--KEPT_SOURCES=['dog']"], cfg)
    assert mode == "run"
    assert cfg["SVD_K"] == 8 and cfg["SVD_ALPHA"] == 1.0 and isinstance(cfg["SVD_ALPHA"], float)
    assert cfg["ORIGINAL"] == "a.jpg" and cfg["KEPT_SOURCES"] == ["dog"]
    out = capsys.readouterr().out
    assert "Overriding: SVD_K = 8" in out and "Overriding: ORIGINAL = 'a.jpg'" in out
    assert main.SVD_K == 5   # the module's constants are untouched


@pytest.mark.parametrize("arg, match", [("--SVD_K=2.5", "SVD_K takes a int"), ("--NOPE=1", "unknown setting --NOPE"),
                                        ("--SMOKE=1", "SMOKE takes a bool"), ("stray", "unknown argument")])
def test_bad_overrides_are_user_errors(arg, match):
    with pytest.raises(main.UserError, match=match):
        main.parse_args([arg], main.default_config())


def test_smoke_settings_then_explicit_overrides_win():
    cfg = main.default_config()
    main.parse_args(["--DDIM_STEPS=7", "--smoke"], cfg)
    assert cfg["SMOKE"] is True and cfg["CYCLE_ITS"] == main.SMOKE_SETTINGS["CYCLE_ITS"] and cfg["DDIM_STEPS"] == 7


def test_sweep_grid_from_the_command_line():
    cfg = main.default_config()
    mode, _ = main.parse_args(["--sweep", "SVD_K=1,5", "svd_alpha=0.1,0.3", "--SEED=3"], cfg)
    assert mode == "sweep" and cfg["SEED"] == 3
    assert cfg["SWEEP"] == {"SVD_K": [1, 5], "SVD_ALPHA": [0.1, 0.3]}
    settings = main.sweep_settings(cfg["SWEEP"])
    assert len(settings) == 4 and settings[1] == {"SVD_K": 1, "SVD_ALPHA": 0.3}
    with pytest.raises(main.UserError, match="cannot sweep CYCLE_ITS"):
        main.sweep_settings({"CYCLE_ITS": [1, 2]})
    with pytest.raises(main.UserError, match="SVD_K takes a int"):
        main.parse_args(["--sweep", "SVD_K=1,x"], main.default_config())


def test_help_lists_every_constant(capsys):
    assert main.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"--{k}=" in out for k in main.CONFIG_KEYS)


# -----------------------------------------------------------------------------
# inputs are checked before any model loads


@pytest.mark.parametrize("prompts, match", [
    ({"cat": {"x": 1, "y": 1}}, "exactly two entries"),
    ({"cat": {"x": [1, 2], "y": [1]}, "duck": {"x": 1, "y": 1}}, "same length"),
    ({"cat": {"x": 1, "y": 1, "labels": [0]}, "duck": {"x": 1, "y": 1}}, "no positive point"),
    ({"cat": {"x": 1, "y": 1, "labels": [2]}, "duck": {"x": 1, "y": 1}}, "labels must be 1"),
    ({"cat": {"y": 1}, "duck": {"x": 1, "y": 1}}, "needs 'x' and 'y'"),
])
def test_malformed_prompts(prompts, match):
    with pytest.raises(main.UserError, match=match):
        main.parse_prompts(prompts)


def test_point_outside_the_image_and_missing_image(tmp_path, capsys):
    code = main.main(["--smoke", f"--OUTPUT_DIR={tmp_path}",
                      "--SAM2_PROMPTS={'cat': {'x': 700, 'y': 10}, 'duck': {'x': 5, 'y': 5}}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "SAM2_PROMPTS['cat']: point (x=700, y=10) is outside" in err and "672 x 672" in err
    assert "verify_masks.py" in err
    assert main.main(["--smoke", f"--OUTPUT_DIR={tmp_path}", "--ORIGINAL=nope.jpg"]) == 2
    assert "image not found: nope.jpg" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []   # no run folder for a run that never started


def test_missing_checkpoints_are_all_listed_before_any_work(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants
    from model import checkpoints
    monkeypatch.setattr(checkpoints, "CHECKPOINT_DIR", tmp_path / "ckpts")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    code = main.main([f"--OUTPUT_DIR={tmp_path / 'out'}", "--DEVICE=cpu",
                      f"--CHECKPOINT_PATH={tmp_path / 'ckpts' / 'ssv2a.pth'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "7 checkpoint(s) missing; nothing was run" in err
    for name in ["ssv2a.pth", "ViT-L-14.pt", "sam2.1_hiera_large.pt", "yolov8x-oiv7.pt", "630k-audioset-best.pt",
                 "cvssp/audioldm-s-full-v2", "roberta-base", "drive.google.com", "python main.py --smoke"]:
        assert name in err, name
    assert not (tmp_path / "out").exists()


def test_eval_labels_from_names_and_constants():
    cfg = main.default_config()
    cfg.update(EVAL_LABELS={"cat": "a cat meowing", "bird": "birds singing"}, KEPT_SOURCES=["dog"])
    labels, removed, added, kept = main.eval_labels(cfg, "cat", "duck")
    assert labels == ["a cat meowing", "the sound of a duck", "the sound of a dog", "birds singing"]
    assert (removed, added, kept) == ("a cat meowing", "the sound of a duck", ["the sound of a dog"])


# -----------------------------------------------------------------------------
# the whole pipeline with the smoke models


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    assert main.main(["--smoke", f"--OUTPUT_DIR={out}"]) == 0
    (run_dir,) = out.iterdir()
    return run_dir


def test_smoke_run_writes_the_whole_run_folder(smoke_run):
    names = {p.name for p in smoke_run.iterdir()}
    expected = {"mask_remove_cat.png", "mask_add_astronaut.png", "baseline_original.wav", "baseline_edited.wav",
                "manipulated.wav", "embeddings.pt", "run.json", "results.json", "label_probs.png", "spectrograms.png"}
    assert expected <= names, expected - names
    assert smoke_run.name.endswith("_cat-to-astronaut_smoke")
    for png in smoke_run.glob("*.png"):
        assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_smoke_audio_is_three_finite_equal_length_wavs(smoke_run):
    lengths = set()
    for name in main.AUDIO_NAMES:
        audio, sr = sf.read(smoke_run / f"{name}.wav")
        assert sr == 16000 and np.isfinite(audio).all() and np.abs(audio).max() > 0
        lengths.add(len(audio))
    assert lengths == {int(main.SMOKE_SETTINGS["DURATION"] * 16000)}


def test_smoke_embeddings_have_the_plan_shapes_and_unit_norm(smoke_run):
    e = torch.load(smoke_run / "embeddings.pt", weights_only=True)
    assert e["patches_0"].shape == e["patches_1"].shape == (256, 768)
    assert e["m_neg"].shape == e["m_pos"].shape == (1, 256)
    assert e["M_neg"].shape == (1, 672, 672) and e["M_neg"].dtype == torch.bool
    assert e["slots"].shape == (3, 64, 768)
    assert torch.equal(e["slots"][2, 0], e["emb_final"])            # slot 0 of the manipulated row = E_final
    assert torch.equal(e["slots"][2, 1:], e["slots"][1, 1:])        # next to I_1's crops
    for name in ["cls_0", "cls_1", "emb_suppress", "emb_boost", "emb_bg", "emb_final"]:
        assert torch.isfinite(e[name]).all() and e[name].shape == (768,)
        assert math.isclose(float(e[name].norm()), 1.0, abs_tol=1e-5), name
    for name, clap in e["claps"].items():
        assert clap.shape == (512,) and math.isclose(float(clap.norm()), 1.0, abs_tol=1e-5), name


def test_smoke_run_json_is_complete(smoke_run):
    record = json.loads((smoke_run / "run.json").read_text())
    assert set(record["config"]) == set(main.CONFIG_KEYS)
    assert record["config"]["SMOKE"] is True and record["smoke"] is True
    assert record["seed"] == 42 and record["device"] == "cpu"
    assert record["images"]["original"].endswith("original.jpg")
    steps = ["step1_masks", "step2_clip_tokens", "step3_patch_weights", "step4_background", "step5_svd",
             "step6_mix", "step7_audio", "evaluation"]
    assert all(record["timings_s"][s] >= 0 for s in steps)
    assert record["svd"]["suppress"]["k_effective"] >= 1 and "no_op" in record["svd"]["boost"]
    assert len(record["detections"]) == 2
    assert set(record["outputs"]) >= {"manipulated.wav", "run.json", "results.json"}


def test_smoke_results_hold_probabilities_and_a_verdict(smoke_run):
    results = json.loads((smoke_run / "results.json").read_text())
    assert results["labels"][:3] == ["a cat meowing", "a person talking", "a rocket engine roaring"]
    for name in main.AUDIO_NAMES:
        assert math.isclose(sum(results["probs"][name]), 1.0, abs_tol=1e-5)
    assert isinstance(results["verdict"]["passed_all"], bool) and len(results["verdict"]["checks"]) >= 5


def test_a_second_run_gets_its_own_folder(smoke_run, tmp_path):
    first = main.new_run_dir(tmp_path, "x")
    second = main.new_run_dir(tmp_path, "x")
    assert first != second and first.is_dir() and second.is_dir()
    with pytest.raises(FileExistsError):
        main.write_json(smoke_run / "run.json", {})


def test_smoke_sweep_reuses_the_shared_work(tmp_path, capsys):
    assert main.main(["--smoke", f"--OUTPUT_DIR={tmp_path}", "--sweep", "SVD_K=1,3", "MIX_BETA=0.3,0.4"]) == 0
    out = capsys.readouterr().out
    assert out.count("=== STEP 1: SAM2 masks ===") == 1 and out.count("=== STEP 2: CLIP tokens ===") == 1
    assert out.count("=== STEP 5: SVD manipulation ===") == 4
    assert out.count("YOLO:") == 2   # I_0 and I_1 detected once each
    (run_dir,) = tmp_path.iterdir()
    rows = list(csv.DictReader(open(run_dir / "sweep.csv")))
    assert [(r["SVD_K"], r["MIX_BETA"]) for r in rows] == [("1", "0.3"), ("1", "0.4"), ("3", "0.3"), ("3", "0.4")]
    assert all(r["passed_all"] in ("True", "False") and r["target"] for r in rows)
    wavs = sorted(p.name for p in run_dir.glob("manipulated_*.wav"))
    assert wavs == ["manipulated_SVD_K-1_MIX_BETA-0.3.wav", "manipulated_SVD_K-1_MIX_BETA-0.4.wav",
                    "manipulated_SVD_K-3_MIX_BETA-0.3.wav", "manipulated_SVD_K-3_MIX_BETA-0.4.wav"]
    assert (run_dir / "sweep_heatmap.png").stat().st_size > 1000


def test_sweep_setting_gives_the_single_run_audio(tmp_path, smoke_run):
    # the sweep's default setting must reproduce the single run's manipulated audio: per-row seeding
    assert main.main(["--smoke", f"--OUTPUT_DIR={tmp_path}", "--sweep", "SVD_K=5"]) == 0
    (run_dir,) = tmp_path.iterdir()
    swept, _ = sf.read(run_dir / "manipulated_SVD_K-5.wav")
    single, _ = sf.read(smoke_run / "manipulated.wav")
    np.testing.assert_allclose(swept, single, atol=2 / 32768)   # within a 16-bit step or two


def test_smoke_manifest_skips_broken_rows(tmp_path, capsys):
    manifest = tmp_path / "pairs.csv"
    images = ROOT / "images"
    manifest.write_text(
        "original,edited,remove,remove_x,remove_y,add,add_x,add_y,kept\n"
        f"{images / 'original.jpg'},{images / 'edited.jpg'},cat,448,330,astronaut,410;370,130;460,rocket\n"
        f"{images / 'missing.jpg'},{images / 'edited.jpg'},cat,448,330,astronaut,410,130,rocket\n"
        f"{images / 'original.jpg'},{images / 'edited.jpg'},cat,9000,330,astronaut,410,130,rocket\n")
    out_dir = tmp_path / "out"
    assert main.main(["--smoke", f"--OUTPUT_DIR={out_dir}", "--manifest", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert "SKIPPED pair 2: image not found" in out and "SKIPPED pair 3" in out and "outside" in out
    (run_dir,) = out_dir.iterdir()
    table = list(csv.DictReader(open(run_dir / "pairs.csv")))
    assert [r["pair"] for r in table] == ["1"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completed"] == 1 and [s["pair"] for s in summary["skipped"]] == [2, 3]
    assert summary["metrics"]["target"]["n"] == 1 and "std" in summary["metrics"]["target"]
    assert (run_dir / table[0]["folder"] / "manipulated.wav").is_file()


def test_the_shipped_example_manifest_parses():
    rows = main.read_manifest(ROOT / "images" / "pairs.csv")
    cfg = main.pair_config(main.default_config(), rows[0], ROOT / "images")
    images, prompts = main.prepare_inputs(cfg)
    assert [p.name for p in images] == ["original.jpg", "edited.jpg"]
    assert prompts[1] == ("astronaut", [[410.0, 130.0], [370.0, 460.0]], [1, 1])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_one_is_a_clear_error(tmp_path, capsys):
    assert main.main([f"--OUTPUT_DIR={tmp_path}", "--DEVICE=cuda"]) == 2
    err = capsys.readouterr().err
    assert "DEVICE='cuda'" in err and "CUDA is not available" in err
    assert list(tmp_path.iterdir()) == []


def test_plan_helpers_agree_with_the_batched_step7():
    # generate_baseline_audio / manipulated_image_to_audio (the plan's helpers) run SSV2A one call at a time;
    # with I_1's own CLIP embedding in slot 0 the manipulated path must give I_1's baseline audio
    cfg = main.default_config()
    main.parse_args(["--smoke", "--DURATION=0.5", "--DDIM_STEPS=2"], cfg)
    models = main.Models(cfg)
    edited = ROOT / "images" / "edited.jpg"
    baseline = main.generate_baseline_audio([edited], models, cfg)
    cls_1 = main.step2_clip_tokens([ROOT / "images" / "original.jpg", edited], models)["cls_1"]
    manipulated = main.manipulated_image_to_audio(edited, cls_1, models, cfg)
    assert baseline.shape == (1, 8000) and manipulated.shape == (8000,)
    np.testing.assert_allclose(manipulated, baseline[0], atol=1e-5)
