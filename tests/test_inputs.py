"""inputs.py: the images, points, object prompts and sound-source names, checked before any model loads."""
import contextlib
from pathlib import Path

import pytest
from conftest import fifo, refused

import errors
import inputs
import main
import scorers
import settings

ROOT = Path(__file__).resolve().parent.parent


# -----------------------------------------------------------------------------
# object prompts

@pytest.mark.parametrize("prompts, match", [
    ({"cat": {"x": 1, "y": 1}}, "exactly two entries"),
    ({"cat": {"x": [1, 2], "y": [1]}, "duck": {"x": 1, "y": 1}}, "same length"),
    ({"cat": {"x": 1, "y": 1, "labels": [0]}, "duck": {"x": 1, "y": 1}}, "no positive point"),
    ({"cat": {"x": 1, "y": 1, "labels": [2]}, "duck": {"x": 1, "y": 1}}, "labels must be 1"),
    ({"cat": {"y": 1}, "duck": {"x": 1, "y": 1}}, "needs both 'x' and 'y'"),
    ({"cat": {"x": 1, "y": 1, "text": "a cat"}, "duck": {}}, "points and \\['text'\\]"),
    ({"cat": {"z": 1}, "duck": {}}, "unknown keys"),
    ({"cat": "a cat", "duck": {}}, "must be a dict"),
    ({"cat": {}, "cat ": {}}, "'cat' and 'cat ', which are one name"),
    ({"c" * 41: {}, "duck": {}}, "41 characters long"),
])
def test_malformed_prompts(prompts, match):
    with pytest.raises(errors.UserError, match=match):
        inputs.parse_prompts(prompts)


def test_prompts_by_points_or_by_name():
    removed, added = inputs.parse_prompts({"cat": {"x": [1, 2], "y": [3, 3], "labels": [1, 0]}, "duck": {}})
    assert removed.points == [[1.0, 3.0], [2.0, 3.0]] and removed.labels == [1, 0] and not removed.by_text
    assert added.by_text and added.text == "a photo of a duck" and added.points is None and not added.union
    _, added = inputs.parse_prompts({"cat": {}, "duck": {"text": "a yellow rubber duck", "union": True}},
                                  text_prompt="an image of a {}")
    assert added.text == "a yellow rubber duck" and added.union


# -----------------------------------------------------------------------------
# images and points

