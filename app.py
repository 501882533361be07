"""A lab bench in the browser: see what the method sees, run, hear the three audios, compare runs, sweep, edit a
recording.

    python app.py                          # real models (a CUDA GPU), then open http://127.0.0.1:7860
    python app.py --smoke                  # tiny random-weight models on the CPU: checks the plumbing, audio is noise
    python app.py --port 7861 --host 0.0.0.0   # another port; every interface of this machine
    python app.py --max-upload-mb 20       # refuse bigger uploads (default 100 MB); refused uploads are deleted
    python app.py --share                  # also a public gradio.live link (the only time the app goes online)
    python app.py --SVD_K=8 --OUTPUT_DIR=runs  # starting values of main.py's constants, as main.py takes them

The page is layout and event wiring only. Masks, tokens, steps 3-8 and the evaluation are main.py's own
functions; the settings and their checks are settings.py's and inputs.py's; a run is made by runs.run_edit_pair,
the same function `python main.py` makes its runs with (a sweep through sweep.run_sweep), one at a time in
runs.DeviceQueue, so a run started here is an ordinary run folder under outputs/, and the page shows the
`python main.py ...` command that repeats it (same wavs, byte for byte).

A client names images and recordings only by uploading them or by picking the example pair, and earlier runs
only by the folder names the page lists: the bench opens no path a client sends.
"""
import os

