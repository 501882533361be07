"""runs.py: run folders, run.json and how a run ends (failed, interrupted, a signal, a full disk), result files."""
import csv
import errno
import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import QUICK

import main
import runs

ROOT = Path(__file__).resolve().parent.parent


# -----------------------------------------------------------------------------
# what a run leaves behind

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


# -----------------------------------------------------------------------------
# run folders, run.json, signals, a full disk

def test_a_thousand_run_folders_in_one_second(tmp_path, monkeypatch):
    class Frozen(runs.datetime):
        @classmethod
        def now(cls, tz=None):
            return runs.datetime(2026, 1, 2, 3, 4, 5)
    monkeypatch.setattr(runs, "datetime", Frozen)
    made = {runs.new_run_dir(tmp_path, "x") for _ in range(1005)}   # the 1001st used to be a traceback
    assert len(made) == 1005 and all(p.is_dir() and p.name.startswith("20260102-030405_x") for p in made)
    assert all(p.stat().st_mode & 0o777 == 0o777 & ~runs._umask() for p in made)


def test_run_json_records_pid_and_host_and_survives_a_full_disk(tmp_path, monkeypatch, capsys):
    record = runs.RunRecord(tmp_path, {"mode": "run", "config": {"PAD": "x" * 2000}})
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
    with runs.stop_signals_as_interrupts():
        with pytest.raises(runs.Stopped, match="SIGHUP"):
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


def test_csv_cells_are_never_spreadsheet_formulas(tmp_path):
    rows = [{"removed": "=HYPERLINK(\"http://x\")", "added": "+cmd", "other": "-2+3", "at": "@SUM(A1)", "n": -0.5,
             "plain": "cat"}]
    runs.write_csv(tmp_path / "t.csv", rows)
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


# -----------------------------------------------------------------------------
# run_edit_pair: the one way an edit pair becomes a run folder (the command line's and the bench's)


def smoke_models_and_inputs():
    import inputs
    import loader
    import settings
    cfg = {**settings.default_config(main), **settings.SMOKE_SETTINGS, "SMOKE": True}
    images, prompts, notes = inputs.prepare_inputs(cfg)
    return cfg, loader.Models(cfg), (images, prompts, notes)


def test_a_run_refused_before_it_made_anything_leaves_no_folder(tmp_path):
    import errors
    cfg, models, inputs_ = smoke_models_and_inputs()
    cfg["OUTPUT_DIR"] = str(tmp_path)

    def refuses(cfg, models, run_dir, images, prompts, record, progress):
        raise errors.UserError("no SAM2 proposal looks like 'cat'")
    with pytest.raises(errors.UserError, match="no SAM2 proposal"):
        runs.run_edit_pair(cfg, models, inputs_, refuses)
    assert list(tmp_path.iterdir()) == [] and cfg["_RUN_DIR"] is None

    def fails_later(cfg, models, run_dir, images, prompts, record, progress):
        (run_dir / "mask_remove_cat.png").write_bytes(b"\x89PNG")
        raise errors.UserError("the mask of 'cat' lies outside the centre square")
    with pytest.raises(errors.UserError):
        runs.run_edit_pair(cfg, models, inputs_, fails_later)
    (run_dir,) = tmp_path.iterdir()   # what it made is kept, and run.json says why it ended
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "failed" and "outside the centre square" in record["error"]
    assert record["outputs"] == ["mask_remove_cat.png", "run.json"]


