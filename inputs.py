"""What the settings name, checked before any model loads: the two images, the object prompts, sound-source names.

    images, prompts, notes = prepare_inputs(cfg)   # UserError naming the file or value and what to do

prepare_inputs runs settings.check_settings first, then opens each image safely (decompression bombs,
truncated files, EXIF rotation), checks each point against the image and against the centre square CLIP
sees, the names against each other and against AudioSet's class names, and the recording of step 8
(audio_io.read_audio_input). `notes` are warnings for the console and run.json.
"""
import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

from audio_io import read_audio_input
from errors import MISSING, UserError, path_problem, shown
from settings import check_settings, control_problem, cut, name_key, text_prompt_problems

NAME_LIMIT = 40                      # characters of an object name (names become file names)


@dataclass
class ObjectPrompt:
    """One object of SAM2_PROMPTS: found by SAM2 points, or by name (points None: SAM2 proposals + CLIP)."""
    name: str
    points: list = None           # [[x, y], ...] pixels of the image as a viewer shows it
    labels: list = None           # 1 / 0 per point
    text: str = ""                # the CLIP prompt of a name-only object
    union: bool = False           # name-only: the union of every proposal CLIP takes for it, not just the best

    @property
    def by_text(self):
        return self.points is None


def resolve_image(name, image_dir):
    """A path for an image given as a bare file name in IMAGE_DIR or as a path; UserError when neither is a regular
    file, saying what each path looked at is (missing, a folder, a FIFO, a symbolic-link loop ...)."""
    looked = list(dict.fromkeys([Path(name)] + ([] if Path(name).is_absolute() else [Path(image_dir) / name])))
    problems = [path_problem(p) for p in looked]
    for path, problem in zip(looked, problems):
        if problem is None:
            return path
    paths = [shown(os.path.abspath(p)) for p in looked]
    if set(problems) == {MISSING}:
        said = f"image not found: {shown(name)} (looked at {' and '.join(paths)})"
    elif len(looked) == 1:
        said = f"image {paths[0]} {problems[0]}"
    else:
        said = f"image {shown(name)}: " + "; ".join(f"{p} {problem}" for p, problem in zip(paths, problems))
    raise UserError(f"{said}. Set --ORIGINAL/--EDITED to an image file, or put it in {shown(image_dir)}/")


def parse_prompts(prompts, text_prompt=None):
    """SAM2_PROMPTS -> [removed, added] ObjectPrompts; UserError when malformed."""
    example = ('{"cat": {"x": [448], "y": [330], "labels": [1]}, "duck": {"x": [410], "y": [130], "labels": [1]}} '
               'or, to find them by name, {"cat": {}, "duck": {}}')
    if not isinstance(prompts, dict) or len(prompts) != 2:
        raise UserError(f"SAM2_PROMPTS needs exactly two entries (object to remove in I_0, then object to add in "
                        f"I_1), got {cut(prompts, 300)!r}. Example: {example}")
    parsed = [parse_prompt(name, p, text_prompt) for name, p in prompts.items()]
    if name_key(parsed[0].name) == name_key(parsed[1].name):
        same = (f"both called {parsed[0].name!r}" if parsed[0].name == parsed[1].name else
                f"called {parsed[0].name!r} and {parsed[1].name!r}, which are one name (equal after trimming spaces "
                "and ignoring case, or the same file name): both would be scored as the same sound")
        raise UserError(f"SAM2_PROMPTS: the removed and the added object are {same}. Give them different names")
    return parsed


