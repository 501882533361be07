"""main.py against hostile inputs (issue 19): nothing lost, nothing misleading.

Each bad input is refused in one line before any model loads (or warned about, where the behaviour is defined);
a run stopped by a signal or a full disk says so in run.json and leaves no cut file that looks finished.
"""
import csv
import errno
import json
import os
import signal
from pathlib import Path

import pytest
import torch

import main

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["--EVAL_SEEDS=1", "--DURATION=0.5", "--CYCLE_ITS=1"]   # a smoke run cut to what these tests look at


def refused(args, tmp_path, capsys, smoke=True):
    """main.main([--smoke] ... args) must exit 2 with one clear message, before any model and any run folder."""
    out = tmp_path / "outputs"
    code = main.main(["--smoke"] * smoke + [f"--OUTPUT_DIR={out}", *args])
    captured = capsys.readouterr()
    assert code == 2, captured.out + captured.err
    assert "Traceback" not in captured.err and "Loading every model" not in captured.out
    assert not out.exists()
    return captured.err


# -----------------------------------------------------------------------------
# refused before any model, with the setting that is wrong named


@pytest.mark.parametrize("args, says", [
    # names that are one name after trimming and case-folding
    (["--SAM2_PROMPTS={'cat': {}, 'Cat': {}}"], "'cat' and 'Cat', which are one name"),
    (["--SAM2_PROMPTS={'cat': {}, 'cat\t': {}}"], "which are one name"),
    (["--KEPT_SOURCES=['rocket', 'Rocket ']"], "KEPT_SOURCES lists 'rocket' and 'Rocket ', which are one name"),
    (["--KEPT_SOURCES=['rocket', 'rocket']"], "KEPT_SOURCES lists 'rocket' twice"),
    (["--KEPT_SOURCES=['Cat']"], "KEPT_SOURCES names 'Cat', the same name as the removed object of SAM2_PROMPTS"),
    # errors that used to blame EVAL_LABELS for a duplicated KEPT_SOURCES or an empty label
    (["--EVAL_LABELS={'cat': ''}"], "EVAL_LABELS['cat'] is empty"),
    (["--EVAL_LABELS={'cat': 'a sound', 'astronaut': 'a sound'}"],
     "'cat' and 'astronaut' both get 'a sound'"),
    # labels without points are not a name search
    (["--SAM2_PROMPTS={'cat': {'labels': [1]}, 'astronaut': {}}"], "has labels but no points"),
    # TEXT_PROMPT that str.format cannot take
    (["--TEXT_PROMPT={}{}"], "TEXT_PROMPT='{}{}' cannot take the name (IndexError"),
    (["--TEXT_PROMPT={name}{}"], "TEXT_PROMPT='{name}{}' cannot take the name (KeyError"),
    # ranges the models take
    (["--DURATION=0.01"], "DURATION=0.01 is out of range: it must be seconds in [0.1, 60]"),
    (["--MIX_ALPHA=1e308", "--MIX_BETA=1e308"], "2 settings are out of range"),
    (["--SVD_BETA=1e308"], "SVD_BETA=1e+308 is out of range"),
    # a smoke run records the device it runs on
    (["--DEVICE=cuda:0"], "a smoke run builds its tiny models on the CPU"),
    # AudioSet class names checked against model/audioset_labels.csv, not after the models load
    (["--AUDIO_CLASSES={'cat': ['Kat']}"], "AUDIO_CLASSES['cat']: the classifier has no class 'Kat'"),
    # a sweep grid that silently lost values, or a sweep and a manifest at once
    (["--sweep", "SVD_K=1,5", "SVD_K=2"], "--sweep gives SVD_K twice (SVD_K=1,5 and SVD_K=2)"),
    (["--sweep", "SVD_K=1,5", "--manifest", "images/pairs.csv"], "--sweep and --manifest cannot be combined"),
    (["--manifest", "a.csv", "--manifest", "b.csv"], "--manifest is given twice"),
    (["--SWEEP={'SVD_K': [1]}", "--sweep", "SVD_K=2"], "the grid is given twice"),
])
def test_refused_before_any_model_with_the_reason(args, says, tmp_path, capsys):
    err = refused(args, tmp_path, capsys)
    assert says in err, err


@pytest.mark.parametrize("device, says", [
    ("meta", "DEVICE='meta': device 'meta' cannot run the models here"),
    ("gpu", "DEVICE='gpu': 'gpu' is not a device name"),
    pytest.param("mps", "MPS (Apple-silicon GPU) is not available on this machine",
                 marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")),
    pytest.param("cuda:63", "this machine has", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                         reason="no CUDA: cuda:63 fails as cuda")),
])
def test_devices_are_checked_like_cuda(device, says, tmp_path, capsys):
    err = refused([f"--DEVICE={device}"], tmp_path, capsys, smoke=False)   # a real run: before the checkpoints
    assert says in err and "checkpoint" not in err, err


