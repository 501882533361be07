"""Manifests: many edit pairs from a CSV, the models loaded once, shared out over GPUs with accelerate.

    python main.py --manifest pairs.csv                              # one process
    accelerate launch --multi_gpu --num_processes 4 main.py --manifest pairs.csv   # one process per GPU
    python main.py --resume outputs/<run>                            # finished pairs kept, the rest redone

Every row is checked before any model loads (a broken row is reported and skipped; a repeated row runs once).
Each pair runs the plan's main_pipeline in its own sub-folder pairNNN_<removed>-to-<added>/ with its own
run.json; a pair that fails is recorded and the others go on. When every process is done, the main process
reads the pair folders back and writes pairs.csv (one row per manifest row, its status and verdict columns)
and summary.json: the headline over pairs (pairs as the unit: the mean of the per-pair effects with its interval
over pairs and n; each pair's status adjusted for the number of pairs by Holm or Benjamini-Hochberg), means and
stds over the finished pairs, and the set-level FAD / FD / KL of metrics.py.
The main process holds the run folder while it works (runs.RunLock), so a second --resume of it is refused;
each pair's run.json keeps the manifest row it ran with, so a resume refuses a manifest.csv edited under
finished pairs (manifest_changes).
"""
import contextlib
import csv
import hashlib
import io
import json
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from errors import MISSING, UserError, path_problem, shown
from inputs import check_ciap_checkpoint, csv_text, prepare_inputs, source_names
from loader import load_models
from runs import (RunLock, earlier_attempts, keep_aside, new_run_dir, read_run_json, recorded_run, run_file,
                  run_record, write_csv, write_json)
from settings import check_settings, cut, default_config

MANIFEST_COLUMNS = ["original", "edited", "remove", "remove_x", "remove_y", "add", "add_x", "add_y"]
OPTIONAL_COLUMNS = ["remove_labels", "add_labels", "kept", "eval_labels", "reference_audio", "audio_input"]
HEADER_LINE = ",".join(MANIFEST_COLUMNS)
MANIFEST_HELP = ("columns: original, edited, remove, remove_x, remove_y, [remove_labels], add, add_x, add_y, "
                 "[add_labels], [kept], [eval_labels], [reference_audio], [audio_input]; several points as 410;370, "
                 "kept as dog;rocket, "
                 "eval_labels as cat=a cat meowing;duck=a duck quacking; empty x and y = find the object by name")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def read_manifest(path):
    """The rows of a manifest CSV as dicts (column -> text), as csv.DictReader gives them: a row's fields beyond
    the header under the key None, a short row's missing fields None (complete_row says what that means)."""
    return parse_manifest(manifest_bytes(path), path)


def manifest_bytes(path):
    """The manifest file's bytes; UserError when the path is not a regular file (a folder, a FIFO ...): said as
    what it is, and a FIFO is never opened."""
    path = Path(path)
    problem = path_problem(path)
    if problem == MISSING:
        raise UserError(f"manifest not found: {shown(path)}. A CSV with a header row; {MANIFEST_HELP}")
    if problem:
        inside = sorted(path.glob("*.csv")) if path.is_dir() else []
        raise UserError(f"manifest {shown(path)} {problem}: give the CSV file itself"
                        + (f", e.g. --manifest {shown(inside[0])}" if inside else "") + f"; {MANIFEST_HELP}")
    return path.read_bytes()


def parse_manifest(data, path):
    """Rows of the manifest's bytes (UTF-8, with or without Excel's byte-order mark); UserError for a file
    without the header row, one that lacks columns, or one without rows."""
    text = csv_text(data, "manifest", path)
    # newline="": a quoted field may hold a line break; blank lines are skipped, as csv.DictReader does
    records = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    if not records:
        raise UserError(f"manifest {shown(path)} is empty: its first line names the columns ({HEADER_LINE}), "
                        f"each line below is one edit pair; {MANIFEST_HELP}")
    header = [h.strip() for h in records[0]]
    missing = [c for c in MANIFEST_COLUMNS if c not in header]
    if missing and not set(header) & set(MANIFEST_COLUMNS + OPTIONAL_COLUMNS) and looks_like_data(header):
        raise UserError(f"manifest {shown(path)} has no header row: its first line "
                        f"({cut(shown(','.join(records[0])), 80)}) holds data, not column names, so it would be "
                        f"read as the header. Add this line above it: {HEADER_LINE}"
                        + (f" (then the names of the optional columns the rows fill, in their order: "
                           f"{', '.join(OPTIONAL_COLUMNS)})" if len(header) > len(MANIFEST_COLUMNS) else ""))
    if missing:
        raise UserError(f"manifest {shown(path)} lacks columns {', '.join(missing)}: its first line must name the "
                        f"columns, e.g. {HEADER_LINE}; {MANIFEST_HELP}")
    if len(records) == 1:
        raise UserError(f"manifest {shown(path)} has no rows: only the header line; add one line per edit pair. "
                        f"{MANIFEST_HELP}")
    rows = []
    for fields in records[1:]:
        row = dict(zip(header, fields))
        if len(fields) > len(header):
            row[None] = fields[len(header):]
        row.update({c: None for c in header[len(fields):]})
        rows.append(row)
    return rows