# gradio reports usage and checks for new versions over the network unless told not to: the bench works offline
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("GRADIO_TELEMETRY_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import ast  # noqa: E402
import contextlib  # noqa: E402
import functools  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import queue  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import OrderedDict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import inputs  # noqa: E402
import main  # noqa: E402
import runs  # noqa: E402
import settings  # noqa: E402
from audio_io import AUDIO_NAMES, EDIT_AUDIO_NAMES, read_audio_input, wav_name  # noqa: E402
from errors import RunCancelled, UserError  # noqa: E402
from loader import check_audio_classes, load_models  # noqa: E402
from model.checkpoints import _sha256 as file_sha256  # noqa: E402   (the registry's file hash)
from settings import cut  # noqa: E402
from util import safe_name  # noqa: E402

# -----------------------------------------------------------------------------
# the bench's own settings (main.py's constants are set on the page, or as --NAME=value on this command line)
HOST = "127.0.0.1"                   # --host: 0.0.0.0 serves every interface of the machine
PORT = 7860                          # --port
MAX_UPLOAD_MB = 100                  # --max-upload-mb: bigger uploads are refused while they arrive
PREVIEW_SIDE = 768                   # long side of the images shown for clicking (points stay in file pixels)
ENCODED_IMAGES = 6                   # SAM2 image encodings kept (each uploaded image is encoded once)
MASKS_KEPT = 64                      # masks kept for redrawing CLIP's patches when MASK_THRESHOLD moves
UPLOAD_DIR = "uploads"               # uploads are kept under OUTPUT_DIR/uploads/ (named by content), never lost
RUNS_LISTED = 60                     # earlier run folders of OUTPUT_DIR offered for comparison, newest first
SWEEP_MAX_SETTINGS = 8               # the page's sweeps are small; bigger grids run from the command line
# main.py's constants with a slider, in this order; each slider's ends and step are its settings.RULES entry, and
# every value is checked by settings.check_settings, with the command line's messages
METHOD_SLIDERS = ["SVD_K", "SVD_ALPHA", "SVD_BETA", "MIX_DIRECT", "MIX_BETA", "MIX_ALPHA", "MIX_GAMMA",
                  "MASK_THRESHOLD"]
MORE_SLIDERS = ["EVAL_SEEDS", "EVAL_TOLERANCE", "EVAL_MIN_EFFECT", "DDIM_STEPS", "DURATION", "GUIDANCE", "CYCLE_ITS"]
EDIT_SLIDERS = ["EDIT_STRENGTH", "EDIT_GUIDANCE_SRC", "EDIT_GUIDANCE_TGT", "EDIT_DDIM_GUIDANCE_SRC"]
SLIDERS = METHOD_SLIDERS + MORE_SLIDERS + EDIT_SLIDERS
TEXT_SETTINGS = ["AUDIO_CLASSES", "EVAL_LABELS"]   # Python literals, read by settings.coerce like --NAME=value
# progress bar position of each step main_pipeline reports
STEP_FRACTIONS = {"masks": 0.02, "tokens": 0.1, "SVD": 0.15, "audio": 0.2, "evaluation": 0.85}
# -----------------------------------------------------------------------------

ON_OBJECT, OFF_OBJECT = "on the object (1)", "not on the object (0)"
ROLES = ("removed", "added")
SIDES = ("original", "edited")
SYMBOLS = ("n_neg", "n_pos")          # the research plan's names of the two regions' patch counts
EXAMPLE = "example "                  # the handles of the example pair: 'example original original.jpg' 
NO_RECORDING = ""


class Allowed:
    """The files a client may name, by the handle the server gave them: the example pair and what was uploaded
    to this server (kept under OUTPUT_DIR/uploads). Anything else a client sends, a path above all, is refused
    before any file is touched, with the same one line whether or not such a file exists."""

    def __init__(self):
        self._paths = {}
        self._lock = threading.Lock()

    def add(self, handle, path):
        with self._lock:
            self._paths[handle] = str(path)
        return handle

    def path(self, handle, what, how):
        with self._lock:
            path = self._paths.get(handle) if isinstance(handle, str) else None
        if path is None:
            raise UserError(f"{what}={cut(handle)!r} is not a file of this bench: {how}; the bench never opens a "
                            "path a client sends")
        return path


IMAGE_HOW = "name images by uploading them (Upload I_0 / Upload I_1) or with Example pair"
RECORDING_HOW = "give a recording by uploading it (Upload a recording)"


class Picture:
    """An image as the page shows it: a preview at most PREVIEW_SIDE px (decoded once), its scale, the file's
    size as a viewer shows it, and the square CLIP sees of it (util.clip_view_box)."""

    def __init__(self, path):
        from util import clip_view_box, open_image
        rgb, self.size = open_image(path)
        self.path = str(path)
        self.scale = min(1.0, PREVIEW_SIDE / max(self.size))
        shown = (max(1, round(self.size[0] * self.scale)), max(1, round(self.size[1] * self.scale)))
        self.base = np.asarray(rgb.resize(shown))
        self.box = clip_view_box(self.size)


class Bench:
    """The engine side of the page: the models loaded once, main.py's checks, allow-listed files, run folders."""

    def __init__(self, main_argv=(), max_upload_mb=MAX_UPLOAD_MB):
        self.main_argv = list(main_argv)   # main.py's own arguments the bench was started with (--smoke, --NAME=v)
        self.max_upload_mb = max_upload_mb
        self.cfg = settings.default_config(main)
        with contextlib.redirect_stdout(io.StringIO()):
            mode, _ = settings.parse_args(self.main_argv, self.cfg)
        if mode != "run":
            raise UserError(f"app.py takes main.py's --NAME=value settings and --smoke, not --{mode}")
        images, prompts, _ = inputs.prepare_inputs(self.cfg)   # the command line's checks of settings, images, prompts
        self.files = Allowed()
        self.example = [self.files.add(f"{EXAMPLE}{side} {Path(p).name}", p) for side, p in zip(SIDES, images)]
        self.models, notes = load_models(self.cfg, [(self.cfg, inputs.source_names(self.cfg, prompts))])
        for note in notes:
            print(f"  AudioSet classes: {note}")
        self.segmenters = OrderedDict()    # file sha256 -> PointSegmenter holding that image's SAM2 encoding
        self.pictures = OrderedDict()      # handle -> Picture
        self.masks = OrderedDict()         # (handle, points or name search) -> SAM2 mask at the working size
        self.sam2_lock = threading.Lock()  # one SAM2 encoding at a time
        self.cache_lock = threading.Lock()  # pictures and masks, shared by every browser session
        self.device = runs.DeviceQueue()   # one run at a time on the device, in the order they came
        self.cancels = {}                  # browser session -> {threading.Event of each of its waiting/running runs}
        self.cancels_lock = threading.Lock()
        self.tmp = Path(tempfile.mkdtemp(prefix="bench_"))   # zips and extra spectrograms: never in a run folder

    # ---- files a client may name --------------------------------------------------------------------------

    def image_path(self, handle, what="image"):
        return self.files.path(handle, what, IMAGE_HOW)

    def recording_path(self, handle):
        if handle in (None, NO_RECORDING):
            return ""
        return self.files.path(handle, "AUDIO_INPUT", RECORDING_HOW)

    def keep_upload(self, path, kind):
        """A checked upload copied to OUTPUT_DIR/uploads/<sha256>_<name> (the reproduce command and later runs find
        the same bytes after the browser's copy is gone) and put on the allow-list: its handle."""
        digest = file_sha256(path)
        for handle in self.example:
            if file_sha256(self.image_path(handle)) == digest:
                return handle
        folder = Path(self.cfg["OUTPUT_DIR"]) / UPLOAD_DIR
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{safe_name(Path(path).stem)}{Path(path).suffix.lower()}"
        target = folder / f"{digest[:16]}_{name}"
        if not target.exists():
            shutil.copyfile(path, target)
        return self.files.add(f"{kind} {digest[:12]}: {name}", target)

    def keep_image(self, path):
        """An uploaded image checked as main.py checks it, then kept: (handle, warnings). UserError if unusable."""
        notes = []
        inputs.check_image_and_points(path, inputs.ObjectPrompt("image"), notes)   # opens it safely; no points yet
        return self.keep_upload(path, "upload"), notes

    def keep_recording(self, path, duration):
        """An uploaded recording checked as --AUDIO_INPUT is (audio_io.read_audio_input), then kept: (handle, notes)."""
        _, notes = read_audio_input(path, duration)
        return self.keep_upload(path, "recording"), notes

    @staticmethod
    def discard_upload(path):
        """Delete the copy gradio made of an upload (kept uploads are copied first). Only a file inside gradio's own
        upload folder is ever deleted, whatever path a client managed to hand in."""
        from gradio.utils import get_upload_folder
        if not path:
            return
        folder, p = Path(get_upload_folder()).resolve(), Path(path).resolve()
        if folder not in p.parents or not p.is_file():
            return
        p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            if p.parent != folder:
                p.parent.rmdir()   # gradio keeps each upload in a folder of its own

    # ---- pictures, SAM2 -----------------------------------------------------------------------------------

    def picture(self, handle, what="image"):
        path = self.image_path(handle, what)
        with self.cache_lock:
            if handle not in self.pictures:
                self.pictures[handle] = Picture(path)
                while len(self.pictures) > 2 * ENCODED_IMAGES:
                    self.pictures.popitem(last=False)
            self.pictures.move_to_end(handle)
            return self.pictures[handle]

    def segmenter(self, path):
        """The PointSegmenter holding this image's SAM2 encoding: encoded on first use, reused by every click."""
        import mask
        from sam2.sam2_image_predictor import SAM2ImagePredictor
        key = file_sha256(path)
        with self.sam2_lock:
            if key in self.segmenters:
                self.segmenters.move_to_end(key)
                return self.segmenters[key]
            # one predictor per image over the shared SAM2 model: the weights are loaded once
            seg = mask.PointSegmenter(SAM2ImagePredictor(self.models.sam2.predictor.model))
            seg.set_image(path)
            self.segmenters[key] = seg
            while len(self.segmenters) > ENCODED_IMAGES:
                self.segmenters.popitem(last=False)
            return seg

    def keep_mask(self, key, m):
        with self.cache_lock:
            self.masks[key] = m
            self.masks.move_to_end(key)
            while len(self.masks) > MASKS_KEPT:
                self.masks.popitem(last=False)
        return m

    def point_mask(self, handle, points, labels):
        """SAM2's mask for point prompts (the prompt decoder only, once per set of points): float32 [H, W]."""
        key = (handle, tuple(map(tuple, points)), tuple(labels))
        with self.cache_lock:
            if key in self.masks:
                return self.masks[key]
        seg = self.segmenter(self.image_path(handle))
        with click_threads():
            masks, _ = seg.predict(points, labels, multimask_output=False)
        return self.keep_mask(key, masks[0])

    def found_mask(self, handle, name, others):
        """The mask the last name search of this object found (None when it is no longer kept)."""
        with self.cache_lock:
            return self.masks.get((handle, "name", name, tuple(others)))

    def find_by_name(self, handle, name, other_names, union=False):
        """main.py's name search on this image (SAM2 proposals ranked by CLIP): (mask, info, records)."""
        import mask
        path = self.image_path(handle)
        seg = self.segmenter(path)
        options = mask.TINY_PROPOSAL_OPTIONS if self.models.smoke else {}
        records = mask.propose_masks(path, seg, **options)
        model, preprocess = self.models.clip
        m, info = mask.segment_by_text(path, name, other_names=other_names, predictor=seg, clip_model=model,
                                       preprocess=preprocess, min_score=self.cfg["TEXT_MIN_SCORE"], union=union,
                                       prompt_template=self.cfg["TEXT_PROMPT"], proposals=records)
        self.keep_mask((handle, "name", name, tuple(other_names)), m)
        return m, info, [r for r in records if r["area"] > 0]

    # ---- runs ----------------------------------------------------------------------------------------------

    def run(self, cfg, command, progress=None, mode="run"):
        """One run into a new run folder, as `python main.py` makes it (runs.run_edit_pair): (run_dir, results).

        mode 'sweep' runs cfg['SWEEP'] through sweep.run_sweep (its ranked rows are the results). Inputs are
        checked (inputs.prepare_inputs) before anything runs; progress(step, k, n) may raise RunCancelled.
        """
        import sweep
        images, prompts, notes = inputs.prepare_inputs(cfg)
        if mode == "sweep":
            notes = notes + sweep.check_sweep(cfg)
        notes = notes + check_audio_classes(cfg, self.models, inputs.source_names(cfg, prompts))
        pipeline = functools.partial(sweep.run_sweep, main) if mode == "sweep" else main.main_pipeline
        return runs.run_edit_pair(cfg, self.models, (images, prompts, notes), pipeline, mode=mode,
                                  progress=progress, record={"command": command,
                                                             "app": "python app.py " + " ".join(self.main_argv)})

    def cancel_event(self, session):
        """A new run's own cancel: the page's Cancel sets the events of that session's runs that exist then."""
        event = threading.Event()
        with self.cancels_lock:
            self.cancels.setdefault(session, set()).add(event)
        return event

    def run_ended(self, session, event):
        with self.cancels_lock:
            self.cancels.get(session, set()).discard(event)

    def cancel(self, session):
        with self.cancels_lock:
            events = list(self.cancels.get(session, ()))
        for event in events:
            event.set()
        return len(events)

    # ---- run folders: results, comparisons -----------------------------------------------------------------

    def run_names(self):
        """Folder names of OUTPUT_DIR's finished single runs (those a comparison can read), newest first."""
        out = Path(self.cfg["OUTPUT_DIR"])
        if not out.is_dir():
            return []
        names = []
        for folder in sorted((p for p in out.iterdir() if p.is_dir() and p.name != UPLOAD_DIR), reverse=True):
            if (folder / "results.json").is_file() and runs.read_run_json(folder).get("mode") == "run":
                names.append(folder.name)
                if len(names) >= RUNS_LISTED:
                    break
        return names

    def run_folder(self, name, what):
        """A run folder named by a client: one of the names run_names lists, else UserError (never a path)."""
        if not isinstance(name, str) or name not in self.run_names():
            raise UserError(f"{what}={cut(name)!r} is not a run of this bench: pick one of the finished runs the list "
                            "offers (Refresh lists new ones); the bench never opens a path a client sends")
        return Path(self.cfg["OUTPUT_DIR"]) / name

    def zip_run(self, run_dir):
        """The run folder as a zip in the bench's temporary folder (the run folder stays as main.py made it)."""
        target = self.tmp / Path(run_dir).name
        return shutil.make_archive(str(target), "zip", root_dir=Path(run_dir).parent, base_dir=Path(run_dir).name)

    def spectrograms(self, run_dir, seed, first_seed):
        """The spectrogram figure of one seed's three audios: the run's own for the first seed, else drawn here."""
        import soundfile as sf
        import evaluation
        if seed == first_seed:
            return str(Path(run_dir) / "spectrograms.png")
        path = self.tmp / f"{Path(run_dir).name}_spectrograms_seed{seed}.png"
        if not path.exists():
            audios, rate = {}, 16000
            for name in AUDIO_NAMES:
                audios[name], rate = sf.read(Path(run_dir) / wav_name(name, seed, first_seed))
            evaluation.plot_spectrograms(audios, rate, path)
        return str(path)


@contextlib.contextmanager
def click_threads():
    """One intra-op thread for a click's work (SAM2's prompt decoder, step 3's patch arithmetic), in this thread
    only (OpenMP keeps the count per thread; a run in its own thread keeps torch's): these small kernels gain
    nothing from a second thread, and on a busy CPU the threads of one kernel wait for each other for whole time
    slices (the smoke decoder took 1.2 s a click with 2 threads, 0.16 s with 1: tests/bench_app_clicks.py)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def reproduce_command(base, values, sweep_grid=None):
    """(argv, 'python main.py ...') of the settings `base` (a main.py config) with `values` (NAME -> value) on top.

    Text values of non-text constants (SAM2_PROMPTS, AUDIO_CLASSES, a number sent as text ...) go through
    settings.coerce as --NAME=text does: UserError with its message when they do not fit. Only constants that
    differ from main.py's defaults (under --smoke: its smoke defaults) are named, so the command is as short as
    the run allows. sweep_grid: {NAME: 'v1,v2'}, added as --sweep NAME=v1,v2 ...
    """
    ref = settings.default_config(main)
    with contextlib.redirect_stdout(io.StringIO()):
        settings.parse_args(["--smoke"] if base["SMOKE"] else [], ref)
    argv = ["--smoke"] if base["SMOKE"] else []
    for name in ref:
        if name == "SMOKE":
            continue
        value = values.get(name, base[name])
        if isinstance(value, str) and not isinstance(ref[name], str):
            value = settings.coerce(name, value, ref[name])
        value = plain_number(value, ref[name])
        if value != ref[name] or type(value) is not type(ref[name]):
            argv.append(f"--{name}={literal(value)}")
    if sweep_grid:
        argv += ["--sweep"] + [f"{name}={values_text}" for name, values_text in sweep_grid.items()]
    return argv, "python main.py " + " ".join(shlex.quote(a) for a in argv)


def literal(value):
    """value as --NAME=value text that settings.coerce reads back exactly; strings in double quotes, for the shell."""
    if isinstance(value, str):
        try:
            ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value if value.strip() == value and value else json.dumps(value)   # a bare word reads as itself
        return json.dumps(value)
    return settings.python_literal(value)


def run_config(argv):
    """The config main.py builds from argv (settings.parse_args, the CLI's own reading), checked by
    settings.check_settings (a sweep's grid by sweep.check_sweep)."""
    cfg = settings.default_config(main)
    with contextlib.redirect_stdout(io.StringIO()):
        mode, _ = settings.parse_args(argv, cfg)
    settings.check_settings(cfg)
    return cfg, mode


def plain_number(value, default):
    """A control's number as the constant's type: sliders send floats (5.0 for SVD_K, 0.30000000000000004)."""
    if isinstance(default, bool) or not isinstance(value, (int, float)) or isinstance(value, bool):
        return value
    if isinstance(default, int) and float(value).is_integer():
        return int(value)
    if isinstance(default, float):
        return float(f"{float(value):.10g}")
    return value


def setting_value(base, name, raw):
    """One setting as the page sent it (raw: a number, or text from an API client), read and checked as
    --NAME=value is: UserError with the command line's message."""
    value = settings.coerce(name, raw if isinstance(raw, str) else literal(plain_number(raw, base[name])), base[name])
    settings.check_settings({**base, name: value})
    return value


# -----------------------------------------------------------------------------
# pictures: what SAM2 found and what the method's step 3 keeps of it


def clip_view(m, threshold):
    """What step 3 makes of a SAM2 mask: (patch weights [256] from util.mask_to_patch_weights at MASK_THRESHOLD,
    the number of selected patches, util's warnings: an object outside CLIP's square, a fallback patch)."""
    import torch
    from util import mask_to_patch_weights
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        weights = mask_to_patch_weights(torch.from_numpy(np.asarray(m, dtype=np.float32)), threshold=threshold)[0]
    return weights.numpy(), int((weights > 0).sum()), [str(w.message) for w in caught]


def draw(picture, m=None, points=(), labels=(), weights=None):
    """The preview with SAM2's mask tinted blue, CLIP's square outlined and the patches step 3 selects filled.

    Points are file pixels; the mask is at the working size. Returns uint8 [h, w, 3].
    """
    from PIL import Image, ImageDraw
    from util import CLIP_GRID
    img = picture.base
    h, w = img.shape[:2]
    if m is not None:
        small = np.asarray(Image.fromarray((np.asarray(m) > 0.5).astype(np.uint8) * 255).resize((w, h),
                                                                                               Image.NEAREST)) > 0
        img = img.copy()
        img[small] = (0.45 * img[small] + 0.55 * np.array([30, 144, 255])).astype(np.uint8)
    canvas = Image.fromarray(img).convert("RGBA")
    layer = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    pen = ImageDraw.Draw(layer)
    s = picture.scale
    x0, y0, x1, y1 = (v * s for v in picture.box)
    cell = (x1 - x0) / CLIP_GRID
    if weights is not None:
        for j in np.flatnonzero(weights > 0):
            r, c = divmod(int(j), CLIP_GRID)
            pen.rectangle([x0 + c * cell, y0 + r * cell, x0 + (c + 1) * cell - 1, y0 + (r + 1) * cell - 1],
                          fill=(255, 150, 0, 90), outline=(255, 150, 0, 230))
    pen.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 230, 0, 255), width=max(2, round(w / 300)))
    r = max(4, round(max(w, h) / 90))
    for (x, y), label in zip(points, labels):
        cx, cy = x * s, y * s
        pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(40, 200, 60, 255) if label == 1 else (230, 40, 40, 255),
                    outline="white", width=2)
    return np.asarray(Image.alpha_composite(canvas, layer).convert("RGB"))