def test_run_edit_pair_records_the_callers_fields_progress_and_a_cancel(tmp_path):
    import errors
    cfg, models, inputs_ = smoke_models_and_inputs()
    cfg["OUTPUT_DIR"] = str(tmp_path)
    told = []

    def progress(step, k=None, n=None, run_dir=None):
        told.append((step, run_dir))
        if step == cancel_at:
            raise errors.RunCancelled(f"cancelled from the browser before step '{step}'")

    def pipeline(cfg, models, run_dir, images, prompts, record, progress):
        assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
        progress("masks")
        (run_dir / "mask_remove_cat.png").write_bytes(b"\x89PNG")
        progress("tokens")

    # cancelled before its first step: it made nothing, so it leaves no folder (as a refused run)
    cancel_at = "masks"
    with pytest.raises(errors.RunCancelled):
        runs.run_edit_pair(cfg, models, inputs_, pipeline, progress=progress, record={"app": "python app.py"})
    assert told[0][0] == "started" and told[1:] == [("masks", None)]
    assert list(tmp_path.iterdir()) == [] and cfg["_RUN_DIR"] is None
    # cancelled between steps: what it made stays, and run.json says 'cancelled'
    told.clear()
    cancel_at = "tokens"
    with pytest.raises(errors.RunCancelled):
        runs.run_edit_pair(cfg, models, inputs_, pipeline, progress=progress, record={"app": "python app.py"})
    (run_dir,) = tmp_path.iterdir()
    assert told == [("started", run_dir), ("masks", None), ("tokens", None)]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "cancelled" and record["app"] == "python app.py" and record["removed"] == "cat"
    assert record["outputs"] == ["mask_remove_cat.png", "run.json"] and run_dir.name.endswith("_cat-to-astronaut_smoke")


# -----------------------------------------------------------------------------
# a server's runs: one device queue, runs in worker threads ended by the server's signals


def test_the_device_queue_runs_one_at_a_time_in_order_and_a_cancel_withdraws_a_waiting_run():
    import threading
    import errors
    device = runs.DeviceQueue()
    log, told = [], {}
    release = threading.Event()
    cancels = {name: threading.Event() for name in "ABCD"}

    def run(name):
        try:
            with device.turn(cancelled=cancels[name], on_wait=lambda ahead: told.setdefault(name, []).append(ahead)):
                log.append(("start", name))
                if name == "A":
                    release.wait(10)
                log.append(("end", name))
        except errors.RunCancelled as err:
            log.append(("cancelled", name, str(err)))

    threads = {}
    for name in "ABCD":   # A runs; B, C, D wait in this order
        threads[name] = threading.Thread(target=run, args=(name,))
        threads[name].start()
        deadline = time.time() + 10
        while device.waiting < "ABCD".index(name) and time.time() < deadline:
            time.sleep(0.01)
    assert device.waiting == 3 and log == [("start", "A")]
    assert told == {"B": [1], "C": [2], "D": [3]}   # runs ahead of each, the running one included
    cancels["C"].set()
    threads["C"].join(10)
    assert log[-1][:2] == ("cancelled", "C") and "never started" in log[-1][2] and device.waiting == 2
    time.sleep(0.3)
    assert told["D"] == [3, 2]   # D moved up when C left
    release.set()
    for t in threads.values():
        t.join(10)
    assert [e[:2] for e in log if e[0] != "cancelled"] == [("start", "A"), ("end", "A"), ("start", "B"), ("end", "B"),
                                                           ("start", "D"), ("end", "D")]
    assert device.waiting == 0

    # first come, first served: six runs queued behind a busy device start in the order they came
    order, hold = [], threading.Event()

    def queued(name):
        with device.turn():
            order.append(name)
            if name == "busy":
                hold.wait(10)
            time.sleep(0.02)
    waiters = [threading.Thread(target=queued, args=(name,)) for name in ["busy", *"123456"]]
    for n, t in enumerate(waiters):
        t.start()
        while device.waiting < n and time.time() < deadline + 20:
            time.sleep(0.005)
        time.sleep(0.013 * n)   # the waiters' polls fall at scattered times, not in their order
    hold.set()
    for t in waiters:
        t.join(10)
    assert order == ["busy", *"123456"]


