"""main.py: command line, input checks, and the whole pipeline (run, sweep, manifest) with the smoke models."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import evaluation
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


@pytest.mark.parametrize("text", ['{"cat": {"union": true, "text": "a tabby cat"}, "duck": {"x": [1], "y": [2]}}',
                                  "{'cat': {'union': True, 'text': 'a tabby cat'}, 'duck': {'x': [1], 'y': [2]}}"])
def test_prompts_on_the_command_line_in_json_or_python(text, capsys):
    cfg = main.default_config()
    main.parse_args([f"--SAM2_PROMPTS={text}"], cfg)
    assert cfg["SAM2_PROMPTS"] == {"cat": {"union": True, "text": "a tabby cat"}, "duck": {"x": [1], "y": [2]}}
    removed, added = main.parse_prompts(cfg["SAM2_PROMPTS"])
    assert removed.union is True and removed.text == "a tabby cat" and added.points == [[1.0, 2.0]]


def test_json_words_read_as_python_constants_except_in_text_settings(capsys):
    cfg = main.default_config()
    main.parse_args(["--PIN_GLOBAL=true", "--RUN_NAME=true", "--SWEEP={\"PIN_GLOBAL\": [false, true]}", "--sweep"], cfg)
    assert cfg["PIN_GLOBAL"] is True and cfg["RUN_NAME"] == "true" and cfg["SWEEP"] == {"PIN_GLOBAL": [False, True]}
    assert main.literal('[null, true, {"a": false}]') == [None, True, {"a": False}]
    with pytest.raises(ValueError):
        main.literal("[nothing]")   # other bare names are still no literal
    with pytest.raises(main.UserError, match="SAM2_PROMPTS takes a dict"):
        main.parse_args(["--SAM2_PROMPTS={'cat': {'union': yes}}"], main.default_config())


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
    ({"cat": {"y": 1}, "duck": {"x": 1, "y": 1}}, "needs both 'x' and 'y'"),
    ({"cat": {"x": 1, "y": 1, "text": "a cat"}, "duck": {}}, "points and \\['text'\\]"),
    ({"cat": {"z": 1}, "duck": {}}, "unknown keys"),
    ({"cat": "a cat", "duck": {}}, "must be a dict"),
    ({"cat": {}, "cat ": {}}, "'cat' and 'cat ', which are one name"),
    ({"c" * 41: {}, "duck": {}}, "41 characters long"),
])
def test_malformed_prompts(prompts, match):
    with pytest.raises(main.UserError, match=match):
        main.parse_prompts(prompts)


def test_prompts_by_points_or_by_name():
    removed, added = main.parse_prompts({"cat": {"x": [1, 2], "y": [3, 3], "labels": [1, 0]}, "duck": {}})
    assert removed.points == [[1.0, 3.0], [2.0, 3.0]] and removed.labels == [1, 0] and not removed.by_text
    assert added.by_text and added.text == "a photo of a duck" and added.points is None and not added.union
    _, added = main.parse_prompts({"cat": {}, "duck": {"text": "a yellow rubber duck", "union": True}},
                                  text_prompt="an image of a {}")
    assert added.text == "a yellow rubber duck" and added.union


def test_name_search_uses_the_pair_and_the_kept_sources_as_distractors():
    """step1_masks on the example pair with the tiny SAM2 and CLIP: each object's prompts hold the other object
    and every kept source once ('an' before a vowel), never the object itself."""
    import mask
    cfg = {**main.default_config(), **main.SMOKE_SETTINGS, "SMOKE": True,
           "KEPT_SOURCES": ["rocket", "cat", "engine", "rocket"]}
    prompts = main.parse_prompts({"cat": {}, "astronaut": {}})
    images = [ROOT / "images" / "original.jpg", ROOT / "images" / "edited.jpg"]
    _, infos = main.step1_masks(images, prompts, main.Models(cfg), None, cfg)
    assert infos[0]["prompts"][:4] == ["a photo of a cat", "a photo of an astronaut", "a photo of a rocket",
                                       "a photo of an engine"]
    assert infos[1]["prompts"][:4] == ["a photo of an astronaut", "a photo of a cat", "a photo of a rocket",
                                       "a photo of an engine"]
    assert len(infos[0]["prompts"]) == len(set(infos[0]["prompts"])) == 4 + len(mask.BACKGROUND_PROMPTS)


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


@pytest.mark.parametrize("args, says", [
    (["--SVD_K=0"], "SVD_K=0 is out of range: it must be a whole number >= 1"),
    (["--SVD_ALPHA=-0.1"], "SVD_ALPHA=-0.1 is out of range: it must be a number in [0, 1000]"),
    (["--MIX_ALPHA=0", "--MIX_BETA=0", "--MIX_GAMMA=0", "--MIX_DIRECT=0"], "are all 0: give at least one"),
    (["--MIX_BETA=-0.4"], "MIX_BETA=-0.4 is out of range: it must be a weight in [0, 1]"),
    (["--DURATION=0"], "DURATION=0.0 is out of range: it must be seconds in [0.1, 60]"),
    (["--DURATION=inf"], "DURATION=inf is out of range"),
    (["--DDIM_STEPS=0"], "DDIM_STEPS=0 is out of range: it must be a whole number in 1-999"),
    (["--DDIM_STEPS=1000"], "DDIM_STEPS=1000 is out of range"),
    (["--CYCLE_ITS=-1"], "CYCLE_ITS=-1 is out of range: it must be a whole number >= 0"),
    (["--SEED=-1"], "SEED=-1 is out of range: it must be a whole number in 0-4294967295"),
    (["--EVAL_SEEDS=0"], "EVAL_SEEDS=0 is out of range"),
    (["--SAMPLER=euler"], "SAMPLER='euler' is not a sampler: it must be one of ddim, dpmpp-2m, dpmpp-2m-sde"),
    (["--RUN_NAME=" + "r" * 300], "RUN_NAME is 300 characters long: it becomes a folder name, at most 80"),
    (["--SAM2_PROMPTS={'" + "c" * 300 + "': {}, 'dog': {}}"], "is 300 characters long: names become file names"),
    (["--SWEEP={'SVD_K': [1, 5]}"], "--SWEEP=... is only read by a sweep: add --sweep"),
    (["--sweep", "SVD_K=1,0"], "sweep setting SVD_K-0: SVD_K=0 is out of range"),
    (["--TEXT_PROMPT=a photo"], "has no '{}' where the object's name goes"),
])
def test_every_bad_setting_is_one_line_before_any_model_loads(args, says, tmp_path, capsys):
    out = tmp_path / "outputs"
    assert main.main(["--smoke", f"--OUTPUT_DIR={out}", *args]) == 2
    captured = capsys.readouterr()
    assert says in captured.err, captured.err
    assert "Traceback" not in captured.err and "Loading every model" not in captured.out
    assert not out.exists()                                   # no run folder for a run that never started


def test_an_output_dir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "outputs").write_text("not a folder")
    assert main.main(["--smoke", f"--OUTPUT_DIR={tmp_path / 'outputs'}"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_a_point_outside_clips_centre_square_is_refused_before_any_model(tmp_path, capsys):
    from PIL import Image
    Image.new("RGB", (900, 300), (90, 120, 40)).save(tmp_path / "wide.png")   # CLIP sees x in [300, 600)
    out = tmp_path / "outputs"
    code = main.main(["--smoke", f"--OUTPUT_DIR={out}", f"--ORIGINAL={tmp_path / 'wide.png'}",
                      "--SAM2_PROMPTS={'cat': {'x': 50, 'y': 150}, 'astronaut': {'x': [410], 'y': [130]}}"])
    err = capsys.readouterr().err
    assert code == 2 and "outside the centre square that CLIP sees of wide.png (900 x 300: x in [300, 600)" in err
    assert not out.exists()


def test_object_names_with_paths_never_write_outside_the_run_folder(tmp_path):
    out = tmp_path / "deep" / "outputs"
    before = {p for p in tmp_path.rglob("*")}
    prompts = "{'a/../../../x': {'x': [448], 'y': [330]}, '/etc/Kätzchen 猫': {'x': [410], 'y': [130]}}"
    assert main.main(["--smoke", f"--OUTPUT_DIR={out}", f"--SAM2_PROMPTS={prompts}", "--EVAL_SEEDS=1",
                      "--KEPT_SOURCES=[]", "--AUDIO_CLASSES={}"]) == 0
    (run_dir,) = out.iterdir()
    assert run_dir.name.endswith("_a-x-to-etc-Katzchen_smoke")
    made = {p for p in tmp_path.rglob("*")} - before
    assert all(p == out or p == out.parent or run_dir in p.parents or p == run_dir for p in made), made
    assert {"mask_remove_a-x.png", "mask_add_etc-Katzchen.png"} <= {p.name for p in run_dir.iterdir()}
    record = json.loads((run_dir / "run.json").read_text())
    assert record["removed"] == "a/../../../x" and record["status"] == "finished"   # the name itself is kept


def test_a_failing_run_says_so_in_run_json_and_keeps_what_it_made(tmp_path, monkeypatch, capsys):
    import evaluation

    def broken(*args, **kwargs):
        raise RuntimeError("the classifier fell over")
    monkeypatch.setattr(evaluation, "evaluate_run", broken)
    out = tmp_path / "outputs"
    with pytest.raises(RuntimeError, match="fell over"):
        main.main(["--smoke", f"--OUTPUT_DIR={out}", "--EVAL_SEEDS=2"])
    (run_dir,) = out.iterdir()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "failed" and record["error"] == "RuntimeError: the classifier fell over"
    assert "fell over" in record["traceback"] and "ended" in record
    made = {"baseline_original.wav", "manipulated_seed43.wav", "embeddings.pt", "mask_remove_cat.png"}
    assert made <= set(record["outputs"]) and made <= {p.name for p in run_dir.iterdir()}
    assert record["timings_s"]["step7_audio"] > 0 and record["svd"]["boost"]["k_effective"] == 5


def test_an_interrupted_run_says_so_in_run_json(tmp_path, monkeypatch, capsys):
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(main, "step5_svd", ctrl_c)
    out = tmp_path / "outputs"
    assert main.main(["--smoke", f"--OUTPUT_DIR={out}"]) == 130
    assert "Interrupted" in capsys.readouterr().err
    (run_dir,) = out.iterdir()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "interrupted" and "mask_remove_cat.png" in record["outputs"]
    assert "step1_masks" in record["timings_s"]


def test_missing_checkpoints_are_all_listed_before_any_work(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants
    from model import checkpoints
    monkeypatch.setattr(checkpoints, "CHECKPOINT_DIR", tmp_path / "ckpts")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    code = main.main([f"--OUTPUT_DIR={tmp_path / 'out'}", "--DEVICE=cpu",
                      f"--CHECKPOINT_PATH={tmp_path / 'ckpts' / 'ssv2a.pth'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "8 checkpoint(s) missing; nothing was run" in err
    for name in ["ssv2a.pth", "ViT-L-14.pt", "sam2.1_hiera_large.pt", "yolov8x-oiv7.pt", "630k-audioset-best.pt",
                 "cvssp/audioldm-s-full-v2", "roberta-base", "MIT/ast-finetuned-audioset-10-10-0.4593",
                 "drive.google.com", "python main.py --smoke"]:
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


SEEDS = [42, 43, 44]   # EVAL_SEEDS = 3 from SEED = 42


def test_smoke_run_writes_the_whole_run_folder(smoke_run):
    names = {p.name for p in smoke_run.iterdir()}
    expected = {"mask_remove_cat.png", "mask_add_astronaut.png", "embeddings.pt", "run.json", "results.json",
                "scores.png", "spectrograms.png"}
    expected |= {main.wav_name(n, s, 42) for n in main.AUDIO_NAMES for s in SEEDS}
    assert expected <= names, expected - names
    assert {"baseline_original.wav", "manipulated_seed43.wav", "baseline_edited_seed44.wav"} <= names
    assert smoke_run.name.endswith("_cat-to-astronaut_smoke")
    for png in smoke_run.glob("*.png"):
        assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_smoke_audio_is_finite_equal_length_wavs_for_every_seed(smoke_run):
    lengths = set()
    for name in main.AUDIO_NAMES:
        for seed in SEEDS:
            audio, sr = sf.read(smoke_run / main.wav_name(name, seed, 42))
            assert sr == 16000 and np.isfinite(audio).all() and np.abs(audio).max() > 0
            lengths.add(len(audio))
    assert lengths == {int(main.SMOKE_SETTINGS["DURATION"] * 16000)}
    # seeds are different draws: the same audio row differs between seeds
    a, _ = sf.read(smoke_run / "manipulated.wav")
    b, _ = sf.read(smoke_run / "manipulated_seed43.wav")
    assert np.abs(a - b).max() > 1e-3


def test_smoke_embeddings_have_the_plan_shapes_and_unit_norm(smoke_run):
    e = torch.load(smoke_run / "embeddings.pt", weights_only=True)
    assert e["patches_0"].shape == e["patches_1"].shape == (256, 768)
    assert e["m_neg"].shape == e["m_pos"].shape == (1, 256)
    assert e["M_neg"].shape == (1, 672, 672) and e["M_neg"].dtype == torch.bool
    assert e["slots"].shape == (3, 64, 768)
    assert torch.equal(e["slots"][2, 0], e["emb_final"])            # slot 0 of the manipulated row = E_final
    assert torch.equal(e["slots"][2, 1:], e["slots"][1, 1:])        # next to I_1's crops
    assert e["seeds"].tolist() == SEEDS and e["audio_rows"] == list(main.AUDIO_NAMES)
    for name in ["cls_0", "cls_1", "emb_suppress", "emb_boost", "emb_bg", "emb_final"]:
        assert torch.isfinite(e[name]).all() and e[name].shape == (768,)
        assert math.isclose(float(e[name].norm()), 1.0, abs_tol=1e-5), name
    assert e["claps"].shape == (3, 3, 512)
    torch.testing.assert_close(e["claps"].norm(dim=-1), torch.ones(3, 3))


def test_smoke_run_json_is_complete_and_finished(smoke_run):
    record = json.loads((smoke_run / "run.json").read_text())
    assert record["status"] == "finished" and record["started"] <= record["ended"]
    assert set(record["config"]) == set(main.CONFIG_KEYS)
    assert record["config"]["SMOKE"] is True and record["smoke"] is True
    assert record["seed"] == 42 and record["seeds"] == SEEDS and record["device"] == "cpu"
    assert record["images"]["original"].endswith("original.jpg")
    assert record["sampler"] == {"name": "ddim", "steps": 4}
    steps = ["step1_masks", "step2_clip_tokens", "step3_patch_weights", "step4_background", "step5_svd",
             "step6_mix", "step7_audio", "evaluation"]
    assert set(steps) <= set(record["timings_s"])
    assert set(record["model_load_s"]) == set(main.Models.NAMES)
    assert record["svd"]["suppress"]["k_effective"] >= 1 and "no_op" in record["svd"]["boost"]
    assert len(record["detections"]) == 2
    assert record["masks"]["removed"]["points"] == [[448.0, 330.0]]
    assert set(record["outputs"]) >= {"manipulated.wav", "run.json", "results.json", "manipulated_seed44.wav"}
    reach = record["e_final_reach"]
    assert len(reach["cosine_distance_to_baseline_edited"]) == 3 and reach["mean_to_baseline_edited"] > 0
    results = json.loads((smoke_run / "results.json").read_text())
    assert record["verdict"]["headline"] == results["headline"]
    assert record["verdict"]["method_effect"] == {"audioset": results["method_effect"]["classifier"]["status"],
                                                  "clap": results["method_effect"]["clap"]["status"]}


def test_smoke_results_hold_both_scorers_per_seed_scores_and_intervals(smoke_run):
    results = json.loads((smoke_run / "results.json").read_text())
    assert results["seeds"] == SEEDS and results["sources"] == ["cat", "astronaut", "rocket"]
    classes = results["scores"]["classifier"]["classes"]
    assert classes == {k: main.AUDIO_CLASSES[k] for k in ["cat", "astronaut", "rocket"]}
    for scorer in ("classifier", "clap"):
        per_seed = results["scores"][scorer]["per_seed"]
        assert set(per_seed) == {"cat", "astronaut", "rocket"}
        assert all(len(v) == 3 for by_audio in per_seed.values() for v in by_audio.values())
    assert results["scores"]["clap"]["labels"][:3] == ["a cat meowing", "a person talking", "a rocket engine roaring"]
    for name in main.AUDIO_NAMES:
        for row in results["scores"]["clap"]["all_labels_per_seed"][name]:
            assert math.isclose(sum(row), 1.0, abs_tol=1e-5)
    checks = {"added_increased": "astronaut", "removed_decreased": "cat", "kept_within_tolerance:rocket": "rocket"}
    for question, base in [("method_effect", "baseline_edited"), ("edit_followed", "baseline_original")]:
        for view in ("classifier", "clap"):
            v = results[question][view]
            assert set(v["checks"]) == set(checks) and v["status"] in evaluation.STATUSES
            per_seed = results["scores"][view]["per_seed"]
            for name, source in checks.items():   # each check is manipulated - its own baseline, per seed
                expected = np.subtract(per_seed[source]["manipulated"], per_seed[source][base])
                assert v["checks"][name]["deltas"] == pytest.approx(expected.tolist(), abs=1e-12)
    # smoke models move probabilities by ~1e-6: below the floor, never a PASS of an up/down check
    for question in ("method_effect", "edit_followed"):
        for view in ("classifier", "clap"):
            for name in ("added_increased", "removed_decreased"):
                assert results[question][view]["checks"][name]["status"] == "no effect"
    assert results["e_final_reach"]["what"].startswith("1 - cos")


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
    assert sorted((r["SVD_K"], r["MIX_BETA"]) for r in rows) == [("1", "0.3"), ("1", "0.4"), ("3", "0.3"), ("3", "0.4")]
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    assert [float(r["effect audioset contrast mean"]) for r in rows] == sorted(
        (float(r["effect audioset contrast mean"]) for r in rows), reverse=True)
    assert all(r["effect audioset status"] in evaluation.STATUSES and r["headline scorer"] == "audioset" for r in rows)
    # no column mixes the scorers: each verdict column names its question and its scorer
    verdict_cols = [c for c in rows[0] if c.endswith((" mean", " status", " ci_low", " ci_high", " fraction_holds"))]
    assert verdict_cols and all(c.split()[0] in ("effect", "edit") and c.split()[1] in ("audioset", "clap")
                                for c in verdict_cols)
    wavs = sorted(p.name for p in run_dir.glob("manipulated_*.wav") if "_seed" not in p.name)
    assert wavs == ["manipulated_SVD_K-1_MIX_BETA-0.3.wav", "manipulated_SVD_K-1_MIX_BETA-0.4.wav",
                    "manipulated_SVD_K-3_MIX_BETA-0.3.wav", "manipulated_SVD_K-3_MIX_BETA-0.4.wav"]
    assert len(list(run_dir.glob("manipulated_*_seed4[34].wav"))) == 8     # every setting, every seed
    assert (run_dir / "sweep_heatmap.png").stat().st_size > 1000
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"


def test_sweep_setting_gives_the_single_run_audio(tmp_path, smoke_run):
    # the sweep's default setting must reproduce the single run's manipulated audio: per-row seeding
    assert main.main(["--smoke", f"--OUTPUT_DIR={tmp_path}", "--sweep", "SVD_K=5"]) == 0
    (run_dir,) = tmp_path.iterdir()
    for seed in SEEDS:
        swept, _ = sf.read(run_dir / main.wav_name("manipulated_SVD_K-5", seed, 42))
        single, _ = sf.read(smoke_run / main.wav_name("manipulated", seed, 42))
        np.testing.assert_allclose(swept, single, atol=2 / 32768)   # within a 16-bit step or two


def test_smoke_manifest_checks_every_row_first_and_summarises_what_each_pair_has(tmp_path, capsys):
    manifest = tmp_path / "pairs.csv"
    images = ROOT / "images"
    manifest.write_text(
        "original,edited,remove,remove_x,remove_y,add,add_x,add_y,kept\n"
        f"{images / 'original.jpg'},{images / 'edited.jpg'},cat,448,330,astronaut,410;370,130;460,rocket\n"
        f"{images / 'missing.jpg'},{images / 'edited.jpg'},cat,448,330,astronaut,410,130,rocket\n"
        f"{images / 'original.jpg'},{images / 'edited.jpg'},cat,9000,330,astronaut,410,130,rocket\n"
        f"{images / 'original.jpg'},{images / 'edited.jpg'},cat,448,330,astronaut,410,130,launch pad\n")
    out_dir = tmp_path / "out"
    assert main.main(["--smoke", f"--OUTPUT_DIR={out_dir}", "--EVAL_SEEDS=2", "--manifest", str(manifest)]) == 0
    out = capsys.readouterr().out
    # broken rows are reported before any model loads
    assert out.index("SKIPPED pair 2") < out.index("Loading every model")
    assert "image not found" in out and "SKIPPED pair 3" in out and "outside" in out
    (run_dir,) = out_dir.iterdir()
    table = list(csv.DictReader(open(run_dir / "pairs.csv")))
    # every row is in the table with its status; the metrics are over the finished ones
    assert [(r["pair"], r["status"]) for r in table] == [("1", "finished"), ("2", "skipped"), ("3", "skipped"),
                                                        ("4", "finished")]
    assert "image not found" in table[1]["error"]
    table = [r for r in table if r["status"] == "finished"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completed"] == 2 and [s["pair"] for s in summary["skipped"]] == [2, 3]
    metrics = summary["metrics"]
    assert metrics["effect audioset contrast mean"]["n"] == 2 and "std" in metrics["effect audioset contrast mean"]
    assert sum(summary["statuses"]["headline"].values()) == 2
    # rows that name different kept sources: each kept check is summarised over the pairs that have it
    assert metrics["effect audioset kept_within_tolerance:rocket mean"]["n"] == 1
    assert metrics["effect clap kept_within_tolerance:launch pad mean"]["n"] == 1
    assert (run_dir / table[0]["folder"] / "manipulated.wav").is_file()
    assert json.loads((run_dir / table[1]["folder"] / "run.json").read_text())["status"] == "finished"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"


def test_the_shipped_example_manifest_parses():
    rows = main.read_manifest(ROOT / "images" / "pairs.csv")
    cfg = main.pair_config(main.default_config(), rows[0], ROOT / "images")
    images, prompts, notes = main.prepare_inputs(cfg)
    assert [p.name for p in images] == ["original.jpg", "edited.jpg"] and notes == []
    assert (prompts[1].name, prompts[1].points, prompts[1].labels) == ("astronaut", [[410.0, 130.0], [370.0, 460.0]],
                                                                       [1, 1])


def test_manifest_rows_with_empty_coordinates_find_the_object_by_name():
    row = {"original": "original.jpg", "edited": "edited.jpg", "remove": "cat", "remove_x": "", "remove_y": "",
           "add": "astronaut", "add_x": "410", "add_y": "130"}
    cfg = main.pair_config(main.default_config(), row, ROOT / "images")
    assert cfg["SAM2_PROMPTS"] == {"cat": {}, "astronaut": {"x": [410], "y": [130], "labels": [1]}}
    _, prompts, _ = main.prepare_inputs(cfg)
    assert prompts[0].by_text and prompts[0].text == "a photo of a cat" and not prompts[1].by_text


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_one_is_a_clear_error(tmp_path, capsys):
    assert main.main([f"--OUTPUT_DIR={tmp_path}", "--DEVICE=cuda"]) == 2
    err = capsys.readouterr().err
    assert "DEVICE='cuda'" in err and "CUDA is not available" in err
    assert list(tmp_path.iterdir()) == []


def test_step7_baselines_are_ssv2as_own_and_plain_cls_in_slot_0_is_baseline_edited():
    # the baselines of step 7 are SSV2A's own image_to_audio on I_0 and I_1; with I_1's plain CLS as
    # "E_final" the manipulated row has baseline_edited's slots, so it is that audio, bit for bit
    from model.pipeline import image_to_audio
    cfg = main.default_config()
    main.parse_args(["--smoke", "--DURATION=0.5", "--DDIM_STEPS=2"], cfg)
    models = main.Models(cfg)
    original, edited = ROOT / "images" / "original.jpg", ROOT / "images" / "edited.jpg"
    clip_model, preprocess = models.clip
    baseline = image_to_audio([original, edited], model=models.ssv2a, aldm=models.aldm, yolo=models.yolo,
                              clip_model=clip_model, preprocess=preprocess, its=cfg["CYCLE_ITS"],
                              samples=cfg["CYCLE_SAMPLES"], var_samples=cfg["VAR_SAMPLES"], duration=cfg["DURATION"],
                              steps=main.audio_steps(cfg), guidance=cfg["GUIDANCE"], seed=cfg["SEED"],
                              device=models.device)["audio"]
    tok = main.step2_clip_tokens([original, edited], models)
    audio, claps, slots, _ = main.step7_audio([original, edited], tok, tok["cls_1"][None], models, cfg,
                                              seeds=[cfg["SEED"]])
    assert audio.shape == (1, 3, 8000) and claps.shape == (1, 3, 512) and slots.shape == (3, 64, 768)
    np.testing.assert_allclose(audio[0, 0], baseline[0], atol=1e-5)
    np.testing.assert_allclose(audio[0, 1], baseline[1], atol=1e-5)
    assert np.array_equal(audio[0, 2], audio[0, 1]) and torch.equal(claps[0, 2], claps[0, 1])
    assert np.abs(audio[0, 0] - audio[0, 1]).max() > 1e-4     # the baselines themselves differ


def test_smoke_run_with_objects_found_by_name(tmp_path):
    """python main.py --smoke --SAM2_PROMPTS='{"cat": {}, "astronaut": {}}': the whole pipeline, no points."""
    out = tmp_path / "out"
    assert main.main(["--smoke", f"--OUTPUT_DIR={out}", "--EVAL_SEEDS=1",
                      "--SAM2_PROMPTS={'cat': {}, 'astronaut': {'text': 'a photo of an astronaut'}}"]) == 0
    (run_dir,) = out.iterdir()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished"
    assert record["prompts"]["astronaut"] == {"text": "a photo of an astronaut", "union": False}
    found = record["masks"]["removed"]
    assert found["text"] == "a photo of a cat" and found["chosen"] and found["candidates"]
    assert {"p_object", "bbox_xywh", "predicted_iou", "best_prompt"} <= set(found["candidates"][0])
    assert "segmentations" not in found
    e = torch.load(run_dir / "embeddings.pt", weights_only=True)
    assert e["M_neg"].any() and e["m_neg"].sum() > 0
    assert (run_dir / "mask_remove_cat.png").stat().st_size > 5000 and (run_dir / "manipulated.wav").is_file()


def test_smoke_manifest_with_empty_coordinates_runs(tmp_path):
    manifest = tmp_path / "pairs.csv"
    images = ROOT / "images"
    manifest.write_text("original,edited,remove,remove_x,remove_y,add,add_x,add_y,kept\n"
                        f"{images / 'original.jpg'},{images / 'edited.jpg'},cat,,,astronaut,,,rocket\n")
    out = tmp_path / "out"
    assert main.main(["--smoke", f"--OUTPUT_DIR={out}", "--EVAL_SEEDS=1", "--manifest", str(manifest)]) == 0
    (run_dir,) = out.iterdir()
    (pair,) = [p for p in run_dir.iterdir() if p.is_dir()]
    record = json.loads((pair / "run.json").read_text())
    assert record["status"] == "finished" and record["masks"]["added"]["text"] == "a photo of an astronaut"


def test_default_audio_classes_are_audioset_display_names():
    """The defaults, checked offline against the 527 names of AudioSet's class_labels_indices.csv."""
    import evaluation
    labels = evaluation.audioset_labels()
    assert len(labels) == 527 and len(set(labels)) == 527
    resolved, notes = evaluation.resolve_audio_classes(list(main.AUDIO_CLASSES), main.AUDIO_CLASSES, labels)
    assert resolved == main.AUDIO_CLASSES and notes == []
    assert all(source in main.EVAL_LABELS for source in main.AUDIO_CLASSES)   # both views score every default source