def preview(path, mask=None, points=(), labels=(), threshold=None):
    """The image as the page draws it: (uint8 [h, w, 3], scale = preview pixels per file pixel); with a threshold,
    the patches step 3 keeps of the mask as well (what bench_app_clicks.py times)."""
    picture = Picture(path)
    weights = clip_view(mask, threshold)[0] if mask is not None and threshold is not None else None
    return draw(picture, mask, points, labels, weights), picture.scale


# -----------------------------------------------------------------------------
# tables


def prompts_text(objects):
    """SAM2_PROMPTS as main.py reads it, from the two objects' states (points, or {} to find by name)."""
    entries = {}
    for obj in objects:
        if obj["points"]:
            entries[obj["name"]] = {"x": [p[0] for p in obj["points"]], "y": [p[1] for p in obj["points"]],
                                    "labels": list(obj["labels"])}
        else:
            entries[obj["name"]] = {}
    return repr(entries)


def object_states(cfg):
    """The page's starting objects: main.py's SAM2_PROMPTS (points as given, or found by name)."""
    states = []
    for p in inputs.parse_prompts(cfg["SAM2_PROMPTS"], cfg["TEXT_PROMPT"]):
        points = [[round(x, 1) if x % 1 else int(x), round(y, 1) if y % 1 else int(y)] for x, y in p.points or []]
        states.append({"name": p.name, "points": points, "labels": list(p.labels or []), "found": None})
    return states


def verdict_table(rows):
    """verdict.verdict_rows as a table: every field the verdict gives, numbers to 4 decimals, the interval in one
    column (new fields of the verdict appear as new columns)."""
    import pandas as pd
    if not rows:
        return pd.DataFrame()
    keys = [k for k in rows[0] if k != "ci_high"]
    table = []
    for r in rows:
        cells = []
        for k in keys:
            if k == "ci_low":
                cells.append("" if r["ci_low"] is None else f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]")
            elif k == "fraction_holds" and isinstance(r[k], float):
                cells.append(f"{r[k]:.0%}")
            elif isinstance(r[k], float):
                cells.append(fmt(r[k]))
            else:
                cells.append("" if r[k] is None else str(r[k]))
        table.append(cells)
    names = {"ci_low": "95% CI", "fraction_holds": "seeds that hold", "description": "what"}
    return pd.DataFrame(table, columns=[names.get(k, k) for k in keys])


def flat_config(config):
    return {k: settings.python_literal(v) if not isinstance(v, str) or not v else v for k, v in config.items()}


def settings_diff(config_a, config_b):
    """HTML: the settings two runs differ in (highlighted, first), then the ones they share."""
    a, b = flat_config(config_a), flat_config(config_b)
    names = list(dict.fromkeys([*a, *b]))
    differ = [n for n in names if a.get(n) != b.get(n)]
    same = [n for n in names if a.get(n) == b.get(n)]

    def row(n, cls=""):
        return (f"<tr class='{cls}'><td><code>{escape(n)}</code></td><td>{escape(cut(a.get(n, '-'), 120))}</td>"
                f"<td>{escape(cut(b.get(n, '-'), 120))}</td></tr>")
    head = "<tr><th>setting</th><th>run A</th><th>run B</th></tr>"
    text = (f"<b>{len(differ)} setting(s) differ</b>" if differ else "<b>the two runs have the same settings</b>")
    return (f"<div id='diff_summary'>{text}</div><table class='bench-diff'>{head}"
            + "".join(row(n, "differs") for n in differ) + "</table>"
            + f"<details><summary>{len(same)} setting(s) the same</summary><table class='bench-diff'>{head}"
            + "".join(row(n) for n in same) + "</table></details>")


def error_box(err):
    return f"<div class='bench-error'>⚠ {escape(str(err))}</div>"


def note_box(text, lines=False):
    style = " style='white-space: pre-line'" if lines else ""   # keep a printout's line breaks
    return f"<div class='bench-note'{style}>{escape(text)}</div>"


def warn_box(text):
    return f"<div class='bench-warn'>⚠ {escape(text)}</div>"


def escape(text):
    import html
    return html.escape(str(text)).replace("\n", "<br>")


def fmt(x):
    return "" if x is None else f"{x:+.4f}" if abs(x) >= 1e-3 or x == 0 else f"{x:+.1e}"


CSS = """
.bench-error {color: #a40000; background: #fff0f0; border: 1px solid #e0a0a0; padding: 6px 10px; border-radius: 6px;
              white-space: normal; font-size: 0.9em}
.bench-warn {color: #6a4a00; background: #fff8e0; border: 1px solid #e8c860; padding: 6px 10px; border-radius: 6px;
             font-size: 0.9em}
.bench-note {color: #333; background: #f3f6fa; padding: 6px 10px; border-radius: 6px; font-size: 0.9em}
.bench-view {font-size: 0.9em; padding: 4px 10px; border-left: 4px solid #ff9600}
table.bench-diff {font-size: 0.85em; border-collapse: collapse}
table.bench-diff td, table.bench-diff th {padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: left}
table.bench-diff tr.differs {background: #fff1b8; font-weight: 600}
#reproduce textarea, #sweep_command textarea {font-family: ui-monospace, monospace; font-size: 0.85em}
#verdict_text textarea, #preservation textarea, #verdict_a_text textarea, #verdict_b_text textarea
    {font-family: ui-monospace, monospace; font-size: 0.8em}
"""


# -----------------------------------------------------------------------------
# the page


