"""verify_masks.py with a tiny random-weight SAM2: the CLI, the click handler (synthetic matplotlib events on an
Agg canvas) and the typed fallback used where there is no display."""
import ast
import builtins
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backend_bases import KeyEvent, MouseButton, MouseEvent, NavigationToolbar2
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

import inputs
import mask
import settings
import verify_masks
from util import load_image_rgb

W, H = 80, 56   # non-square, so a swapped x/y shows up


@pytest.fixture(scope="module")
def seg():
    return mask.tiny_sam2_predictor(seed=0)   # the same cached model the CLI's --smoke uses


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 60, size=(H, W, 3), dtype=np.uint8)
    pixels[10:40, 20:50] = (220, 180, 40)
    path = tmp_path_factory.mktemp("img") / "scene.png"
    Image.fromarray(pixels).save(path)
    return path


def parse_prompt_line(line):
    """The printed entry must be valid inside main.py's SAM2_PROMPTS dict literal."""
    return ast.literal_eval("{" + line.strip().rstrip(",") + "}")


def prompt_lines(text):
    return [line for line in text.splitlines() if line.startswith('    "')]


def through_mains_command_line(line, other='"duck": {}'):
    """The printed entry pasted into --SAM2_PROMPTS={...} with a second object, read by main.py's own parser."""
    import main
    cfg = settings.default_config(main)
    settings.parse_args(["--SAM2_PROMPTS={" + line.strip() + " " + other + "}"], cfg)
    return cfg["SAM2_PROMPTS"], inputs.parse_prompts(cfg["SAM2_PROMPTS"])[0]


# -----------------------------------------------------------------------------
# command line

def test_cli_one_shot_writes_png_and_prints_prompt_line(image_path, seg, tmp_path, capsys):
    out = tmp_path / "masks"
    assert verify_masks.main(["--image", str(image_path), "--x", "30", "--y", "20", "--name", "cat",
                              "--out", str(out), "--smoke"]) == 0
    text = capsys.readouterr().out
    assert "RANDOM weights" in text
    files = list(out.glob("*.png"))
    assert len(files) == 1 and f"Figure: {files[0]}" in text
    assert Image.open(files[0]).size[0] > 300   # a real 3-panel PNG
    (line,) = prompt_lines(text)
    assert line.strip() == '"cat": {"x": [30], "y": [20], "labels": [1]},'
    assert parse_prompt_line(line) == {"cat": {"x": [30], "y": [20], "labels": [1]}}
    prompts, cat = through_mains_command_line(line)
    assert prompts["cat"] == {"x": [30], "y": [20], "labels": [1]} and cat.points == [[30.0, 20.0]]
    expected = mask.get_mask(image_path, 30, 20, 1, predictor=seg)
    assert f"Mask area: {int(expected.sum())} pixels ({expected.mean() * 100:.1f}% of {W} x {H})" in text


def test_cli_several_points_and_runs_never_overwrite(image_path, tmp_path, capsys):
    argv = ["--image", str(image_path), "--x", "30", "5", "--y", "20", "50", "--labels", "1", "0",
            "--name", "person", "--out", str(tmp_path), "--smoke"]
    assert verify_masks.main(argv) == 0
    (first,) = tmp_path.glob("*.png")
    first_bytes = first.read_bytes()
    assert verify_masks.main(argv) == 0   # same second, same points: still a new file
    files = sorted(tmp_path.glob("*.png"))
    assert len(files) == 2 and first.read_bytes() == first_bytes
    lines = prompt_lines(capsys.readouterr().out)
    assert parse_prompt_line(lines[-1]) == {"person": {"x": [30, 5], "y": [20, 50], "labels": [1, 0]}}


def test_cli_point_outside_image_exits_2_with_size(image_path, tmp_path, capsys):
    for x, y in [(W, 10), (10, H), (-1, 5)]:
        code = verify_masks.main(["--image", str(image_path), "--x", str(x), "--y", str(y), "--out", str(tmp_path),
                                  "--smoke"])
        err = capsys.readouterr().err
        assert code == 2 and f"{W} x {H}" in err and f"x={x}" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []   # nothing written, and SAM2 never needed


def test_cli_bad_input_messages(image_path, tmp_path, capsys):
    missing = tmp_path / "nope.jpg"
    assert verify_masks.main(["--image", str(missing), "--x", "1", "--y", "1", "--smoke"]) == 2
    assert "image not found" in capsys.readouterr().err
    assert verify_masks.main(["--image", str(image_path), "--x", "1", "2", "--y", "1", "--smoke"]) == 2
    assert "--x has 2" in capsys.readouterr().err
    assert verify_masks.main(["--image", str(image_path), "--x", "1", "--y", "1", "--labels", "2", "--smoke"]) == 2
    assert "1 (on the object) or 0" in capsys.readouterr().err