def looks_like_data(fields):
    """A first line that holds an image file name or a number is a data row, not a header."""
    def number(text):
        try:
            float(text.replace(";", "").strip() or "x")
            return True
        except ValueError:
            return False
    return any(f.strip().lower().endswith(IMAGE_SUFFIXES) or number(f) for f in fields)


def complete_row(i, row):
    """(row, notes) for a row as read: more fields than the header is an error (they would be lost); a short
    row's missing optional fields read as empty, with a note; a missing required field is an error."""
    n_header = len([k for k in row if k is not None])
    if None in row:
        extra = row[None]
        raise UserError(f"the row has {n_header + len(extra)} fields but the header {n_header}: the last "
                        f"{len(extra)} ({', '.join(repr(cut(e, 30)) for e in extra[:4])}) belong to no column. Quote "
                        'a field that holds a comma ("my, image.jpg"); separate several points with ";" (410;370)')
    short = [c for c, v in row.items() if v is None]
    if not short:
        return row, []
    required = [c for c in short if c in MANIFEST_COLUMNS]
    if required:
        raise UserError(f"the row has {n_header - len(short)} fields but the header {n_header}: nothing for "
                        f"{', '.join(required)}. Write an empty field as two commas with nothing between them")
    return {**row, **{c: "" for c in short}}, [
        f"manifest row {i} has {n_header - len(short)} of the header's {n_header} fields: its {', '.join(short)} "
        "read as empty"]


def pair_config(cfg, row, manifest_dir):
    """The run config of one manifest row (paths relative to the manifest's folder, then IMAGE_DIR)."""
    def numbers(text, what):
        try:
            return [float(v) if "." in v else int(v) for v in str(text or "").replace(",", ";").split(";") if v.strip()]
        except ValueError:
            raise UserError(f"{what}={text!r} is not a number or a ;-separated list of numbers") from None

    def image(name):
        p = Path(name)
        return str(manifest_dir / p) if not p.is_absolute() and (manifest_dir / p).is_file() else name

    prompts = {}
    for role in ("remove", "add"):
        name = (row.get(role) or "").strip()
        if not name:
            raise UserError(f"the '{role}' column is empty: name the object to {role}")
        xs, ys = numbers(row[f"{role}_x"], f"{role}_x"), numbers(row[f"{role}_y"], f"{role}_y")
        if not xs and not ys:
            prompts[name] = {}   # empty coordinates: find the object by its name
            continue
        labels = numbers(row.get(f"{role}_labels") or ";".join(["1"] * len(xs)), f"{role}_labels")
        prompts[name] = {"x": xs, "y": ys, "labels": labels}
    labels = dict(cfg["EVAL_LABELS"])
    for item in (row.get("eval_labels") or "").split(";"):
        if "=" in item:
            name, text = item.split("=", 1)
            labels[name.strip()] = text.strip()
    kept = [k.strip() for k in (row.get("kept") or "").split(";") if k.strip()]
    return {**cfg, "ORIGINAL": image((row.get("original") or "").strip()),
            "EDITED": image((row.get("edited") or "").strip()), "SAM2_PROMPTS": prompts, "EVAL_LABELS": labels,
            "KEPT_SOURCES": kept if row.get("kept") is not None else cfg["KEPT_SOURCES"],
            # optional column audio_input: the recording A_0 of this pair (step 8); empty = the run's AUDIO_INPUT
            "AUDIO_INPUT": image(row["audio_input"].strip()) if (row.get("audio_input") or "").strip()
            else cfg["AUDIO_INPUT"]}


@dataclass
class Manifest:
    """A manifest checked row by row before any model loads."""
    path: Path                    # the CSV read
    base_dir: Path                # relative image paths are relative to this folder (the manifest's own)
    rows: list                    # every row as read (a short row completed: complete_row)
    pairs: list                   # [(row number, cfg, images, prompts, notes)] of the rows that run
    skipped: list                 # rows the pre-check refused: {pair, original, edited, error}
    duplicates: list              # rows equal to an earlier one: {pair, same_as}; they run once
    notes: list                   # warnings for run.json
    source: str = ""              # the user's manifest file (a resumed run reads its copy in the run folder)
    reference: list = None        # real audio to compare the sets with: files / folders (reference_audio, --reference)
    data: bytes = b""             # the file's bytes as checked: the run folder's manifest.csv is these
    sha256: str = ""              # of data, in run.json and in each pair's run.json

    def ran_with(self, i):
        """What pair i runs with, for its run.json: the manifest's hash and the row's content."""
        return {"row": i, "fields": self.rows[i - 1], "manifest_sha256": self.sha256}


