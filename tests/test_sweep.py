"""sweep.py: a grid of settings over one pair, through main.py's own steps, ranked."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import QUICK

import audio_io
import main
import settings
import sweep
import verdict

ROOT = Path(__file__).resolve().parent.parent
SEEDS = [42, 43, 44]   # EVAL_SEEDS = 3 from SEED = 42


# -----------------------------------------------------------------------------
# a smoke sweep

def test_smoke_sweep_reuses_the_shared_work(tmp_path, capsys):
    assert main.main(["--smoke", f"--OUTPUT_DIR={tmp_path}", "--sweep", "SVD_K=1,3", "MIX_BETA=0.3,0.4"]) == 0
    out = capsys.readouterr().out
    assert out.count("=== STEP 1: SAM2 masks ===") == 1 and out.count("=== STEP 2: CLIP tokens ===") == 1
    assert out.count("=== STEP 5: SVD manipulation ===") == 5   # 4 settings, and the default one (not in the grid)
    assert out.count("YOLO:") == 2   # I_0 and I_1 detected once each
    (run_dir,) = tmp_path.iterdir()
    table = list(csv.DictReader(open(run_dir / "sweep.csv")))
    rows = [r for r in table if r["seed role"] == "chose"]
    assert sorted((r["SVD_K"], r["MIX_BETA"]) for r in rows) == [("1", "0.3"), ("1", "0.4"), ("3", "0.3"), ("3", "0.4")]
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"] and {r["seeds"] for r in rows} == {"42-44"}
    assert [float(r["effect audioset contrast mean"]) for r in rows] == sorted(
        (float(r["effect audioset contrast mean"]) for r in rows), reverse=True)
    assert all(r["effect audioset status"] in verdict.STATUSES and r["headline scorer"] == "audioset" for r in rows)
    # no column mixes the scorers: each verdict column names its question and its scorer
    verdict_cols = [c for c in rows[0] if c.endswith((" mean", " status", " ci_low", " ci_high", " fraction_holds"))]
    assert verdict_cols and all(c.split()[0] in ("effect", "edit") and c.split()[1] in ("audioset", "clap")
                                for c in verdict_cols)
    wavs = sorted(p.name for p in run_dir.glob("manipulated_*.wav") if "_seed" not in p.name)
    assert wavs == ["manipulated_SVD_K-1_MIX_BETA-0.3.wav", "manipulated_SVD_K-1_MIX_BETA-0.4.wav",
                    "manipulated_SVD_K-3_MIX_BETA-0.3.wav", "manipulated_SVD_K-3_MIX_BETA-0.4.wav"]
    assert len(list(run_dir.glob("manipulated_*_seed4[34].wav"))) == 8     # every setting, every seed
    assert (run_dir / "sweep_heatmap.png").stat().st_size > 1000
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished"
    # the winner's curse: the best setting and the default (SVD_K=5, MIX_BETA=0.4: not in the grid) again, on
    # the smoke run's 2 fresh seeds
    confirmed = [r for r in table if r["seed role"] == "confirmed"]
    best = (rows[0]["SVD_K"], rows[0]["MIX_BETA"])
    assert [(r["confirms"], r["SVD_K"], r["MIX_BETA"], r["seeds"]) for r in confirmed] == [
        ("best (rank 1)", *best, "45-46"), ("default", "5", "0.4", "45-46")]
    assert confirmed[0]["rank"] == "1" and confirmed[1]["rank"] == ""
    for name in (f"manipulated_SVD_K-{best[0]}_MIX_BETA-{best[1]}", "manipulated_SVD_K-5_MIX_BETA-0.4",
                 "baseline_original", "baseline_edited"):
        assert all((run_dir / audio_io.wav_name(name, seed, 42)).is_file() for seed in (45, 46)), name
    assert record["confirmation"]["chosen_on"] == SEEDS and record["confirmation"]["confirmed_on"] == [45, 46]
    assert [c["role"] for c in record["confirmation"]["settings"]] == ["best (rank 1)", "default"]
    assert "chosen on seeds 42-44: " in out and "confirmed on 45-46: " in out


def test_sweep_setting_gives_the_single_run_audio(tmp_path, smoke_run):
    # the sweep's default setting must reproduce the single run's manipulated audio: per-row seeding
    assert main.main(["--smoke", f"--OUTPUT_DIR={tmp_path}", "--sweep", "SVD_K=5"]) == 0
    (run_dir,) = tmp_path.iterdir()
    for seed in SEEDS:
        swept, _ = sf.read(run_dir / audio_io.wav_name("manipulated_SVD_K-5", seed, 42))
        single, _ = sf.read(smoke_run / audio_io.wav_name("manipulated", seed, 42))
        np.testing.assert_allclose(swept, single, atol=2 / 32768)   # within a 16-bit step or two


# -----------------------------------------------------------------------------
# repeated values (issue 19)

def test_repeated_sweep_values_are_dropped_with_a_warning():
    grid, notes = sweep.dedupe_grid({"SVD_K": [1, 1, 5], "SVD_ALPHA": [0.3, 0.3000001], "PIN_GLOBAL": [True]})
    assert grid == {"SVD_K": [1, 5], "SVD_ALPHA": [0.3], "PIN_GLOBAL": [True]}
    assert notes == ["sweep SVD_K=1 repeats SVD_K=1 (SVD_K-1): run once",
                     "sweep SVD_ALPHA=0.3000001 names the same files as SVD_ALPHA=0.3 (SVD_ALPHA-0.3): run once"]
    names = [sweep.setting_name(s) for s in sweep.sweep_settings(grid)]
    assert len(names) == len(set(names))


def test_a_sweep_with_colliding_values_finishes(tmp_path, capsys):
    # this used to end in FileExistsError after all the audio was made
    assert main.main(["--smoke", f"--OUTPUT_DIR={tmp_path}", *QUICK, "--sweep", "SVD_K=5,5"]) == 0
    out = capsys.readouterr().out
    assert out.index("WARNING: sweep SVD_K=5 repeats SVD_K=5") < out.index("Loading every model")
    (run_dir,) = tmp_path.iterdir()
    assert [(r["SVD_K"], r["seed role"]) for r in csv.DictReader(open(run_dir / "sweep.csv"))] == [
        ("5", "chose"), ("5", "confirmed")]   # the best setting is the default: confirmed once
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and any("repeats" in w for w in record["warnings"])


def test_the_confirmation_is_a_run_on_fresh_seeds(tmp_path):
    """The confirmed figures are what a run of the best setting on the fresh seeds alone gives (nothing of the
    choosing seeds enters them)."""
    sweep_out, single_out = tmp_path / "sweep", tmp_path / "single"
    assert main.main(["--smoke", f"--OUTPUT_DIR={sweep_out}", *QUICK, "--sweep", "SVD_K=1,5"]) == 0
    (run_dir,) = sweep_out.iterdir()
    table = list(csv.DictReader(open(run_dir / "sweep.csv")))
    chose = [r for r in table if r["seed role"] == "chose"]
    best = next(r for r in table if r["seed role"] == "confirmed" and r["confirms"].startswith("best"))
    assert {r["seeds"] for r in chose} == {"42"} and best["seeds"] == "43-44" and best["SVD_K"] == chose[0]["SVD_K"]
    assert main.main(["--smoke", f"--OUTPUT_DIR={single_out}", *QUICK, f"--SVD_K={best['SVD_K']}", "--SEED=43",
                      "--EVAL_SEEDS=2"]) == 0
    (single,) = single_out.iterdir()
    results = json.loads((single / "results.json").read_text())
    contrast = results["method_effect"]["clap"]["contrast"]   # the tiny classifier does not move at 0.5 s
    key = "effect clap contrast"
    # a ~1e-6 contrast, to 6 significant digits; the sweep draws 4 rows per batch where the run draws 3, which moves
    # the last digits (as the wavs' last bits), while the figures of other seeds differ in the first
    assert contrast["mean"] != 0 and float(best[key + " mean"]) == pytest.approx(contrast["mean"], rel=0.02, abs=0)
    assert [float(best[key + " ci_low"]), float(best[key + " ci_high"])] == pytest.approx(contrast["ci95"], rel=0.02)
    assert best[key + " status"] == contrast["status"]
    assert float(chose[0][key + " mean"]) != pytest.approx(contrast["mean"], rel=0.2)   # the choosing seed's differs
    for seed in (43, 44):
        swept, _ = sf.read(run_dir / audio_io.wav_name(f"manipulated_SVD_K-{best['SVD_K']}", seed, 42))
        alone, _ = sf.read(single / audio_io.wav_name("manipulated", seed, 43))
        np.testing.assert_allclose(swept, alone, atol=2 / 32768)


def test_without_confirm_seeds_the_choice_is_said_to_be_unconfirmed():
    cfg = {**settings.default_config(main), "SWEEP": {"SVD_K": [1, 5]}, "CONFIRM_SEEDS": 0}
    rows = [{"SVD_K": 1, "rank": 1}, {"SVD_K": 5, "rank": 2}]
    confirmed, record = sweep.confirm_choice({"cfg": cfg}, rows, "effect audioset contrast", [], [], {})
    assert confirmed == [] and record["chosen_on"] == [42, 43, 44] and "confirmed_on" not in record
    assert record["text"].startswith("Not confirmed on fresh seeds (CONFIRM_SEEDS=0)")
    assert "winner's curse" in record["text"]
    assert settings.confirm_seeds({**cfg, "CONFIRM_SEEDS": 3}) == [45, 46, 47]   # after the ones that chose
