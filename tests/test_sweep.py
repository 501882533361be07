"""sweep.py: a grid of settings over one pair, through main.py's own steps, ranked."""
import csv
import json
from pathlib import Path

import numpy as np
import soundfile as sf
from conftest import QUICK

import audio_io
import main
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
    assert out.count("=== STEP 5: SVD manipulation ===") == 4
    assert out.count("YOLO:") == 2   # I_0 and I_1 detected once each
    (run_dir,) = tmp_path.iterdir()
    rows = list(csv.DictReader(open(run_dir / "sweep.csv")))
    assert sorted((r["SVD_K"], r["MIX_BETA"]) for r in rows) == [("1", "0.3"), ("1", "0.4"), ("3", "0.3"), ("3", "0.4")]
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"]
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
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"


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
    assert [r["SVD_K"] for r in csv.DictReader(open(run_dir / "sweep.csv"))] == ["5"]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and any("repeats" in w for w in record["warnings"])