def run_in_thread(tmp_path, pipeline):
    """run_edit_pair in a worker thread, as the bench runs it: (thread, [what it ended with])."""
    import threading
    cfg, models, inputs_ = smoke_models_and_inputs()
    cfg["OUTPUT_DIR"] = str(tmp_path)
    ended = []

    def work():
        try:
            runs.run_edit_pair(cfg, models, inputs_, pipeline)
            ended.append("returned")
        except BaseException as err:   # noqa: BLE001 - the test reads what the run ended with
            ended.append(err)
    thread = threading.Thread(target=work)
    thread.start()
    return thread, ended


def test_a_server_stopped_by_a_signal_records_its_runs_in_threads_as_interrupted(tmp_path):
    started = []

    def pipeline(cfg, models, run_dir, images, prompts, record, progress):
        (run_dir / "mask_remove_cat.png").write_bytes(b"\x89PNG")
        started.append(run_dir)
        for _ in range(3000):   # Python between the device's calls: the stop lands at once
            time.sleep(0.01)
        (run_dir / "late.wav").write_bytes(b"RIFF")
    thread, ended = run_in_thread(tmp_path, pipeline)
    deadline = time.time() + 20
    while not started and time.time() < deadline:
        time.sleep(0.01)
    start = time.perf_counter()
    stopped = runs.interrupt_open_runs("SIGTERM (the process was told to stop)", wait_s=10)
    assert time.perf_counter() - start < 5
    thread.join(5)
    assert not thread.is_alive() and isinstance(ended[0], runs.Stopped)
    assert stopped == started
    record = json.loads((started[0] / "run.json").read_text())
    assert record["status"] == "interrupted" and record["error"] == "SIGTERM (the process was told to stop)"
    assert record["outputs"] == ["mask_remove_cat.png", "run.json"] and not (started[0] / "late.wav").exists()


def test_a_run_inside_one_long_call_is_recorded_as_interrupted_by_the_server(tmp_path):
    started = []

    def pipeline(cfg, models, run_dir, images, prompts, record, progress):
        started.append(run_dir)
        time.sleep(3)   # one call that Python cannot interrupt (a long kernel on the device)
        record.update(after="the call")
    thread, ended = run_in_thread(tmp_path, pipeline)
    deadline = time.time() + 20
    while not started and time.time() < deadline:
        time.sleep(0.01)
    runs.interrupt_open_runs("SIGHUP (the process was told to stop)", wait_s=0.2)
    record = json.loads((started[0] / "run.json").read_text())
    assert record["status"] == "interrupted" and record["error"].startswith("SIGHUP")
    thread.join(10)   # the run's thread stops when the call returns; the record it finds is final
    assert isinstance(ended[0], runs.Stopped)
    again = json.loads((started[0] / "run.json").read_text())
    assert again["status"] == "interrupted" and "after" not in again and again["ended"] == record["ended"]


def test_a_closed_run_record_is_final(tmp_path):
    """Once a server has ended a run (interrupt_open_runs closes its record from the main thread), whatever the
    run's own thread still writes leaves run.json as it was: the first close is the last word."""
    (tmp_path / "run").mkdir()
    record = runs.RunRecord(tmp_path / "run", {"mode": "run"})
    record.close("interrupted", error="SIGTERM (the process was told to stop)")
    final = (tmp_path / "run" / "run.json").read_text()
    record.update(step="audio")
    record.close("finished")
    assert (tmp_path / "run" / "run.json").read_text() == final and json.loads(final)["status"] == "interrupted"


# -----------------------------------------------------------------------------
# a run folder held by one process (--resume, a manifest run)

HOLDER = ("import sys, time; sys.path.insert(0, sys.argv[1]); import runs; "
          "runs.RunLock(sys.argv[2], 'a resume').acquire(); print('held', flush=True); time.sleep(600)")