def test_an_empty_output_dir_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main.main(["--smoke", "--OUTPUT_DIR="]) == 2
    assert "OUTPUT_DIR='' is empty: give the folder runs are written to" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_jpeg_cut_to_a_third_is_refused_in_the_pre_check(tmp_path, capsys):
    data = (ROOT / "images" / "original.jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[:len(data) // 3])
    err = refused([f"--ORIGINAL={cut}"], tmp_path, capsys)
    assert "cut.jpg" in err and "truncated or damaged" in err


def test_an_output_dir_under_a_file_or_read_only_is_found_before_the_models(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    err = refused([f"--OUTPUT_DIR={tmp_path / 'afile' / 'runs'}"], tmp_path, capsys)
    assert "lies under" in err and "afile, which is a file, not a folder" in err
    # /sys refuses new folders to every user, root included: a read-only place that needs no chmod
    code = main.main(["--smoke", "--OUTPUT_DIR=/sys/edit-aware-runs"])
    captured = capsys.readouterr()
    assert code == 2 and "OUTPUT_DIR='/sys/edit-aware-runs' cannot be written" in captured.err
    assert "Loading every model" not in captured.out and not Path("/sys/edit-aware-runs").exists()


def test_tilde_in_a_path_setting_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = main.default_config()
    main.parse_args(["--OUTPUT_DIR=~/runs", "--ORIGINAL=~/a.jpg"], cfg)
    assert cfg["OUTPUT_DIR"] == str(tmp_path / "runs") and cfg["ORIGINAL"] == str(tmp_path / "a.jpg")


def test_the_same_image_twice_is_a_warning(tmp_path):
    cfg = main.default_config()
    copy = tmp_path / "copy.jpg"
    copy.write_bytes((ROOT / "images" / "original.jpg").read_bytes())
    cfg.update(EDITED=str(copy))
    _, _, notes = main.prepare_inputs(cfg)
    assert any("ORIGINAL and EDITED are the same image" in n and "same bytes" in n for n in notes), notes
    cfg.update(EDITED=cfg["ORIGINAL"])
    assert any("same image" in n for n in main.prepare_inputs(cfg)[2])
    assert not any("same image" in n for n in main.prepare_inputs(main.default_config())[2])


def test_a_label_key_that_differs_from_its_source_only_in_case_is_a_warning():
    cfg = main.default_config()
    cfg.update(EVAL_LABELS={**cfg["EVAL_LABELS"], "Rocket": "a roaring rocket"})
    _, _, notes = main.prepare_inputs(cfg)
    assert any("EVAL_LABELS has an entry 'Rocket' but the source is called 'rocket'" in n for n in notes), notes


def test_long_names_are_cut_in_messages(tmp_path, capsys):
    err = refused(["--SAM2_PROMPTS={'cat': {'labels': [1], '" + "k" * 5000 + "': 1}, 'dog': {}}"], tmp_path, capsys)
    assert "unknown keys" in err and len(err) < 600, len(err)


# -----------------------------------------------------------------------------
# sweeps: repeated values are run once, with a warning, before any model


def test_repeated_sweep_values_are_dropped_with_a_warning():
    grid, notes = main.dedupe_grid({"SVD_K": [1, 1, 5], "SVD_ALPHA": [0.3, 0.3000001], "PIN_GLOBAL": [True]})
    assert grid == {"SVD_K": [1, 5], "SVD_ALPHA": [0.3], "PIN_GLOBAL": [True]}
    assert notes == ["sweep SVD_K=1 repeats SVD_K=1 (SVD_K-1): run once",
                     "sweep SVD_ALPHA=0.3000001 names the same files as SVD_ALPHA=0.3 (SVD_ALPHA-0.3): run once"]
    names = [main.setting_name(s) for s in main.sweep_settings(grid)]
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


# -----------------------------------------------------------------------------
# run folders, run.json, signals, a full disk


def test_a_thousand_run_folders_in_one_second(tmp_path, monkeypatch):
    class Frozen(main.datetime):
        @classmethod
        def now(cls, tz=None):
            return main.datetime(2026, 1, 2, 3, 4, 5)
    monkeypatch.setattr(main, "datetime", Frozen)
    made = {main.new_run_dir(tmp_path, "x") for _ in range(1005)}   # the 1001st used to be a traceback
    assert len(made) == 1005 and all(p.is_dir() and p.name.startswith("20260102-030405_x") for p in made)
    assert all(p.stat().st_mode & 0o777 == 0o777 & ~main._umask() for p in made)


def test_run_json_records_pid_and_host_and_survives_a_full_disk(tmp_path, monkeypatch, capsys):
    record = main.RunRecord(tmp_path, {"mode": "run", "config": {"PAD": "x" * 2000}})
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["pid"] == os.getpid() and data["host"] and data["status"] == "running"

    real_write_text = Path.write_text

    def full(self, text, *args, **kwargs):
        if self.name == "run.json.tmp":
            real_write_text(self, "")   # the file is created, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_text(self, text, *args, **kwargs)
    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError):
        record.update(step="audio")
    assert not (tmp_path / "run.json.tmp").exists()                       # no 0-byte temp file
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "running"   # the last whole record
    record.close("failed", error="OSError: [Errno 28] No space left on device")
    data = json.loads((tmp_path / "run.json").read_text())                 # written over its own blocks
    assert data["status"] == "failed" and "No space left" in data["error"] and "cut to these fields" in data["note"]
    assert data["pid"] == os.getpid()


def test_stop_signals_raise_like_ctrl_c():
    with main.stop_signals_as_interrupts():
        with pytest.raises(main.Stopped, match="SIGHUP"):
            os.kill(os.getpid(), signal.SIGHUP)
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL   # restored


def test_sigterm_during_a_run_is_recorded_like_ctrl_c(tmp_path, monkeypatch, capsys):
    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)   # a cluster cancelling the job mid-run
    monkeypatch.setattr(main, "step5_svd", terminated)
    out = tmp_path / "outputs"
    assert main.main(["--smoke", f"--OUTPUT_DIR={out}", *QUICK]) == 128 + signal.SIGTERM
    assert "Interrupted by SIGTERM" in capsys.readouterr().err
    (run_dir,) = out.iterdir()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "interrupted" and record["error"].startswith("SIGTERM")
    assert record["pid"] == os.getpid() and "mask_remove_cat.png" in record["outputs"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_full_disk_leaves_no_cut_file_and_says_so(tmp_path, monkeypatch, capsys):
    import soundfile

    def full_disk(file, data, *args, **kwargs):
        file.write(b"RIFF" + b"\0" * 1000)   # part of the wav reached the disk, then it was full
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(soundfile, "write", full_disk)
    out = tmp_path / "outputs"
    assert main.main(["--smoke", f"--OUTPUT_DIR={out}", *QUICK]) == 1
    err = capsys.readouterr().err
    assert "Error: the disk is full (No space left on device) while writing" in err and "baseline_original.wav" in err
    assert "Errno 28" not in err and "in full_disk" not in err   # the message, not the raw OSError
    (run_dir,) = out.iterdir()
    names = {p.name for p in run_dir.iterdir()}
    assert not any(n.endswith(".wav") or n.startswith(".") or n.endswith(".tmp") for n in names), names
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "failed" and "No space left on device" in record["error"]
    assert set(record["outputs"]) == names and "mask_remove_cat.png" in names


# -----------------------------------------------------------------------------
# CSV cells a spreadsheet would run


def test_csv_cells_are_never_spreadsheet_formulas(tmp_path):
    rows = [{"removed": "=HYPERLINK(\"http://x\")", "added": "+cmd", "other": "-2+3", "at": "@SUM(A1)", "n": -0.5,
             "plain": "cat"}]
    main.write_csv(tmp_path / "t.csv", rows)
    (row,) = csv.DictReader(open(tmp_path / "t.csv"))
    assert row == {"removed": "'=HYPERLINK(\"http://x\")", "added": "'+cmd", "other": "'-2+3", "at": "'@SUM(A1)",
                   "n": "-0.5", "plain": "cat"}


def test_a_name_no_proposal_matches_leaves_no_failed_folder(tmp_path, capsys):
    out = tmp_path / "outputs"
    code = main.main(["--smoke", f"--OUTPUT_DIR={out}", *QUICK, "--TEXT_MIN_SCORE=1.0",
                      "--SAM2_PROMPTS={'cat': {}, 'astronaut': {'x': [410], 'y': [130]}}"])
    err = capsys.readouterr().err
    # the message, not a raw one (a stale logging handler of an earlier test may print its own "Traceback")
    assert code == 2 and "\nError: no SAM2 proposal in" in err and "looks like 'cat' to CLIP" in err, err
    assert "NoMatchError:" not in err and "UserError:" not in err
    assert list(out.iterdir()) == []   # nothing was made, so no folder of a failed run is left behind
