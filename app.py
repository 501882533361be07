"""A lab bench in the browser: load an edit pair, click the objects, run, hear the three audios, read the verdict.

    python app.py                          # real models (a CUDA GPU), then open http://127.0.0.1:7860
    python app.py --smoke                  # tiny random-weight models on the CPU: checks the plumbing, audio is noise
    python app.py --port 7861 --host 0.0.0.0   # another port; every interface of this machine
    python app.py --share                  # also a public gradio.live link (the only time the app goes online)
    python app.py --SVD_K=8 --OUTPUT_DIR=runs  # starting values of main.py's constants, as main.py takes them

The page is layout and event wiring only. Masks, tokens, steps 3-7 and the evaluation are main.py's own
functions; the settings and their checks are settings.py's and inputs.py's; a run is made by runs.run_edit_pair,
the same function `python main.py` makes its runs with, so a run started here is an ordinary run folder under
outputs/, and the page shows the `python main.py ...` command that repeats it (same wavs, byte for byte).
"""
import os

# gradio reports usage and checks for new versions over the network unless told not to: the bench works offline
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("GRADIO_TELEMETRY_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import ast  # noqa: E402
import contextlib  # noqa: E402

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
from audio_io import AUDIO_NAMES, wav_name  # noqa: E402
from errors import RunCancelled, UserError  # noqa: E402
from model.checkpoints import _sha256 as file_sha256  # noqa: E402   (the registry's file hash)
from loader import check_audio_classes, load_models  # noqa: E402
from util import safe_name  # noqa: E402

# -----------------------------------------------------------------------------
# the bench's own settings (main.py's constants are set on the page, or as --NAME=value on this command line)
HOST = "127.0.0.1"                   # --host: 0.0.0.0 serves every interface of the machine
PORT = 7860                          # --port
PREVIEW_SIDE = 768                   # long side of the images shown for clicking (points stay in file pixels)
ENCODED_IMAGES = 6                   # SAM2 image encodings kept (each uploaded image is encoded once)
UPLOAD_DIR = "uploads"               # uploads are kept under OUTPUT_DIR/uploads/ (named by content), never lost
# main.py's constants with a slider, in this order; each slider's ends and step are its settings.RULES entry, and
# every value is checked by settings.check_settings, with the command line's messages
SLIDERS = ["SVD_K", "SVD_ALPHA", "SVD_BETA", "MIX_DIRECT", "MIX_BETA", "MIX_ALPHA", "MIX_GAMMA", "MASK_THRESHOLD",
           "EVAL_SEEDS", "EVAL_TOLERANCE", "EVAL_MIN_EFFECT", "DDIM_STEPS", "DURATION", "GUIDANCE", "CYCLE_ITS"]
TEXT_SETTINGS = ["AUDIO_CLASSES", "EVAL_LABELS"]   # Python literals, read by settings.coerce like --NAME=value
# progress bar position of each step main_pipeline reports
STEP_FRACTIONS = {"masks": 0.02, "tokens": 0.1, "SVD": 0.15, "audio": 0.2, "evaluation": 0.85}
# -----------------------------------------------------------------------------

ON_OBJECT, OFF_OBJECT = "on the object (1)", "not on the object (0)"
VERDICT_COLUMNS = ["question", "scorer", "check", "status", "mean", "std", "95% CI", "seeds that hold", "what"]


class Bench:
    """The engine side of the page: the models loaded once, main.py's checks, run folders and pipeline."""

    def __init__(self, main_argv=()):
        self.main_argv = list(main_argv)   # main.py's own arguments the bench was started with (--smoke, --NAME=v)
        self.cfg = settings.default_config(main)
        with contextlib.redirect_stdout(io.StringIO()):
            mode, _ = settings.parse_args(self.main_argv, self.cfg)
        if mode != "run":
            raise UserError(f"app.py takes main.py's --NAME=value settings and --smoke, not --{mode}")
        images, prompts, _ = inputs.prepare_inputs(self.cfg)   # the command line's checks of settings, images, prompts
        self.example = [str(p) for p in images]
        self.models, notes = load_models(self.cfg, [(self.cfg, inputs.source_names(self.cfg, prompts))])
        for note in notes:
            print(f"  AudioSet classes: {note}")
        self.segmenters = OrderedDict()    # file sha256 -> PointSegmenter holding that image's SAM2 encoding
        self.sam2_lock = threading.Lock()
        self.run_lock = threading.Lock()   # one run at a time on the device
        self.cancel_flags = {}             # browser session -> threading.Event
        self.tmp = Path(tempfile.mkdtemp(prefix="bench_"))   # zips and extra spectrograms: never in a run folder

    # ---- images ------------------------------------------------------------------------------------------

    def keep_image(self, path):
        """An image checked as main.py checks it, then kept: (path for the run, warnings). UserError if unusable.

        The example pair keeps its own names; an upload is copied to OUTPUT_DIR/uploads/<sha256>_<name>, so the
        reproduce command and later runs find the same bytes after the browser's copy is gone.
        """
        notes = []
        inputs.check_image_and_points(path, inputs.ObjectPrompt("image"), notes)   # opens it safely; no points yet
        digest = file_sha256(path)
        for kept in self.example:
            if file_sha256(kept) == digest:
                return kept, notes
        folder = Path(self.cfg["OUTPUT_DIR"]) / UPLOAD_DIR
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{digest[:16]}_{safe_name(Path(path).stem)}{Path(path).suffix.lower()}"
        if not target.exists():
            shutil.copyfile(path, target)
        return str(target), notes

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

    def point_mask(self, path, points, labels):
        """SAM2's mask for point prompts on an encoded image (the prompt decoder only): float32 [H, W]."""
        seg = self.segmenter(path)
        masks, _ = seg.predict(points, labels, multimask_output=False)
        return masks[0]

    def find_by_name(self, path, name, other_names, union=False):
        """main.py's name search on this image (SAM2 proposals ranked by CLIP): (mask, info, records)."""
        import mask
        seg = self.segmenter(path)
        options = mask.TINY_PROPOSAL_OPTIONS if self.models.smoke else {}
        records = mask.propose_masks(path, seg, **options)
        model, preprocess = self.models.clip
        m, info = mask.segment_by_text(path, name, other_names=other_names, predictor=seg, clip_model=model,
                                       preprocess=preprocess, min_score=self.cfg["TEXT_MIN_SCORE"], union=union,
                                       prompt_template=self.cfg["TEXT_PROMPT"], proposals=records)
        return m, info, [r for r in records if r["area"] > 0]

    # ---- settings and the command line ------------------------------------------------------------------

    def command(self, values):
        return reproduce_command(self.cfg, values)

    def config(self, argv):
        return run_config(argv)

    # ---- runs ----------------------------------------------------------------------------------------------

    def run(self, cfg, command, progress=None):
        """One run into a new run folder, as `python main.py` makes it (runs.run_edit_pair): (run_dir, results).

        Inputs are checked (inputs.prepare_inputs) before anything runs; progress(step, k, n) may raise
        RunCancelled: run.json then says 'cancelled'.
        """
        images, prompts, notes = inputs.prepare_inputs(cfg)
        class_notes = check_audio_classes(cfg, self.models, inputs.source_names(cfg, prompts))
        with self.run_lock:
            return runs.run_edit_pair(cfg, self.models, (images, prompts, notes + class_notes), main.main_pipeline,
                                      progress=progress, record={"command": command,
                                                                 "app": "python app.py " + " ".join(self.main_argv)})

    def cancel_flag(self, session):
        return self.cancel_flags.setdefault(session, threading.Event())

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


def reproduce_command(base, values):
    """(argv, 'python main.py ...') of the settings `base` (a main.py config) with `values` (NAME -> value) on top.

    Text values of non-text constants (SAM2_PROMPTS, AUDIO_CLASSES, ...) go through settings.coerce as --NAME=text
    does: UserError with its message when they do not fit. Only constants that differ from main.py's defaults
    (under --smoke: its smoke defaults) are named, so the command is as short as the run allows.
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
    """The config main.py builds from argv (settings.parse_args, the CLI's own reading), checked by settings.check_settings."""
    cfg = settings.default_config(main)
    with contextlib.redirect_stdout(io.StringIO()):
        settings.parse_args(argv, cfg)
    settings.check_settings(cfg)
    return cfg


def plain_number(value, default):
    """A control's number as the constant's type: sliders send floats (5.0 for SVD_K, 0.30000000000000004)."""
    if isinstance(default, bool) or not isinstance(value, (int, float)) or isinstance(value, bool):
        return value
    if isinstance(default, int) and float(value).is_integer():
        return int(value)
    if isinstance(default, float):
        return float(f"{float(value):.10g}")
    return value


# -----------------------------------------------------------------------------
# pictures


def preview(path, mask=None, points=(), labels=()):
    """The image as shown for clicking: at most PREVIEW_SIDE px, the mask tinted, the points drawn.

    Returns (uint8 [h, w, 3], scale) with scale = preview pixels per file pixel.
    """
    from PIL import Image, ImageDraw
    from util import open_image
    rgb, original = open_image(path)
    arr = np.asarray(rgb).astype(np.float32)
    if mask is not None:
        m = np.asarray(mask) > 0.5
        arr[m] = 0.45 * arr[m] + 0.55 * np.array([30, 144, 255], np.float32)   # blue tint on the object
    img = Image.fromarray(arr.astype(np.uint8))
    scale = min(1.0, PREVIEW_SIDE / max(original))
    img = img.resize((max(1, round(original[0] * scale)), max(1, round(original[1] * scale))))
    draw = ImageDraw.Draw(img)
    r = max(4, round(max(img.size) / 90))
    for (x, y), label in zip(points, labels):
        cx, cy = x * scale, y * scale
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(40, 200, 60) if label == 1 else (230, 40, 40),
                     outline="white", width=2)
    return np.asarray(img), scale


def describe_mask(m):
    share = float(np.mean(np.asarray(m) > 0.5))
    return f"mask: {share:.1%} of the image"


# -----------------------------------------------------------------------------
# the page


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
        states.append({"name": p.name, "points": points, "labels": list(p.labels or [])})
    return states


def error_box(err):
    return f"<div class='bench-error'>⚠ {escape(str(err))}</div>"


def note_box(text):
    return f"<div class='bench-note'>{escape(text)}</div>"


def escape(text):
    import html
    return html.escape(text).replace("\n", "<br>")


CSS = """
.bench-error {color: #a40000; background: #fff0f0; border: 1px solid #e0a0a0; padding: 6px 10px; border-radius: 6px;
              white-space: normal; font-size: 0.9em}
.bench-note {color: #333; background: #f3f6fa; padding: 6px 10px; border-radius: 6px; font-size: 0.9em}
#reproduce textarea {font-family: ui-monospace, monospace; font-size: 0.85em}
#verdict_text textarea {font-family: ui-monospace, monospace; font-size: 0.8em}
"""


def build_ui(bench):
    import gradio as gr
    import verdict
    cfg = bench.cfg
    starts = object_states(cfg)

    def shown(i, state, path):
        """(preview image, message) of one object after a change of its points."""
        if not state["points"]:
            img, _ = preview(path)
            return img, note_box(f"'{state['name']}' has no points: it is found by name in the run "
                                 "(click the image to give SAM2 points instead)")
        try:
            m = bench.point_mask(path, state["points"], state["labels"])
        except (ValueError, RuntimeError) as err:
            img, _ = preview(path, None, state["points"], state["labels"])
            return img, error_box(err)
        img, _ = preview(path, m, state["points"], state["labels"])
        message = f"{describe_mask(m)}; {len(state['points'])} point(s)"
        if 1 in state["labels"]:
            try:   # main.py's own check: CLIP must see a point on the object
                inputs.check_image_and_points(path, inputs.ObjectPrompt(state["name"], state["points"],
                                                                        state["labels"]), [])
            except UserError as err:
                return img, error_box(err)
        return img, note_box(message)

    with gr.Blocks(title="Edit-aware image-to-audio: lab bench") as demo:
        gr.Markdown(
            "# Edit-aware image-to-audio: lab bench\n"
            "Give an original image **I_0** and an edited image **I_1**, mark the object the edit **removed** (on "
            "I_0) and the one it **added** (on I_1), run, and hear whether the audio followed the edit: "
            "`baseline_original` (I_0 as SSV2A hears it), `baseline_edited` (I_1) and `manipulated` (I_1 with "
            "the SVD-edited embedding), scored over several seeds." +
            ("\n\n**Smoke models**: tiny random weights on the CPU. Masks are arbitrary and the audio is noise; "
             "this checks the plumbing, not the method." if cfg["SMOKE"] else ""))
        obj_states = [gr.State(dict(s)) for s in starts]
        paths, images, names, messages, proposals, proposal_states, finds = [], [], [], [], [], [], []
        with gr.Row():
            for i, (title, role) in enumerate([("I_0: original", "removed"), ("I_1: edited", "added")]):
                with gr.Column():
                    gr.Markdown(f"### {title}: click the object the edit **{role}**")
                    path = gr.Textbox(bench.example[i], label=f"{title.split(':')[0]} file (what the run reads)",
                                      interactive=False, elem_id=f"path{i}")
                    start_img, start_note = shown(i, starts[i], bench.example[i])
                    image = gr.Image(start_img, label=title, interactive=False, type="numpy",
                                     elem_id=f"image{i}", format="jpeg", buttons=[])
                    upload = gr.UploadButton(f"Upload {title.split(':')[0]}", file_types=["image"], size="sm",
                                             elem_id=f"upload{i}")
                    with gr.Row():
                        name = gr.Textbox(starts[i]["name"], label=f"name of the {role} object", elem_id=f"name{i}",
                                          scale=2)
                        kind = gr.Radio([ON_OBJECT, OFF_OBJECT], value=ON_OBJECT, label="a click marks a point",
                                        elem_id=f"kind{i}", scale=3)
                    with gr.Row():
                        undo = gr.Button("Undo", size="sm", elem_id=f"undo{i}")
                        clear = gr.Button("Clear", size="sm", elem_id=f"clear{i}")
                        find = gr.Button("Find by name", size="sm", elem_id=f"find{i}")
                    proposal = gr.Dropdown([], label="proposals found by name (CLIP's probability): pick one",
                                           interactive=True, elem_id=f"proposals{i}", visible=False)
                    message = gr.HTML(start_note, elem_id=f"message{i}")
                paths.append(path)
                images.append(image)
                names.append(name)
                messages.append(message)
                proposals.append(proposal)
                proposal_states.append(gr.State({}))
                finds.append(find)

                def on_upload(file, state, i=i):
                    try:
                        kept, notes = bench.keep_image(file)
                        bench.segmenter(kept)   # encode now: every click after this runs the decoder only
                    except (UserError, ValueError, OSError, RuntimeError) as err:
                        # the message names the file as the user knows it, not the server's temporary copy
                        return gr.skip(), gr.skip(), state, error_box(str(err).replace(str(file), Path(file).name))
                    state = {**state, "points": [], "labels": []}
                    img, _ = preview(kept)
                    note = note_box("; ".join(notes + ["image encoded by SAM2: click the object"]))
                    return kept, img, state, note

                upload.upload(on_upload, [upload, obj_states[i]], [path, image, obj_states[i], message],
                              api_name=f"upload_{'original' if i == 0 else 'edited'}")

                def on_click(state, path_value, kind_value, evt: gr.SelectData, i=i):
                    _, scale = preview(path_value)
                    x, y = (round(v / scale) for v in evt.index[:2])
                    state = {**state, "points": state["points"] + [[x, y]],
                             "labels": state["labels"] + [1 if kind_value == ON_OBJECT else 0]}
                    img, note = shown(i, state, path_value)
                    return state, img, note

                image.select(on_click, [obj_states[i], path, kind], [obj_states[i], image, message])

                def on_undo(state, path_value, i=i):
                    state = {**state, "points": state["points"][:-1], "labels": state["labels"][:-1]}
                    return (state, *shown(i, state, path_value))

                def on_clear(state, path_value, i=i):
                    state = {**state, "points": [], "labels": []}
                    return (state, *shown(i, state, path_value))

                undo.click(on_undo, [obj_states[i], path], [obj_states[i], image, message])
                clear.click(on_clear, [obj_states[i], path], [obj_states[i], image, message])

                def on_name(state, text):
                    return {**state, "name": text.strip()}

                name.change(on_name, [obj_states[i], name], [obj_states[i]], queue=False)


        # the other object's name is a distractor of the name search: wired once both names exist
        for i in range(2):
            other = names[1 - i]

            def on_find(state, path_value, name_value, other_name, i=i):
                name_value = name_value.strip()
                try:
                    if not name_value:
                        raise UserError("type the object's name first")
                    m, info, records = bench.find_by_name(path_value, name_value, [other_name.strip()])
                except (UserError, ValueError) as err:   # mask.NoMatchError is a ValueError
                    return state, gr.skip(), error_box(err), gr.update(visible=False), []
                state = {**state, "name": name_value, "points": [], "labels": []}
                img, _ = preview(path_value, m)
                choices = [f"#{c['index']}  P={c['p_object']:.2f}" + ("  (best: the run finds this one)" if n == 0
                                                                      else "")
                           for n, c in enumerate(info["candidates"])]
                # a proposal's own SAM2 point (the automatic generator's grid point), in file pixels
                to_file = 1.0 / bench.segmenter(path_value).scale
                points = {f"#{c['index']}": [round(float(records[c['index']]["point_coords"][0][0]) * to_file),
                                             round(float(records[c['index']]["point_coords"][0][1]) * to_file)]
                          for c in info["candidates"]}
                note = note_box(f"{describe_mask(m)}: the best of {len(records)} SAM2 proposals, P({info['text']!r}) "
                                f"= {info['score']:.2f}. The run finds it the same way; picking another proposal "
                                "gives SAM2 its point instead.")
                return state, img, note, gr.update(choices=choices, value=choices[0], visible=True), points

            finds[i].click(on_find, [obj_states[i], paths[i], names[i], other],
                              [obj_states[i], images[i], messages[i], proposals[i], proposal_states[i]],
                              api_name=f"find_{'removed' if i == 0 else 'added'}")

            def on_pick(state, path_value, choice, points, i=i):
                if not choice or "(best" in choice:
                    return gr.skip(), gr.skip(), gr.skip()
                point = points[choice.split()[0]]
                state = {**state, "points": [point], "labels": [1]}
                return (state, *shown(i, state, path_value))

            proposals[i].input(on_pick, [obj_states[i], paths[i], proposals[i], proposal_states[i]],
                               [obj_states[i], images[i], messages[i]])

        with gr.Row():
            kept = gr.Textbox(", ".join(cfg["KEPT_SOURCES"]), label="sound sources kept in both images (comma-separated)",
                              elem_id="kept", scale=2)
            prompts_box = gr.Textbox(prompts_text(starts), label="SAM2_PROMPTS (built from your clicks; edit by hand "
                                     "if you like)", elem_id="prompts", scale=3)
        for i in range(2):
            obj_states[i].change(lambda a, b: prompts_text([a, b]), obj_states, prompts_box, queue=False)

        with gr.Accordion("Settings: main.py's constants (checked by main.py's own rules when you run)", open=False):
            controls = {}
            with gr.Row():
                for name in SLIDERS:
                    value, rule = cfg[name], settings.RULES[name]
                    controls[name] = gr.Slider(min(rule.page[0], value), max(rule.page[1], value), value=value,
                                               step=rule.step, label=name, info=rule.text, elem_id=name.lower(),
                                               min_width=240)
            with gr.Row():
                from model.aldm import SAMPLERS
                controls["SAMPLER"] = gr.Dropdown(list(SAMPLERS), value=cfg["SAMPLER"], label="SAMPLER",
                                                  info="ddim: the original's; dpm++: faster (its own step count "
                                                       "unless DDIM_STEPS is changed)", elem_id="sampler")
                controls["SEED"] = gr.Number(cfg["SEED"], label="SEED", precision=0, info=settings.RULES["SEED"].text,
                                             elem_id="seed")
                controls["PIN_GLOBAL"] = gr.Checkbox(cfg["PIN_GLOBAL"], label="PIN_GLOBAL (keep slot 0 = E_final "
                                                     "in every cycle-mix round)", elem_id="pin_global")
            for name in TEXT_SETTINGS:
                controls[name] = gr.Textbox(repr(cfg[name]), label=name, elem_id=name.lower(), lines=2)
            check = gr.Button("Check settings", size="sm", elem_id="check")
        names_of_controls = list(controls)

        with gr.Row():
            run_button = gr.Button("Run", variant="primary", elem_id="run")
            cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel")
        status = gr.HTML("", elem_id="status")
        command_box = gr.Textbox("", label="the same run from the command line", elem_id="reproduce",
                                 interactive=False, buttons=["copy"])

        with gr.Column(visible=True):
            gr.Markdown("## Results")
            seed_pick = gr.Radio([], label="seed", elem_id="seed_pick", interactive=True)
            with gr.Row():
                audios = [gr.Audio(label=n, type="filepath", interactive=False, elem_id=n) for n in AUDIO_NAMES]
            spectrograms = gr.Image(show_label=False, label="spectrograms of this seed's three audios", interactive=False,
                                    elem_id="spectrograms", buttons=["fullscreen"])
            scores_plot = gr.Image(show_label=False, label="scores per source and audio; the verdict's paired differences",
                                   interactive=False, elem_id="scores", buttons=["fullscreen"])
            verdict_table = gr.Dataframe(headers=VERDICT_COLUMNS,
                                         label="verdict: paired differences over seeds (mean, std, 95% interval, "
                                               "fraction of seeds that hold)",
                                         elem_id="verdict", interactive=False, wrap=True)
            verdict_text = gr.Textbox(label="verdict as main.py prints it", lines=12, interactive=False,
                                      elem_id="verdict_text")
            reach = gr.HTML("", elem_id="reach")
            download = gr.DownloadButton("Download the run folder (zip)", visible=False, elem_id="download")
        run_state = gr.State({})

        def values_of(prompts_value, kept_value, path0, path1, control_values):
            values = dict(zip(names_of_controls, control_values))
            values.update(SAM2_PROMPTS=prompts_value, ORIGINAL=run_path(path0, cfg["ORIGINAL"], bench.example[0]),
                          EDITED=run_path(path1, cfg["EDITED"], bench.example[1]),
                          KEPT_SOURCES=[k.strip() for k in kept_value.split(",") if k.strip()])
            return values

        def on_check(prompts_value, kept_value, path0, path1, *control_values):
            """main.py's checks of everything set on the page: its message, or the reproduce command."""
            try:
                argv, command = bench.command(values_of(prompts_value, kept_value, path0, path1, control_values))
                run_cfg = bench.config(argv)
                inputs.prepare_inputs(run_cfg)
            except (UserError, ValueError) as err:
                return error_box(err), ""
            return note_box("Settings, images and objects pass main.py's checks."), command

        page_inputs = [prompts_box, kept, paths[0], paths[1]] + [controls[n] for n in names_of_controls]
        for control in [prompts_box, kept] + list(controls.values()):   # an old refusal is stale once edited
            control.input(lambda: "", None, status, queue=False, show_progress="hidden")
        input_names = ["SAM2_PROMPTS", "KEPT_SOURCES", "ORIGINAL", "EDITED"] + names_of_controls
        check.click(named(on_check, input_names), page_inputs, [status, command_box], api_name="check_settings")

        def results_view(run_dir, results, seed=None, full=True):
            seeds = results["seeds"] if results else [int(p) for p in [seed]]
            seed = seeds[0] if seed is None else int(seed)
            out = {seed_pick: gr.update(choices=[str(s) for s in seeds], value=str(seed))}
            for audio, name in zip(audios, AUDIO_NAMES):
                out[audio] = str(Path(run_dir) / wav_name(name, seed, seeds[0]))
            if full:
                out[spectrograms] = bench.spectrograms(run_dir, seed, seeds[0])
                out[scores_plot] = str(Path(run_dir) / "scores.png")
                rows = verdict.verdict_rows(results)
                out[verdict_table] = [[r["question"], r["scorer"], r["check"], r["status"], fmt(r["mean"]),
                                       fmt(r["std"]), interval(r), f"{r['fraction_holds']:.0%}", r["description"]]
                                      for r in rows]
                out[verdict_text] = verdict.format_verdict(results)
                r = results.get("e_final_reach") or {}
                out[reach] = note_box(
                    "E_final's reach (cosine distance of the manipulated remix CLAP, mean over seeds): to "
                    f"baseline_edited {r.get('mean_to_baseline_edited', float('nan')):.4f}, to baseline_original "
                    f"{r.get('mean_to_baseline_original', float('nan')):.4f}")
                out[download] = gr.update(value=bench.zip_run(run_dir), visible=True)
            return out

        def on_run(*args):
            """One run of main.py's pipeline, as a generator: progress, the audio as soon as it exists, results."""
            prompts_value, kept_value, path0, path1, *control_values, request, progress = args
            session = request.session_hash if request is not None else "api"
            cancel = bench.cancel_flag(session)
            cancel.clear()
            cleared = {verdict_table: None, verdict_text: "", reach: "", download: gr.update(visible=False),
                       spectrograms: None, scores_plot: None, run_state: {},
                       **{a: None for a in audios}, seed_pick: gr.update(choices=[], value=None)}
            try:   # everything the user set, checked by main.py before any model runs
                argv, command = bench.command(values_of(prompts_value, kept_value, path0, path1, control_values))
                run_cfg = bench.config(argv)
                inputs.prepare_inputs(run_cfg)
            except (UserError, ValueError) as err:
                yield {status: error_box(err), command_box: "", **cleared}
                return
            yield {status: note_box("Starting ..."), command_box: command, **cleared}
            events = queue.Queue()

            def report(step, k=None, n=None, run_dir=None):
                events.put(("step", step, k, n, run_dir))
                if cancel.is_set():
                    raise RunCancelled(f"cancelled from the browser before step '{step}'")

            def work():
                try:
                    events.put(("done", *bench.run(run_cfg, command, report)))
                except BaseException as err:   # noqa: BLE001 - every ending is shown on the page
                    events.put(("error", err, None))

            threading.Thread(target=work, daemon=True).start()
            run_dir, started = None, time.perf_counter()
            while True:
                kind, *rest = events.get()
                if kind == "step":
                    step, k, n, folder = rest
                    run_dir = folder or run_dir
                    if step == "started":
                        yield {status: note_box(f"Running into {run_dir}")}
                        continue
                    label = f"audio: seed {k} of {n}" if step == "audio" else step
                    frac = STEP_FRACTIONS.get(step, 0.0) + (0.6 * (k - 1) / n if step == "audio" else 0.0)
                    progress(frac, desc=label)
                    if step == "evaluation":   # the wavs are written: let them be heard while scoring runs
                        seeds = settings.eval_seeds(run_cfg)
                        view = results_view(run_dir, {"seeds": seeds}, full=False)
                        yield {status: note_box(f"Audio ready after {time.perf_counter() - started:.1f} s; "
                                                f"evaluation running ... ({run_dir})"), **view}
                elif kind == "done":
                    run_dir, results = rest
                    yield {status: note_box(f"Finished in {time.perf_counter() - started:.1f} s: {run_dir} "
                                            "(run.json: finished)"),
                           run_state: {"run_dir": str(run_dir), "seeds": results["seeds"]},
                           **results_view(run_dir, results)}
                    return
                else:
                    err = rest[0]
                    where = f" Run folder: {run_dir} (run.json says how it ended)." if run_dir else ""
                    if isinstance(err, RunCancelled):
                        yield {status: note_box(f"Cancelled: {err}.{where}")}
                    elif isinstance(err, (UserError, ValueError)):
                        yield {status: error_box(f"{err}{where}")}
                    else:
                        yield {status: error_box(f"{type(err).__name__}: {err}.{where}")}
                    return

        outputs = [status, command_box, seed_pick, *audios, spectrograms, scores_plot, verdict_table, verdict_text,
                   reach, download, run_state]
        run_button.click(named(on_run, input_names, request=gr.Request, progress=gr.Progress()), page_inputs, outputs,
                         api_name="run", concurrency_limit=1, concurrency_id="run")

        def on_cancel(request: gr.Request):
            bench.cancel_flag(request.session_hash if request is not None else "api").set()
            return note_box("Cancelling: the run stops before its next step (run.json will say 'cancelled').")

        cancel_button.click(on_cancel, None, status, api_name="cancel", queue=False)

        def on_seed(seed, state):
            if not state or not seed:
                return {}
            results = {"seeds": state["seeds"]}
            view = results_view(state["run_dir"], results, seed=seed, full=False)
            view[spectrograms] = bench.spectrograms(state["run_dir"], int(seed), state["seeds"][0])
            return view

        seed_pick.input(on_seed, [seed_pick, run_state], [seed_pick, *audios, spectrograms])
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


def run_path(path, default_name, example_path):
    """The path a run gets for an image: the constant's own value for main.py's example image."""
    return default_name if path == example_path else path


def fmt(x):
    return "" if x is None else f"{x:+.4f}" if abs(x) >= 1e-3 or x == 0 else f"{x:+.1e}"


def interval(row):
    return "" if row["ci_low"] is None else f"[{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]"


# -----------------------------------------------------------------------------


def parse_app_args(argv):
    """(host, port, share, main.py's arguments) from app.py's command line."""
    host, port, share, rest = HOST, PORT, False, []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        key, eq, value = arg.partition("=")
        if key in ("--port", "--host"):
            if not eq:
                if i + 1 >= len(args):
                    raise UserError(f"{key} needs a value, e.g. {key} {'7861' if key == '--port' else '0.0.0.0'}")
                i, value = i + 1, args[i + 1]
            if key == "--host":
                host = value
            else:
                try:
                    port = int(value)
                except ValueError:
                    raise UserError(f"--port={value!r} is not a port number (e.g. --port 7861)") from None
                if not 0 < port < 65536:
                    raise UserError(f"--port={port} is out of range: it must be in 1-65535")
        elif arg == "--share":
            share = True
        elif arg in ("-h", "--help"):
            raise SystemExit(print(__doc__.strip()) or 0)
        else:
            rest.append(arg)
        i += 1
    return host, port, share, rest


def main_app(argv=None):
    for notice in runs.LIBRARY_NOTICES:
        warnings.filterwarnings("ignore", message=notice)
    try:
        host, port, share, main_argv = parse_app_args(sys.argv[1:] if argv is None else argv)
        bench = Bench(main_argv)
        for path in bench.example:   # encode the example pair now: the first clicks only run the decoder
            bench.segmenter(path)
    except UserError as err:
        print(f"\nError: {err}", file=sys.stderr)
        return 2
    demo = build_ui(bench)
    print(f"Lab bench on http://{host}:{port}" + (" (and a public share link)" if share else ""), flush=True)
    demo.queue(default_concurrency_limit=4)
    demo.launch(server_name=host, server_port=port, share=share, css=CSS, footer_links=["api"],
                allowed_paths=[str(Path(bench.cfg["OUTPUT_DIR"]).resolve()), str(bench.tmp)], quiet=False)
    return 0


if __name__ == "__main__":
    sys.exit(main_app())