def pair_folder(i, prompts):
    """The sub-folder of manifest row i: the same name in every process and every resume."""
    from util import safe_name
    return f"pair{i:03d}_{safe_name(prompts[0].name)}-to-{safe_name(prompts[1].name)}"


def pair_key(images, prompts, p_cfg):
    """What makes two rows the same run: the images (resolved), objects, points, labels and kept sources."""
    from dataclasses import asdict
    return json.dumps([[str(Path(p).resolve()) for p in images], [asdict(p) for p in prompts],
                       p_cfg["EVAL_LABELS"], p_cfg["KEPT_SOURCES"]], sort_keys=True, default=str)


def prepare_manifest(cfg, manifest, base_dir=None):
    """Every row checked before any model loads; duplicates of an earlier row are warned about and run once."""
    data = manifest_bytes(manifest)
    rows = parse_manifest(data, manifest)
    if cfg["CIAP_CHECKPOINT"]:   # one back end for every row: a bad checkpoint refuses the manifest, not each row
        check_ciap_checkpoint(cfg["CIAP_CHECKPOINT"], cfg["SMOKE"])
    base_dir = Path(base_dir) if base_dir else Path(manifest).resolve().parent
    pairs, skipped, duplicates, notes, seen = [], [], [], [], {}
    for i, row in enumerate(rows, start=1):
        try:
            row, row_notes = complete_row(i, row)
            rows[i - 1] = row
            p_cfg = pair_config(cfg, row, base_dir)
            images, prompts, pair_notes = prepare_inputs(p_cfg)
        except (UserError, ValueError) as err:
            print(f"SKIPPED pair {i} ({shown(row.get('original'))} -> {shown(row.get('edited'))}): {err}")
            skipped.append({"pair": i, "original": row.get("original"), "edited": row.get("edited"),
                            "error": str(err)})
            continue
        for note in row_notes:
            print(f"WARNING: {note}")
        notes += row_notes
        key = pair_key(images, prompts, p_cfg)
        if key in seen:
            note = (f"manifest row {i} repeats row {seen[key]} (same images, objects, points and labels): "
                    f"it runs once, as pair {seen[key]}, and counts once in the summary")
            print(f"WARNING: {note}")
            notes.append(note)
            duplicates.append({"pair": i, "same_as": seen[key]})
            continue
        seen[key] = i
        pairs.append((i, p_cfg, images, prompts, pair_notes))
    if not pairs:
        raise UserError(f"no row of {shown(manifest)} can run ({len(skipped)} skipped, reasons above); nothing was run")
    reference = []
    for i, row in enumerate(rows, start=1):   # reference_audio: a file or folder of real audio per row (optional)
        ref = (row.get("reference_audio") or "").strip()
        path = Path(ref) if Path(ref).is_absolute() else base_dir / ref
        if ref and str(path) not in reference:
            check_reference(path, f"manifest row {i}: reference_audio {shown(ref)}")
            reference.append(str(path))
    return Manifest(Path(manifest), base_dir, rows, pairs, skipped, duplicates, notes, reference=reference,
                    data=data, sha256=hashlib.sha256(data).hexdigest())


def check_reference(path, what):
    """A reference file or folder of real audio, before any model loads: every audio file in it a regular file
    that soundfile reads (a FIFO would block the set-level figures forever after the last pair)."""
    import metrics
    if path_problem(path) == MISSING and not Path(path).is_dir():
        raise UserError(f"{what} not found (looked at {shown(path)})")
    try:
        metrics.reference_files([path])
    except (FileNotFoundError, ValueError) as err:
        raise UserError(f"{what}: {err}") from None


def manifest_state(cfg):
    """accelerate's PartialState: this process's index and the process count under `accelerate launch` (or
    torchrun); one process, index 0, under plain python. Smoke and DEVICE=cpu runs share out over gloo. A
    process that has finished its pairs waits MANIFEST_WAIT_HOURS for the others."""
    from datetime import timedelta
    from accelerate import PartialState
    return PartialState(cpu=cfg["SMOKE"] or cfg["DEVICE"] == "cpu", timeout=timedelta(hours=cfg["MANIFEST_WAIT_HOURS"]))


