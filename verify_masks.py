"""Find the SAM2 point prompts for main.py's SAM2_PROMPTS: put points on the object, look at the mask, paste.

    python verify_masks.py --image images/original.jpg --x 680 --y 707                 # one point
    python verify_masks.py --image images/edited.jpg --x 410 370 --y 130 460 --labels 1 0
    python verify_masks.py --image images/original.jpg --interactive --name cat        # click on the image
    python verify_masks.py                                                             # asks for everything
    python verify_masks.py --smoke --x 10 --y 10    # tiny random-weight SAM2: checks the tool, not the mask
    python verify_masks.py --image images/original.jpg --text cat --other astronaut   # find it by name

Interactive: left click = a point on the object (label 1), right click = a point not on it (label 0); the mask
redraws after every click; 'u' undoes the last point, 'c' clears them, Enter or 'q' finishes. Without a
display it asks for typed points instead. Each figure goes to a new file in outputs/masks/ (nothing is
overwritten) and the line to paste into SAM2_PROMPTS is printed at the end.

--text NAME finds the object by its name instead (SAM2's automatic proposals ranked by CLIP, as main.py does
for an entry without points): the figure shows the chosen mask and the next best proposals with their
scores, and the printed line is '"NAME": {},'. With --interactive as well, clicks then correct it: the
clicked points replace the name search.
"""
import argparse
import os
import sys
from datetime import datetime
from pathlib import Path

import numpy as np

from mask import (TINY_PROPOSAL_OPTIONS, NoMatchError, _segmenter, check_points_inside, get_mask, load_sam2_predictor,
                  name_prompt, save_mask_figure, save_proposals_figure, segment_by_text, tiny_sam2_predictor)
from settings import python_literal
from util import image_size, open_image, safe_name

DEFAULT_IMAGE = "images/original.jpg"   # main.py's default I_0
DEFAULT_OUT = "outputs/masks"           # figures land here, one new file each
DEFAULT_NAME = "object"                 # the SAM2_PROMPTS key printed when no --name is given
SMOKE_WARNING = ("!!! --smoke: SAM2 has RANDOM weights (tiny test model). The mask below is meaningless; "
                 "this only checks that the tool runs. Drop --smoke for real masks. !!!")


# -----------------------------------------------------------------------------
# helpers shared by the one-shot and the interactive paths

def _num(value):
    """448.0 -> 448, so the printed prompt looks like the ones in main.py."""
    value = float(value)
    return int(value) if value.is_integer() else round(value, 2)


def entry_line(name, entry):
    """'"NAME": {...},': one SAM2_PROMPTS entry, as Python source."""
    return f"{python_literal(str(name))}: {python_literal(entry)},"


def prompt_line(name, xs, ys, labels):
    """The SAM2_PROMPTS entry to paste into main.py: '"cat": {"x": [448], "y": [330], "labels": [1]},'."""
    if len(xs) == 0:
        raise ValueError("no points yet: a SAM2_PROMPTS entry needs at least one point on the object")
    entry = {"x": [_num(v) for v in xs], "y": [_num(v) for v in ys], "labels": [int(v) for v in labels]}
    return entry_line(name, entry)


def describe_mask(mask):
    on = np.asarray(mask) > 0.5
    return f"{int(on.sum())} pixels ({on.mean() * 100:.1f}% of {on.shape[1]} x {on.shape[0]})"


def save_under_new_name(out_dir, base, save):
    """save(path) at the first free out_dir/base[_i].png and return that path; never overwrites.

    save must create its file exclusively (the figure writers open with 'xb'), so a name taken between the
    check and the write raises FileExistsError and the next name is tried.
    """
    out_dir = Path(out_dir)
    for i in range(10000):
        path = out_dir / (base + (f"_{i}" if i else "") + ".png")
        if path.exists():
            continue
        try:
            save(path)
            return path
        except FileExistsError:   # someone took the name between the check and the write
            continue
    raise RuntimeError(f"could not find a new file name for {base}.png in {out_dir}")


def save_unique_figure(image, mask, out_dir, points, labels, title=None, stem=None):
    """Save the 3-panel figure under a new name in out_dir and return its path; never overwrites."""
    stem = safe_name(stem or (Path(image).stem if isinstance(image, (str, Path)) else "image"))
    x0, y0 = points[0] if len(points) else (0, 0)
    base = f"{stem}_x{_num(x0)}_y{_num(y0)}_n{len(points)}_{datetime.now():%Y%m%d-%H%M%S}"
    return save_under_new_name(out_dir, base, lambda path: save_mask_figure(image, mask, path, points=points,
                                                                             labels=labels, title=title))