def build_ui(bench):
    import gradio as gr
    import evaluation
    import sweep as sweeps
    import verdict
    from model.aldm import SAMPLERS
    from model.edit import EDIT_METHODS
    cfg = bench.cfg
    starts = object_states(cfg)

    def shown(i, state, handle, threshold):
        """(preview image, message, CLIP's view) of object i: SAM2's mask of its points (or the name search's),
        CLIP's square and the patches step 3 keeps at MASK_THRESHOLD, with what would go wrong in the run."""
        with click_threads():   # small kernels: one thread each (see click_threads)
            return draw_object(i, state, handle, threshold)

    def draw_object(i, state, handle, threshold):
        picture = bench.picture(handle, SIDES[i].upper())
        m = None
        if state["points"]:
            try:
                m = bench.point_mask(handle, state["points"], state["labels"])
            except (ValueError, RuntimeError) as err:
                return draw(picture, None, state["points"], state["labels"]), error_box(err), ""
            message = note_box(f"mask: {float(np.mean(m > 0.5)):.1%} of the image; {len(state['points'])} point(s)")
            if 1 in state["labels"]:
                try:   # main.py's own check: CLIP must see a point on the object
                    inputs.check_points(picture.path, picture.size,
                                        inputs.ObjectPrompt(state["name"], state["points"], state["labels"]))
                except UserError as err:
                    message = error_box(err)
        elif state.get("found"):
            m = bench.found_mask(handle, *state["found"])
            message = note_box(state["found_note"] if m is not None else "found by name; Find by name again to see "
                               "its mask and patches")
        else:
            return (draw(picture), note_box(f"'{state['name']}' has no points: it is found by name in the run "
                                            "(Find by name shows what it finds; a click gives SAM2 a point instead)"),
                    view_box(i, None, threshold, []))
        if m is None:
            return draw(picture, None, state["points"], state["labels"]), message, view_box(i, None, threshold, [])
        weights, n, notes = clip_view(m, threshold)
        if not (np.asarray(m) > 0.5).any():
            notes.append(f"SAM2's mask of '{state['name']}' is empty: the run would stop at step 1")
        return draw(picture, m, state["points"], state["labels"], weights), message, view_box(i, n, threshold, notes)

    def view_box(i, n, threshold, notes):
        if n is None:
            return ""
        text = (f"<div class='bench-view'>CLIP sees the yellow square; step 3 keeps <b id='{SYMBOLS[i]}'>"
                f"{SYMBOLS[i]} = {n}</b> of its 256 patches (orange) at MASK_THRESHOLD {threshold:g}</div>")
        return text + "".join(warn_box(note) for note in notes)

    with gr.Blocks(title="Edit-aware image-to-audio: lab bench") as demo:
        gr.Markdown(
            "# Edit-aware image-to-audio: lab bench\n"
            "Give an original image **I_0** and an edited image **I_1**, mark the object the edit **removed** (on "
            "I_0) and the one it **added** (on I_1), set the method's knobs, run, and hear whether the audio "
            "followed the edit: `baseline_original` (I_0 as SSV2A hears it), `baseline_edited` (I_1) and "
            "`manipulated` (I_1 with the SVD-edited embedding E_final), scored over several seeds. Each image shows "
            "what the method sees: SAM2's mask (blue), the square CLIP sees (yellow) and the 14-px patches of it "
            "that step 3 keeps at MASK_THRESHOLD (orange)." +
            ("\n\n**Smoke models**: tiny random weights on the CPU. Masks are arbitrary and the audio is noise; "
             "this checks the plumbing, not the method." if cfg["SMOKE"] else ""))
        obj_states = [gr.State(dict(s)) for s in starts]
        handles, images, names, messages, views, kinds, proposals, proposal_states, finds = ([] for _ in range(9))
        uploads, undos, clears = [], [], []
        with gr.Row():
            for i, (title, role) in enumerate([("I_0: original", "removed"), ("I_1: edited", "added")]):
                with gr.Column():
                    gr.Markdown(f"### {title}: click the object the edit **{role}**")
                    handle = gr.Textbox(bench.example[i], label=f"{title.split(':')[0]} (what the run reads)",
                                        interactive=False, elem_id=f"path{i}")
                    start_img, start_note, start_view = shown(i, starts[i], bench.example[i], cfg["MASK_THRESHOLD"])
                    image = gr.Image(start_img, label=title, interactive=False, type="numpy",
                                     elem_id=f"image{i}", format="jpeg", buttons=[])
                    view = gr.HTML(start_view, elem_id=f"view{i}")
                    uploads.append(gr.UploadButton(f"Upload {title.split(':')[0]}", file_types=["image"], size="sm",
                                                   elem_id=f"upload{i}"))
                    with gr.Row():
                        name = gr.Textbox(starts[i]["name"], label=f"name of the {role} object", elem_id=f"name{i}",
                                          scale=2)
                        kind = gr.Radio([ON_OBJECT, OFF_OBJECT], value=ON_OBJECT, label="a click marks a point",
                                        elem_id=f"kind{i}", scale=3)
                    with gr.Row():
                        undos.append(gr.Button("Undo", size="sm", elem_id=f"undo{i}"))
                        clears.append(gr.Button("Clear", size="sm", elem_id=f"clear{i}"))
                        finds.append(gr.Button("Find by name", size="sm", elem_id=f"find{i}"))
                    proposal = gr.Dropdown([], label="proposals found by name (CLIP's probability): pick one",
                                           interactive=True, elem_id=f"proposals{i}", visible=False)
                    message = gr.HTML(start_note, elem_id=f"message{i}")
                for collection, item in ((handles, handle), (images, image), (names, name), (messages, message),
                                         (views, view), (kinds, kind), (proposals, proposal)):
                    collection.append(item)
                proposal_states.append(gr.State({}))
        example_button = gr.Button("Example pair (images/ of this project)", size="sm", elem_id="example_pair")

        with gr.Row():
            kept = gr.Textbox(", ".join(cfg["KEPT_SOURCES"]),
                              label="sound sources kept in both images (comma-separated)",
                              elem_id="kept", scale=2)
            prompts_box = gr.Textbox(prompts_text(starts), label="SAM2_PROMPTS (built from your clicks; edit by hand "
                                     "if you like)", elem_id="prompts", scale=3)
        for i in range(2):
            obj_states[i].change(lambda a, b: prompts_text([a, b]), obj_states, prompts_box, queue=False,
                                 api_visibility="private")

        controls = {}

        def slider(name):
            value, rule = cfg[name], settings.RULES[name]
            controls[name] = gr.Slider(min(rule.page[0], value), max(rule.page[1], value), value=value,
                                       step=rule.step, label=name, info=rule.text, elem_id=name.lower(),
                                       min_width=240)

        gr.Markdown("### The method: SVD suppression and boost, the mix of E_final, the patch threshold")
        with gr.Row():
            for name in METHOD_SLIDERS:
                slider(name)
        with gr.Accordion("More settings: seeds, evaluation, sampler, audio (main.py's constants, checked by its "
                          "own rules)", open=False):
            with gr.Row():
                for name in MORE_SLIDERS:
                    slider(name)
            with gr.Row():
                controls["SAMPLER"] = gr.Dropdown(list(SAMPLERS), value=cfg["SAMPLER"], label="SAMPLER",
                                                  info="ddim: the original's; dpm++: faster (its own step count "
                                                       "unless DDIM_STEPS is changed)", elem_id="sampler")
                controls["SEED"] = gr.Number(cfg["SEED"], label="SEED", precision=0, info=settings.RULES["SEED"].text,
                                             elem_id="seed")
                controls["PIN_GLOBAL"] = gr.Checkbox(cfg["PIN_GLOBAL"], label="PIN_GLOBAL (keep slot 0 = E_final "
                                                     "in every cycle-mix round)", elem_id="pin_global")
            for name in TEXT_SETTINGS:
                controls[name] = gr.Textbox(repr(cfg[name]), label=name, elem_id=name.lower(), lines=2)
        with gr.Accordion("Step 8 (optional): edit a recording A_0 that goes with I_0", open=False,
                          elem_id="step8"):
            gr.Markdown("Upload a recording (wav, flac or ogg; checked as `--AUDIO_INPUT` is). The run then inverts "
                        "it under I_0's remix CLAP and regenerates it three ways from the same noise: under that "
                        "CLAP again (`reconstructed`, what the edits are judged against), under the manipulated "
                        "one (`edited`) and under plain I_1's (`edited_plain`).")
            with gr.Row():
                upload_recording = gr.UploadButton("Upload a recording", file_types=[".wav", ".flac", ".ogg"],
                                                   size="sm", elem_id="upload_recording")
                drop_recording = gr.Button("No recording", size="sm", elem_id="drop_recording")
            recording = gr.Textbox(NO_RECORDING, label="AUDIO_INPUT (what the run edits; empty: no step 8)",
                                   interactive=False, elem_id="audio_input")
            recording_player = gr.Audio(None, label="the recording", type="filepath", interactive=False,
                                        elem_id="recording")
            recording_note = gr.HTML("", elem_id="recording_note")
            with gr.Row():
                for name in EDIT_SLIDERS:
                    slider(name)
                controls["EDIT_METHOD"] = gr.Dropdown(list(EDIT_METHODS), value=cfg["EDIT_METHOD"], label="EDIT_METHOD",
                                                      info="ddpm-inversion: exact reconstruction; ddim-inversion; "
                                                           "sdedit (keeps less of A_0)", elem_id="edit_method")
        names_of_controls = list(controls)
        threshold_control = controls["MASK_THRESHOLD"]
        check = gr.Button("Check settings", size="sm", elem_id="check")

        with gr.Row():
            run_button = gr.Button("Run", variant="primary", elem_id="run")
            cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel")
        status = gr.HTML("", elem_id="status")
        command_box = gr.Textbox("", label="the same run from the command line", elem_id="reproduce",
                                 interactive=False, buttons=["copy"])
        visit = gr.State([])   # the run folders this browser visit made, newest last

        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("Results", elem_id="tab_results"):
                seed_pick = gr.Radio([], label="seed", elem_id="seed_pick", interactive=True)
                with gr.Row():
                    audios = [gr.Audio(label=n, type="filepath", interactive=False, elem_id=n) for n in AUDIO_NAMES]
                spectrograms = gr.Image(show_label=False, label="spectrograms of this seed's three audios",
                                        interactive=False, elem_id="spectrograms", buttons=["fullscreen"])
                with gr.Group(visible=False) as edit_group:
                    gr.Markdown("#### Step 8: the recording, its reconstruction and the edits (this seed)")
                    with gr.Row():
                        edit_audios = [gr.Audio(label=label, type="filepath", interactive=False, elem_id=elem)
                                       for label, elem in (("A_0: the recording as used", "edit_audio_input"),
                                                           ("reconstructed (A_0 regenerated under c_src)",
                                                            "edit_reconstructed"),
                                                           ("edited (E_final)", "edit_edited"),
                                                           ("edited_plain (plain I_1)", "edit_edited_plain"))]
                    edit_spectrograms = gr.Image(show_label=False, label="before/after spectrograms",
                                                 interactive=False, elem_id="edit_spectrograms",
                                                 buttons=["fullscreen"])
                    preservation = gr.Textbox(label="preservation (against the reconstruction, then A_0 as "
                                                    "recorded) and the edits' effect", lines=16,
                                              interactive=False, elem_id="preservation")
                scores_plot = gr.Image(show_label=False, label="scores per source and audio; the verdict's paired "
                                       "differences", interactive=False, elem_id="scores", buttons=["fullscreen"])
                verdict_box = gr.Dataframe(label="verdict: paired differences over seeds (mean, std, 95% interval, "
                                           "fraction of seeds that hold)", elem_id="verdict", interactive=False,
                                           wrap=True)
                verdict_text = gr.Textbox(label="verdict as main.py prints it", lines=12, interactive=False,
                                          elem_id="verdict_text")
                reach = gr.HTML("", elem_id="reach")
                download = gr.DownloadButton("Download the run folder (zip)", visible=False, elem_id="download")
            with gr.Tab("Compare runs", elem_id="tab_compare"):
                gr.Markdown("Two finished runs side by side: this visit's runs (★) and earlier ones in OUTPUT_DIR. "
                            "The same seed's audios, both verdicts, and the settings that differ (highlighted).")
                with gr.Row():
                    run_a = gr.Dropdown([], label="run A", elem_id="compare_a", allow_custom_value=True, scale=4)
                    run_b = gr.Dropdown([], label="run B", elem_id="compare_b", allow_custom_value=True, scale=4)
                    with gr.Column(scale=1, min_width=160):
                        refresh = gr.Button("Refresh the list", size="sm", elem_id="refresh_runs")
                        compare_button = gr.Button("Compare", size="sm", elem_id="compare")
                compare_seed = gr.Radio([], label="seed (both runs)", elem_id="compare_seed", interactive=True)
                compare_note = gr.HTML("", elem_id="compare_note")
                compare_audios = []
                for side in ("a", "b"):
                    with gr.Row():
                        compare_audios += [gr.Audio(label=f"run {side.upper()}: {n}", type="filepath",
                                                    interactive=False, elem_id=f"{side}_{n}") for n in AUDIO_NAMES]
                diff = gr.HTML("", elem_id="settings_diff")
                with gr.Row():
                    verdict_a = gr.Textbox(label="verdict of run A", lines=12, interactive=False,
                                           elem_id="verdict_a_text")
                    verdict_b = gr.Textbox(label="verdict of run B", lines=12, interactive=False,
                                           elem_id="verdict_b_text")
                with gr.Row():
                    table_a = gr.Dataframe(label="run A", interactive=False, wrap=True, elem_id="verdict_a")
                    table_b = gr.Dataframe(label="run B", interactive=False, wrap=True, elem_id="verdict_b")
            with gr.Tab("Sweep", elem_id="tab_sweep"):
                gr.Markdown(f"A small grid over one or two constants (at most {SWEEP_MAX_SETTINGS} settings) with "
                            "everything else as set above: masks, tokens and detections once, steps 3-7 per setting "
                            "(`python main.py --sweep`). Ranked by the method's own effect.")
                sweepable = list(settings.SWEEPABLE)
                with gr.Row():
                    sweep_name1 = gr.Dropdown(sweepable, value="SVD_ALPHA", label="constant", elem_id="sweep_name1")
                    sweep_values1 = gr.Textbox("0.1,0.3,0.5", label="values (comma-separated)", elem_id="sweep_values1")
                    sweep_name2 = gr.Dropdown(["(none)"] + sweepable, value="(none)", label="second constant",
                                              elem_id="sweep_name2")
                    sweep_values2 = gr.Textbox("", label="values", elem_id="sweep_values2")
                sweep_button = gr.Button("Run the sweep", variant="primary", elem_id="run_sweep")
                sweep_status = gr.HTML("", elem_id="sweep_status")
                sweep_command = gr.Textbox("", label="the same sweep from the command line", interactive=False,
                                           elem_id="sweep_command", buttons=["copy"])
                sweep_table = gr.Dataframe(label="settings ranked by the method's own effect", interactive=False,
                                           wrap=True, elem_id="sweep_table")
                sweep_heatmap = gr.Image(show_label=False, label="heat map", interactive=False,
                                         elem_id="sweep_heatmap", buttons=["fullscreen"])
                sweep_pick = gr.Dropdown([], label="hear a setting", interactive=True, elem_id="sweep_pick")
                with gr.Row():
                    sweep_audios = [gr.Audio(label=label, type="filepath", interactive=False, elem_id=elem)
                                    for label, elem in (("baseline_original", "sweep_baseline_original"),
                                                        ("baseline_edited", "sweep_baseline_edited"),
                                                        ("manipulated with this setting", "sweep_manipulated"))]
                sweep_state = gr.State({})

        # ---- images and objects -------------------------------------------------------------------------------

        def threshold_of(raw):
            return setting_value(cfg, "MASK_THRESHOLD", raw)

        def refused(err, n_outputs):
            """A refused request's outputs: the message where the object's message goes, nothing else touched."""
            return (gr.skip(),) * (n_outputs - 1) + (error_box(err),)

        for i in range(2):
            def on_upload(file, state, MASK_THRESHOLD, i=i):
                path = None
                try:
                    path = uploaded_path(file)
                    threshold = threshold_of(MASK_THRESHOLD)
                    handle, notes = bench.keep_image(path)
                    bench.segmenter(bench.image_path(handle))   # encode now: every click after this runs the decoder
                except (UserError, ValueError, OSError, RuntimeError) as err:
                    return gr.skip(), gr.skip(), state, gr.skip(), error_box(upload_message(err, path))
                finally:
                    bench.discard_upload(path)
                state = {**state, "points": [], "labels": [], "found": None}
                img, _, view_html = shown(i, state, handle, threshold)
                note = note_box("; ".join([upload_message(n, path) for n in notes]
                                          + ["image encoded by SAM2: click the object"]))
                return handle, img, state, view_html, note

            uploads[i].upload(on_upload, [uploads[i], obj_states[i], threshold_control],
                              [handles[i], images[i], obj_states[i], views[i], messages[i]],
                              api_name=f"upload_{SIDES[i]}", preprocess=False)

            def on_click(state, image, kind, MASK_THRESHOLD, evt: gr.EventData, i=i):
                # gr.EventData, not gr.SelectData: a call without the click's data (an API client) reaches this
                # function and gets its one line, instead of failing inside gradio
                try:
                    picture = bench.picture(image, SIDES[i].upper())
                    threshold = threshold_of(MASK_THRESHOLD)
                    index = (getattr(evt, "_data", None) or {}).get("index")
                    if not isinstance(index, (list, tuple)) or len(index) < 2 or \
                            not all(isinstance(v, (int, float)) for v in index[:2]):   # none off the picture
                        raise UserError("that click was outside the image: no point was added")
                    x, y = (round(v / picture.scale) for v in index[:2])
                    import mask
                    mask.check_points_inside([[x, y]], picture.size, Path(picture.path).name)
                except (UserError, ValueError) as err:   # a click off the image never becomes a point
                    return refused(err, 4)
                state = {**state, "points": state["points"] + [[x, y]],
                         "labels": state["labels"] + [1 if kind == ON_OBJECT else 0], "found": None}
                img, note, view_html = shown(i, state, image, threshold)
                return state, img, view_html, note

            images[i].select(on_click, [obj_states[i], handles[i], kinds[i], threshold_control],
                             [obj_states[i], images[i], views[i], messages[i]], api_name=f"click_{ROLES[i]}",
                             preprocess=False)

            def points_edit(keep, i=i):
                """Undo (keep all but the last point) and Clear (keep none): the same checks and redraw."""
                def on_edit(state, image, MASK_THRESHOLD):
                    try:
                        threshold = threshold_of(MASK_THRESHOLD)
                        bench.picture(image, SIDES[i].upper())
                    except UserError as err:
                        return refused(err, 4)
                    state = {**state, "points": keep(state["points"]), "labels": keep(state["labels"]), "found": None}
                    img, note, view_html = shown(i, state, image, threshold)
                    return state, img, view_html, note
                return on_edit

            on_undo, on_clear = points_edit(lambda xs: xs[:-1]), points_edit(lambda xs: [])
            undos[i].click(on_undo, [obj_states[i], handles[i], threshold_control],
                           [obj_states[i], images[i], views[i], messages[i]], api_name=f"undo_{ROLES[i]}",
                           preprocess=False)
            clears[i].click(on_clear, [obj_states[i], handles[i], threshold_control],
                            [obj_states[i], images[i], views[i], messages[i]], api_name=f"clear_{ROLES[i]}",
                            preprocess=False)

            def on_name(state, text):
                return {**state, "name": text.strip()}

            names[i].change(on_name, [obj_states[i], names[i]], [obj_states[i]], queue=False, api_visibility="private")

        # the other object's name is a distractor of the name search: wired once both names exist
        for i in range(2):
            def on_find(state, image, name, other, MASK_THRESHOLD, i=i):
                name = (name or "").strip()
                try:
                    threshold = threshold_of(MASK_THRESHOLD)
                    bench.picture(image, SIDES[i].upper())
                    if not name:
                        raise UserError("type the object's name first")
                    others = [(other or "").strip()]
                    m, info, records = bench.find_by_name(image, name, others)
                except (UserError, ValueError) as err:   # mask.NoMatchError is a ValueError
                    return state, gr.skip(), gr.skip(), error_box(err), gr.update(visible=False), {}
                to_file = 1.0 / bench.segmenter(bench.image_path(image)).scale
                choices = [f"#{c['index']}  P={c['p_object']:.2f}" + ("  (best: the run finds this one)" if n == 0
                                                                      else "")
                           for n, c in enumerate(info["candidates"])]
                # a proposal's own SAM2 point (the automatic generator's grid point), in file pixels
                points = {f"#{c['index']}": [round(float(records[c['index']]["point_coords"][0][0]) * to_file),
                                             round(float(records[c['index']]["point_coords"][0][1]) * to_file)]
                          for c in info["candidates"]}
                found_note = (f"mask: {float(np.mean(m > 0.5)):.1%} of the image: the best of {len(records)} SAM2 "
                              f"proposals, P({info['text']!r}) = {info['score']:.2f}. The run finds it the same "
                              "way; picking another proposal gives SAM2 its point instead.")
                state = {**state, "name": name, "points": [], "labels": [], "found": [name, others],
                         "found_note": found_note}
                img, note, view_html = shown(i, state, image, threshold)
                return (state, img, view_html, note, gr.update(choices=choices, value=choices[0], visible=True),
                        points)

            finds[i].click(on_find, [obj_states[i], handles[i], names[i], names[1 - i], threshold_control],
                           [obj_states[i], images[i], views[i], messages[i], proposals[i], proposal_states[i]],
                           api_name=f"find_{ROLES[i]}", preprocess=False)

            def on_pick(state, image, proposal, points, MASK_THRESHOLD, i=i):
                try:
                    threshold = threshold_of(MASK_THRESHOLD)
                    bench.picture(image, SIDES[i].upper())
                except UserError as err:
                    return refused(err, 4)
                if not proposal or "(best" in proposal or proposal.split()[0] not in (points or {}):
                    return gr.skip(), gr.skip(), gr.skip(), gr.skip()
                state = {**state, "points": [points[proposal.split()[0]]], "labels": [1], "found": None}
                img, note, view_html = shown(i, state, image, threshold)
                return state, img, view_html, note

            proposals[i].input(on_pick, [obj_states[i], handles[i], proposals[i], proposal_states[i],
                                         threshold_control],
                               [obj_states[i], images[i], views[i], messages[i]], api_name=f"pick_{ROLES[i]}",
                               preprocess=False)

        def on_threshold(state0, state1, ORIGINAL, EDITED, MASK_THRESHOLD):
            """CLIP's patches of both masks redrawn at a new MASK_THRESHOLD: arithmetic on the kept masks, no model."""
            try:
                threshold = threshold_of(MASK_THRESHOLD)
                bench.picture(ORIGINAL, "ORIGINAL")
                bench.picture(EDITED, "EDITED")
            except UserError as err:
                return gr.skip(), gr.skip(), error_box(err), gr.skip()
            out = []
            for i, (state, handle) in enumerate(((state0, ORIGINAL), (state1, EDITED))):
                img, _, view_html = shown(i, state, handle, threshold)
                out += [img, view_html]
            return out[0], out[2], out[1], out[3]

        threshold_control.change(on_threshold, [*obj_states, *handles, threshold_control],
                                 [images[0], images[1], views[0], views[1]], api_name="redraw_patches",
                                 preprocess=False, trigger_mode="always_last", show_progress="hidden")

        def on_example(MASK_THRESHOLD):
            try:
                threshold = threshold_of(MASK_THRESHOLD)
            except UserError:
                threshold = cfg["MASK_THRESHOLD"]
            out = []
            for i in range(2):
                state = dict(starts[i])
                img, note, view_html = shown(i, state, bench.example[i], threshold)
                out += [bench.example[i], img, state, view_html, note, state["name"]]
            return out

        example_button.click(on_example, [threshold_control],
                             [x for i in range(2) for x in (handles[i], images[i], obj_states[i], views[i], messages[i],
                                                            names[i])],
                             api_name="example_pair", preprocess=False)

        # ---- the recording of step 8 ------------------------------------------------------------------------

        def on_recording(file, DURATION):
            path = None
            try:
                path = uploaded_path(file)
                duration = setting_value(cfg, "DURATION", DURATION)
                handle, notes = bench.keep_recording(path, duration)
            except (UserError, ValueError, OSError) as err:
                return gr.skip(), gr.skip(), error_box(upload_message(err, path))
            finally:
                bench.discard_upload(path)
            note = note_box("; ".join([upload_message(n, path) for n in notes]
                                      + ["the next run edits this recording (step 8)"]))
            return handle, bench.recording_path(handle), note

        upload_recording.upload(on_recording, [upload_recording, controls["DURATION"]],
                                [recording, recording_player, recording_note], api_name="upload_recording",
                                preprocess=False)
        drop_recording.click(lambda: (NO_RECORDING, None, note_box("no recording: the run makes no step 8")), None,
                             [recording, recording_player, recording_note], api_name="no_recording", queue=False)

        # ---- settings, runs ---------------------------------------------------------------------------------

        def values_of(prompts_value, kept_value, path0, path1, control_values, audio_input):
            values = dict(zip(names_of_controls, control_values))
            values.update(SAM2_PROMPTS=prompts_value,
                          ORIGINAL=run_path(bench.image_path(path0, "ORIGINAL"), cfg["ORIGINAL"], bench, 0),
                          EDITED=run_path(bench.image_path(path1, "EDITED"), cfg["EDITED"], bench, 1),
                          AUDIO_INPUT=bench.recording_path(audio_input),
                          KEPT_SOURCES=[k.strip() for k in str(kept_value or "").split(",") if k.strip()])
            return values

        def page_config(args, grid=None):
            """(cfg, argv, command) of everything set on the page, read and checked as main.py reads and checks
            its command line (UserError with its message)."""
            prompts_value, kept_value, path0, path1, *control_values, audio_input = args
            argv, command = reproduce_command(cfg, values_of(prompts_value, kept_value, path0, path1, control_values,
                                                             audio_input), grid)
            run_cfg, mode = run_config(argv)
            inputs.prepare_inputs(run_cfg)
            if grid:
                sweeps.check_sweep(run_cfg)
                n = len(sweeps.sweep_settings(run_cfg["SWEEP"]))
                if n > SWEEP_MAX_SETTINGS:
                    raise UserError(f"the sweep has {n} settings: the page runs at most {SWEEP_MAX_SETTINGS}; run "
                                    f"bigger grids from the command line: {command}")
            return run_cfg, command

        def on_check(*args):
            """main.py's checks of everything set on the page: its message, or the reproduce command."""
            try:
                _, command = page_config(args)
            except (UserError, ValueError) as err:
                return error_box(err), ""
            return note_box("Settings, images and objects pass main.py's checks."), command

        page_inputs = [prompts_box, kept, handles[0], handles[1]] + [controls[n] for n in names_of_controls] + \
            [recording]
        input_names = ["SAM2_PROMPTS", "KEPT_SOURCES", "ORIGINAL", "EDITED"] + names_of_controls + ["AUDIO_INPUT"]
        for control in [prompts_box, kept] + list(controls.values()):   # an old refusal is stale once edited
            control.input(lambda: "", None, status, queue=False, show_progress="hidden", api_visibility="private")
        check.click(named(on_check, input_names), page_inputs, [status, command_box], api_name="check_settings",
                    preprocess=False)

        def results_view(run_dir, results, seed=None, full=True):
            seeds = results["seeds"]
            seed = seeds[0] if seed is None else int(seed)
            out = {seed_pick: gr.update(choices=[str(s) for s in seeds], value=str(seed))}
            for audio, name in zip(audios, AUDIO_NAMES):
                out[audio] = str(Path(run_dir) / wav_name(name, seed, seeds[0]))
            out.update(edit_view(run_dir, seeds, seed))
            if full:
                out[spectrograms] = bench.spectrograms(run_dir, seed, seeds[0])
                out[scores_plot] = str(Path(run_dir) / "scores.png")
                out[verdict_box] = verdict_table(verdict.verdict_rows(results))
                out[verdict_text] = verdict.format_verdict(results)
                r = results.get("e_final_reach") or {}
                out[reach] = note_box(
                    "E_final's reach (cosine distance of the manipulated remix CLAP, mean over seeds): to "
                    f"baseline_edited {r.get('mean_to_baseline_edited', float('nan')):.4f}, to baseline_original "
                    f"{r.get('mean_to_baseline_original', float('nan')):.4f}")
                out[download] = gr.update(value=bench.zip_run(run_dir), visible=True)
            return out

        def edit_view(run_dir, seeds, seed):
            """Step 8's outputs of a run for one seed (hidden when the run edited no recording)."""
            folder = Path(run_dir)
            if not (folder / "edit_results.json").is_file():
                return {edit_group: gr.update(visible=False)}
            result = json.loads((folder / "edit_results.json").read_text())
            files = ["audio_input.wav"] + [wav_name(name, seed, seeds[0]) for name in EDIT_AUDIO_NAMES[1:]]
            out = {edit_group: gr.update(visible=True), edit_spectrograms: str(folder / "edit_spectrograms.png")}
            for player, name in zip(edit_audios, files):
                out[player] = str(folder / name) if (folder / name).is_file() else None
            targets = [f"  {name} vs {'A_0' if against == 'audio_input' else against} ({t['scorer']}): change of "
                       f"P(added) - change of P(removed) {fmt(t['mean'])}"
                       + (f", 95% CI [{fmt(t['ci95'][0])}, {fmt(t['ci95'][1])}]" if t["ci95"] else "")
                       + f": {t['status']}"
                       for against, judged in ((result["judged_against"], result["target"]),
                                               (result["raw"]["judged_against"], result["raw"]["target"]))
                       for name, t in judged.items()]
            out[preservation] = (f"{result['method']}, strength {result['strength']:g} of {result['steps']} steps\n"
                                 + evaluation.format_edit_preservation(result) + "\n  Edit success (target):\n"
                                 + "\n".join(targets))
            return out

        def listed_runs(visit_names):
            names = bench.run_names()
            mine = [n for n in reversed(visit_names or []) if n in names]
            return [(f"★ {n}", n) for n in mine] + [(n, n) for n in names if n not in mine]

        def device_job(request, work, label):
            """Run work() in its own thread after waiting its turn on the device; yields ('wait', ahead),
            ('step', step, k, n, run_dir), then ('done', run_dir, results) or ('error', err)."""
            session = request.session_hash if request is not None else "api"
            cancel = bench.cancel_event(session)
            events = queue.Queue()

            def report(step, k=None, n=None, run_dir=None):
                events.put(("step", step, k, n, run_dir))
                if cancel.is_set():
                    raise RunCancelled(f"cancelled from the browser before step '{step}'")

            def thread():
                try:
                    with bench.device.turn(cancelled=cancel, on_wait=lambda ahead: events.put(("wait", ahead))):
                        events.put(("done", *work(report)))
                except BaseException as err:   # noqa: BLE001 - every ending is shown on the page
                    events.put(("error", err))
                finally:
                    bench.run_ended(session, cancel)

            threading.Thread(target=thread, daemon=True, name=label).start()
            while True:
                event = events.get()
                yield event
                if event[0] in ("done", "error"):
                    return

        def ending(err, run_dir):
            kept = run_dir is not None and Path(run_dir).exists()
            where = f" Run folder: {run_dir} (run.json says how it ended)." if kept else ""
            if isinstance(err, RunCancelled):
                if not kept:   # withdrawn from the queue, or stopped before its first step: nothing to keep
                    return note_box(f"Cancelled before it started: {err}. No run folder was made.")
                return note_box(f"Cancelled: {err}.{where}")
            if isinstance(err, (UserError, ValueError)):
                return error_box(f"{err}{where}")
            return error_box(f"{type(err).__name__}: {err}.{where}")

        def on_run(*args):
            """One run of main.py's pipeline, as a generator: its place in the queue, progress, the audio as soon as
            it exists, then the results."""
            *page_values, visit_names, request, progress = args
            cleared = {verdict_box: None, verdict_text: "", reach: "", download: gr.update(visible=False),
                       spectrograms: None, scores_plot: None, run_state: {}, edit_group: gr.update(visible=False),
                       **{a: None for a in audios}, seed_pick: gr.update(choices=[], value=None)}
            try:   # everything the user set, checked by main.py before any model runs
                run_cfg, command = page_config(page_values)
            except (UserError, ValueError) as err:
                yield {status: error_box(err), command_box: "", **cleared}
                return
            yield {status: note_box("Starting ..."), command_box: command, **cleared}
            run_dir, started = None, time.perf_counter()
            for kind, *rest in device_job(request, lambda report: bench.run(run_cfg, command, report), "bench run"):
                if kind == "wait":
                    ahead = rest[0]
                    yield {status: note_box(f"Waiting for the device: place {ahead + 1} in the queue ({ahead} run(s) "
                                            "ahead of yours; Cancel withdraws it before it starts)")}
                elif kind == "step":
                    step, k, n, folder = rest
                    run_dir = folder or run_dir
                    if step == "started":
                        started = time.perf_counter()
                        yield {status: note_box(f"Running into {run_dir}")}
                        continue
                    label = f"audio: seed {k} of {n}" if step == "audio" else step
                    frac = STEP_FRACTIONS.get(step, 0.0) + (0.6 * (k - 1) / n if step == "audio" else 0.0)
                    progress(frac, desc=label)
                    if step == "evaluation":   # the wavs are written: let them be heard while scoring runs
                        view = results_view(run_dir, {"seeds": settings.eval_seeds(run_cfg)}, full=False)
                        yield {status: note_box(f"Audio ready after {time.perf_counter() - started:.1f} s; "
                                                f"evaluation running ... ({run_dir})"), **view}
                elif kind == "done":
                    run_dir, results = rest
                    mine = list(visit_names or []) + [Path(run_dir).name]
                    choices = listed_runs(mine)
                    yield {status: note_box(f"Finished in {time.perf_counter() - started:.1f} s: {run_dir} "
                                            "(run.json: finished)"),
                           run_state: {"run_dir": str(run_dir), "seeds": results["seeds"]}, visit: mine,
                           run_a: gr.update(choices=choices), run_b: gr.update(choices=choices),
                           **results_view(run_dir, results)}
                else:
                    yield {status: ending(rest[0], run_dir)}

        run_state = gr.State({})
        outputs = [status, command_box, seed_pick, *audios, spectrograms, scores_plot, verdict_box, verdict_text,
                   reach, download, run_state, edit_group, *edit_audios, edit_spectrograms, preservation, visit, run_a,
                   run_b]
        # many may wait in runs.DeviceQueue (showing their place); one at a time runs on the device
        run_button.click(named(on_run, input_names + ["visit"], request=gr.Request, progress=gr.Progress()),
                         page_inputs + [visit], outputs, api_name="run", concurrency_limit=8,
                         concurrency_id="device", preprocess=False)

        def on_cancel(request: gr.Request):
            n = bench.cancel(request.session_hash if request is not None else "api")
            if not n:
                return note_box("Nothing to cancel: no run of this page is waiting or running.")
            return note_box("Cancelling: a waiting run is withdrawn and never starts; a running one stops before its "
                            "next step (run.json will say 'cancelled').")

        cancel_button.click(on_cancel, None, status, api_name="cancel", queue=False)

        def on_seed(seed, state):
            if not state or not seed:
                return {}
            view = results_view(state["run_dir"], {"seeds": state["seeds"]}, seed=seed, full=False)
            view[spectrograms] = bench.spectrograms(state["run_dir"], int(seed), state["seeds"][0])
            return view

        seed_pick.input(on_seed, [seed_pick, run_state], [seed_pick, *audios, spectrograms, edit_group, *edit_audios,
                                                          edit_spectrograms, preservation], api_name="results_seed")

        # ---- comparing two runs -----------------------------------------------------------------------------

        def on_refresh(visit_names):
            choices = listed_runs(visit_names)
            return gr.update(choices=choices), gr.update(choices=choices)

        refresh.click(on_refresh, [visit], [run_a, run_b], api_name="list_runs")
        demo.load(on_refresh, [visit], [run_a, run_b], api_visibility="private")

        def on_compare(A, B, seed):
            """Two run folders side by side: the same seed's audios, both verdicts, the settings that differ."""
            if not A or not B:
                return {compare_note: note_box("Pick two runs.")}
            try:
                folders = [bench.run_folder(A, "run A"), bench.run_folder(B, "run B")]
            except UserError as err:
                return {compare_note: error_box(err)}
            results = [json.loads((f / "results.json").read_text()) for f in folders]
            records = [runs.read_run_json(f) for f in folders]
            common = [s for s in results[0]["seeds"] if s in results[1]["seeds"]]
            note = "" if common else ("The two runs share no seed: each plays its own first seed.")
            seed = int(seed) if seed and common and int(seed) in common else (common[0] if common else None)
            out = {compare_seed: gr.update(choices=[str(s) for s in common], value=str(seed) if seed else None),
                   compare_note: note_box(note) if note else "",
                   diff: settings_diff(records[0].get("config", {}), records[1].get("config", {})),
                   verdict_a: verdict.format_verdict(results[0]), verdict_b: verdict.format_verdict(results[1]),
                   table_a: verdict_table(verdict.verdict_rows(results[0])),
                   table_b: verdict_table(verdict.verdict_rows(results[1]))}
            for k, (folder, result) in enumerate(zip(folders, results)):
                s = seed if seed is not None else result["seeds"][0]
                for j, name in enumerate(AUDIO_NAMES):
                    out[compare_audios[3 * k + j]] = str(folder / wav_name(name, s, result["seeds"][0]))
            return out

        compare_outputs = [compare_seed, compare_note, diff, verdict_a, verdict_b, table_a, table_b, *compare_audios]
        for trigger in (run_a.input, run_b.input, compare_seed.input):
            trigger(on_compare, [run_a, run_b, compare_seed], compare_outputs, preprocess=False,
                    api_visibility="undocumented")
        compare_button.click(on_compare, [run_a, run_b, compare_seed], compare_outputs, api_name="compare",
                             preprocess=False)

        # ---- a small sweep ----------------------------------------------------------------------------------

        def sweep_grid(name1, values1, name2, values2):
            grid = {}
            for name, values in ((name1, values1), (name2, values2)):
                if name in (None, "", "(none)"):
                    continue
                values = str(values or "").replace(" ", "")
                if not values:
                    raise UserError(f"give the values of {name}, comma-separated (e.g. 0.1,0.3)")
                if name in grid:
                    raise UserError(f"{name} is chosen twice: give all its values once")
                grid[name] = values
            if not grid:
                raise UserError("choose a constant to sweep and its values")
            return grid

        def on_sweep(*args):
            *page_values, name1, values1, name2, values2, request, progress = args
            cleared = {sweep_table: None, sweep_heatmap: None, sweep_pick: gr.update(choices=[], value=None),
                       sweep_state: {}, **{a: None for a in sweep_audios}}
            try:
                run_cfg, command = page_config(page_values, sweep_grid(name1, values1, name2, values2))
            except (UserError, ValueError) as err:
                yield {sweep_status: error_box(err), sweep_command: "", **cleared}
                return
            yield {sweep_status: note_box("Starting the sweep ..."), sweep_command: command, **cleared}
            run_dir = None
            for kind, *rest in device_job(request, lambda report: bench.run(run_cfg, command, report, "sweep"),
                                          "bench sweep"):
                if kind == "wait":
                    yield {sweep_status: note_box(f"Waiting for the device: place {rest[0] + 1} in the queue")}
                elif kind == "step":
                    step, k, n, folder = rest
                    run_dir = folder or run_dir
                    if step == "audio":
                        progress(0.1 + 0.8 * (k - 1) / n, desc=f"audio: seed {k} of {n}")
                    yield {sweep_status: note_box(f"Sweeping into {run_dir}")}
                elif kind == "done":
                    run_dir, rows = rest
                    # the ranked table's intervals come from the seeds that chose the winner; say what fresh seeds
                    # made of it (sweep.confirm_choice), as the command line prints it
                    confirmation = runs.read_run_json(run_dir).get("confirmation", {}).get("text", "")
                    yield {sweep_status: note_box(f"Finished: {run_dir}\n{confirmation}".rstrip(), lines=True),
                           **sweep_view(run_dir, rows, run_cfg)}
                else:
                    yield {sweep_status: ending(rest[0], run_dir)}

        def sweep_view(run_dir, rows, run_cfg):
            names = list(run_cfg["SWEEP"])
            key = sweeps.sweep_rank_key(rows)
            cols = ["rank", *names, f"{key} mean", f"{key} ci_low", f"{key} ci_high", f"{key} status", "headline",
                    "reach_to_baseline_edited", "no_op"]
            import pandas as pd
            table = pd.DataFrame([[fmt(r[c]) if isinstance(r.get(c), float) and c not in names else r.get(c, "")
                                   for c in cols] for r in rows], columns=cols)
            labels = [sweeps.setting_name({n: r[n] for n in names}) for r in rows]
            state = {"run_dir": str(run_dir), "audio": {label: r["audio"] for label, r in zip(labels, rows)},
                     "baselines": not any(n in settings.AUDIO_KEYS for n in names)}
            return {sweep_table: table, sweep_heatmap: str(Path(run_dir) / "sweep_heatmap.png"),
                    sweep_pick: gr.update(choices=labels, value=labels[0]), sweep_state: state,
                    **sweep_audio(labels[0], state)}

        def sweep_audio(label, state):
            if not state or label not in state.get("audio", {}):
                return {}
            folder = Path(state["run_dir"])
            base = [str(folder / wav_name(n, 0, 0)) if state["baselines"] else None for n in AUDIO_NAMES[:2]]
            return {sweep_audios[0]: base[0], sweep_audios[1]: base[1],
                    sweep_audios[2]: str(folder / state["audio"][label])}

        sweep_inputs = page_inputs + [sweep_name1, sweep_values1, sweep_name2, sweep_values2]
        sweep_outputs = [sweep_status, sweep_command, sweep_table, sweep_heatmap, sweep_pick, sweep_state,
                         *sweep_audios]
        sweep_button.click(named(on_sweep, input_names + ["sweep_name1", "sweep_values1", "sweep_name2",
                                                          "sweep_values2"], request=gr.Request,
                                 progress=gr.Progress()),
                           sweep_inputs, sweep_outputs, api_name="sweep", concurrency_limit=8,
                           concurrency_id="device", preprocess=False)
        sweep_pick.input(lambda label, state: sweep_audio(label, state), [sweep_pick, sweep_state], sweep_audios,
                         api_name="sweep_audio")
    return demo