def test_point_outside_the_image_and_missing_image(tmp_path, capsys):
    code = main.main(["--smoke", f"--OUTPUT_DIR={tmp_path}",
                      "--SAM2_PROMPTS={'cat': {'x': 700, 'y': 10}, 'duck': {'x': 5, 'y': 5}}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "SAM2_PROMPTS['cat']: point (x=700, y=10) is outside" in err and "672 x 672" in err
    assert "verify_masks.py" in err
    assert main.main(["--smoke", f"--OUTPUT_DIR={tmp_path}", "--ORIGINAL=nope.jpg"]) == 2
    assert "image not found: nope.jpg" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []   # no run folder for a run that never started


def test_a_point_outside_clips_centre_square_is_refused_before_any_model(tmp_path, capsys):
    from PIL import Image
    Image.new("RGB", (900, 300), (90, 120, 40)).save(tmp_path / "wide.png")   # CLIP sees x in [300, 600)
    out = tmp_path / "outputs"
    code = main.main(["--smoke", f"--OUTPUT_DIR={out}", f"--ORIGINAL={tmp_path / 'wide.png'}",
                      "--SAM2_PROMPTS={'cat': {'x': 50, 'y': 150}, 'astronaut': {'x': [410], 'y': [130]}}"])
    err = capsys.readouterr().err
    assert code == 2 and "outside the centre square that CLIP sees of wide.png (900 x 300: x in [300, 600)" in err
    assert not out.exists()


# -----------------------------------------------------------------------------
# names

def test_eval_labels_from_names_and_constants():
    cfg = settings.default_config(main)
    cfg.update(EVAL_LABELS={"cat": "a cat meowing", "bird": "birds singing"}, KEPT_SOURCES=["dog"])
    labels, removed, added, kept = inputs.eval_labels(cfg, "cat", "duck")
    assert labels == ["a cat meowing", "the sound of a duck", "the sound of a dog", "birds singing"]
    assert (removed, added, kept) == ("a cat meowing", "the sound of a duck", ["the sound of a dog"])


def test_default_audio_classes_are_audioset_display_names():
    """The defaults, checked offline against the 527 names of AudioSet's class_labels_indices.csv."""
    labels = scorers.audioset_labels()
    assert len(labels) == 527 and len(set(labels)) == 527
    resolved, notes = scorers.resolve_audio_classes(list(main.AUDIO_CLASSES), main.AUDIO_CLASSES, labels)
    assert resolved == main.AUDIO_CLASSES and notes == []
    assert all(source in main.EVAL_LABELS for source in main.AUDIO_CLASSES)   # both views score every default source


# -----------------------------------------------------------------------------
# hostile inputs (issue 19)

def test_a_jpeg_cut_to_a_third_is_refused_in_the_pre_check(tmp_path, capsys):
    data = (ROOT / "images" / "original.jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[:len(data) // 3])
    err = refused([f"--ORIGINAL={cut}"], tmp_path, capsys)
    assert "cut.jpg" in err and "truncated or damaged" in err


def test_the_same_image_twice_is_a_warning(tmp_path):
    cfg = settings.default_config(main)
    copy = tmp_path / "copy.jpg"
    copy.write_bytes((ROOT / "images" / "original.jpg").read_bytes())
    cfg.update(EDITED=str(copy))
    _, _, notes = inputs.prepare_inputs(cfg)
    assert any("ORIGINAL and EDITED are the same image" in n and "same bytes" in n for n in notes), notes
    cfg.update(EDITED=cfg["ORIGINAL"])
    assert any("same image" in n for n in inputs.prepare_inputs(cfg)[2])
    assert not any("same image" in n for n in inputs.prepare_inputs(settings.default_config(main))[2])


def test_a_label_key_that_differs_from_its_source_only_in_case_is_a_warning():
    cfg = settings.default_config(main)
    cfg.update(EVAL_LABELS={**cfg["EVAL_LABELS"], "Rocket": "a roaring rocket"})
    _, _, notes = inputs.prepare_inputs(cfg)
    assert any("EVAL_LABELS has an entry 'Rocket' but the source is called 'rocket'" in n for n in notes), notes


def test_long_names_are_cut_in_messages(tmp_path, capsys):
    err = refused(["--SAM2_PROMPTS={'cat': {'labels': [1], '" + "k" * 5000 + "': 1}, 'dog': {}}"], tmp_path, capsys)
    assert "unknown keys" in err and len(err) < 600, len(err)


# -----------------------------------------------------------------------------
# paths that are not files, names that are not printable (issue 25)

NOT_FILES = {   # what the path is -> (make it under tmp_path, what the message says it is)
    "symlink loop": (lambda t: (t / "loop").symlink_to(t / "loop") or t / "loop", "is a symbolic link that loops"),
    "folder": (lambda t: (t / "dir.wav").mkdir() or t / "dir.wav", "is a folder, not a file"),
    "FIFO": (None, "is a FIFO (named pipe), not a regular file"),
    "/dev/zero": (lambda t: Path("/dev/zero"), "is a character device, not a regular file"),
    "dangling link": (lambda t: (t / "gone.wav").symlink_to(t / "nothing") or t / "gone.wav",
                      "is a symbolic link to"),
}


@pytest.mark.parametrize("setting", ["AUDIO_INPUT", "ORIGINAL"])
@pytest.mark.parametrize("kind", list(NOT_FILES))
def test_a_path_that_is_not_a_file_is_said_as_what_it_is(kind, setting, tmp_path, capsys):
    make, says = NOT_FILES[kind]
    (tmp_path / "in").mkdir()
    with fifo(tmp_path / "in" / "f.wav") if kind == "FIFO" else contextlib.nullcontext() as pipe:
        path = pipe if kind == "FIFO" else make(tmp_path / "in")
        err = refused([f"--{setting}={path}"], tmp_path, capsys)
    assert says in err and str(path) in err and "no such file" not in err and "not found" not in err, err


@pytest.mark.parametrize("args, shown", [
    (["--SAM2_PROMPTS={'\\x1b[31mcat\\x1b[0m': {}, 'astronaut': {}}"], "SAM2_PROMPTS name '\\x1b[31mcat\\x1b[0m' holds "
                                                                     "a control character (ESC)"),
    (["--SAM2_PROMPTS={'cat': {}, 'astro\\nnaut': {}}"], "'astro\\nnaut' holds a control character (a newline)"),
    (["--SAM2_PROMPTS={'cat\\x00': {}, 'astronaut': {}}"], "'cat\\x00' holds a control character (a NUL byte)"),
    (["--SAM2_PROMPTS={'cat': {'text': 'a \\x1b[5mcat'}, 'astronaut': {}}"], "['text'] 'a \\x1b[5mcat' holds"),
    (["--KEPT_SOURCES=['rock\\x1b[2Jet']"], "KEPT_SOURCES name 'rock\\x1b[2Jet' holds a control character (ESC)"),
    (["--EVAL_LABELS={'cat': 'a cat\\r\\nmeowing'}"], "holds a control character (a carriage return, a newline)"),
    (["--AUDIO_CLASSES={'ca\\x07t': ['Cat']}"], "AUDIO_CLASSES name 'ca\\x07t' holds a control character (U+0007)"),
    (["--RUN_NAME=run\x1b[31m"], "RUN_NAME 'run\\x1b[31m' holds"),   # a real ESC, as bash's $'\e' gives it
])
def test_names_with_control_characters_are_refused_and_shown_escaped(args, shown, tmp_path, capsys):
    err = refused(args, tmp_path, capsys)
    assert shown in err, err
    assert not any(c in err.replace("\n", "") for c in "\x1b\x00\r\x07"), "a control character reached the console"