def find_by_name(image_path, name, text=None, other_names=(), predictor=None, clip=None, out_dir=DEFAULT_OUT,
                 min_score=0.3, union=False, smoke=False, title=None):
    """The text path of main.py on one image: (mask, info, figure path). Prints the chosen proposal, the next
    best ones and the SAM2_PROMPTS line; NoMatchError (with what to try) when no proposal fits the name."""
    from util import load_clip, tiny_clip
    clip_model, preprocess = clip if clip is not None else (tiny_clip() if smoke else load_clip())
    options = TINY_PROPOSAL_OPTIONS if smoke else {}
    mask, info = segment_by_text(image_path, name, text=text, other_names=other_names, predictor=predictor,
                                 clip_model=clip_model, preprocess=preprocess, min_score=min_score, union=union,
                                 **options)
    stem = safe_name(Path(image_path).stem if isinstance(image_path, (str, Path)) else "image")
    path = save_under_new_name(out_dir, f"{stem}_text-{safe_name(name)}_{datetime.now():%Y%m%d-%H%M%S}",
                               lambda path: save_proposals_figure(image_path, mask, info, path=path,
                                                                  title=title or f"{image_path}: '{info['text']}'"))
    print(f"CLIP prompt {info['text']!r} against {len(info['prompts']) - 1} others; {len(info['candidates'])} SAM2 "
          f"proposals scored")
    for rank, c in enumerate(info["candidates"][:5], start=1):
        chosen = " <- chosen" if c["index"] in info["chosen"] else ""
        print(f"  {rank}. proposal #{c['index']}: P = {c['p_object']:.3f}, box {c['bbox_xywh']} (x, y, w, h), "
              f"{c['area_fraction']:.1%} of the image, best prompt {c['best_prompt']!r}{chosen}")
    return mask, info, path


def text_prompt_line(name, text=None, union=False, template="a photo of a {}"):
    """The SAM2_PROMPTS entry of an object found by name: '"cat": {},' or '"cat": {"union": True},'."""
    entry = {}
    if text and text != name_prompt(name, template):
        entry["text"] = text
    if union:
        entry["union"] = True
    return entry_line(name, entry)


def visualize_point_and_mask(image_path, x, y, labels=1, predictor=None, save_path=None, title=None):
    """SAM2 mask for point(s) on an image plus its 3-panel figure (image with stars, mask, overlay).

    x, y: numbers or equal-length lists; labels: 1 (on the object) / 0 (not on it) per point or one for all.
    predictor: a PointSegmenter (default: the cached SAM2.1 Hiera-L). save_path: a PNG file (must not exist)
    or a folder (a new unique name in it); default outputs/masks/. Returns (mask float32 [H, W], figure path).
    """
    xs, ys = np.atleast_1d(np.asarray(x, dtype=np.float64)), np.atleast_1d(np.asarray(y, dtype=np.float64))
    mask = get_mask(image_path, xs, ys, labels, predictor=predictor)
    points = np.stack([xs, ys], axis=1)
    point_labels = np.broadcast_to(np.asarray(labels), (len(points),))
    if title is None:
        title = f"{image_path}  points {[[_num(a), _num(b)] for a, b in points]}  labels {point_labels.tolist()}"
    if save_path is None or Path(save_path).is_dir() or Path(save_path).suffix == "":
        path = save_unique_figure(image_path, mask, save_path or DEFAULT_OUT, points, point_labels, title)
    else:
        path = Path(save_path)
        save_mask_figure(image_path, mask, path, points=points, labels=point_labels, title=title)
    return mask, path


# -----------------------------------------------------------------------------
# interactive: clicks where there is a display, typed points where there is none

NON_GUI_BACKENDS = {"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"}
BROWSER_BACKENDS = {"webagg", "nbagg", "notebook"}   # draw in a browser: no X/Wayland display needed


def display_available():
    """(True, '') when matplotlib can open a window we can click in, else (False, why not)."""
    import matplotlib
    backend = matplotlib.get_backend().lower()
    if backend in NON_GUI_BACKENDS or "inline" in backend:
        return False, (f"matplotlib backend '{backend}' cannot open a window "
                       "(set MPLBACKEND=TkAgg or QtAgg where a display exists)")
    if sys.platform.startswith("linux") and backend not in BROWSER_BACKENDS \
            and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display (neither DISPLAY nor WAYLAND_DISPLAY is set)"
    return True, ""


