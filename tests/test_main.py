"""main.py: the whole pipeline with the smoke models, its steps and the files a run writes."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import audio_io
import inputs
import loader
import main
import runs
import settings
import verdict

ROOT = Path(__file__).resolve().parent.parent


# -----------------------------------------------------------------------------
# command line


# -----------------------------------------------------------------------------
# inputs are checked before any model loads


def test_name_search_uses_the_pair_and_the_kept_sources_as_distractors():
    """step1_masks on the example pair with the tiny SAM2 and CLIP: each object's prompts hold the other object
    and every kept source once ('an' before a vowel), never the object itself."""
    import mask
    cfg = {**settings.default_config(main), **settings.SMOKE_SETTINGS, "SMOKE": True,
           "KEPT_SOURCES": ["rocket", "cat", "engine", "rocket"]}
    prompts = inputs.parse_prompts({"cat": {}, "astronaut": {}})
    images = [ROOT / "images" / "original.jpg", ROOT / "images" / "edited.jpg"]
    _, infos = main.step1_masks(images, prompts, loader.Models(cfg), None, cfg)
    assert infos[0]["prompts"][:4] == ["a photo of a cat", "a photo of an astronaut", "a photo of a rocket",
                                       "a photo of an engine"]
    assert infos[1]["prompts"][:4] == ["a photo of an astronaut", "a photo of a cat", "a photo of a rocket",
                                       "a photo of an engine"]
    assert len(infos[0]["prompts"]) == len(set(infos[0]["prompts"])) == 4 + len(mask.BACKGROUND_PROMPTS)


# -----------------------------------------------------------------------------
# the whole pipeline with the smoke models


SEEDS = [42, 43, 44]   # EVAL_SEEDS = 3 from SEED = 42


def test_smoke_run_writes_the_whole_run_folder(smoke_run):
    names = {p.name for p in smoke_run.iterdir()}
    expected = {"mask_remove_cat.png", "mask_add_astronaut.png", "embeddings.pt", "run.json", "results.json",
                "scores.png", "spectrograms.png"}
    expected |= {audio_io.wav_name(n, s, 42) for n in audio_io.AUDIO_NAMES for s in SEEDS}
    assert expected <= names, expected - names
    assert {"baseline_original.wav", "manipulated_seed43.wav", "baseline_edited_seed44.wav"} <= names
    assert smoke_run.name.endswith("_cat-to-astronaut_smoke")
    for png in smoke_run.glob("*.png"):
        assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_smoke_audio_is_finite_equal_length_wavs_for_every_seed(smoke_run):
    lengths = set()
    for name in audio_io.AUDIO_NAMES:
        for seed in SEEDS:
            audio, sr = sf.read(smoke_run / audio_io.wav_name(name, seed, 42))
            assert sr == 16000 and np.isfinite(audio).all() and np.abs(audio).max() > 0
            lengths.add(len(audio))
    assert lengths == {int(settings.SMOKE_SETTINGS["DURATION"] * 16000)}
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
    assert e["seeds"].tolist() == SEEDS and e["audio_rows"] == list(audio_io.AUDIO_NAMES)
    for name in ["cls_0", "cls_1", "emb_suppress", "emb_boost", "emb_bg", "emb_final"]:
        assert torch.isfinite(e[name]).all() and e[name].shape == (768,)
        assert math.isclose(float(e[name].norm()), 1.0, abs_tol=1e-5), name
    assert e["claps"].shape == (3, 3, 512)
    torch.testing.assert_close(e["claps"].norm(dim=-1), torch.ones(3, 3))


def test_smoke_run_json_is_complete_and_finished(smoke_run):
    record = json.loads((smoke_run / "run.json").read_text())
    assert record["status"] == "finished" and record["started"] <= record["ended"]
    assert set(record["config"]) == set(settings.constants(main))
    assert record["config"]["SMOKE"] is True and record["smoke"] is True
    assert record["seed"] == 42 and record["seeds"] == SEEDS and record["device"] == "cpu"
    assert record["images"]["original"].endswith("original.jpg")
    assert record["sampler"] == {"name": "ddim", "steps": 4}
    steps = ["step1_masks", "step2_clip_tokens", "step3_patch_weights", "step4_background", "step5_svd",
             "step6_mix", "step7_audio", "evaluation"]
    assert set(steps) <= set(record["timings_s"])
    assert set(record["model_load_s"]) == set(loader.Models.NAMES)
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
    for name in audio_io.AUDIO_NAMES:
        for row in results["scores"]["clap"]["all_labels_per_seed"][name]:
            assert math.isclose(sum(row), 1.0, abs_tol=1e-5)
    checks = {"added_increased": "astronaut", "removed_decreased": "cat", "kept_within_tolerance:rocket": "rocket"}
    for question, base in [("method_effect", "baseline_edited"), ("edit_followed", "baseline_original")]:
        for view in ("classifier", "clap"):
            v = results[question][view]
            assert set(v["checks"]) == set(checks) and v["status"] in verdict.STATUSES
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
    first = runs.new_run_dir(tmp_path, "x")
    second = runs.new_run_dir(tmp_path, "x")
    assert first != second and first.is_dir() and second.is_dir()
    with pytest.raises(FileExistsError):
        runs.write_json(smoke_run / "run.json", {})


def test_step7_baselines_are_ssv2as_own_and_plain_cls_in_slot_0_is_baseline_edited():
    # the baselines of step 7 are SSV2A's own image_to_audio on I_0 and I_1; with I_1's plain CLS as
    # "E_final" the manipulated row has baseline_edited's slots, so it is that audio, bit for bit
    from model.pipeline import image_to_audio
    cfg = settings.default_config(main)
    settings.parse_args(["--smoke", "--DURATION=0.5", "--DDIM_STEPS=2"], cfg)
    models = loader.Models(cfg)
    original, edited = ROOT / "images" / "original.jpg", ROOT / "images" / "edited.jpg"
    clip_model, preprocess = models.clip
    baseline = image_to_audio([original, edited], model=models.ssv2a, aldm=models.aldm, yolo=models.yolo,
                              clip_model=clip_model, preprocess=preprocess, its=cfg["CYCLE_ITS"],
                              samples=cfg["CYCLE_SAMPLES"], var_samples=cfg["VAR_SAMPLES"], duration=cfg["DURATION"],
                              steps=settings.audio_steps(cfg), guidance=cfg["GUIDANCE"], seed=cfg["SEED"],
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