def named(fn, names, request=None, progress=None):
    """fn(*values[, request, progress]) with one named parameter per input, as gradio reads a signature: the API
    endpoint's parameters get main.py's names, and gradio passes the request and a progress tracker last."""
    import inspect
    P = inspect.Parameter
    params = [P(n, P.POSITIONAL_OR_KEYWORD) for n in names]
    if request is not None:
        params.append(P("request", P.POSITIONAL_OR_KEYWORD, annotation=request))
        fn.__annotations__ = {"request": request}
    if progress is not None:
        params.append(P("progress", P.POSITIONAL_OR_KEYWORD, default=progress))
    fn.__signature__ = inspect.Signature(params)
    return fn


def uploaded_path(file):
    """The server-side path of an upload as gradio hands it in, with or without its preprocessing (a FileData
    dict, after gradio's own check that the file is one it received)."""
    if isinstance(file, dict):
        file = file.get("path")
    if not isinstance(file, str) or not file:
        raise UserError("no file was uploaded")
    return file


def upload_message(err, path):
    """An upload's refusal naming the file as the user knows it, not the server's temporary copy."""
    return str(err) if path is None else str(err).replace(path, Path(path).name)


def run_path(path, default_name, bench, i):
    """The path a run gets for an image: the constant's own value for main.py's example image."""
    return default_name if path == bench.image_path(bench.example[i]) else path