def resume_target(run_dir, cfg, defaults):
    """The run folder, config and manifest of `--resume outputs/<run>`: UserError when it is not a manifest run.
    defaults: main.py's constants (settings.default_config), which the command line may not change on a resume."""
    run_dir = Path(run_dir)
    record = read_run_json(run_dir)
    if not run_dir.is_dir():
        problem = path_problem(run_dir)
        said = "no such folder" if problem == MISSING else f"{run_dir.name} " + (problem or "is a file, not a folder")
        raise UserError(f"--resume {shown(run_dir)}: {said.replace('not a regular file', 'not a folder')}; give a "
                        "manifest's run folder, e.g. --resume outputs/<timestamp>_manifest-pairs")
    if not record:
        raise UserError(f"--resume {shown(run_dir)}: the folder has no readable run.json, so it is not a run folder")
    if record.get("mode") != "manifest" or path_problem(run_dir / "manifest.csv"):
        no_copy = "" if (run_dir / "manifest.csv").is_file() else ", and it has no manifest.csv"
        raise UserError(f"--resume {shown(run_dir)}: only a manifest run can be resumed (its run.json says mode "
                        f"{record.get('mode')!r}{no_copy})")
    earlier_attempts(run_dir)   # a link out of the run folder is refused now, not when the first pair is redone
    given = {k: v for k, v in cfg.items() if not k.startswith("_") and k != "DEVICE" and v != defaults.get(k)}
    if given:
        raise UserError(f"--resume runs with the settings the run started with (run.json); only --DEVICE may "
                        f"change. Got {', '.join(sorted(given))}")
    started = record.get("config", {})
    resumed = {**defaults, **started, "DEVICE": cfg["DEVICE"] or started.get("DEVICE", defaults["DEVICE"])}
    resumed["DDIM_STEPS"] = record.get("sampler", {}).get("steps", resumed["DDIM_STEPS"])
    resumed["_STEPS_GIVEN"] = True
    return run_dir, resumed, record


def manifest_changes(run_dir, manifest):
    """Where the run folder's manifest.csv now differs from what its pairs ran with (each pair's run.json keeps
    its row: Manifest.ran_with). Returns (kept, redone, unknown): lines for finished pairs, which a resume keeps,
    and for pairs it redoes, naming the row, its folder and the columns that differ; unknown: finished pairs that
    recorded no row (made before rows were recorded), which cannot be checked."""
    now = dict(enumerate(manifest.rows, start=1))
    kept, redone, unknown = [], [], []
    folders = sorted(p for p in Path(run_dir).iterdir() if re.match(r"pair\d+_", p.name) and p.is_dir())
    for folder in folders:
        record = read_run_json(folder)
        ran = record.get("manifest_row")
        if not isinstance(ran, dict):
            if record.get("status") == "finished":
                unknown.append(folder.name)
            continue
        if now.get(ran.get("row")) == ran.get("fields"):
            continue
        line = (f"row {ran.get('row')} ({folder.name}, {record.get('status')}): "
                + row_difference(ran.get("fields") or {}, now.get(ran.get("row"))))
        (kept if record.get("status") == "finished" else redone).append(line)
    return kept, redone, unknown


def row_difference(old, new):
    """'remove_x was '448', now '500'; ...' between a recorded row and the manifest's row now (None: gone)."""
    if new is None:
        return "the row is no longer in manifest.csv"
    columns = [c for c in dict.fromkeys([*old, *new]) if old.get(c) != new.get(c)]
    said = [f"{shown(c)} was {cut(shown(old.get(c, '')), 40)!r}, now {cut(shown(new.get(c, '')), 40)!r}"
            for c in columns[:4]]
    return "; ".join(said) + (f"; {len(columns) - 4} more columns" if len(columns) > 4 else "")


def check_unchanged(run_dir, manifest, previous):
    """UserError when a finished pair ran with a row that manifest.csv no longer holds: a resume keeps finished
    pairs, so it would mix two manifests. Returns the notes for pairs it redoes with a changed row."""
    kept, redone, unknown = manifest_changes(run_dir, manifest)
    if kept:
        source = Path(previous.get("manifest") or "pairs.csv")
        copy = Path(previous.get("manifest_dir") or ".") / f"{source.stem}_edited.csv"
        raise UserError(
            f"--resume {shown(run_dir)}: its manifest.csv changed since these finished pairs ran:\n  "
            + "\n  ".join(kept) + "\nA resume keeps finished pairs as they are, so the run would mix two manifests. "
            f"To run the edited rows, start a new run: cp {shown(run_dir / 'manifest.csv')} {shown(copy)} && python "
            f"main.py --manifest {shown(copy)} with the settings of run.json's command (image paths are relative to "
            f"{shown(copy.parent)}). To resume this run instead, undo the edit: each pair's run.json keeps the row it "
            "ran with (manifest_row)")
    notes = [f"manifest.csv changed for a pair this resume redoes, which runs with the row as it is now (the "
             f"earlier attempt, with its row, is kept in earlier_attempts/): {line}" for line in redone]
    if unknown:
        notes.append(f"{len(unknown)} finished pair(s) ({', '.join(unknown[:3])}{' ...' if len(unknown) > 3 else ''}) "
                     "were made before pairs recorded their manifest row: whether manifest.csv changed since they "
                     "ran cannot be checked")
    return notes