def test_visualize_point_and_mask(image_path, seg, tmp_path):
    got, path = verify_masks.visualize_point_and_mask(image_path, [30, 5], [20, 50], [1, 0], predictor=seg,
                                                      save_path=tmp_path / "a.png")
    assert path == tmp_path / "a.png" and path.is_file()
    np.testing.assert_array_equal(got, mask.get_mask(image_path, [30, 5], [20, 50], [1, 0], predictor=seg))
    with pytest.raises(FileExistsError, match="a.png"):
        verify_masks.visualize_point_and_mask(image_path, 30, 20, predictor=seg, save_path=path)


# -----------------------------------------------------------------------------
# the click handler, fed with real matplotlib events on an Agg canvas

@pytest.fixture
def session(image_path, seg):
    fig = Figure()
    FigureCanvasAgg(fig)
    finished = []
    s = verify_masks.ClickSession(image_path, seg, ax=fig.add_subplot(), on_finish=lambda: finished.append(1))
    s.finished_calls = finished
    return s


def click(ax, x, y, button):
    """A real button_press_event at data coordinates (x, y); matplotlib computes inaxes/xdata itself."""
    dx, dy = ax.transData.transform((x, y))
    return MouseEvent("button_press_event", ax.figure.canvas, dx, dy, button=button)


def key(ax, name):
    return KeyEvent("key_press_event", ax.figure.canvas, name)


def test_clicks_give_points_labels_and_mask(session, image_path, seg):
    ax = session.ax
    assert session.on_click(click(ax, 10.2, 9.6, MouseButton.LEFT))
    assert session.on_click(click(ax, 65, 44, MouseButton.RIGHT))
    assert session.points == [[10, 10], [65, 44]] and session.labels == [1, 0]
    expected = mask.get_mask(image_path, [10, 65], [10, 44], [1, 0], predictor=seg)
    assert 0 < expected.mean() < 1
    np.testing.assert_array_equal(session.mask, expected)
    # the drawing follows: tinted exactly where the mask is, one star of each colour
    alpha = session._overlay.get_array()[..., 3]
    np.testing.assert_array_equal(alpha > 0, expected > 0.5)
    np.testing.assert_array_equal(session._stars[1].get_offsets(), [[10, 10]])
    np.testing.assert_array_equal(session._stars[0].get_offsets(), [[65, 44]])
    assert parse_prompt_line(session.prompt_line("cat")) == {"cat": {"x": [10, 65], "y": [10, 44], "labels": [1, 0]}}


def test_ignored_clicks(session):
    ax = session.ax
    assert not session.on_click(MouseEvent("button_press_event", ax.figure.canvas, 1, 1, button=MouseButton.LEFT))
    assert not session.on_click(click(ax, 30, 20, MouseButton.MIDDLE))
    toolbar = NavigationToolbar2(ax.figure.canvas)
    toolbar.pan()   # pan mode: a click drags the view, it is not a prompt
    assert not session.on_click(click(ax, 30, 20, MouseButton.LEFT))
    toolbar.pan()
    toolbar.zoom()
    assert not session.on_click(click(ax, 30, 20, MouseButton.LEFT))
    toolbar.zoom()
    assert session.points == [] and session.mask is None
    assert session.on_click(click(ax, 30, 20, MouseButton.LEFT))


def test_undo_clear_finish(session, image_path, seg):
    ax = session.ax
    session.on_click(click(ax, 10, 10, MouseButton.LEFT))
    session.on_click(click(ax, 65, 44, MouseButton.RIGHT))
    before_undo = session.mask
    session.on_key(key(ax, "u"))
    assert session.points == [[10, 10]] and session.labels == [1]
    expected = mask.get_mask(image_path, 10, 10, 1, predictor=seg)
    assert 0 < expected.mean() < 1 and not np.array_equal(expected, before_undo)
    np.testing.assert_array_equal(session.mask, expected)
    session.on_key(key(ax, "c"))
    assert session.points == [] and session.mask is None
    assert session._overlay.get_array()[..., 3].max() == 0
    with pytest.raises(ValueError, match="no points"):
        session.prompt_line("cat")
    assert not session.finished
    session.on_key(key(ax, "enter"))
    assert session.finished and session.finished_calls == [1]