class ClickSession:
    """Points on one image and SAM2's mask for them. The image is encoded once; each point re-runs only the
    prompt decoder, so the mask can follow every click.

    on_click/on_key take matplotlib events (connect them to a figure); add_point/undo/clear are the same
    operations for typed input. With an axes attached the overlay and stars are redrawn after each change.
    """

    def __init__(self, image, predictor=None, ax=None, on_finish=None, initial_mask=None):
        # shown at the working size; points are kept (and printed) in the file's own pixels
        self.image, self.original_size = open_image(image)
        self.scale = self.image.width / self.original_size[0]
        self.image_name = str(image) if isinstance(image, (str, Path)) else None
        self.stem = Path(image).stem if isinstance(image, (str, Path)) else "image"   # for figure file names
        self.source = image                 # what SAM2 encodes: the path (scaled like every model reads it)
        self.seg = _segmenter(predictor)
        self.points, self.labels = [], []   # [[x, y], ...] integer pixels; 1 / 0 per point
        self.initial_mask = initial_mask    # shown until the first point (e.g. the mask found by name)
        self.mask = initial_mask            # float32 [H, W] for the current points
        self.finished = False
        self.on_finish = on_finish
        self.ax = None
        self._encode()
        if ax is not None:
            self.attach(ax)

    @property
    def size(self):
        return self.original_size   # (W, H) in the pixels points are given in

    def _encode(self):
        self.seg.set_image(self.source, name=self.image_name)
        self._embedding = self.seg.predictor.get_image_embedding()

    def _update(self):
        if self.points:
            # the predictor is shared (cached): if something else encoded another image meanwhile, redo ours
            if self.seg.predictor.get_image_embedding() is not self._embedding:
                self._encode()
            masks, _ = self.seg.predict(self.points, self.labels, multimask_output=False)
            self.mask = masks[0]
        else:
            self.mask = self.initial_mask
        self._redraw()

    # operations ---------------------------------------------------------------

    def add_point(self, x, y, label=1):
        if label not in (0, 1):
            raise ValueError(f"label must be 1 (on the object) or 0 (not on it), got {label}")
        check_points_inside([(x, y)], self.size, self.image_name)
        self.points.append([_num(x), _num(y)])
        self.labels.append(int(label))
        self._update()

    def undo(self):
        if self.points:
            self.points.pop()
            self.labels.pop()
            self._update()

    def clear(self):
        self.points, self.labels = [], []
        self._update()

    def finish(self):
        self.finished = True
        if self.on_finish is not None:
            self.on_finish()

    def prompt_line(self, name=DEFAULT_NAME):
        xs, ys = [p[0] for p in self.points], [p[1] for p in self.points]
        return prompt_line(name, xs, ys, self.labels)

    # matplotlib events --------------------------------------------------------

    def on_click(self, event):
        """button_press_event: left = on the object, right = not on it. Returns True when a point was added."""
        if self.ax is None or event.inaxes is not self.ax or event.xdata is None or event.ydata is None:
            return False
        toolbar = getattr(event.canvas, "toolbar", None)
        if toolbar is not None and getattr(toolbar, "mode", "") != "":
            return False   # the click belongs to zoom/pan
        if event.canvas.widgetlock.locked():
            return False
        button = getattr(event.button, "value", event.button)
        if button not in (1, 3):   # MouseButton.LEFT / RIGHT; middle and scroll are not prompts
            return False
        width, height = self.image.size
        # pixel i covers [i - 0.5, i + 0.5) in imshow's data coordinates (of the working-size image shown)
        if not (-0.5 <= event.xdata < width - 0.5 and -0.5 <= event.ydata < height - 0.5):
            return False
        x = min(max((event.xdata + 0.5) / self.scale - 0.5, 0), self.original_size[0] - 1)
        y = min(max((event.ydata + 0.5) / self.scale - 0.5, 0), self.original_size[1] - 1)
        self.add_point(int(np.floor(x + 0.5)), int(np.floor(y + 0.5)), 1 if button == 1 else 0)
        return True

    def on_key(self, event):
        """key_press_event: 'u' undo, 'c' clear, 'enter' / 'q' finish."""
        if event.key == "u":
            self.undo()
        elif event.key == "c":
            self.clear()
        elif event.key in ("enter", "q"):
            self.finish()

    # drawing ------------------------------------------------------------------

    def attach(self, ax):
        """Draw the image on ax; the overlay and the stars follow every change from now on."""
        self.ax = ax
        width, height = self.image.size
        ax.imshow(np.asarray(self.image))
        self._overlay = ax.imshow(np.zeros((height, width, 4), dtype=np.float32))
        self._stars = {1: ax.scatter([], [], marker="*", s=350, c="limegreen", edgecolors="white", zorder=3),
                       0: ax.scatter([], [], marker="*", s=350, c="red", edgecolors="white", zorder=3)}
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
        ax.set_autoscale_on(False)
        ax.set_axis_off()
        self._redraw()

    def _redraw(self):
        if self.ax is None:
            return
        width, height = self.image.size
        rgba = np.zeros((height, width, 4), dtype=np.float32)
        if self.mask is not None:
            rgba[self.mask > 0.5] = (1.0, 0.1, 0.1, 0.5)
        self._overlay.set_data(rgba)
        for label, stars in self._stars.items():
            chosen = [p for p, lab in zip(self.points, self.labels) if lab == label]
            stars.set_offsets(np.asarray(chosen, dtype=np.float64).reshape(-1, 2) * self.scale)
        status = f"{len(self.points)} point(s), mask {describe_mask(self.mask)}" if self.mask is not None \
            else "no points yet"
        self.ax.set_title(f"left click = on the object, right click = not on it; u undo, c clear, "
                          f"Enter/q finish\n{status}", fontsize=10)
        self.ax.figure.canvas.draw_idle()