# -----------------------------------------------------------------------------


def flag_number(key, value, kind, below, what, valid):
    """A server flag's number (kind: int or float), above 0 and below `below`; UserError saying what it must be."""
    try:
        number = kind(value)
    except ValueError:
        raise UserError(f"{key}={value!r} is not {what}") from None
    if not 0 < number < below:
        raise UserError(f"{key}={value} is out of range: it must be {valid}")
    return number


def parse_app_args(argv):
    """(host, port, share, max upload MB, main.py's arguments) from app.py's command line."""
    host, port, share, max_mb, rest = HOST, PORT, False, MAX_UPLOAD_MB, []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        key, eq, value = arg.partition("=")
        if key in ("--port", "--host", "--max-upload-mb"):
            if not eq:
                if i + 1 >= len(args):
                    example = {"--port": "7861", "--host": "0.0.0.0", "--max-upload-mb": "20"}[key]
                    raise UserError(f"{key} needs a value, e.g. {key} {example}")
                i, value = i + 1, args[i + 1]
            if key == "--host":
                host = value
            elif key == "--port":
                port = flag_number(key, value, int, 65536, "a port number (e.g. --port 7861)", "in 1-65535")
            else:
                max_mb = flag_number(key, value, float, 1e6, "a number of megabytes (e.g. 20)",
                                     "a size in MB above 0")
        elif arg == "--share":
            share = True
        elif arg in ("-h", "--help"):
            raise SystemExit(print(__doc__.strip()) or 0)
        else:
            rest.append(arg)
        i += 1
    return host, port, share, max_mb, rest