def hold(stack, run_dir, what, state, notes):
    """The main process takes the run folder for every process of the launch (runs.RunLock, released when the
    stack closes); the lock's notes (a dead holder's lock taken over) are added to notes. Returns the refusal's
    message when another process holds it, else None."""
    try:
        lock = stack.enter_context(RunLock(run_dir, what, state.num_processes))
    except UserError as err:
        return str(err)
    notes += lock.notes
    return None


def run_manifest_job(plan, cfg, mode, target):
    """--manifest FILE or --resume RUN_DIR, in each process accelerate started (or the only one); each pair
    runs plan.main_pipeline (main.py) in its own sub-folder. The main process holds the run folder from before
    the first change to after the last write (runs.RunLock): a second resume of it is refused, in every process
    of its launch."""
    import torch
    from accelerate.utils import broadcast_object_list
    state = manifest_state(cfg)
    main_process = state.is_main_process
    command_line = cfg   # the command line's config: its last words on Ctrl-C name the run folder from here
    run_dir = previous = data = record = None
    notes = []
    with contextlib.ExitStack() as held:
        # the checks and model loading print once, from the main process; the others check the same rows silently
        with contextlib.redirect_stdout(io.StringIO()) if not main_process else contextlib.nullcontext():
            if mode == "resume":
                run_dir, cfg, previous = resume_target(target, cfg, default_config(plan))
                refusal = broadcast_object_list([hold(held, run_dir, "a resume", state, notes) if main_process
                                                 else None])[0]
                if refusal:   # held by another process: every process of this launch stops, nothing changed
                    raise UserError(refusal)
                command_line.update(_RUN_DIR=str(run_dir), _RUN_UNCHANGED=True)
                manifest = prepare_manifest(cfg, run_dir / "manifest.csv", base_dir=previous.get("manifest_dir"))
                manifest.source, manifest.reference = previous.get("manifest", ""), previous.get("reference", [])
                for ref in manifest.reference:
                    check_reference(ref, "the run's reference audio")
                notes += check_unchanged(run_dir, manifest, previous)
                print(f"Resuming {run_dir} (it ended {previous.get('status')!r}) with the settings it started with"
                      + (" (smoke models)" if cfg["SMOKE"] else ""))
            else:
                check_settings(cfg)
                manifest = prepare_manifest(cfg, target)
                manifest.source = str(manifest.path.resolve())
                if cfg.get("_REFERENCE"):   # --reference DIR: a folder of real audio for every pair
                    if not Path(cfg["_REFERENCE"]).is_dir():
                        raise UserError(f"--reference {shown(cfg['_REFERENCE'])}: "
                                        + (path_problem(cfg["_REFERENCE"]) or "is a file")
                                        + " (give a folder of real audio)")
                    check_reference(Path(cfg["_REFERENCE"]), f"--reference {shown(cfg['_REFERENCE'])}")
                    manifest.reference.append(str(Path(cfg["_REFERENCE"]).resolve()))
            asked_device = cfg["DEVICE"]   # what run.json keeps, so that --resume lets each process pick its GPU again
            if state.num_processes > 1 and cfg["DEVICE"] in ("", "cuda") and state.device.type == "cuda":
                cfg["DEVICE"] = str(state.device)   # one GPU per process: cuda:<local rank>
            sources = [(p_cfg, source_names(p_cfg, prompts)) for _, p_cfg, _, prompts, _ in manifest.pairs]
            pair_notes = list(dict.fromkeys(n for *_, p_notes in manifest.pairs for n in p_notes))
            for note in notes + pair_notes:
                print(f"WARNING: {note}")
            models, class_notes = load_models(cfg, sources)
            for note in class_notes:
                print(f"  AudioSet classes: {note}")
        if main_process:
            if mode == "manifest":
                name = cfg["RUN_NAME"] or f"manifest-{Path(target).stem}"
                run_dir = new_run_dir(cfg["OUTPUT_DIR"], name + ("_smoke" if cfg["SMOKE"] else ""))
                if refusal := hold(held, run_dir, "a manifest run", state, notes):   # a new folder: only a race
                    raise UserError(refusal)
                for note in notes:   # what the lock is worth on a file system without file locks
                    print(f"WARNING: {note}")
                with open(run_dir / "manifest.csv", "xb") as f:   # the bytes checked above: --resume reads this copy
                    f.write(manifest.data)
            print(f"Run folder: {run_dir}\nDevice: {models.device}; processes: {state.num_processes}")
            data = {**run_record(cfg, models, "manifest", notes=manifest.notes + pair_notes + class_notes + notes),
                    "manifest": manifest.source, "manifest_sha256": manifest.sha256, "reference": manifest.reference,
                    "manifest_dir": str(manifest.base_dir), "processes": state.num_processes}
            data["config"]["DEVICE"] = asked_device
            if previous:
                data = {**{k: v for k, v in previous.items() if k not in ("outputs", "ended", "error", "traceback")},
                        "manifest_sha256": manifest.sha256, "resumed": previous.get("resumed", []) + [{
                            "at": datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv),
                            "previous_status": previous.get("status"), "processes": state.num_processes,
                            "manifest_sha256": manifest.sha256, "notes": notes}]}
            # run.json says 'running' before the other processes are waited for: a Ctrl-C from here is recorded
            record = held.enter_context(recorded_run(run_dir, data))
            command_line.update(_RUN_DIR=str(run_dir), _RUN_UNCHANGED=False, _RESUMABLE=True)
        if mode == "manifest":
            run_dir = Path(broadcast_object_list([str(run_dir)])[0])   # the main process's folder, for every process
        command_line.update(_RUN_DIR=str(run_dir), _RUN_UNCHANGED=False, _RESUMABLE=True)
        start = time.perf_counter()
        torch.set_grad_enabled(False)
        try:
            run_manifest(plan, cfg, models, run_dir, manifest, record, state)
        finally:
            torch.set_grad_enabled(True)
    if main_process:
        print(f"\nDone in {time.perf_counter() - start:.1f} s. Everything is in {run_dir}/")
    return 0