def _click_window(session):
    import matplotlib.pyplot as plt
    rc = plt.rcParams
    # 'q' and 'c' are ours here, not matplotlib's close-window / view-back keys
    keymaps = {"keymap.quit": [k for k in rc["keymap.quit"] if k != "q"],
               "keymap.back": [k for k in rc["keymap.back"] if k != "c"]}
    with plt.rc_context(keymaps):
        fig, ax = plt.subplots(figsize=(10, 8))
        if fig.canvas.manager is not None:
            fig.canvas.manager.set_window_title(f"verify_masks: {session.image_name or 'image'}")
        session.on_finish = lambda: plt.close(fig)
        session.attach(ax)
        fig.canvas.mpl_connect("button_press_event", session.on_click)
        fig.canvas.mpl_connect("key_press_event", session.on_key)
        plt.show()   # blocks until Enter/q or the window is closed
        plt.close(fig)


def _typed_points(session, name, out_dir, title):
    print("Type a point as 'x y' (on the object) or 'x y 0' (not on it); 'u' undoes the last point, "
          f"'c' clears, 'done' finishes. The image is {session.size[0]} x {session.size[1]} pixels (W x H).")
    while True:
        try:
            line = input("point> ").strip()
        except EOFError:
            print()
            break
        command = line.lower()
        if not command:
            continue
        if command in ("done", "d", "q", "quit", "exit"):
            break
        if command in ("u", "undo"):
            session.undo()
        elif command in ("c", "clear"):
            session.clear()
            print("  cleared all points")
            continue
        else:
            parts = line.replace(",", " ").split()
            try:
                if len(parts) not in (2, 3):
                    raise ValueError(f"expected 'x y' or 'x y label', got {line!r}")
                x, y = float(parts[0]), float(parts[1])
                label = int(parts[2]) if len(parts) == 3 else 1
                session.add_point(x, y, label)
            except ValueError as err:
                print(f"  {err}")
                continue
        if not session.points:
            print("  no points left")
            continue
        path = save_unique_figure(session.source, session.mask, out_dir, session.points, session.labels,
                                  title=title, stem=session.stem)
        print(f"  {len(session.points)} point(s): mask {describe_mask(session.mask)}; figure {path}")
        print(f"  so far: {session.prompt_line(name)}")