def serve_until_stopped(demo):
    """Block the main thread while the page serves. Ctrl-C, SIGTERM or SIGHUP end the runs in progress as they
    end the command line's (run.json: 'interrupted'), then close the server. Returns the exit code (130, 128+N)."""
    with runs.stop_signals_as_interrupts():
        try:
            while True:
                time.sleep(0.2)
        except KeyboardInterrupt as err:
            stopped = isinstance(err, runs.Stopped) and err.signum is not None
            why = str(err) if stopped else "KeyboardInterrupt (Ctrl-C)"
            print(f"\nStopping the bench: {why}", flush=True)
            for folder in runs.interrupt_open_runs(why):
                print(f"  interrupted the run in {folder} (run.json: 'interrupted')", flush=True)
            with contextlib.suppress(Exception):
                demo.close()
            return 128 + err.signum if stopped else 130


def main_app(argv=None):
    for notice in runs.LIBRARY_NOTICES:
        warnings.filterwarnings("ignore", message=notice)
    try:
        host, port, share, max_mb, main_argv = parse_app_args(sys.argv[1:] if argv is None else argv)
        bench = Bench(main_argv, max_mb)
        for handle in bench.example:   # encode the example pair now: the first clicks only run the decoder
            bench.segmenter(bench.image_path(handle))
    except UserError as err:
        print(f"\nError: {err}", file=sys.stderr)
        return 2
    demo = build_ui(bench)
    print(f"Lab bench on http://{host}:{port}" + (" (and a public share link)" if share else "")
          + f"; uploads up to {max_mb:g} MB", flush=True)
    demo.queue(default_concurrency_limit=4)
    demo.launch(server_name=host, server_port=port, share=share, css=CSS, footer_links=["api"],
                allowed_paths=[str(Path(bench.cfg["OUTPUT_DIR"]).resolve()), str(bench.tmp)], quiet=False,
                max_file_size=int(max_mb * 1024 * 1024), prevent_thread_lock=True)
    return serve_until_stopped(demo)


if __name__ == "__main__":
    sys.exit(main_app())
