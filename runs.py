"""Run folders and their records: one new folder per run under OUTPUT_DIR, run.json saying how it ended.

    run_dir, results = run_edit_pair(cfg, models, (images, prompts, notes), main.main_pipeline)

run_edit_pair is the one way an edit pair becomes a run folder, for `python main.py` and for the browser bench
alike: a new folder (never an earlier run's), run.json written first ('running') and rewritten on every way
out ('finished', 'failed' with the traceback, 'interrupted' on Ctrl-C, SIGTERM or SIGHUP, 'cancelled' from
the bench), and no folder left behind by a run refused or cancelled before it made anything. Every result file
is written complete or not at all (util.new_file), so a full disk never leaves half a file.

A server that runs pairs in worker threads (the browser bench) shares one device through a DeviceQueue (one run
at a time, first come first served, a waiting run withdrawn by its cancel before it starts) and ends its open
runs on Ctrl-C, SIGTERM or SIGHUP with interrupt_open_runs, so their run.json says 'interrupted' as the CLI's does.
A run folder that a manifest run or a resume works in is held by one process (RunLock); a resume moves what
it redoes into earlier_attempts/, never out of the run folder (keep_aside).
"""
import contextlib
import csv
import json
import os
import platform
import signal
import sys
import threading
import time
import traceback
import warnings
from datetime import datetime
from pathlib import Path

from errors import RunCancelled, UserError, shown
from settings import RUN_NAME_LIMIT, audio_steps, eval_seeds

# warnings about the libraries' own internals (AST's 128 kaldi bands leave an empty one, by design): they say
# nothing about a run, so they are neither shown nor kept in run.json
LIBRARY_NOTICES = ("pkg_resources is deprecated", "`torch.jit.script` is deprecated", "`torch.jit.load` is deprecated",
                   "The AudioLDMPipeline has been deprecated", "At least one mel filter has all zero values")


# -----------------------------------------------------------------------------
# one edit pair, one run folder


def run_edit_pair(cfg, models, inputs, pipeline, mode="run", progress=None, record=None):
    """One edit pair into a new run folder: (run_dir, results).

    inputs: (images, prompts, notes), checked by inputs.prepare_inputs (notes: its warnings and the classifier's);
    pipeline: main.main_pipeline, or sweep.run_sweep bound to the plan, called as pipeline(cfg, models, run_dir,
    images, prompts, run_record, progress); progress is told ('started', run_dir=...) once run.json exists.
    record: more fields for run.json. A run refused or cancelled before it made anything (a UserError such as no
    proposal matching a name, RunCancelled before the first step) removes its folder again: a folder holding only
    run.json has nothing in it to keep.
    """
    from util import safe_name
    import torch
    images, prompts, notes = inputs
    name = cfg["RUN_NAME"] or f"{safe_name(prompts[0].name)}-to-{safe_name(prompts[1].name)}"
    name += "_sweep" if mode == "sweep" else ""
    run_dir = new_run_dir(cfg["OUTPUT_DIR"], name + ("_smoke" if cfg["SMOKE"] else ""))
    cfg["_RUN_DIR"] = str(run_dir)   # for the command line's last word on an interrupted or failed run
    print(f"Run folder: {run_dir}\nDevice: {models.device}")
    data = {**run_record(cfg, models, mode, images, prompts, notes), **(record or {})}
    try:
        with torch.no_grad(), recorded_run(run_dir, data) as rec:
            if progress is not None:
                progress("started", run_dir=run_dir)
            results = pipeline(cfg, models, run_dir, images, prompts, rec, progress)
    except (UserError, RunCancelled):
        if [p.name for p in run_dir.iterdir()] == ["run.json"]:
            (run_dir / "run.json").unlink()
            run_dir.rmdir()
            cfg["_RUN_DIR"] = None
        raise
    return run_dir, results


# -----------------------------------------------------------------------------
# run folders: new, writable, nothing written outside them