def test_session_reencodes_when_the_shared_predictor_moved_on(session, image_path, seg):
    ax = session.ax
    session.on_click(click(ax, 10, 10, MouseButton.LEFT))
    flipped = load_image_rgb(image_path).transpose(Image.FLIP_TOP_BOTTOM)
    # another image goes through the same cached predictor; its encoding would give another mask
    on_flipped = mask.get_mask(flipped, [10, 65], [10, 44], 1, predictor=seg)
    session.on_click(click(ax, 65, 44, MouseButton.LEFT))
    expected = mask.get_mask(image_path, [10, 65], [10, 44], 1, predictor=seg)
    assert not np.array_equal(expected, on_flipped)
    np.testing.assert_array_equal(session.mask, expected)


# -----------------------------------------------------------------------------
# interactive_mode: typed fallback without a display, and the click window with a scripted "user"

def scripted(monkeypatch, answers):
    answers = iter(answers)

    def fake_input(prompt=""):
        try:
            return next(answers)
        except StopIteration:
            raise EOFError from None
    monkeypatch.setattr(builtins, "input", fake_input)


def test_headless_fallback_with_typed_points(image_path, seg, tmp_path, monkeypatch, capsys):
    assert verify_masks.display_available()[0] is False   # tests run with MPLBACKEND=Agg
    scripted(monkeypatch, [str(tmp_path / "missing.png"), str(image_path),   # asked for the image first
                           "10 10", "65, 44, 0", "999 1", "bad", "u", "65 44", "done", "never read"])
    session = verify_masks.interactive_mode(None, predictor=seg, name="cat", out_dir=tmp_path / "out")
    text = capsys.readouterr().out
    assert "image not found" in text and "typed points" in text
    assert f"{W} x {H}" in text and "expected 'x y'" in text   # bad lines explained, loop goes on
    assert session.points == [[10, 10], [65, 44]] and session.labels == [1, 1]
    expected = mask.get_mask(image_path, [10, 65], [10, 44], 1, predictor=seg)
    assert 0 < expected.mean() < 1
    np.testing.assert_array_equal(session.mask, expected)
    figures = list((tmp_path / "out").glob("*.png"))
    assert len(figures) == 4   # one new figure per change: 3 adds and 1 undo
    assert all(f.name.startswith("scene_") for f in figures)
    assert parse_prompt_line(prompt_lines(text)[-1]) == {"cat": {"x": [10, 65], "y": [10, 44], "labels": [1, 1]}}


def test_headless_fallback_end_of_input_without_points(image_path, seg, tmp_path, monkeypatch, capsys):
    scripted(monkeypatch, ["c"])
    session = verify_masks.interactive_mode(image_path, predictor=seg, out_dir=tmp_path)
    assert session.points == [] and "No points chosen" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_click_window_wiring(image_path, seg, tmp_path, monkeypatch, capsys):
    import matplotlib.pyplot as plt

    def user_clicks():   # stands in for the GUI main loop: events go through the canvas callbacks
        fig = plt.gcf()
        ax = fig.axes[0]
        for event in [click(ax, 30, 20, MouseButton.LEFT), click(ax, 5, 50, MouseButton.RIGHT),
                      click(ax, 60, 40, MouseButton.LEFT)]:
            fig.canvas.callbacks.process("button_press_event", event)
        fig.canvas.callbacks.process("key_press_event", key(ax, "u"))
        fig.canvas.callbacks.process("key_press_event", key(ax, "q"))
        assert not plt.fignum_exists(fig.number)   # finishing closed the window

    quit_keys = list(plt.rcParams["keymap.quit"])
    monkeypatch.setattr(verify_masks, "display_available", lambda: (True, ""))
    monkeypatch.setattr(plt, "show", user_clicks)
    session = verify_masks.interactive_mode(image_path, predictor=seg, name="dog", out_dir=tmp_path)
    assert session.finished and session.points == [[30, 20], [5, 50]] and session.labels == [1, 0]
    text = capsys.readouterr().out
    assert parse_prompt_line(prompt_lines(text)[-1]) == {"dog": {"x": [30, 5], "y": [20, 50], "labels": [1, 0]}}
    assert len(list(tmp_path.glob("*.png"))) == 1
    assert plt.rcParams["keymap.quit"] == quit_keys   # our key overrides did not leak


# -----------------------------------------------------------------------------
# --text: find the object by name

EXAMPLE = Path(__file__).resolve().parent.parent / "images" / "original.jpg"


