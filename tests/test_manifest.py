"""main.py --manifest: rows shared out over processes with accelerate, --resume, failures, duplicates, encodings.

The smoke models on a 6-row manifest (4 pairs that run, 1 duplicate row, 1 pair that fails in step 1):
one process in this process, two processes under `accelerate launch`, one pair alone, and a run stopped
with Ctrl-C after two pairs and resumed. On the CPU torch's result depends on its thread count (the order
of float sums), so every run here uses one thread: what is compared is the sharding, not the BLAS.
"""
import csv
import filecmp
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import fifo, free_port, refused

import errors
import inputs
import main
import manifest
import runs
import settings

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "images"
# the smoke run made smaller still: these tests run ~15 pairs
FAST = ["--smoke", "--EVAL_SEEDS=1", "--DDIM_STEPS=2", "--CYCLE_ITS=1", "--CYCLE_SAMPLES=2", "--VAR_SAMPLES=2",
        "--DURATION=1.0", "--TEXT_MIN_SCORE=1.0"]   # 1.0: the name-only row 6 finds nothing and fails at run time
RUNNING_PAIRS = ["pair001_cat-to-astronaut", "pair002_cat-to-astronaut", "pair003_astronaut-to-cat",
                 "pair004_cat-to-astronaut"]
FAILING_PAIR = "pair006_cat-to-astronaut"
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def write_reference(folder):
    """Two clips of 'real audio' (tones) for the set-level FAD against a reference."""
    import numpy as np
    import soundfile as sf
    folder.mkdir()
    t = np.arange(32000) / 16000
    for f in (220, 330):
        sf.write(folder / f"tone{f}.wav", (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32), 16000)
    return folder


def write_manifest(path):
    o, e = IMAGES / "original.jpg", IMAGES / "edited.jpg"
    path.write_text(
        "original,edited,remove,remove_x,remove_y,add,add_x,add_y,kept\n"
        f"{o},{e},cat,448,330,astronaut,410;370,130;460,rocket\n"
        f"{o},{e},cat,440,320,astronaut,400,140,rocket\n"
        f"{e},{o},astronaut,410,130,cat,448,330,rocket\n"
        f"{o},{e},cat,448,330,astronaut,410,130,\n"
        f"{IMAGES / '..' / 'images' / 'original.jpg'},{e},cat,448,330,astronaut,410;370,130;460,rocket\n"
        f"{o},{e},cat,,,astronaut,,,rocket\n")
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted one-process run (python main.py --manifest), made once for the tests below."""
    tmp = tmp_path_factory.mktemp("reference")
    manifest = write_manifest(tmp / "pairs.csv")
    ref = write_reference(tmp / "real")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main.main(FAST + [f"--OUTPUT_DIR={tmp / 'out'}", "--manifest", str(manifest), "--reference",
                                 str(ref)]) == 0
    finally:
        torch.set_num_threads(threads)
    (run_dir,) = (tmp / "out").iterdir()
    return manifest, run_dir, ref


def table(run_dir):
    with open(run_dir / "pairs.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_same_results(run_dir, expected):
    """Every wav of every pair, pairs.csv and summary.json byte-equal to the reference run's."""
    for folder in RUNNING_PAIRS:
        wavs = sorted(p.name for p in (expected / folder).glob("*.wav"))
        assert wavs == sorted(p.name for p in (run_dir / folder).glob("*.wav")) and len(wavs) == 3
        match, mismatch, errors = filecmp.cmpfiles(expected / folder, run_dir / folder, wavs + ["results.json"],
                                                   shallow=False)
        assert mismatch == [] and errors == [], (folder, mismatch, errors)
    for name in ("pairs.csv", "summary.json"):
        assert filecmp.cmp(expected / name, run_dir / name, shallow=False), name