def run_file(run_dir, filename):
    """run_dir / filename, refused (ValueError) if it would land outside run_dir."""
    path = Path(run_dir) / filename
    if Path(os.path.abspath(path)).parent != Path(os.path.abspath(run_dir)):
        raise ValueError(f"refusing to write {filename!r} outside the run folder {run_dir}")
    return path


def new_run_dir(output_dir, name):
    """outputs/<timestamp>_<name>/, created fresh: a run never writes into an earlier run's folder."""
    from util import safe_name
    import tempfile
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = safe_name(name, limit=RUN_NAME_LIMIT) if name else "run"
    try:
        for i in range(100):
            run_dir = Path(output_dir) / (f"{stamp}_{safe}" + (f"_{i}" if i else ""))
            try:
                run_dir.mkdir(parents=True, exist_ok=False)
                return run_dir
            except FileExistsError:
                continue
        # a hundred runs of this name in one second (a job array): a random suffix, which mkdtemp makes unique
        run_dir = Path(tempfile.mkdtemp(prefix=f"{stamp}_{safe}_", dir=output_dir))
        run_dir.chmod(0o777 & ~_umask())   # mkdtemp's folder is private (0700); a run folder is like any other
        return run_dir
    except OSError as err:
        raise UserError(f"cannot create a run folder in OUTPUT_DIR={str(output_dir)!r}: {err.strerror} "
                        f"({err.filename or output_dir}). Point --OUTPUT_DIR at a folder you can write to") from err


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_dir(output_dir):
    """Create OUTPUT_DIR and a file in it now, before any model loads: a read-only folder or disk, or one under a
    file, is found here and not after minutes of model loading. Folders made only for this are removed again."""
    out = Path(output_dir)
    made = [p for p in [out, *out.parents] if not p.exists()]   # deepest first
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile_in(out) as f:
            f.write(b"probe")
            f.flush()
    except OSError as err:
        raise UserError(f"OUTPUT_DIR={str(output_dir)!r} cannot be written: {err.strerror} ({err.filename or out}). "
                        "Point --OUTPUT_DIR at a folder you can write to (it is created when missing)") from err
    finally:
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()


def tempfile_in(folder):
    import tempfile
    return tempfile.TemporaryFile(dir=folder, prefix=".write-probe-")


# -----------------------------------------------------------------------------
# records: run.json, result files, warnings, timings


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
            for notice in LIBRARY_NOTICES:   # "always" above would show them again
                warnings.filterwarnings("ignore", message=notice)
            warnings.showwarning = show
            yield store
    finally:
        warnings.showwarning = shown


def save_tensors(data, path):
    """torch.save into a new file, complete or absent (util.new_file): a full disk leaves no cut embeddings.pt."""
    from util import new_file
    import torch
    with new_file(path) as f:
        torch.save(data, f)


def write_json(path, data):
    from util import new_file
    with new_file(path, "x") as f:   # never replaces a file; complete or absent
        json.dump(data, f, indent=2, default=str)


def write_csv(path, rows):
    """A table of result rows (complete or absent, never replacing a file); user text is spreadsheet-safe."""
    from util import new_file
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with new_file(path, "x", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[spreadsheet_text(k) for k in fields])
        writer.writeheader()
        writer.writerows({spreadsheet_text(k): spreadsheet_text(v) for k, v in r.items()} for r in rows)