def interactive_mode(image_path=None, predictor=None, name=None, out_dir=DEFAULT_OUT, title=None, initial_mask=None):
    """Pick points on an image until the mask looks right; prints the SAM2_PROMPTS line to paste.

    With a display: a matplotlib window to click in. Without one: typed 'x y [label]' lines (via input()),
    each saving a figure to out_dir. image_path None asks for it. Returns the ClickSession (points, labels,
    mask) or None when no image was given.
    """
    name = name or DEFAULT_NAME
    while image_path is None:
        try:
            answer = input(f"image path [{DEFAULT_IMAGE}]: ").strip() or DEFAULT_IMAGE
        except EOFError:
            print()
            return None
        if Path(answer).is_file():
            image_path = answer
        else:
            print(f"  image not found: {answer} (relative to {Path.cwd()})")

    print(f"Encoding {image_path} with SAM2 ...")
    session = ClickSession(image_path, predictor, initial_mask=initial_mask)
    title = title or str(image_path)
    has_display, why_not = display_available()
    if has_display:
        print("Left click = on the object, right click = not on it; u undo, c clear, Enter/q finish.")
        _click_window(session)
    else:
        print(f"No interactive window ({why_not}); falling back to typed points.")
        _typed_points(session, name, out_dir, title)

    if not session.points:
        print("No points chosen; nothing to paste.")
        return session
    if has_display:   # the typed path saved one already after every change
        path = save_unique_figure(session.source, session.mask, out_dir, session.points, session.labels, title,
                                  stem=session.stem)
        print(f"Figure: {path}")
    print(f"Mask area: {describe_mask(session.mask)}")
    print("Paste into SAM2_PROMPTS in main.py (first entry = object to remove in I_0, second = object to add in I_1):")
    print(f"    {session.prompt_line(name)}")
    return session


# -----------------------------------------------------------------------------
# command line