def test_cli_text_finds_by_name_draws_the_ranked_proposals_and_prints_the_entry(tmp_path, capsys):
    out = tmp_path / "masks"
    assert verify_masks.main(["--image", str(EXAMPLE), "--text", "cat", "--other", "astronaut", "--out", str(out),
                              "--union", "--smoke"]) == 0
    text = capsys.readouterr().out
    (figure,) = out.glob("*.png")
    assert figure.name.startswith("original_text-cat_") and f"Figure (chosen mask and the next best proposals): {figure}" in text
    assert re.search(r"1\. proposal #\d+: P = 0\.\d+, box .* <- chosen", text) and "SAM2 proposals scored" in text
    (line,) = prompt_lines(text)
    assert line.strip() == '"cat": {"union": True},'       # Python, as main.py's constants are written
    assert parse_prompt_line(line) == {"cat": {"union": True}}   # main.py finds it by name the same way
    prompts, cat = through_mains_command_line(line)
    assert prompts["cat"] == {"union": True} and cat.by_text and cat.union and cat.text == "a photo of a cat"


@pytest.mark.parametrize("name, text, union, entry, printed", [
    ("cat", "a tabby cat", True, {"text": "a tabby cat", "union": True},
     '"cat": {"text": "a tabby cat", "union": True},'),
    ("astronaut", "a photo of an astronaut", False, {}, '"astronaut": {},'),     # main.py's own default wording
    ("astronaut", "a photo of a astronaut", False, {"text": "a photo of a astronaut"},
     '"astronaut": {"text": "a photo of a astronaut"},'),
    ("café", 'a "fat" cat \\ 🐱', False, {"text": 'a "fat" cat \\ 🐱'},
     '"café": {"text": "a \\"fat\\" cat \\\\ 🐱"},'),
])
def test_text_entries_print_python_that_mains_parser_reads_back(name, text, union, entry, printed):
    line = verify_masks.text_prompt_line(name, text, union=union)
    assert line == printed
    assert parse_prompt_line(line) == {name: entry}                 # pasted into main.py's source
    prompts, parsed = through_mains_command_line(line)               # or given on its command line
    assert prompts[name] == entry and parsed.name == name and parsed.text == text and parsed.union is union


def test_cli_text_with_no_good_proposal_says_what_to_try(image_path, tmp_path, capsys):
    code = verify_masks.main(["--image", str(image_path), "--text", "cat", "--min-score", "0.99", "--out",
                              str(tmp_path), "--smoke"])
    err = capsys.readouterr().err
    assert code == 1 and "looks like 'cat' to CLIP" in err and "--interactive" in err
    assert verify_masks.main(["--image", str(image_path), "--text", "cat", "--x", "3", "--smoke"]) == 2


def test_text_then_clicks_replace_the_name_search(tmp_path, monkeypatch, capsys):
    answers = iter(["300 200", "done"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(answers))
    monkeypatch.setattr(verify_masks, "display_available", lambda: (False, "test"))
    assert verify_masks.main(["--image", str(EXAMPLE), "--text", "cat", "--interactive", "--out", str(tmp_path),
                              "--smoke"]) == 0
    text = capsys.readouterr().out
    assert "the points you place replace the name search" in text
    assert prompt_lines(text)[-1].strip() == '"cat": {"x": [300], "y": [200], "labels": [1]},'


@pytest.mark.parametrize("args, says", [
    (["--x", "30", "--y", "20", "--name", ""], "an object needs a name"),
    (["--x", "30", "--y", "20", "--name", "c" * 5000], "is 5000 characters long"),
    (["--x", "30", "--y", "20", "--labels", "0"], "has no positive point (label 1)"),
    (["--text", " "], "an object needs a name"),
])
def test_printed_lines_follow_mains_rules_before_sam2_loads(args, says, image_path, tmp_path, capsys):
    """verify_masks.py never prints a SAM2_PROMPTS line that main.py would refuse: it checks with main's rules."""
    assert verify_masks.main(["--image", str(image_path), "--out", str(tmp_path / "figs"), "--smoke", *args]) == 2
    captured = capsys.readouterr()
    assert says in captured.err and "Traceback" not in captured.err and len(captured.err) < 600, captured.err
    assert "SMOKE" not in captured.out and not (tmp_path / "figs").exists()   # SAM2 never loaded, nothing drawn


def test_out_pointing_at_a_file_is_refused_first(image_path, tmp_path, capsys):
    taken = tmp_path / "figures.png"
    taken.write_bytes(b"someone's file")
    for out in (taken, taken / "sub"):
        assert verify_masks.main(["--image", str(image_path), "--x", "30", "--y", "20", "--out", str(out),
                                  "--smoke"]) == 2
        captured = capsys.readouterr()
        assert "--out" in captured.err and "is a file" in captured.err and "SMOKE" not in captured.out
    assert taken.read_bytes() == b"someone's file"