def run_pair(plan, pair, models, run_dir, process, ran_with=None):
    """One manifest row in its own sub-folder with its own run.json. A failure of any kind (a CUDA
    out-of-memory included) is recorded there and returns False, so the other pairs go on; Ctrl-C stops.
    ran_with: the manifest row it runs (Manifest.ran_with), kept in its run.json for --resume's check."""
    import torch
    i, p_cfg, images, prompts, notes = pair
    pair_dir = run_file(run_dir, pair_folder(i, prompts))
    if pair_dir.exists():   # a failed or interrupted attempt (--resume): kept aside, never overwritten
        keep_aside(run_dir, pair_dir)
    pair_dir.mkdir()
    print(f"\n##### pair {i}: {images[0]} -> {images[1]} (process {process['index']}) #####")
    try:
        with recorded_run(pair_dir, {**run_record(p_cfg, models, "run", images, prompts, notes),
                                     "pair": i, "process": process, "manifest_row": ran_with}) as pair_record:
            try:
                plan.main_pipeline(p_cfg, models, pair_dir, images, prompts, pair_record)
            finally:   # kept with the pair's run.json however it ends
                pair_record.data["process"] = {**process, **peak_memory(models.device)}
        return True
    except Exception as err:   # noqa: BLE001 -- recorded in the pair's run.json (with its traceback)
        print(f"FAILED pair {i}: {type(err).__name__}: {err}")
        if models.device.type == "cuda":
            torch.cuda.empty_cache()   # an out-of-memory pair must not starve the next one
        return False


