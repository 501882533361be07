"""Run folders and their records: one new folder per run under OUTPUT_DIR, run.json saying how it ended.

    run_dir, results = run_edit_pair(cfg, models, (images, prompts, notes), main.main_pipeline)

run_edit_pair is the one way an edit pair becomes a run folder, for `python main.py` and for the browser bench
alike: a new folder (never an earlier run's), run.json written first ('running') and rewritten on every way
out ('finished', 'failed' with the traceback, 'interrupted' on Ctrl-C, SIGTERM or SIGHUP, 'cancelled' from
the bench), and no folder left behind by a run refused before it made anything. Every result file is written
complete or not at all (util.new_file), so a full disk never leaves half a file.
"""
import contextlib
import csv
import json
import os
import platform
import signal
import sys
import time
import traceback
import warnings
from datetime import datetime
from pathlib import Path

from errors import RunCancelled, UserError
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
    record: more fields for run.json. A run refused before it made anything (a UserError such as no proposal
    matching a name) removes its folder again: a folder holding only run.json has nothing in it to keep.
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
    except UserError:
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
        try:
            self.write()
        except OSError:   # not even run.json fits (a full disk): leave no empty run folder behind
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()
            raise

    def update(self, **fields):
        self.data.update(fields)
        self.write()

    def close(self, status, error=None, trace=None):
        """The final run.json. Never raises: it runs while another error is on its way out (a full disk)."""
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

    def write(self):
        # run.json is this run's own file: replaced atomically, so a crash never leaves half a JSON behind
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


@contextlib.contextmanager
def recorded_run(run_dir, data):
    """A RunRecord that ends 'finished', 'failed' (with the error) or 'interrupted', whatever happens inside."""
    record = RunRecord(run_dir, data)
    try:
        yield record
    except RunCancelled as err:
        record.close("cancelled", error=f"RunCancelled: {err}")
        raise
    except Stopped as err:
        record.close("interrupted", error=str(err))
        raise
    except KeyboardInterrupt:
        record.close("interrupted", error="KeyboardInterrupt (Ctrl-C)")
        raise
    except BaseException as err:
        record.close("failed", error=f"{type(err).__name__}: {err}", trace=traceback.format_exc(limit=8))
        raise
    record.close("finished")


def read_run_json(folder):
    """A folder's run.json as a dict ({} when there is none or it cannot be read)."""
    try:
        return json.loads((Path(folder) / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def keep_aside(run_dir, path):
    """Move an earlier attempt's file or folder to earlier_attempts/<stem>_tryN<suffix>: never overwritten."""
    earlier = run_dir / "earlier_attempts"
    earlier.mkdir(exist_ok=True)
    stem, suffix = (path.name, "") if path.is_dir() else (path.stem, path.suffix)
    n = 1 + sum(1 for p in earlier.iterdir() if p.name.startswith(f"{stem}_try"))
    os.replace(path, earlier / f"{stem}_try{n}{suffix}")


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