def main(argv=None):
    import warnings
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    parser = argparse.ArgumentParser(description="Check SAM2 point prompts and print the SAM2_PROMPTS line.")
    parser.add_argument("--image", help=f"image to segment (default {DEFAULT_IMAGE}; asked for in interactive mode)")
    parser.add_argument("--x", type=float, nargs="+", help="x pixel(s) from the left edge, one per point")
    parser.add_argument("--y", type=float, nargs="+", help="y pixel(s) from the top edge, one per point")
    parser.add_argument("--labels", type=int, nargs="+", default=[1],
                        help="1 = on the object, 0 = not on it; one per point or one for all (default 1)")
    parser.add_argument("--name", default=DEFAULT_NAME, help="key of the printed SAM2_PROMPTS entry, e.g. cat")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"folder for the figures (default {DEFAULT_OUT})")
    parser.add_argument("--device", default=None, help="cuda, cpu, mps (default: cuda -> mps -> cpu)")
    parser.add_argument("--interactive", action="store_true", help="click (or type) points and watch the mask")
    parser.add_argument("--text", metavar="NAME", help="find the object by its name (SAM2 proposals ranked by CLIP) "
                                                       "instead of points; NAME is also the printed key")
    parser.add_argument("--prompt", default=None, help="the CLIP wording for --text (default 'a photo of a NAME', "
                                                       "'an' before a vowel)")
    parser.add_argument("--other", nargs="*", default=[], help="--text: the pair's other object name(s) and the "
                                                               "kept sources (KEPT_SOURCES), which a proposal may "
                                                               "be instead; main.py uses both")
    parser.add_argument("--union", action="store_true", help="--text: the union of every proposal CLIP takes for "
                                                             "the object (objects SAM2 splits into parts)")
    parser.add_argument("--min-score", type=float, default=None,
                        help="--text: the CLIP probability a proposal needs (default 0.3; 0 with --smoke, whose "
                             "random CLIP finds nothing likely)")
    parser.add_argument("--smoke", action="store_true", help="tiny random-weight SAM2: no checkpoint needed, "
                                                             "the mask is meaningless")
    args = parser.parse_args(argv)

    def fail(message, code=2):
        print(f"error: {message}", file=sys.stderr)
        return code

    if args.text is not None and (args.x or args.y):
        return fail("--text finds the object by name; give either --text or --x/--y points")
    interactive = args.interactive or (args.x is None and args.y is None and args.text is None)
    xs, ys, labels = args.x or [], args.y or [], args.labels
    if not interactive:
        if len(xs) != len(ys):
            return fail(f"--x has {len(xs)} value(s) and --y has {len(ys)}; give one x and one y per point")
        if len(labels) not in (1, len(xs)):
            return fail(f"--labels has {len(labels)} value(s) for {len(xs)} point(s); give one per point or one for all")
        if not set(labels) <= {0, 1}:
            return fail(f"--labels must be 1 (on the object) or 0 (not on it), got {labels}")
        labels = labels * len(xs) if len(labels) == 1 else labels
    # the printed line must be one main.py accepts: its own rules, before SAM2 loads or a figure is drawn
    from errors import UserError
    from inputs import parse_prompt
    from runs import check_output_dir
    from settings import output_dir_problems
    name = args.text if args.text is not None and args.name == DEFAULT_NAME else args.name
    entry = ({"text": args.prompt} if args.prompt else {}) if args.text is not None or interactive else \
        {"x": xs, "y": ys, "labels": labels}
    try:
        parse_prompt(name, entry)
    except UserError as err:
        return fail(f"{err} (--name / --text give the name; --labels the labels)")
    problems = output_dir_problems(args.out)
    if problems:
        return fail(problems[0].replace("OUTPUT_DIR=", "--out ").replace("--OUTPUT_DIR", "--out"))
    try:
        check_output_dir(args.out)
    except UserError as err:
        return fail(str(err).replace("OUTPUT_DIR=", "--out ").replace("--OUTPUT_DIR", "--out"))

    image = args.image if args.image is not None else (None if interactive and not args.text else DEFAULT_IMAGE)
    if image is not None:   # check the image and the points before loading SAM2, which takes a while
        try:
            size = image_size(image)
        except (FileNotFoundError, ValueError) as err:
            return fail(err)
        try:
            check_points_inside(list(zip(xs, ys)), size, image)
        except ValueError as err:
            return fail(err)

    from model.checkpoints import CheckpointError
    try:
        if args.smoke:
            print(SMOKE_WARNING)
            predictor = tiny_sam2_predictor(device=args.device or "cpu")
        else:
            predictor = load_sam2_predictor(args.device)
    except CheckpointError as err:
        return fail(f"{err}\n(to try the tool without weights: python verify_masks.py --smoke ...)", 1)
    except RuntimeError as err:   # e.g. --device cuda on a machine without CUDA
        return fail(err, 1)
    title = f"{image} (RANDOM-WEIGHT SAM2, --smoke)" if args.smoke else None

    if args.text is not None:
        name = args.text if args.name == DEFAULT_NAME else args.name
        print(f"Finding '{args.text}' in {image} by name ...")
        try:
            text_mask, info, path = find_by_name(image, args.text, text=args.prompt, other_names=args.other,
                                                 predictor=predictor, out_dir=args.out,
                                                 min_score=args.min_score if args.min_score is not None
                                                 else (0.0 if args.smoke else 0.3),
                                                 union=args.union, smoke=args.smoke, title=title)
        except NoMatchError as err:
            return fail(err, 1)
        print(f"Figure (chosen mask and the next best proposals): {path}")
        print(f"Mask area: {describe_mask(text_mask)}")
        if not interactive:
            print("Paste into SAM2_PROMPTS in main.py (first entry = object to remove in I_0, second = object to add "
                  "in I_1):")
            print(f"    {text_prompt_line(name, info['text'], args.union)}")
            if args.smoke:
                print(SMOKE_WARNING)
            return 0
        print("Now click to correct it: the points you place replace the name search.")
        session = interactive_mode(image, predictor, name=name, out_dir=args.out, title=title, initial_mask=text_mask)
        if session is not None and not session.points:
            print("No points placed; the name search stands:")
            print(f"    {text_prompt_line(name, info['text'], args.union)}")
        if args.smoke:
            print(SMOKE_WARNING)
        return 0

    if interactive:
        if xs:
            print("note: --x/--y are not used in interactive mode; place the points there instead")
        interactive_mode(image, predictor, name=args.name, out_dir=args.out, title=title)
        if args.smoke:
            print(SMOKE_WARNING)
        return 0

    print(f"Segmenting {image} at {len(xs)} point(s) ...")
    mask, path = visualize_point_and_mask(image, xs, ys, labels, predictor=predictor, save_path=args.out,
                                          title=title)
    print(f"Figure: {path}")
    print(f"Mask area: {describe_mask(mask)}")
    if mask.sum() == 0:
        print("The mask is empty: move the point onto the object or add more points.")
    print("Paste into SAM2_PROMPTS in main.py (first entry = object to remove in I_0, second = object to add in I_1):")
    print(f"    {prompt_line(args.name, xs, ys, labels)}")
    if args.smoke:
        print(SMOKE_WARNING)
    return 0


if __name__ == "__main__":
    sys.exit(main())
