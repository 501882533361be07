"""model/detect.py: YOLO detection, crops, remix slots, safe checkpoint loading, offline and thread hygiene.

Tiny random-weight models only: ultralytics YOLO built from yolov8n.yaml (601 Open Images classes) and openai-clip's
CLIP class from util.tiny_clip(). `busy` is the tiny YOLO with class biases at 0 (64 boxes at conf 0.25), `quiet`
keeps ultralytics' class prior (nothing found), so both the many- and zero-detection paths run on real models.
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import util
from model import checkpoints, detect
from model.checkpoints import CheckpointError

ROOT = Path(__file__).resolve().parent.parent


def _image(seed=0, size=(96, 64)):
    """Small RGB picture: coloured rectangles on a noisy background (something for YOLO to look at)."""
    rng = np.random.RandomState(seed)
    w, h = size
    px = (rng.rand(h, w, 3) * 60 + 100).astype(np.uint8)
    for _ in range(4):
        x0, y0 = rng.randint(0, w - 20), rng.randint(0, h - 20)
        px[y0:y0 + rng.randint(10, 40), x0:x0 + rng.randint(10, 50)] = rng.randint(0, 256, 3)
    return Image.fromarray(px)


@pytest.fixture(scope="module")
def clip_model():
    return util.tiny_clip(0)


@pytest.fixture(scope="module")
def busy():
    return detect.tiny_yolo(0, class_bias=0.0)


@pytest.fixture(scope="module")
def quiet():
    return detect.tiny_yolo(0)


@pytest.fixture(scope="module")
def busy_all(busy, clip_model):
    """Every box up to max_det (top_k off): slots and detections for one image, computed once."""
    img = _image(0)
    slots, dets = detect.image_remix_slots([img], busy, *clip_model, detector_cfg={"top_k": None})
    crop_embs = util.clip_image_embeddings([d.crop for d in dets[0]], model=clip_model[0], preprocess=clip_model[1])
    return img, slots, dets[0], crop_embs


# -----------------------------------------------------------------------------
# slots

def test_slots_hold_global_then_crops_then_zeros(busy, clip_model):
    images = [_image(0), _image(1)]
    slots, dets = detect.image_remix_slots(images, busy, *clip_model)  # ssv2a.json defaults: top_k 16
    assert slots.shape == (2, 64, 768) and slots.dtype == torch.float32
    assert torch.allclose(slots[:, 0], util.clip_image_embeddings(images, model=clip_model[0],
                                                                  preprocess=clip_model[1]), atol=1e-6)
    for b, found in enumerate(dets):
        n = len(found)
        assert n == 16  # 64 candidates, top_k keeps 16
        crops = util.clip_image_embeddings([d.crop for d in found], model=clip_model[0], preprocess=clip_model[1])
        assert torch.allclose(slots[b, 1:1 + n], crops, atol=1e-6)
        assert torch.all(slots[b, 1 + n:] == 0)
        assert torch.all(slots[b, :1 + n].norm(dim=-1) > 0.99)


def test_detections_most_confident_first_and_top_k(busy, busy_all):
    img, _, every, _ = busy_all
    scores = [d.score for d in every]
    assert len(every) == 64  # max_det
    assert scores == sorted(scores, reverse=True) and scores[-1] >= 0.25
    assert len(set(d.label for d in every)) > 1 and all(isinstance(d.label, str) for d in every)
    top = detect.detect_objects(img, busy, {"top_k": 5})[0]
    assert [d.box for d in top] == [d.box for d in every[:5]]


def test_crops_are_the_box_bicubic_resized_to_the_image(busy_all):
    img, _, every, _ = busy_all
    for d in every[:8]:
        expected = img.crop(d.box).resize(img.size, Image.Resampling.BICUBIC)
        assert d.crop.size == img.size
        assert np.array_equal(np.asarray(d.crop), np.asarray(expected))
    # boxes fed directly: fractional, whole image, and one thinner than a pixel (kept at one pixel)
    for box in [(10.4, 5.6, 70.2, 60.5), (0, 0, img.width, img.height)]:
        expected = img.crop(box).resize(img.size, Image.Resampling.BICUBIC)
        assert np.array_equal(np.asarray(detect.crop_box(img, box)), np.asarray(expected))
    thin = detect.crop_box(img, (40.2, 10.0, 40.4, 50.0))
    assert thin.size == img.size
    expected = img.crop((40, 10, 41, 50)).resize(img.size, Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(thin), np.asarray(expected))


def test_more_than_63_objects_keep_the_most_confident(busy_all):
    img, slots, every, crops = busy_all
    assert len(every) == 64
    assert torch.allclose(slots[0, 1:], crops[:63], atol=1e-6)  # the least confident one is dropped

    # straight into the slot builder: 70 objects in shuffled order, ordered by their scores
    g = torch.Generator().manual_seed(0)
    glob, embs, scores = torch.randn(1, 768, generator=g), torch.randn(70, 768, generator=g), torch.randperm(70, generator=g)
    with pytest.warns(UserWarning, match="image 0: 70 objects for 63 object slots: 63 filled, the 7 least confident "
                                         "left out"):
        built = detect.build_remix_slots(glob, [embs], slot=64, scores=[scores.float()])
    best = torch.argsort(scores, descending=True)[:63]
    assert torch.equal(built[0, 1:], embs[best]) and torch.equal(built[0, 0], glob[0])
    assert torch.equal(built, detect.build_remix_slots(glob, [embs], slot=64, scores=[scores.float()]))


def test_zero_detections_leave_the_global_alone(quiet, clip_model):
    img = _image(0)
    slots, dets = detect.image_remix_slots([img], quiet, *clip_model)
    assert dets == [[]]
    assert torch.allclose(slots[0, 0], util.clip_image_embeddings(img, model=clip_model[0], preprocess=clip_model[1])[0],
                          atol=1e-6)
    assert torch.all(slots[0, 1:] == 0)

    # a batch mixing an image with no objects and one with three
    glob, objs = torch.randn(2, 768), torch.randn(3, 768)
    built = detect.build_remix_slots(glob, [torch.zeros(0, 768), objs])
    assert torch.equal(built[:, 0], glob) and torch.all(built[0, 1:] == 0)
    assert torch.equal(built[1, 1:4], objs) and torch.all(built[1, 4:] == 0)


def test_caller_global_goes_in_slot_0(quiet, clip_model):
    manipulated = torch.nn.functional.normalize(torch.randn(1, 768), dim=-1)
    slots, _ = detect.image_remix_slots([_image(2)], quiet, *clip_model, global_embs=manipulated)
    assert torch.equal(slots[0, 0], manipulated[0]) and torch.all(slots[0, 1:] == 0)
    with pytest.raises(ValueError, match="global_embs"):
        detect.image_remix_slots([_image(2)], quiet, *clip_model, global_embs=torch.randn(2, 768))


def test_detector_config_is_checked(quiet):
    with pytest.raises(NotImplementedError, match="crop"):
        detect.detect_objects(_image(0), quiet, {"crop": False})
    with pytest.raises(ValueError, match="conf"):
        detect.detect_objects(_image(0), quiet, {"conf": 1.5})


# -----------------------------------------------------------------------------
# process hygiene: files, threads, network

def test_no_files_left_behind_and_progress_line(busy, clip_model, tmp_path, monkeypatch, capsys):
    work, scratch = tmp_path / "cwd", tmp_path / "tmp"
    work.mkdir(), scratch.mkdir()
    _image(3).save(work / "original.png")
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # anything using tempfile lands here
    detect.image_remix_slots(["original.png"], busy, *clip_model)
    assert sorted(os.listdir(work)) == ["original.png"]
    assert os.listdir(scratch) == []
    out = capsys.readouterr().out
    assert "YOLO: 16 objects in original.png: " in out
    # what top_k left out is said, not dropped without a word
    assert "(48 more detected and left out: only the top_k=16 most confident are kept)" in out


def test_thread_count_restored_after_predict_and_after_an_error():
    from ultralytics.utils import NUM_THREADS  # what ultralytics' first predict would set
    before = torch.get_num_threads()
    wanted = NUM_THREADS + 1
    try:
        torch.set_num_threads(wanted)
        yolo = detect.tiny_yolo(1)
        detect.detect_objects(_image(0), yolo)  # a fresh model: setting up its predictor sets the thread count
        assert torch.get_num_threads() == wanted

        def fail(predictor):
            raise RuntimeError("callback failure")

        yolo.predictor = None  # set up a new predictor, which sets the thread count again ...
        yolo.add_callback("on_predict_start", fail)  # ... and then fails
        with pytest.raises(RuntimeError, match="callback failure"):
            detect.detect_objects(_image(0), yolo)
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)


def test_ultralytics_import_leaves_omp_threads_alone():
    # a fresh interpreter, as a user's run: ultralytics would set OMP_NUM_THREADS=1 for every child process
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    code = ("import os, torch; n = torch.get_num_threads(); from model import detect; detect._ultralytics(); "
            "print(os.environ.get('OMP_NUM_THREADS'), torch.get_num_threads() == n)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["None", "True"]


def test_missing_checkpoint_raises_before_any_download(tmp_path, monkeypatch, net_attempts):
    monkeypatch.setattr(checkpoints, "CHECKPOINT_DIR", tmp_path / "empty")
    for path in [None, "checkpoints/yolov8x-oiv7.pt"]:  # the registry default and ssv2a.json's value
        with pytest.raises(CheckpointError, match="yolov8x-oiv7.pt") as err:
            detect.load_yolo(path)
        assert "python -m model.checkpoints yolo" in str(err.value)
    with pytest.raises(CheckpointError, match="other.pt"):
        detect.load_yolo(tmp_path / "other.pt")
    assert net_attempts == []


# -----------------------------------------------------------------------------
# safe loading

def test_ultralytics_checkpoint_loads_through_the_safe_path(busy, tmp_path, net_attempts):
    from ultralytics import YOLO
    from ultralytics.nn import tasks
    flag = tasks.SAFE_LOAD
    busy.save(tmp_path / "tiny.pt")  # ultralytics' own format: the pickled DetectionModel in fp16
    loaded = detect.load_yolo(tmp_path / "tiny.pt", device="cpu")
    assert isinstance(loaded, YOLO) and loaded.model.names == busy.model.names
    assert tasks.SAFE_LOAD == flag  # raised for our load only
    saved = {k: v.half().float() for k, v in busy.model.state_dict().items() if v.is_floating_point()}
    got = loaded.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in saved.items())
    assert len(detect.detect_objects(_image(0), loaded)[0]) == 16
    assert net_attempts == []


class NotUltralytics(nn.Module):
    pass


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("payload", ["os.system", "custom class"])
def test_checkpoint_with_unknown_globals_is_refused(payload, tmp_path):
    marker = tmp_path / "code_ran"
    bad = tmp_path / "bad.pt"
    model = RunsCode(marker) if payload == "os.system" else NotUltralytics()
    torch.save({"model": model, "train_args": {}}, bad)
    with pytest.raises(CheckpointError, match="Refused to load") as err:
        detect.load_yolo(bad, device="cpu")
    assert not marker.exists()  # nothing in the file was run
    message = str(err.value)
    assert "bad.pt" in message and ("system" in message if payload == "os.system" else "NotUltralytics" in message)


def test_ultralytics_leaves_pil_open_alone(quiet, tmp_path):
    # ultralytics patches PIL.Image.open to pip-install pi-heif on any unidentified file; after detection a
    # non-image must still give our clear ValueError, and no install may be attempted
    detect.detect_objects([_image(0)], quiet)
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    with pytest.raises(ValueError, match="notes.png"):
        util.load_image_rgb(not_image)