def peak_memory(device):
    """This process's peak resident memory (and CUDA memory) so far, in MiB."""
    import resource
    import torch
    peak = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        peak["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return peak


def run_manifest(plan, cfg, models, run_dir, manifest, record, state):
    """This process's share of the pairs not finished yet; then (main process) the table of all of them."""
    from tqdm import tqdm
    todo = [p for p in manifest.pairs if read_run_json(run_dir / pair_folder(p[0], p[3])).get("status") != "finished"]
    if state.is_main_process:
        print(f"Manifest {manifest.path}: {len(manifest.rows)} rows, {len(manifest.pairs)} pairs, "
              f"{len(manifest.skipped)} skipped, {len(manifest.duplicates)} duplicates; "
              f"{len(manifest.pairs) - len(todo)} finished earlier, {len(todo)} to run on {state.num_processes} "
              f"process(es)")
    state.wait_for_everyone()   # every process has listed the same pairs before any pair folder changes
    with state.split_between_processes(todo) as mine:
        mine = list(mine)
    process = {"index": state.process_index, "of": state.num_processes}
    # several processes: each one's pair output goes to its own log, the console shows one bar per process
    log = open(run_dir / f"process{state.process_index}.log", "a") if state.num_processes > 1 else None
    bar = tqdm(total=len(mine), desc=f"process {state.process_index}", unit="pair", position=state.process_index,
               file=sys.stderr, dynamic_ncols=True)
    failed = 0
    try:
        with contextlib.redirect_stdout(log) if log else contextlib.nullcontext():
            for pair in mine:
                if not run_pair(plan, pair, models, run_dir, process, manifest.ran_with(pair[0])):
                    failed += 1
                    bar.write(f"pair {pair[0]} FAILED (process {state.process_index}); see its run.json",
                              file=sys.stderr)
                bar.update(1)
                bar.set_postfix(failed=failed)
                if record is not None:
                    record.update(**manifest_counts(run_dir, manifest))
    finally:
        bar.close()
        if log:
            log.close()
    state.wait_for_everyone()
    if state.is_main_process:
        return summarise_manifest(run_dir, manifest, record, set_metrics=manifest_set_metrics(run_dir, manifest, models),
                                  adjustment=cfg["MANIFEST_ADJUSTMENT"])


def manifest_counts(run_dir, manifest):
    statuses = [read_run_json(run_dir / pair_folder(p[0], p[3])).get("status") for p in manifest.pairs]
    return {"pairs_done": statuses.count("finished"), "pairs_failed": statuses.count("failed")}


def manifest_table(run_dir, manifest):
    """One row per manifest row, read back from the pair folders (whichever process or attempt made them)."""
    import verdict
    table, processes = [], {}
    for i, p_cfg, images, prompts, notes in manifest.pairs:
        folder = pair_folder(i, prompts)
        pair = read_run_json(run_dir / folder)
        row = {"pair": i, "status": pair.get("status", "not run"), "original": str(images[0]),
               "edited": str(images[1]), "folder": folder}
        if row["status"] == "finished":
            results = json.loads((run_dir / folder / "results.json").read_text())
            row.update(verdict.verdict_columns(results))
            row["_results"] = results   # for the headline over pairs; not a column
        else:
            row["error"] = pair.get("error", "")
        proc = pair.get("process", {})
        if "peak_rss_mib" in proc:
            p = processes.setdefault(proc["index"], {"pairs": 0})
            p["pairs"] += 1
            for k in ("peak_rss_mib", "peak_cuda_mib"):
                if k in proc:
                    p[k] = max(p.get(k, 0), proc[k])
        table.append(row)
    table += [{"pair": s["pair"], "status": "skipped", "original": s["original"], "edited": s["edited"],
               "error": s["error"]} for s in manifest.skipped]
    by_pair = {r["pair"]: r for r in table}
    table += [{"pair": d["pair"], "status": f"duplicate of pair {d['same_as']}",
               "original": by_pair[d["same_as"]]["original"], "edited": by_pair[d["same_as"]]["edited"],
               "folder": by_pair[d["same_as"]].get("folder", "")} for d in manifest.duplicates]
    return sorted(table, key=lambda r: r["pair"]), processes


def manifest_set_metrics(run_dir, manifest, models):
    """FAD (VGGish), FD and KL (PANNs CNN14) between the manifest's three audio sets and against the reference
    audio; a missing checkpoint is reported, never fatal: the pairs are done by now."""
    import metrics
    from model.checkpoints import CheckpointError
    print("\nSet-level figures (FAD with VGGish, FD and KL with PANNs CNN14) over the finished pairs ...")
    figures = {}
    try:
        embedder = metrics.tiny_vggish() if models.smoke else metrics.load_vggish(models.device)
        figures = metrics.manifest_fads(run_dir, embedder, reference=manifest.reference)
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"  FAD skipped: {err}")
        figures["skipped"] = f"{err}; once fixed: python evaluation.py fad {run_dir}"
    try:
        scorer = metrics.tiny_cnn14() if models.smoke else metrics.load_cnn14(models.device)
        figures["panns"] = metrics.manifest_panns(run_dir, scorer, reference=manifest.reference)
    except (CheckpointError, FileNotFoundError, ValueError, ImportError) as err:
        print(f"  FD / KL skipped: {err}")
        figures["panns"] = {"skipped": f"{err}; once fixed: python evaluation.py fd {run_dir}"}
    return figures


def effect_over_pairs(finished, method="holm"):
    """The manifest's headline, pairs as the unit: for each scorer, the mean over pairs of each pair's own
    method's-own-effect contrast (manipulated - baseline_edited, mean over its seeds), with its 95% interval over
    pairs, n and status (against that scorer's floor), and each pair's status of that contrast adjusted for the
    number of pairs (verdict.adjust_p: Holm or Benjamini-Hochberg). A scorer's figures hold only the pairs it
    judged (a pair whose classifier judges neither object is in CLAP's only); units are never mixed.
    Adds '<effect audioset|clap> contrast adjusted status' to each finished row. Returns {scorer: figures}."""
    import verdict
    out = {}
    for view, short in verdict.SCORERS.items():
        pairs = [(r, r["_results"]["method_effect"][view]["contrast"]) for r in finished
                 if r["_results"]["method_effect"][view]["contrast"]]
        if not pairs:
            continue
        unit = verdict.SCORES[view][1]
        floor = pairs[0][0]["_results"]["floors"][unit]["floor"]
        stats = verdict.paired_stats([c["mean"] for _, c in pairs], "up", min_effect=floor, unit=unit)
        adjusted = verdict.adjusted_statuses([c for _, c in pairs], method)
        label = f"{verdict.ADJUSTMENTS[method]} over {len(pairs)} pair(s)"
        for (row, _), status in zip(pairs, adjusted):
            row[f"effect {short} contrast adjusted status"] = status
            row[f"effect {short} contrast adjustment"] = label
        out[short] = {"what": f"method's own effect: change of {verdict.SCORES[view][0]}(added) - change of "
                              f"{verdict.SCORES[view][0]}(removed), manipulated - baseline_edited; each pair's mean "
                              f"over its seeds, then the mean over pairs (pairs as the unit)",
                      "mean": stats["mean"], "std": stats["std"], "ci95": stats["ci95"], "n_pairs": stats["n"],
                      "status": stats["status"], "floor": floor, "unit": unit, "pairs": [r["pair"] for r, _ in pairs],
                      "per_pair_adjustment": label,
                      "per_pair_statuses": {"unadjusted": _counts([c["status"] for _, c in pairs]),
                                            "adjusted": _counts(adjusted)}}
    return out