def test_one_process_manifest_marks_the_failed_pair_runs_duplicates_once_and_summarises(reference, capsys):
    _, run_dir, ref = reference
    rows = table(run_dir)
    assert [(r["pair"], r["status"]) for r in rows] == [
        ("1", "finished"), ("2", "finished"), ("3", "finished"), ("4", "finished"),
        ("5", "duplicate of pair 1"), ("6", "failed")]
    assert "TEXT_MIN_SCORE=1" in rows[5]["error"] and rows[4]["folder"] == RUNNING_PAIRS[0]
    failed = json.loads((run_dir / FAILING_PAIR / "run.json").read_text())
    assert failed["status"] == "failed" and "NoMatchError" in failed["traceback"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completed"] == 4 and summary["duplicates"] == [{"pair": 5, "same_as": 1}]
    assert [f["pair"] for f in summary["failed"]] == [6]
    assert summary["metrics"]["effect audioset contrast mean"]["n"] == 4
    assert sum(summary["statuses"]["headline"].values()) == 4   # the duplicate counts once, the failed pair not at all
    sets = summary["set_metrics"]
    assert sets["embedding"].startswith("tiny random-weight VGGish") and sets["reference"] == [str(ref.resolve())]
    assert sets["files"] == {"baseline_original": 4, "baseline_edited": 4, "manipulated": 4}
    assert set(sets["fad"]) == {"baseline_original vs baseline_edited", "baseline_original vs manipulated",
                                "baseline_edited vs manipulated", "baseline_original vs reference",
                                "baseline_edited vs reference", "manipulated vs reference"}
    assert sets["fad"]["manipulated vs reference"]["n_b"] == 4   # two 2 s clips, two 0.96 s embeddings each
    assert sets["fad"]["manipulated vs reference"]["caveats"]   # 4 embeddings of 128 dimensions: said
    panns = sets["panns"]
    assert panns["model"].startswith("tiny random-weight CNN14") and len(panns["fd"]) == 6
    assert panns["fd"]["manipulated vs reference"]["n_b"] == 2   # one embedding per clip
    assert {k: v["n"] for k, v in panns["kl"].items()} == {"KL(baseline_edited || manipulated)": 4,
                                                          "KL(baseline_original || manipulated)": 4}
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and record["pairs_done"] == 4 and record["pairs_failed"] == 1
    assert any("row 5 repeats row 1" in w for w in record["warnings"])
    assert (run_dir / "manifest.csv").read_bytes() == reference[0].read_bytes()
    assert record["processes_peak_memory"]["0"]["pairs"] == 5 and record["processes_peak_memory"]["0"]["peak_rss_mib"] > 100


def accelerate_launch(*args, processes=2):
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
            str(free_port()), str(ROOT / "main.py"), *args]