def spreadsheet_text(value):
    """A text cell that a spreadsheet would run as a formula (=, +, -, @, or a tab or carriage return first) gets
    a leading apostrophe, which spreadsheets read as "this is text" (OWASP's advice on CSV injection). Numbers
    stay numbers."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


class RunRecord:
    """run.json: written when the run folder is made (status 'running') and rewritten on every exit path.

    update() adds fields as the run goes; close() sets the status ('finished', 'failed' with the error,
    'interrupted') and lists every file the run made, so a crashed run's folder says what it holds.
    """

    def __init__(self, run_dir, data):
        self.run_dir, self.path = Path(run_dir), Path(run_dir) / "run.json"
        # pid and host: a run killed with SIGKILL (which nothing can record) stays 'running'; `ps -p <pid>` on
        # that host tells it apart from a run still going
        self.data = {"status": "running", "started": datetime.now().isoformat(timespec="seconds"),
                     "pid": os.getpid(), "host": platform.node(), **data}
        # a server ends a run from its main thread while the run's own thread may still write (interrupt_open_runs):
        # writes take turns, and the first close is the last word
        self._lock = threading.RLock()
        self.closed = False
        self.stop_reason = None       # why a server stopped this run (interrupt_open_runs), for run.json's error
        try:
            self.write()
        except OSError:   # not even run.json fits (a full disk): leave no empty run folder behind
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()
            raise

    def update(self, **fields):
        with self._lock:
            if self.closed:   # the run was ended from outside (a server stopping): its record is final
                return
            self.data.update(fields)
            self.write()

    def close(self, status, error=None, trace=None):
        """The final run.json. Never raises: it runs while another error is on its way out (a full disk)."""
        with self._lock:
            if self.closed:
                return
            self.data.update(status=status, ended=datetime.now().isoformat(timespec="seconds"),
                             outputs=sorted(p.name for p in self.run_dir.iterdir() if not p.name.startswith(".")
                                            and p.name != "run.json.tmp"))
            if error is not None:
                self.data["error"] = error
            if trace is not None:
                self.data["traceback"] = trace
            try:
                self.write()
            except OSError as err:
                self.write_in_place(err)
            self.closed = True

    def write(self):
        # run.json is this run's own file: replaced atomically, so a crash never leaves half a JSON behind
        with self._lock:
            tmp = self.path.with_name("run.json.tmp")
            try:
                tmp.write_text(json.dumps(self.data, indent=2, default=str))
                os.replace(tmp, self.path)
            except OSError:
                tmp.unlink(missing_ok=True)   # never a 0-byte run.json.tmp next to the last whole run.json
                raise

    def write_in_place(self, err):
        """A full disk refuses the new run.json: the end of the run goes over the old one's own blocks instead,
        as a short record (status, error, times), so run.json never stays at 'running' for a run that ended."""
        short = {k: self.data[k] for k in ("status", "error", "started", "ended", "pid", "host", "outputs")
                 if k in self.data}
        short["note"] = (f"run.json was cut to these fields: the full record could not be written "
                         f"({err.strerror or err}); results.json and the listed files hold the rest")
        text = json.dumps(short, indent=2, default=str).encode()
        try:
            with open(self.path, "r+b") as f:
                if len(text) > os.fstat(f.fileno()).st_size:
                    short.pop("outputs", None)
                    text = json.dumps(short, indent=2, default=str).encode()
                f.write(text)
                f.truncate(len(text))
        except OSError as again:
            print(f"WARNING: run.json in {self.run_dir} could not be updated ({again.strerror or again}): it still "
                  "says 'running'; this run ended " + self.data["status"], file=sys.stderr)


_OPEN_RUNS = {}            # RunRecord -> ident of the thread running it: the runs of this process not yet ended
_OPEN_LOCK = threading.Lock()


@contextlib.contextmanager
def recorded_run(run_dir, data):
    """A RunRecord that ends 'finished', 'failed' (with the error) or 'interrupted', whatever happens inside."""
    record = RunRecord(run_dir, data)
    with _OPEN_LOCK:
        _OPEN_RUNS[record] = threading.get_ident()
    try:
        yield record
    except RunCancelled as err:
        record.close("cancelled", error=f"RunCancelled: {err}")
        raise
    except Stopped as err:
        record.close("interrupted", error=record.stop_reason or str(err))
        raise
    except KeyboardInterrupt:
        record.close("interrupted", error=record.stop_reason or "KeyboardInterrupt (Ctrl-C)")
        raise
    except BaseException as err:
        record.close("failed", error=f"{type(err).__name__}: {err}", trace=traceback.format_exc(limit=8))
        raise
    finally:
        with _OPEN_LOCK:
            _OPEN_RUNS.pop(record, None)
    record.close("finished")


def read_run_json(folder):
    """A folder's run.json as a dict ({} when there is none or it cannot be read)."""
    try:
        return json.loads((Path(folder) / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def keep_aside(run_dir, path):
    """Move an earlier attempt's file or folder to earlier_attempts/<stem>_tryN<suffix>: never overwritten."""
    earlier = earlier_attempts(run_dir)
    earlier.mkdir(exist_ok=True)
    stem, suffix = (path.name, "") if path.is_dir() else (path.stem, path.suffix)
    n = 1 + sum(1 for p in earlier.iterdir() if p.name.startswith(f"{stem}_try"))
    while os.path.lexists(earlier / f"{stem}_try{n}{suffix}"):   # a gap (an attempt deleted by hand) is not reused
        n += 1
    os.replace(path, earlier / f"{stem}_try{n}{suffix}")


def earlier_attempts(run_dir):
    """run_dir/earlier_attempts, where a resume moves what it redoes; a symbolic link there is resolved, and one
    that leads out of the run folder (or a file in its place) is refused: an attempt never leaves its run."""
    earlier = Path(run_dir) / "earlier_attempts"
    if not os.path.lexists(earlier) or (earlier.is_dir() and not earlier.is_symlink()):
        return earlier
    if not earlier.is_symlink():
        raise UserError(f"{shown(earlier)} is a file, not a folder: a resume moves earlier attempts into that "
                        "folder. Rename the file, then resume again")
    target = os.path.realpath(earlier)
    inside = Path(os.path.realpath(run_dir)) in Path(target).parents and os.path.isdir(target)
    if not inside:
        raise UserError(f"{shown(earlier)} is a symbolic link to {shown(os.readlink(earlier))}, "
                        + ("outside the run folder" if Path(os.path.realpath(run_dir)) not in Path(target).parents
                           else "which is not a folder")
                        + ": a resume moves earlier attempts there, and an attempt never leaves its run folder. "
                        f"Replace the link with a folder (rm {shown(earlier)}), then resume again")
    return Path(target)


# -----------------------------------------------------------------------------
# a run folder held by one process: --resume and a manifest run lock it

LOCK_NAME = ".run.lock"   # hidden: not one of the run's outputs


class RunLock:
    """The run folder is this process's until release(): a second --resume (or a resume of a manifest run still
    going) is refused, naming the holder. An flock on run_dir/.run.lock, which the kernel releases when the
    holder ends however it ends (SIGKILL, a crash, a lost node), so a lock left by a dead process never blocks;
    the file's content (pid, host, start, command) only names the holder. Several processes of one accelerate
    launch: the main process holds it for all of them.
    On a file system without locks (flock fails) it falls back to the content: a holder still alive on this
    host refuses, any other is taken over, with a warning that the lock is only that good."""

    def __init__(self, run_dir, what, processes=1):
        self.run_dir, self.path, self.fd = Path(run_dir), Path(run_dir) / LOCK_NAME, None
        self.holder = {"pid": os.getpid(), "host": platform.node(), "what": what, "processes": processes,
                       "started": datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv)}
        self.notes = []

    def acquire(self):
        for _ in range(100):   # another process may unlink the file between our open and our lock: open again
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                import fcntl
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _lock_holder(fd)
                os.close(fd)
                raise UserError(held_message(self.run_dir, holder)) from None
            except (ImportError, OSError) as err:   # no flock here (ENOLCK, EOPNOTSUPP; not a POSIX system)
                return self._acquire_without_flock(fd, err)
            if _same_file(self.path, fd):
                break
            os.close(fd)
        previous = _lock_holder(fd)
        if previous:   # the kernel freed the lock, so its holder has ended (SIGKILL leaves the file behind)
            self.notes.append(f"a lock left in {self.run_dir} by {holder_words(previous)}, which has ended, was "
                              "taken over")
        self.fd = fd
        self._write()
        return self

    def _acquire_without_flock(self, fd, err):
        previous = _lock_holder(fd)
        if previous and alive(previous) and previous.get("pid") != os.getpid():
            os.close(fd)
            raise UserError(held_message(self.run_dir, previous))
        self.notes.append(f"the file system of {self.run_dir} has no file locks ({err}): the folder is marked as "
                          "held, but two resumes started in the same second, or on two hosts, are not kept apart")
        self.fd = fd
        self._write()
        return self

    def _write(self):
        data = json.dumps(self.holder).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self):
        """Remove the lock file while still holding it (a waiting process then opens a fresh file), then unlock."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            if _same_file(self.path, self.fd):
                self.path.unlink()
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _same_file(path, fd):
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except OSError:
        return False


def _lock_holder(fd):
    """The holder a lock file names ({} when empty or unreadable)."""
    try:
        data = json.loads(os.pread(fd, 65536, 0) or b"{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def read_lock(run_dir):
    """The holder named in run_dir's lock file ({} when there is none): who holds it, or held it last."""
    try:
        data = json.loads((Path(run_dir) / LOCK_NAME).read_text() or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def alive(holder):
    """Whether the holder's process still runs (on another host: assumed so, it cannot be asked from here)."""
    if holder.get("host") != platform.node():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, TypeError, ValueError, OverflowError):
        return True
    return True