def parse_prompt(name, p, text_prompt=None):
    """One SAM2_PROMPTS entry -> ObjectPrompt, by main's rules (verify_masks.py checks its lines with it too).
    text_prompt: TEXT_PROMPT, the CLIP wording of a name-only object (None: mask.name_prompt's own)."""
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"SAM2_PROMPTS: an object needs a name, got {name!r}")
    if problem := control_problem("SAM2_PROMPTS name", name):
        raise UserError(problem)
    if len(name) > NAME_LIMIT:
        raise UserError(f"SAM2_PROMPTS name {name[:30]!r}... is {len(name)} characters long: names become file "
                        f"names and sound-source names, at most {NAME_LIMIT}")
    if not isinstance(p, dict):
        raise UserError(f"SAM2_PROMPTS[{name!r}] must be a dict: points {{'x': [...], 'y': [...]}} or {{}} to "
                        f"find the object by name, got {cut(p, 200)!r}")
    unknown = set(p) - {"x", "y", "labels", "text", "union"}
    if unknown:
        raise UserError(f"SAM2_PROMPTS[{name!r}] has unknown keys {cut(sorted(map(str, unknown)), 200)}; use x, y, "
                        "labels, or text and union for an object found by name")
    if "x" not in p and "y" not in p:
        if "labels" in p:   # labels belong to points: without them this is not a name search in disguise
            raise UserError(f"SAM2_PROMPTS[{name!r}] has labels but no points: give 'x' and 'y' with them, or "
                            "drop 'labels' to find the object by its name ({})")
        if text_prompt is not None and text_prompt_problems(text_prompt):
            raise UserError(text_prompt_problems(text_prompt)[0])
        from mask import name_prompt
        text = p.get("text", name_prompt(name) if text_prompt is None else name_prompt(name, text_prompt))
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"SAM2_PROMPTS[{name!r}]['text'] must be a non-empty string, got {p.get('text')!r}")
        if problem := control_problem(f"SAM2_PROMPTS[{name!r}]['text']", text):
            raise UserError(problem)
        if not isinstance(p.get("union", False), bool):
            raise UserError(f"SAM2_PROMPTS[{name!r}]['union'] must be true or false, got {p['union']!r}")
        return ObjectPrompt(name, text=text, union=p.get("union", False))
    if {"text", "union"} & set(p):
        raise UserError(f"SAM2_PROMPTS[{name!r}] has points and {sorted({'text', 'union'} & set(p))}: points "
                        "replace the name search; drop one of them")
    if "x" not in p or "y" not in p:
        raise UserError(f"SAM2_PROMPTS[{name!r}] needs both 'x' and 'y' (and optional 'labels'), or neither "
                        f"(find it by name), got {cut(p, 200)!r}")
    xs = p["x"] if isinstance(p["x"], (list, tuple)) else [p["x"]]
    ys = p["y"] if isinstance(p["y"], (list, tuple)) else [p["y"]]
    labels = p.get("labels", [1] * len(xs))
    labels = labels if isinstance(labels, (list, tuple)) else [labels] * len(xs)
    if not xs or len(xs) != len(ys) or len(labels) != len(xs):
        raise UserError(f"SAM2_PROMPTS[{name!r}]: x, y and labels must have the same length, got {cut(p, 200)!r}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in list(xs) + list(ys)):
        raise UserError(f"SAM2_PROMPTS[{name!r}]: x and y must be pixel numbers, got {cut(p, 200)!r}")
    if any(lab not in (0, 1) for lab in labels):
        raise UserError(f"SAM2_PROMPTS[{name!r}]: labels must be 1 (on the object) or 0 (not on it), got {labels}")
    if 1 not in labels:
        raise UserError(f"SAM2_PROMPTS[{name!r}] has no positive point (label 1): SAM2 needs one on the object")
    return ObjectPrompt(name, [[float(x), float(y)] for x, y in zip(xs, ys)], [int(v) for v in labels])


def check_image_and_points(image_path, prompt, notes):
    """The image opens safely and every point lies on it and where CLIP can see it; UserError otherwise."""
    from util import inspect_image
    try:
        info = inspect_image(image_path)
    except (ValueError, OSError) as err:
        raise UserError(str(err)) from err
    notes.extend(info["warnings"])
    if not prompt.by_text:
        check_points(image_path, info["size"], prompt)
    return info


def check_points(image_path, size, prompt):
    """Every point of a prompt lies on the image of `size` (W, H) and one on the object inside the centre square
    CLIP sees; UserError otherwise. No file is read (the bench checks each click with it)."""
    from mask import check_points_inside
    from util import clip_view_box
    try:
        check_points_inside(prompt.points, size, str(image_path))
    except ValueError as err:
        raise UserError(f"SAM2_PROMPTS[{prompt.name!r}]: {err}") from err
    x0, y0, x1, y1 = clip_view_box(size)
    positive = [p for p, lab in zip(prompt.points, prompt.labels) if lab == 1]
    if not any(x0 <= x < x1 and y0 <= y < y1 for x, y in positive):
        raise UserError(
            f"SAM2_PROMPTS[{prompt.name!r}]: every point on the object lies outside the centre square that CLIP "
            f"sees of {Path(image_path).name} ({size[0]} x {size[1]}: x in [{x0:g}, {x1:g}), y in "
            f"[{y0:g}, {y1:g})), so no CLIP patch would hold the object. Crop the image so the object is inside that "
            "square, or put a point on a part of it that is")


def eval_labels(cfg, removed, added):
    """(labels, removed_label, added_label, kept_labels) of the CLAP view, as scorers.score_run builds them."""
    import scorers
    sources = [removed, added] + [k for k in cfg["KEPT_SOURCES"] if k not in (removed, added)]
    try:
        labels = scorers.clap_label_list(sources, cfg["EVAL_LABELS"])
    except ValueError:
        texts = [scorers.clap_label(s, cfg["EVAL_LABELS"]) for s in sources]
        same = [(a, b) for i, a in enumerate(sources) for b in sources[i + 1:]
                if texts[sources.index(a)] == texts[sources.index(b)]]
        pairs = "; ".join(f"{cut(a)!r} and {cut(b)!r} both get {cut(texts[sources.index(a)])!r}" for a, b in same)
        raise UserError(f"EVAL_LABELS give two sound sources the same CLAP label ({pairs or texts}): CLAP could not "
                        "tell them apart. Give each source its own label text") from None
    label = lambda name: scorers.clap_label(name, cfg["EVAL_LABELS"])   # noqa: E731
    return labels, label(removed), label(added), [label(k) for k in sources[2:]]


def check_names(cfg, prompts):
    """Sound-source names across settings: a kept source is not also the removed or added object (UserError).
    Returns warnings for EVAL_LABELS / AUDIO_CLASSES keys that differ from a source only in case or spaces:
    entries match exact names, so such a key is unused."""
    names = [p.name for p in prompts]
    problems = []
    for kept in cfg["KEPT_SOURCES"]:
        for role, name in zip(("removed", "added"), names):
            if name_key(kept) == name_key(name):
                problems.append(f"KEPT_SOURCES names {cut(kept)!r}, " + ("" if kept == name else "the same name as ")
                                + f"the {role} object of SAM2_PROMPTS ({cut(name)!r}): a source cannot be both "
                                f"{role} and kept. Drop it from KEPT_SOURCES")
    if problems:
        raise UserError(problems[0] if len(problems) == 1 else
                        f"{len(problems)} problems with the names:\n  " + "\n  ".join(problems))
    sources, notes = names + list(cfg["KEPT_SOURCES"]), []
    for setting in ("EVAL_LABELS", "AUDIO_CLASSES"):
        for key in cfg[setting]:
            near = [s for s in sources if name_key(s) == name_key(key) and s != key]
            if near and key not in sources:
                notes.append(f"{setting} has an entry {cut(key)!r} but the source is called {cut(near[0])!r}: "
                             "entries match exact names, so this one is unused (spell it as the source)")
    return notes


def check_audio_class_names(cfg, sources):
    """AUDIO_CLASSES against AudioSet's 527 names (model/audioset_labels.csv) before any model loads; the loaded
    classifier's own names are checked again after it loads, with the CLAP-text layer (loader.check_audio_classes)."""
    import scorers
    try:
        scorers.resolve_audio_classes(sources, cfg["AUDIO_CLASSES"], scorers.audioset_labels())
    except ValueError as err:
        raise UserError(str(err)) from err


def roles_of(cfg, prompts):
    removed, added = prompts[0].name, prompts[1].name
    kept = list(dict.fromkeys(k for k in cfg["KEPT_SOURCES"] if k not in (removed, added)))
    return {"removed": removed, "added": added, "kept": kept}


def source_names(cfg, prompts):
    roles = roles_of(cfg, prompts)
    return [roles["removed"], roles["added"], *roles["kept"]]


def prepare_inputs(cfg):
    """Images, prompts and settings checked before any model loads: (images [I_0, I_1], prompts, notes)."""
    check_settings(cfg)
    images = [resolve_image(cfg["ORIGINAL"], cfg["IMAGE_DIR"]), resolve_image(cfg["EDITED"], cfg["IMAGE_DIR"])]
    prompts = parse_prompts(cfg["SAM2_PROMPTS"], cfg["TEXT_PROMPT"])
    notes = check_names(cfg, prompts)
    for image, prompt in zip(images, prompts):
        check_image_and_points(image, prompt, notes)
    if same_file(*images):
        notes.append(f"ORIGINAL and EDITED are the same image ({images[0]}" + ("" if images[0] == images[1] else
                     f" and {images[1]} hold the same bytes") + "): there is no edit to follow, so the three audios "
                     "differ only by the SVD manipulation. Give the edited image as --EDITED")
    eval_labels(cfg, prompts[0].name, prompts[1].name)   # label clashes fail now, not after the audio
    check_audio_class_names(cfg, source_names(cfg, prompts))   # unknown AudioSet names too
    if cfg["AUDIO_INPUT"]:
        notes += read_audio_input(cfg["AUDIO_INPUT"], cfg["DURATION"])[1]   # a bad recording fails now, too
    if cfg["CIAP_CHECKPOINT"]:
        check_ciap_checkpoint(cfg["CIAP_CHECKPOINT"], cfg["SMOKE"])
    return images, prompts, notes


def csv_text(data, what, path):
    """A user's CSV bytes as text (UTF-8, with or without the byte-order mark Excel's "CSV UTF-8" starts with);
    UserError naming `what` (e.g. 'manifest'), the first byte that is not UTF-8 and the command that converts it."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        converted = Path(path).with_name(Path(path).stem + "_utf8.csv")
        raise UserError(f"{what} {shown(path)} is not UTF-8 text: byte {data[err.start]:#04x} on line {line} is not "
                        f"valid UTF-8, so the file was saved in another encoding (Latin-1 / Windows-1252, as Excel's "
                        f"plain 'CSV' does). Save it as 'CSV UTF-8', or convert it: iconv -f latin1 -t utf-8 "
                        f"{shown(path)} > {shown(converted)}") from None


def check_ciap_checkpoint(path, smoke):
    """The CIAP back end's checkpoint, before any model loads: there, a CIAP file, a CLIP head mapping into CLAP's
    space (not ResNet18, not a scratch target), trained on the CLIP and CLAP this run uses. UserError otherwise.
    A file checked once is not read again while it stays the same (a manifest checks it for every row)."""
    problem = path_problem(path)   # a folder or a FIFO is said as what it is, and never opened
    if problem and problem != MISSING:
        raise UserError(f"CIAP_CHECKPOINT {shown(path)} {problem}: give the ciap.safetensors of a train_ciap.py run, "
                        "or --CIAP_CHECKPOINT='' for SSV2A's remixer")
    try:
        stat = os.stat(path)
        stamp = (stat.st_size, stat.st_mtime_ns)
    except OSError:
        stamp = None   # missing: read_ciap says so
    _check_ciap_file(str(path), stamp, bool(smoke))


@functools.lru_cache(maxsize=8)
def _check_ciap_file(path, stamp, smoke):
    from loader import run_model_names
    from model import ciap
    from model.checkpoints import CheckpointError
    try:
        ciap.check_ciap_file(path, "clip-head", *run_model_names(smoke))
    except CheckpointError as err:
        raise UserError(f"CIAP_CHECKPOINT: {shown(err)}") from err


def same_file(a, b):
    """The two paths are one file, or two files with the same bytes."""
    import filecmp
    try:
        return os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False