def _counts(statuses):
    return {s: statuses.count(s) for s in dict.fromkeys(statuses)}


def over_pairs_lines(figures):
    """The headline over pairs as printed: the first scorer's is the HEADLINE, the other's a second view."""
    from verdict import number_text
    lines = []
    for i, (short, f) in enumerate(figures.items()):
        ci = f"95% CI [{number_text(f['ci95'][0])}, {number_text(f['ci95'][1])}]" if f["ci95"] else "no CI with one pair"
        title = "HEADLINE over pairs" if i == 0 else "  second view"
        lines.append(f"{title} ({short}; pairs as the unit): {number_text(f['mean'])} {ci} over {f['n_pairs']} pair(s), "
                     f"floor {f['floor']:g} {f['unit']}: {f['status']}")
        lines.append(f"    each pair's status of that contrast, adjusted by {f['per_pair_adjustment']}: "
                     + ", ".join(f"{n} {s}" for s, n in f["per_pair_statuses"]["adjusted"].items())
                     + "  (unadjusted: " + ", ".join(f"{n} {s}" for s, n in f["per_pair_statuses"]["unadjusted"].items())
                     + ")")
    return lines


def summarise_manifest(run_dir, manifest, record=None, set_metrics=None, adjustment="holm"):
    """pairs.csv (every row, with its status) and summary.json: the headline over pairs (pairs as the unit, with
    each pair's status adjusted for the number of pairs), means and stds of every metric over the finished pairs."""
    import numpy as np
    table, processes = manifest_table(run_dir, manifest)
    finished = [r for r in table if r["status"] == "finished"]
    over_pairs = effect_over_pairs(finished, adjustment)
    for r in finished:
        del r["_results"]
    failed = [{k: r[k] for k in ("pair", "original", "edited", "folder", "error")}
              for r in table if r["status"] not in ("finished", "skipped") and not r["status"].startswith("duplicate")]
    for name in ("pairs.csv", "summary.json"):   # an earlier attempt's table (--resume): kept aside
        if (run_dir / name).exists():
            keep_aside(run_dir, run_dir / name)
    write_csv(run_file(run_dir, "pairs.csv"), table)
    summary = {"manifest": manifest.source or str(manifest.path), "pairs": len(manifest.rows), "completed": len(finished),
               "headline_over_pairs": over_pairs, "failed": failed, "skipped": manifest.skipped,
               "duplicates": manifest.duplicates, "metrics": {}, "statuses": {}, "set_metrics": set_metrics or {}}
    # each metric over the pairs that have it: rows may name different kept sources
    keys = list(dict.fromkeys(k for r in finished for k in r if k != "pair" and not k.startswith(("floor ", "tolerance "))))
    for key in keys:
        present = [r[key] for r in finished if key in r]
        if present and all(isinstance(v, (int, float)) for v in present):
            values = np.array(present, dtype=float)
            summary["metrics"][key] = {"mean": float(values.mean()), "n": len(values),
                                       "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
        elif key == "headline" or key.endswith(" status"):
            summary["statuses"][key] = {s: present.count(s) for s in dict.fromkeys(present)}
    write_json(run_file(run_dir, "summary.json"), summary)
    if record is not None:
        record.update(processes_peak_memory=processes, **manifest_counts(run_dir, manifest))
    print(f"\nManifest done: {len(finished)} of {len(manifest.rows)} rows finished, {len(failed)} failed, "
          f"{len(manifest.skipped)} skipped, {len(manifest.duplicates)} duplicates")
    for r in failed:
        print(f"  FAILED pair {r['pair']}: {r['error'][:200]} (run.json in {r['folder']})")
    for line in over_pairs_lines(over_pairs):
        print(line)
    for key in [k for k in summary["statuses"] if k == "headline" or k.count(" ") == 2]:
        counts = ", ".join(f"{n} {s}" for s, n in summary["statuses"][key].items())
        print(f"  {key:32s} {counts}   (per pair, unadjusted)")
    if set_metrics and "fad" in set_metrics:
        import metrics
        print(metrics.format_fads(set_metrics))
    if set_metrics and "fd" in set_metrics.get("panns", {}):
        import metrics
        print(metrics.format_panns(set_metrics["panns"], "kl"))
    print(f"Per-pair table: {run_dir / 'pairs.csv'}; means and stds: {run_dir / 'summary.json'}")
    if failed:
        print(f"Redo the failed pairs (finished ones are kept): python main.py --resume {run_dir}")
    return summary