def holder_words(holder):
    pid, host = holder.get("pid", "?"), holder.get("host", "?")
    launch = f", the main one of {holder['processes']} processes" if holder.get("processes", 1) > 1 else ""
    return f"process {pid} on host {shown(host)} ({holder.get('what', 'a run')}{launch}, since " \
           f"{holder.get('started', '?')}: {shown(holder.get('command', '?'))})"


def held_message(run_dir, holder):
    pid = holder.get("pid", "?")
    return (f"{shown(run_dir)} is in use by {holder_words(holder)}. Two processes on one run folder would move each "
            f"other's pairs aside and overwrite each other's tables: wait until it ends (ps -p {pid} on "
            f"{shown(holder.get('host', '?'))}) or stop it (kill {pid}), then resume. A lock whose process has "
            "ended does not block")


def run_record(cfg, models, mode, images=None, prompts=None, notes=()):
    import torch
    record = {
        "command": " ".join(sys.argv),
        "mode": mode,
        "config": {k: v for k, v in cfg.items() if not k.startswith("_")},
        "sampler": {"name": cfg["SAMPLER"], "steps": audio_steps(cfg)},
        "seed": cfg["SEED"], "seeds": eval_seeds(cfg),
        "device": str(models.device),
        "smoke": models.smoke,
        "model_load_s": models.load_seconds,
        "warnings": list(notes),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    ssv2a = vars(models).get("ssv2a")   # loaded by now in a real run; never loaded only for the record
    if getattr(ssv2a, "checkpoint_file", None):   # the SSV2A weights read: path, size, SHA-256
        record["ssv2a_checkpoint"] = ssv2a.checkpoint_file
    record["back_end"] = "ciap" if cfg.get("CIAP_CHECKPOINT") else "ssv2a"
    head = vars(models).get("ciap")
    if head is not None:   # the CIAP head read: path, size, SHA-256 and what it was trained as
        from model.ciap import describe
        record["ciap_checkpoint"] = {**head.checkpoint_file, "describe": describe(head.info)}
    if images is not None:
        record.update(images={"original": str(images[0]), "edited": str(images[1])},
                      removed=prompts[0].name, added=prompts[1].name,
                      prompts={p.name: ({"text": p.text, "union": p.union} if p.by_text
                                        else {"points": p.points, "labels": p.labels}) for p in prompts})
    return record


def detection_record(detections):
    return [[{"label": d.label, "score": round(d.score, 4), "box": [round(v, 1) for v in d.box]} for d in dets]
            for dets in detections]


# -----------------------------------------------------------------------------
# signals: SIGTERM and SIGHUP end a run like Ctrl-C, recorded


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a cluster job cancelled, the terminal closed): handled like Ctrl-C."""

    def __init__(self, signum):
        self.signum = signum
        super().__init__(f"{signal.Signals(signum).name} (the process was told to stop)")


@contextlib.contextmanager
def stop_signals_as_interrupts():
    """SIGTERM and SIGHUP raise Stopped in the main thread while the run goes, so run.json records them."""
    def stop(signum, frame):
        raise Stopped(signum)

    names = [s for s in ("SIGTERM", "SIGHUP") if hasattr(signal, s)]
    try:
        previous = {s: signal.signal(getattr(signal, s), stop) for s in names}
    except ValueError:   # not the main thread (e.g. a UI calls main()): signals stay as they were
        previous = {}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(getattr(signal, s), handler)


class _StoppedInThread(Stopped):
    """Raised inside a run's own thread by interrupt_open_runs: an exception a thread can be handed by type
    (no arguments); the signal's name is in the record's stop_reason."""

    def __init__(self):
        KeyboardInterrupt.__init__(self, "the server was told to stop")
        self.signum = None


def interrupt_open_runs(reason, wait_s=10.0):
    """End every run of this process that runs in a thread other than this one, as Ctrl-C ends the CLI's run.

    For a server whose runs go in worker threads (the browser bench) when its main thread gets Ctrl-C, SIGTERM or
    SIGHUP: each run's thread gets a Stopped raised at its next Python instruction, so the run stops where it is
    and its run.json says 'interrupted' (error: `reason`, e.g. 'SIGTERM (the process was told to stop)') with the
    files made so far; the threads are given wait_s seconds to get there. A run still inside one long device call
    after that is recorded as interrupted from here. Returns the run folders that were open.
    """
    import ctypes
    me = threading.get_ident()
    with _OPEN_LOCK:
        targets = [(rec, ident) for rec, ident in _OPEN_RUNS.items() if ident != me]
    for rec, ident in targets:
        rec.stop_reason = reason
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(_StoppedInThread))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(rec in _OPEN_RUNS for rec, _ in targets):
        time.sleep(0.05)
    for rec, _ in targets:
        rec.close("interrupted", error=reason)   # no-op for a run that recorded its own end
    return [rec.run_dir for rec, _ in targets]


# -----------------------------------------------------------------------------
# one device, several callers: the browser bench's queue


class DeviceQueue:
    """Runs that share one device, one at a time, first come first served.

        with device_queue.turn(cancelled=event, on_wait=show):   # blocks until this run's turn
            run_edit_pair(...)

    on_wait(ahead) is told how many runs are ahead (the running one included) whenever that number changes,
    from the waiting thread. A `cancelled` event set while the run waits withdraws it: RunCancelled, and the run
    never starts (no folder, nothing on the device).
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._line = []       # tickets of the waiting runs, the next one first
        self._busy = False    # a run holds the device

    def ahead(self, ticket):
        return self._line.index(ticket) + int(self._busy)

    @property
    def waiting(self):
        with self._cond:
            return len(self._line)

    @contextlib.contextmanager
    def turn(self, cancelled=None, on_wait=None, poll_s=0.1):
        ticket = object()
        with self._cond:
            self._line.append(ticket)
        told = None
        try:
            while True:
                with self._cond:
                    if not self._busy and self._line[0] is ticket:
                        self._line.pop(0)
                        self._busy = True
                        break
                    ahead = self.ahead(ticket)
                if cancelled is not None and cancelled.is_set():
                    raise RunCancelled(f"cancelled while waiting in the queue ({ahead} run(s) ahead): it never "
                                       "started")
                if on_wait is not None and ahead != told:
                    on_wait(ahead)   # outside the lock: a slow listener holds up no other run
                    told = ahead
                with self._cond:
                    self._cond.wait(poll_s)
        except BaseException:
            with self._cond:
                if ticket in self._line:
                    self._line.remove(ticket)
                self._cond.notify_all()
            raise
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