def test_two_processes_under_accelerate_give_the_same_bytes(reference, tmp_path, capsys):
    manifest, expected, ref = reference
    cmd = accelerate_launch(*FAST, f"--OUTPUT_DIR={tmp_path}", "--manifest", str(manifest), "--reference", str(ref))
    launch = subprocess.Popen(cmd, cwd=ROOT, env=ONE_THREAD, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 900
    while time.time() < deadline and launch.poll() is None and not list(tmp_path.glob("*/run.json")):
        time.sleep(0.2)
    assert launch.poll() is None, launch.communicate()[1][-3000:]   # its pairs take a minute
    # the launch's main process holds the folder for both: a resume of it is refused
    assert main.main(["--resume", str(next(tmp_path.iterdir()))]) == 2
    assert "(a manifest run, the main one of 2 processes" in capsys.readouterr().err
    stdout, stderr = launch.communicate(timeout=900)
    proc = subprocess.CompletedProcess(cmd, launch.returncode, stdout, stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()   # one run folder: the main process's, shared with the other
    assert_same_results(run_dir, expected)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["processes"] == 2 and record["status"] == "finished"
    assert {k: v["pairs"] for k, v in record["processes_peak_memory"].items()} == {"0": 3, "1": 2}
    pair_processes = {json.loads((run_dir / f / "run.json").read_text())["process"]["index"]
                      for f in RUNNING_PAIRS}
    assert pair_processes == {0, 1}
    assert "pair 1:" in (run_dir / "process0.log").read_text() and "pair 4:" in (run_dir / "process1.log").read_text()
    assert "process 1: 100%" in proc.stderr and "failed=1" in proc.stderr   # a bar per process


def test_a_pair_alone_gives_the_same_bytes_as_in_the_manifest(reference, tmp_path, one_thread):
    _, expected, _ = reference
    assert main.main(FAST + [f"--OUTPUT_DIR={tmp_path}", f"--ORIGINAL={IMAGES / 'edited.jpg'}",
                             f"--EDITED={IMAGES / 'original.jpg'}", "--KEPT_SOURCES=['rocket']",
                             "--SAM2_PROMPTS={'astronaut': {'x': [410], 'y': [130]}, "
                             "'cat': {'x': [448], 'y': [330]}}"]) == 0
    (run_dir,) = tmp_path.iterdir()
    for name in ("baseline_original.wav", "baseline_edited.wav", "manipulated.wav"):
        assert filecmp.cmp(run_dir / name, expected / "pair003_astronaut-to-cat" / name, shallow=False), name


def oom_in_pair_4(real_step7, run_dir, holders):
    """step 7 of the row with no kept source (row 4) runs out of GPU memory, as on a crowded GPU. holders: the
    process named in the run folder's lock at each step 7."""
    def step7(images, tok, emb_finals, models, cfg, *args, **kwargs):
        holders.append(runs.read_lock(run_dir).get("pid"))
        if cfg["KEPT_SOURCES"] == []:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step7(images, tok, emb_finals, models, cfg, *args, **kwargs)
    return step7


def test_interrupted_after_two_pairs_then_resumed_ends_equal(reference, tmp_path, monkeypatch, one_thread, capsys):
    manifest, expected, ref = reference
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *FAST, f"--OUTPUT_DIR={tmp_path}",
                             "--manifest", str(manifest), "--reference", str(ref)], cwd=ROOT, env=ONE_THREAD,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        attempts = list(tmp_path.glob(f"*/{RUNNING_PAIRS[1]}/run.json"))
        if attempts and runs.read_run_json(attempts[0].parent).get("status") == "finished":
            break
        time.sleep(0.2)
    (run_dir,) = tmp_path.iterdir()
    # while it runs, the folder is held: a resume of it is refused, naming the run's process, and changes nothing
    before = sorted(p.name for p in run_dir.iterdir())
    assert main.main(["--resume", str(run_dir)]) == 2
    said = capsys.readouterr()
    assert f"is in use by process {proc.pid} on host {platform.node()} (a manifest run" in said.err
    assert "Loading every model" not in said.out and sorted(p.name for p in run_dir.iterdir()) == before
    proc.send_signal(signal.SIGINT)   # Ctrl-C while pair 3 attempts
    assert proc.wait(timeout=120) == 130, proc.stderr.read()[-2000:]
    last_words = proc.stderr.read()
    assert f"What the run made so far stays in {run_dir}" in last_words and "No run folder" not in last_words
    assert f"python main.py --resume {run_dir} runs the rest" in last_words
    assert runs.read_run_json(run_dir)["status"] == "interrupted" and not (run_dir / "pairs.csv").exists()
    assert not (run_dir / runs.LOCK_NAME).exists()   # released on the way out
    kept = {f: (run_dir / f / "manipulated.wav").stat().st_mtime_ns for f in RUNNING_PAIRS[:2]}
    assert runs.read_run_json(run_dir / RUNNING_PAIRS[2]).get("status") in ("interrupted", None)

    # resumed once, and pair 4 attempts out of memory this time: it is marked failed, the others go on
    holders = []
    monkeypatch.setattr(main, "step7_audio", oom_in_pair_4(main.step7_audio, run_dir, holders))
    assert main.main(["--resume", str(run_dir)]) == 0
    monkeypatch.undo()
    assert holders == [os.getpid()] * 2 and not (run_dir / runs.LOCK_NAME).exists()   # held while it ran
    out = capsys.readouterr().out
    assert "2 finished earlier, 3 to run" in out and "FAILED pair 4: OutOfMemoryError" in out
    rows = {r["pair"]: r for r in table(run_dir)}
    assert rows["3"]["status"] == "finished" and rows["4"]["status"] == "failed"
    assert "CUDA out of memory" in rows["4"]["error"]
    assert json.loads((run_dir / "summary.json").read_text())["completed"] == 3

    # resumed again: only the failed pairs are redone, and the run ends as the uninterrupted one
    assert main.main(["--resume", str(run_dir)]) == 0
    assert "3 finished earlier, 2 to run" in capsys.readouterr().out
    assert_same_results(run_dir, expected)
    assert {f: (run_dir / f / "manipulated.wav").stat().st_mtime_ns for f in RUNNING_PAIRS[:2]} == kept
    earlier = sorted(p.name for p in (run_dir / "earlier_attempts").iterdir())
    assert "pair004_cat-to-astronaut_try1" in earlier and "pairs_try1.csv" in earlier   # nothing thrown away
    record = runs.read_run_json(run_dir)
    assert record["status"] == "finished" and [r["previous_status"] for r in record["resumed"]] == [
        "interrupted", "finished"]
    # what each pair ran with: the manifest's hash and its row, as the resume's check reads them
    sha = hashlib.sha256((run_dir / "manifest.csv").read_bytes()).hexdigest()
    assert record["manifest_sha256"] == sha and record["resumed"][-1]["manifest_sha256"] == sha
    rows = list(csv.DictReader(open(manifest, newline="")))
    for i, folder in enumerate(RUNNING_PAIRS, start=1):
        ran = runs.read_run_json(run_dir / folder)["manifest_row"]
        assert ran == {"row": i, "fields": rows[i - 1], "manifest_sha256": sha}


def test_an_accelerate_launch_on_a_held_run_folder_is_refused_in_every_process(reference, tmp_path):
    _, expected, _ = reference
    run_dir = shutil.copytree(expected, tmp_path / "run")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with runs.RunLock(run_dir, "a resume"):   # another resume of it is going on
        launch = subprocess.run(accelerate_launch("--resume", str(run_dir)), cwd=ROOT, env=ONE_THREAD,
                                capture_output=True, text=True, timeout=600)
    assert launch.returncode != 0
    said = f"Error: {run_dir} is in use by process {os.getpid()} on host {platform.node()} (a resume"
    assert said in launch.stderr, launch.stderr[-3000:]
    assert "Loading every model" not in launch.stdout
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before   # nothing moved or rewritten


def test_a_resume_refuses_a_manifest_changed_under_its_finished_pairs(reference, tmp_path, capsys):
    _, expected, _ = reference
    run_dir = shutil.copytree(expected, tmp_path / "run")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    original = (run_dir / "manifest.csv").read_text()
    lines = original.splitlines(keepends=True)
    lines[2] = lines[2].replace(",cat,440,320,", ",cat,500,320,")   # row 2: a point moved
    (run_dir / "manifest.csv").write_text("".join(lines[:5]))       # rows 5 and 6 deleted
    assert main.main(["--resume", str(run_dir)]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Loading every model" not in out
    assert f"--resume {run_dir}: its manifest.csv changed since these finished pairs ran" in err
    assert "row 2 (pair002_cat-to-astronaut, finished): remove_x was '440', now '500'" in err
    assert "row 6" not in err   # pair 6 failed: a resume redoes it anyway, and a deleted row is not run
    assert "A resume keeps finished pairs as they are" in err and "python main.py --manifest" in err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != "manifest.csv"} == {
        p: b for p, b in before.items() if p.name != "manifest.csv"}
    # the failed pair's row edited (the way to fix a failed row): the resume goes on and says so
    lines = original.splitlines(keepends=True)
    lines[6] = lines[6].replace(",cat,,,astronaut,,,", ",cat,448,330,astronaut,,,")
    (run_dir / "manifest.csv").write_text("".join(lines))
    record = runs.read_run_json(run_dir)
    cfg = manifest.resume_target(run_dir, settings.default_config(main), settings.default_config(main))[1]
    edited = manifest.prepare_manifest(cfg, run_dir / "manifest.csv", base_dir=record["manifest_dir"])
    (note,) = manifest.check_unchanged(run_dir, edited, record)
    assert "row 6 (pair006_cat-to-astronaut, failed): remove_x was '', now '448'; remove_y was '', now '330'" in note
    assert "runs with the row as it is now" in note


def test_ctrl_c_before_a_resume_changed_anything_says_the_folder_is_as_it_was(reference, tmp_path, monkeypatch,
                                                                             capsys):
    _, expected, _ = reference
    run_dir = shutil.copytree(expected, tmp_path / "run")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(manifest, "load_models", ctrl_c)
    assert main.main(["--resume", str(run_dir)]) == 130
    err = capsys.readouterr().err
    assert f"The resume stopped before it changed anything: {run_dir} is as it was" in err
    assert "No run folder" not in err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_resume_refuses_what_it_cannot_resume(tmp_path, capsys):
    assert main.main(["--resume", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
    single = tmp_path / "single"
    single.mkdir()
    (single / "run.json").write_text(json.dumps({"mode": "run", "status": "finished"}))
    assert main.main(["--resume", str(single)]) == 2
    assert "only a manifest run can be resumed" in capsys.readouterr().err
    (single / "run.json").write_text(json.dumps({"mode": "manifest", "status": "failed", "config": {}}))
    (single / "manifest.csv").write_text("x")
    assert main.main(["--resume", str(single), "--SVD_K=3"]) == 2
    assert "only --DEVICE may change. Got SVD_K" in capsys.readouterr().err
    assert main.main(["--manifest", "x.csv", "--resume", str(single)]) == 2
    assert "give it alone" in capsys.readouterr().err


def test_manifest_saved_by_excel_with_a_byte_order_mark_reads(tmp_path):
    text = write_manifest(tmp_path / "plain.csv").read_text()
    bom = tmp_path / "excel.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    rows = manifest.read_manifest(bom)
    assert list(rows[0])[0] == "original" and rows == manifest.read_manifest(tmp_path / "plain.csv")


def test_manifest_in_latin1_names_the_encoding(tmp_path, capsys):
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("original,edited,remove,remove_x,remove_y,add,add_x,add_y\n"
                       "café.jpg,edited.jpg,cat,1,1,dog,2,2\n".encode("latin-1"))
    assert main.main(["--smoke", f"--OUTPUT_DIR={tmp_path / 'out'}", "--manifest", str(latin1)]) == 2
    err = capsys.readouterr().err
    assert "is not UTF-8 text: byte 0xe9 on line 2" in err and "CSV UTF-8" in err and "iconv" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_duplicate_rows_are_found_whatever_the_path_spelling(tmp_path, capsys):
    csv_path = write_manifest(tmp_path / "pairs.csv")
    m = manifest.prepare_manifest(settings.default_config(main), csv_path)
    assert [p[0] for p in m.pairs] == [1, 2, 3, 4, 6] and m.duplicates == [{"pair": 5, "same_as": 1}]
    assert "WARNING: manifest row 5 repeats row 1" in capsys.readouterr().out
    # the same images with other points, or other kept sources, are other pairs
    assert len({manifest.pair_key(images, prompts, cfg) for _, cfg, images, prompts, _ in m.pairs}) == 5


def test_reference_audio_column_and_flag_are_checked_before_any_model(tmp_path, capsys):
    real = write_reference(tmp_path / "real")
    text = write_manifest(tmp_path / "plain.csv").read_text().splitlines()
    with_ref = tmp_path / "with_ref.csv"
    with_ref.write_text("\n".join([text[0] + ",reference_audio", text[1] + f",{real / 'tone220.wav'}",
                                   text[2] + ",real", text[3] + ","]) + "\n")
    m = manifest.prepare_manifest(settings.default_config(main), with_ref)
    assert m.reference == [str(real / "tone220.wav"), str(tmp_path / "real")]
    broken = tmp_path / "broken.csv"
    broken.write_text("\n".join([text[0] + ",reference_audio", text[1] + ",nothere.wav"]) + "\n")
    with pytest.raises(errors.UserError, match="row 1: reference_audio nothere.wav not found"):
        manifest.prepare_manifest(settings.default_config(main), broken)
    assert main.main(["--smoke", "--reference", str(real)]) == 2
    assert "--reference is read by a manifest run only" in capsys.readouterr().err
    assert main.main(["--smoke", f"--OUTPUT_DIR={tmp_path / 'out'}", "--manifest", str(with_ref),
                      "--reference", str(tmp_path / "nope")]) == 2
    assert "--reference" in capsys.readouterr().err and not (tmp_path / "out").exists()


# -----------------------------------------------------------------------------
# manifests through main.main (from the first manifest tests)

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
    rows = manifest.read_manifest(ROOT / "images" / "pairs.csv")
    cfg = manifest.pair_config(settings.default_config(main), rows[0], ROOT / "images")
    images, prompts, notes = inputs.prepare_inputs(cfg)
    assert [p.name for p in images] == ["original.jpg", "edited.jpg"] and notes == []
    assert (prompts[1].name, prompts[1].points, prompts[1].labels) == ("astronaut", [[410.0, 130.0], [370.0, 460.0]],
                                                                       [1, 1])


def test_manifest_rows_with_empty_coordinates_find_the_object_by_name():
    row = {"original": "original.jpg", "edited": "edited.jpg", "remove": "cat", "remove_x": "", "remove_y": "",
           "add": "astronaut", "add_x": "410", "add_y": "130"}
    cfg = manifest.pair_config(settings.default_config(main), row, ROOT / "images")
    assert cfg["SAM2_PROMPTS"] == {"cat": {}, "astronaut": {"x": [410], "y": [130], "labels": [1]}}
    _, prompts, _ = inputs.prepare_inputs(cfg)
    assert prompts[0].by_text and prompts[0].text == "a photo of a cat" and not prompts[1].by_text


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


# -----------------------------------------------------------------------------
# manifests that would be misread, references that would hang, names that are not printable (issue 25)

def test_a_manifest_without_its_header_or_with_stray_fields_says_what_happened(tmp_path, capsys):
    text = write_manifest(tmp_path / "pairs.csv").read_text().splitlines()
    headless = tmp_path / "headless.csv"
    headless.write_text("\n".join(text[1:3]) + "\n")
    err = refused(["--manifest", str(headless)], tmp_path, capsys)
    assert "has no header row: its first line" in err and "holds data, not column names" in err
    assert f"Add this line above it: {manifest.HEADER_LINE} (then the names of the optional columns" in err
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "pairs.csv").write_text("\n".join(text) + "\n")
    err = refused(["--manifest", str(folder)], tmp_path, capsys)
    assert (f"manifest {folder} is a folder, not a file: give the CSV file itself, e.g. --manifest "
            f"{folder / 'pairs.csv'}") in err
    with fifo(tmp_path / "pipe.csv") as pipe:
        assert "is a FIFO (named pipe), not a regular file" in refused(["--manifest", str(pipe)], tmp_path, capsys)
    o, e = IMAGES / "original.jpg", IMAGES / "edited.jpg"
    odd = tmp_path / "odd.csv"
    odd.write_text(f"{text[0]}\n"
                   f"{o},{e},cat,448,330,astronaut,410,370,130,460,rocket\n"   # points with ',' instead of ';'
                   f"{o},{e},cat,448,330\n"                                     # cut short before the added object
                   f"{o},{e},cat,448,330,astronaut,410,130\n")                  # only the optional 'kept' missing
    m = manifest.prepare_manifest(settings.default_config(main), odd)
    out = capsys.readouterr().out
    assert [s["pair"] for s in m.skipped] == [1, 2] and [p[0] for p in m.pairs] == [3]
    assert "the row has 11 fields but the header 9: the last 2 ('460', 'rocket') belong to no column" in out
    assert "separate several points with \";\"" in out
    assert "the row has 5 fields but the header 9: nothing for add, add_x, add_y" in out
    assert "WARNING: manifest row 3 has 8 of the header's 9 fields: its kept read as empty" in out
    assert m.pairs[0][1]["KEPT_SOURCES"] == [] and m.rows[2]["kept"] == ""


def test_control_characters_in_a_manifests_names_skip_the_row_shown_escaped(tmp_path, capsys):
    o, e = IMAGES / "original.jpg", IMAGES / "edited.jpg"
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("original,edited,remove,remove_x,remove_y,add,add_x,add_y,kept,eval_labels\n"
                        f"{o},{e},\x1b[31mcat\x1b[0m,448,330,astronaut,410,130,rocket,\n"
                        f'{o},{e},cat,448,330,"astro\nnaut",410,130,rocket,\n'
                        f"{o},{e},cat,448,330,astronaut,410,130,rock\x00et,\n"
                        f"{o},{e},cat,448,330,astronaut,410,130,rocket,cat=a cat\x1b[5m meowing\n"
                        f"{o},{e},cat,448,330,astronaut,410,130,rocket,\n")
    m = manifest.prepare_manifest(settings.default_config(main), csv_path)
    out = capsys.readouterr().out
    assert [s["pair"] for s in m.skipped] == [1, 2, 3, 4] and [p[0] for p in m.pairs] == [5]
    for said in ("SAM2_PROMPTS name '\\x1b[31mcat\\x1b[0m' holds a control character (ESC)",
                 "SAM2_PROMPTS name 'astro\\nnaut' holds a control character (a newline)",
                 "KEPT_SOURCES name 'rock\\x00et' holds a control character (a NUL byte)",
                 "EVAL_LABELS['cat'] 'a cat\\x1b[5m meowing' holds a control character (ESC)"):
        assert said in out, out
    assert not any(c in out for c in "\x1b\x00") and len(out.splitlines()) == 4   # one line per skipped row


def test_a_reference_folder_is_checked_before_any_model_and_a_fifo_never_opened(tmp_path, capsys):
    csv_path = write_manifest(tmp_path / "pairs.csv")
    real = write_reference(tmp_path / "real")
    with fifo(real / "stream.wav"):
        err = refused(["--manifest", str(csv_path), "--reference", str(real)], tmp_path, capsys)
    assert f"--reference {real}: {real / 'stream.wav'} is a FIFO (named pipe), not a regular file" in err
    (real / "notes.wav").write_text("not audio")
    err = refused(["--manifest", str(csv_path), "--reference", str(real)], tmp_path, capsys)
    assert f"{real / 'notes.wav'} is not audio that soundfile reads" in err
    text = csv_path.read_text().splitlines()
    with_ref = tmp_path / "with_ref.csv"
    with fifo(tmp_path / "one.wav"):
        with_ref.write_text("\n".join([text[0] + ",reference_audio", text[1] + ",one.wav"]) + "\n")
        err = refused(["--manifest", str(with_ref)], tmp_path, capsys)
    assert f"manifest row 1: reference_audio one.wav: {tmp_path / 'one.wav'} is a FIFO" in err