def test_a_held_run_folder_is_refused_naming_its_holder_and_freed_when_the_holder_dies(tmp_path):
    import platform
    import subprocess
    import sys
    import errors
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(ROOT), str(tmp_path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(errors.UserError) as refused:
            runs.RunLock(tmp_path, "a resume").acquire()
        said = str(refused.value)
        assert f"is in use by process {holder.pid} on host {platform.node()} (a resume" in said
        assert f"kill {holder.pid}" in said and "\n" not in said
        assert runs.read_lock(tmp_path)["pid"] == holder.pid   # the refusal changed nothing
    finally:
        holder.kill()   # SIGKILL: nothing can clean up; the kernel frees the lock, the file stays
        holder.wait()
    assert (tmp_path / runs.LOCK_NAME).exists()
    with runs.RunLock(tmp_path, "a resume") as lock:
        assert runs.read_lock(tmp_path)["pid"] == os.getpid()
        assert any(f"process {holder.pid}" in n and "which has ended, was taken over" in n for n in lock.notes)
    assert not (tmp_path / runs.LOCK_NAME).exists()   # released: nothing left in the run folder
    with runs.RunLock(tmp_path, "a resume") as lock:
        assert lock.notes == []


def test_without_file_locks_a_live_holder_still_refuses(tmp_path, monkeypatch):
    import fcntl
    import platform
    import subprocess
    import errors

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", no_locks)
    sleeper = subprocess.Popen(["sleep", "600"])
    holder = {"pid": sleeper.pid, "host": platform.node(), "what": "a resume", "started": "now", "command": "x"}
    (tmp_path / runs.LOCK_NAME).write_text(json.dumps(holder))
    try:
        with pytest.raises(errors.UserError, match=f"in use by process {sleeper.pid}"):
            runs.RunLock(tmp_path, "a resume").acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    with runs.RunLock(tmp_path, "a resume") as lock:   # its holder has ended: taken, with what it is worth
        assert any("has no file locks" in n for n in lock.notes)
        assert runs.read_lock(tmp_path)["pid"] == os.getpid()


def test_earlier_attempts_never_leave_the_run_folder_and_are_never_overwritten(tmp_path):
    import errors
    run_dir, outside = tmp_path / "run", tmp_path / "elsewhere"
    run_dir.mkdir(), outside.mkdir()
    (run_dir / "pairs.csv").write_text("new")
    (run_dir / "earlier_attempts").symlink_to(outside)
    with pytest.raises(errors.UserError, match="earlier_attempts is a symbolic link to .*elsewhere, outside the run"):
        runs.keep_aside(run_dir, run_dir / "pairs.csv")
    assert list(outside.iterdir()) == [] and (run_dir / "pairs.csv").read_text() == "new"
    (run_dir / "earlier_attempts").unlink()
    (run_dir / "earlier_attempts").symlink_to(run_dir / "earlier_attempts")   # a loop
    with pytest.raises(errors.UserError, match="symbolic link"):
        runs.keep_aside(run_dir, run_dir / "pairs.csv")
    (run_dir / "earlier_attempts").unlink()
    (run_dir / "earlier_attempts").write_text("a file")
    with pytest.raises(errors.UserError, match="is a file, not a folder"):
        runs.keep_aside(run_dir, run_dir / "pairs.csv")
    (run_dir / "earlier_attempts").unlink()
    (run_dir / "kept").mkdir()
    (run_dir / "earlier_attempts").symlink_to("kept")   # inside the run folder: followed
    for n in (1, 3):   # try2 was deleted by hand: the next attempt must not land on try3
        (run_dir / "kept" / f"pairs_try{n}.csv").write_text(f"try{n}")
    runs.keep_aside(run_dir, run_dir / "pairs.csv")
    assert sorted(p.name for p in (run_dir / "kept").iterdir()) == ["pairs_try1.csv", "pairs_try3.csv",
                                                                    "pairs_try4.csv"]
    assert (run_dir / "kept" / "pairs_try3.csv").read_text() == "try3"
    assert (run_dir / "kept" / "pairs_try4.csv").read_text() == "new"
