"""Object detection, object crops and SSV2A's remix slots.

SSV2A hears an image as a mix of sound sources: YOLOv8x (Open Images V7, 601 classes) finds the objects, each box
is cut out and bicubic-resized back to the image size, CLIP embeds every crop, and the remixer reads the slots
[global; crop_1 .. crop_n; zeros]. Facts carried over from the original (wguo86/SSV2A, data/detect.py and
model/pipeline.py): predict with the config's conf/iou/max_det and augment=True, keep the top_k boxes of each image
in ultralytics' order (most confident first), crop with PIL (box rounded), resize to the image size with bicubic,
put the L2-normalised global CLIP embedding in slot 0 and the crops after it. Differences, on purpose: crops stay
in memory (the original writes PNGs to a cache folder), zero detections give a slots tensor holding only the
global (the original crashes), more than slot-1 crops keep the most confident (the original samples at random),
and YOLO runs each image at its own [H, W] (the original passes PIL's (W, H) where ultralytics reads (h, w)),
capped at 640 px on the long side (YOLOv8's training size).

    yolo = load_yolo()                                   # checkpoints/yolov8x-oiv7.pt, weights_only load
    slots, dets = image_remix_slots(["I_0.jpg"], yolo, clip_model, preprocess, config["detector"])
    slots[:, 0] = emb_manipulated                        # or pass global_embs=...

ultralytics is imported lazily (after torch), its telemetry is switched off in this process, and every predict
puts torch's thread count back the way it found it.
"""
import functools
import math
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from PIL import Image

import util
from model.checkpoints import CHECKPOINTS, ROOT, CheckpointError, check_torch_archive, checkpoint_path

YOLO_FILENAME = CHECKPOINTS["yolo"].filename           # yolov8x-oiv7.pt
SLOTS = 64                                             # ssv2a.json remixer.slot
# YOLOv8's training size. Measured on 2 CPU cores, YOLOv8x (601 classes), the 672 px example: the original's
# own-size call with test-time augmentation 8.5 s, capped at 640 7.3 s, ultralytics' plain call (640, no
# augmentation) 3.8 s. Augmentation (3 scaled and flipped passes) is kept: it changes which objects fill the slots.
YOLO_MAX_SIDE = 640

# ssv2a.json's detector block, for callers that have no config at hand. segment_model, ps_topk, kneedle and
# rf_its belong to SSV2A's training-data tools; its image_to_audio path never reads them.
DETECTOR_DEFAULTS = {"detection_model": f"checkpoints/{YOLO_FILENAME}", "crop": True,
                     "conf": 0.25, "iou": 0.0, "max_det": 64, "top_k": 16}


@dataclass
class Detection:
    box: tuple            # (x0, y0, x1, y1) in pixels of the image as util.load_image_rgb reads it
    score: float          # YOLO confidence
    label: str            # class name, e.g. 'Dog'
    class_id: int
    crop: Image.Image = field(repr=False)  # the box's pixels, bicubic-resized to the image size


# -----------------------------------------------------------------------------
# ultralytics, imported on first use

@functools.lru_cache(maxsize=None)
def _ultralytics():
    """Import ultralytics without letting the import change the rest of the process."""
    # ultralytics sets OMP_NUM_THREADS=1 when it is unset; torch is already imported here, so the variable would
    # only reach our child processes (and slow them down), not torch. Keep the environment as it was.
    omp = os.environ.get("OMP_NUM_THREADS")
    # ultralytics also replaces PIL.Image.open process-wide with a version that, on any file PIL cannot
    # identify, pip-installs pi-heif (online) or raises ModuleNotFoundError (offline) instead of PIL's error
    pil_open = Image.open
    import ultralytics
    Image.open = pil_open
    from ultralytics.utils import events
    if omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    # predict sends anonymous usage events when online and settings say sync=True; switch that off in memory
    # rather than by settings.update(), which would write to the user's ~/.config/Ultralytics/settings.json
    events.events.enabled = False
    return ultralytics


def _env_true(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _yolo_file(path, download):
    """Where the YOLO checkpoint is; a missing file raises CheckpointError before ultralytics can go online."""
    # YOLO(path) for a missing file downloads from GitHub, YOLO_OFFLINE or not, so it only ever sees a file that exists
    if path is None or (not Path(path).is_absolute() and Path(path).name == YOLO_FILENAME):
        # the config says "checkpoints/yolov8x-oiv7.pt": that is the registry's file, which knows the fix
        return checkpoint_path("yolo", download=download)
    path = Path(path)
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, ROOT / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"YOLO checkpoint '{path.name}' is missing.\n"
                          f"  Looked in: {', '.join(str(c) for c in candidates)}\n"
                          f"  Fix: pass the path of an existing Ultralytics .pt file, or leave detection_model at "
                          f"checkpoints/{YOLO_FILENAME} and run: python -m model.checkpoints yolo")


def _open_yolo(path):
    """ultralytics YOLO of an Ultralytics .pt file, unpickled weights-only; CheckpointError saying what is wrong."""
    _ultralytics()
    from ultralytics import YOLO
    from ultralytics.nn import tasks
    if not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
        # ultralytics' restricted loader needs torch >= 2.6 and silently falls back to a full unpickle without it
        raise RuntimeError(f"loading {path} safely needs torch >= 2.6 (found {torch.__version__})")
    # a truncated or garbage file: our message, before torch's ('legacy .tar format' for zeros) or ultralytics'
    check_torch_archive(path, "yolo" if Path(path).name == YOLO_FILENAME else None, what="YOLO checkpoint")
    # ULTRALYTICS_SAFE_LOAD is read once, when ultralytics is imported, into nn.tasks.SAFE_LOAD; torch_safe_load
    # and the model builder read that flag at call time. Raising it only for this load gives us
    # torch.load(weights_only=True) against ultralytics' allow-list of known classes, and leaves every other
    # ultralytics load in the process as it was.
    safe_before = tasks.SAFE_LOAD
    tasks.SAFE_LOAD = True
    try:
        yolo = YOLO(path, task="detect")
    except (TypeError, pickle.UnpicklingError, RuntimeError, EOFError, KeyError, AttributeError) as err:
        cause = err.__cause__ or err
        refused = _refused_global(cause)
        if refused or isinstance(cause, pickle.UnpicklingError):
            raise CheckpointError(
                f"Refused to load YOLO checkpoint {path}: it is not a plain Ultralytics checkpoint.\n"
                f"  Checkpoints are loaded with torch.load(weights_only=True), which only rebuilds known Ultralytics "
                f"and torch classes.\n  Fix: use the official {YOLO_FILENAME} (python -m model.checkpoints yolo) or a "
                f"model saved by ultralytics.\n  (unsupported global {refused or '?'}: {_first_line(cause)})") from err
        raise CheckpointError(
            f"YOLO checkpoint {path} is not an Ultralytics detection model ({type(cause).__name__}: "
            f"{_first_line(cause)}).\n  Fix: use the official {YOLO_FILENAME}: python -m model.checkpoints yolo") from err
    finally:
        tasks.SAFE_LOAD = safe_before
    return yolo


def _refused_global(err):
    from model.checkpoints import _refusal
    found = _refusal(err)
    if found:
        return found
    # ultralytics' own wording when its allow-list refuses a class
    return "(outside ultralytics' allow-list)" if "references types outside" in str(err) else ""


def _first_line(err):
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    # torch names the refused global on its own line ("Unsupported global: GLOBAL posix.system ...")
    return next((line for line in lines if "global" in line.lower()), lines[0] if lines else "")[:300]


def verify_yolo_file(path):
    """Open a YOLO checkpoint the way load_yolo does and say what it detects."""
    yolo = _open_yolo(str(path))
    return f"{path}: Ultralytics {type(yolo.model).__name__}, {len(yolo.model.names)} classes"


@functools.lru_cache(maxsize=None)
def _load_yolo(path, device):
    print(f"Loading YOLO from {path} on {device}")
    yolo = _open_yolo(path)
    yolo.to(device)
    return yolo


def load_yolo(path=None, device=None, download=None):
    """ultralytics YOLO for the Open Images V7 detector, loaded once per process, path and device.

    path: the config's detector.detection_model ("checkpoints/yolov8x-oiv7.pt" is the registry's file) or any
    Ultralytics .pt file; None = the registry's. download: fetch a missing registry file; None = unless
    YOLO_OFFLINE is set.
    """
    if download is None:
        download = not _env_true("YOLO_OFFLINE")
    path = _yolo_file(path, download)
    return _load_yolo(str(path), str(util.get_device(device)))


def tiny_yolo(seed=0, nc=601, class_bias=None):
    """ultralytics YOLO built from yolov8n.yaml with random weights, for tests and smoke runs (no download).

    Same class and Detect head as the real detector, nc classes (601 = Open Images V7, with its class names).
    class_bias: None keeps ultralytics' prior on the class logits, so like a real detector on an empty scene it
    finds nothing at conf 0.25; 0.0 makes roughly half of the candidate boxes score above 0.25. Seeded.
    """
    _ultralytics()
    from ultralytics import YOLO
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load
    from ultralytics.utils import ROOT as UL_ROOT, YAML

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yolo = YOLO("yolov8n.yaml", task="detect")
        cfg = yaml_model_load("yolov8n.yaml")
        cfg["nc"] = nc
        model = DetectionModel(cfg, verbose=False).eval()
        if nc == 601:
            model.names = YAML.load(UL_ROOT / "cfg" / "datasets" / "open-images-v7.yaml")["names"]

        # With ultralytics' default init the activations shrink to ~1e-7 by the head, so every box and every score
        # would be the same whatever the image. Rescale each hidden conv to unit output variance on a random input
        # (layer-sequential unit-variance init) so that outputs depend on the image. The head's last convs keep
        # their init and biases; DFL's fixed conv is left alone.
        head = model.model[-1]
        last = {id(seq[-1]) for seq in list(head.cv2) + list(head.cv3)}

        def unit_variance(conv, inputs, output):
            std = output.std()
            conv.weight.data /= std
            return output / std

        hooks = [m.register_forward_hook(unit_variance) for m in model.modules()
                 if isinstance(m, nn.Conv2d) and m.weight.requires_grad and id(m) not in last]
        with torch.no_grad():
            model(torch.rand(1, 3, 64, 64))
        for h in hooks:
            h.remove()
        if class_bias is not None:
            for seq in head.cv3:
                seq[-1].bias.data[:nc] = class_bias

    model.args = {**DEFAULT_CFG_DICT, **yolo.overrides}
    model.task = "detect"
    yolo.model = model
    return yolo


# -----------------------------------------------------------------------------
# detection and crops

def crop_box(image, box):
    """The box's pixels resized to the image size with bicubic, as SSV2A feeds objects to CLIP."""
    # PIL rounds a float box; a box thinner than a pixel would round to nothing, so keep at least one pixel
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0 = min(max(x0, 0), image.width - 1), min(max(y0, 0), image.height - 1)
    x1, y1 = min(max(x1, x0 + 1), image.width), min(max(y1, y0 + 1), image.height)
    return image.crop((x0, y0, x1, y1)).resize(image.size, Image.Resampling.BICUBIC)


def _detector_cfg(detector_cfg):
    cfg = {**DETECTOR_DEFAULTS, **(detector_cfg or {})}
    if not cfg["crop"]:
        raise NotImplementedError("detector.crop=false (SAM-masked objects) is not implemented; SSV2A's released "
                                  "config uses crop=true")
    for key in ("conf", "iou"):
        if not 0.0 <= float(cfg[key]) <= 1.0:
            raise ValueError(f"detector.{key}={cfg[key]} must be between 0 and 1")
    if int(cfg["max_det"]) < 1:
        raise ValueError(f"detector.max_det={cfg['max_det']} must be at least 1")
    return cfg


def _name(image, i):
    return Path(image).name if isinstance(image, (str, Path)) else f"image {i}"


def detect_objects(images, yolo=None, detector_cfg=None, device=None):
    """Objects in each image, most confident first: a list (per image) of lists of Detection.

    detector_cfg: ssv2a.json's "detector" block (conf, iou, max_det, top_k, crop, detection_model); None = those
    defaults. iou=0 is passed on as the original does: NMS then drops every box that overlaps a more confident box
    of the same class at all. top_k keeps the top_k most confident boxes of each image (None or 0 = all max_det).
    """
    if isinstance(images, (str, Path, Image.Image)):
        images = [images]
    cfg = _detector_cfg(detector_cfg)
    if yolo is None:
        yolo = load_yolo(cfg["detection_model"], device)
    _ultralytics()
    device = next(yolo.model.parameters()).device
    stride = int(max(yolo.model.stride)) if hasattr(yolo.model, "stride") else 32
    top_k = int(cfg["top_k"]) if cfg["top_k"] else None

    detections = []
    for i, image in enumerate(images):
        img = util.load_image_rgb(image)
        # the original runs each image at its own [H, W]; above YOLOv8's training size that only costs time
        # (quadratically), so the long side is capped at YOLO_MAX_SIDE; rounded up to the stride as ultralytics wants
        scale = min(1.0, YOLO_MAX_SIDE / max(img.size))
        imgsz = [math.ceil(img.height * scale / stride) * stride, math.ceil(img.width * scale / stride) * stride]
        # ultralytics' first predict on a device sets torch's CPU thread count to (cores - 1) for the whole process
        threads = torch.get_num_threads()
        try:
            result = yolo.predict(img, imgsz=imgsz, conf=float(cfg["conf"]), iou=float(cfg["iou"]),
                                  max_det=int(cfg["max_det"]), augment=True, device=str(device), verbose=False)[0]
        finally:
            torch.set_num_threads(threads)
        boxes = result.boxes
        scores = boxes.conf.float().cpu()
        # NMS already returns boxes by falling confidence; sorting again (stably) makes that a guarantee of ours
        order = torch.argsort(scores, descending=True, stable=True)[:top_k]
        xyxy, classes = boxes.xyxy.float().cpu()[order].tolist(), boxes.cls.cpu()[order].long().tolist()
        found = [Detection(box=tuple(box), score=float(scores[j]), label=str(result.names[c]), class_id=int(c),
                           crop=crop_box(img, box))
                 for box, j, c in zip(xyxy, order.tolist(), classes)]
        shown = ", ".join(f"{d.label} {d.score:.2f}" for d in found[:6]) + (", ..." if len(found) > 6 else "")
        # say what top_k left out: a crowded image loses most of its boxes, and that changes the remix
        left = len(scores) - len(found)
        print(f"YOLO: {len(found)} objects in {_name(image, i)}" + (f": {shown}" if found else "")
              + (f" ({left} more detected and left out: only the top_k={top_k} most confident are kept)"
                 if left else ""))
        detections.append(found)
    return detections


# -----------------------------------------------------------------------------
# remix slots

def build_remix_slots(global_embs, local_embs, slot=SLOTS, scores=None):
    """SSV2A's remixer input [B, slot, D]: slot 0 = global embedding, then the objects, then zeros.

    global_embs: [B, D], placed as given (the pipeline injects its manipulated embedding here).
    local_embs: B tensors [n_i, D], most confident first (n_i may be 0: slot 0 alone is a valid remix).
    scores: optional B tensors/lists [n_i]; when given, objects are ordered by them (stable, highest first).
    More than slot - 1 objects keep the slot - 1 most confident; the original drew them at random.
    """
    if global_embs.dim() != 2:
        raise ValueError(f"global_embs must be [B, D], got {tuple(global_embs.shape)}")
    B, D = global_embs.shape
    if len(local_embs) != B:
        raise ValueError(f"got {len(local_embs)} lists of object embeddings for {B} global embeddings")
    if slot < 1:
        raise ValueError(f"slot={slot} must be at least 1 (slot 0 holds the global embedding)")
    slots = global_embs.new_zeros(B, slot, D)
    slots[:, 0] = global_embs
    for b, embs in enumerate(local_embs):
        embs = torch.as_tensor(embs).to(slots)
        if embs.numel() == 0:
            continue
        if embs.dim() != 2 or embs.shape[1] != D:
            raise ValueError(f"object embeddings of image {b} must be [n, {D}], got {tuple(embs.shape)}")
        if scores is not None:
            s = torch.as_tensor(scores[b], dtype=torch.float32).flatten()
            if s.numel() != embs.shape[0]:
                raise ValueError(f"image {b}: {s.numel()} scores for {embs.shape[0]} object embeddings")
            embs = embs[torch.argsort(s, descending=True, stable=True).to(embs.device)]
        n = min(embs.shape[0], slot - 1)
        if n < embs.shape[0]:
            warnings.warn(f"image {b}: {embs.shape[0]} objects for {slot - 1} object slots: {n} filled, the "
                          f"{embs.shape[0] - n} least confident left out")
        slots[b, 1:1 + n] = embs[:n]
    return slots


def image_remix_slots(images, yolo=None, clip_model=None, preprocess=None, detector_cfg=None, global_embs=None,
                      slot=SLOTS, device=None):
    """Detect, crop and CLIP-embed: (slots [B, slot, 768], detections per image).

    Slot 0 = the L2-normalised CLIP embedding of each whole image, or global_embs [B, 768] when given; slots
    1.. = the crops' CLIP embeddings, most confident first; zeros after. Crops and images go through the one
    shared CLIP (clip_model/preprocess, default util.load_clip()).
    """
    if isinstance(images, (str, Path, Image.Image)):
        images = [images]
    if len(images) == 0:
        raise ValueError("image_remix_slots got no images")
    if clip_model is None:
        clip_model, preprocess = util.load_clip(device)
    elif preprocess is None:
        raise ValueError("pass the preprocess that belongs to the CLIP model you passed")

    detections = detect_objects(images, yolo, detector_cfg, device)
    if global_embs is None:
        global_embs = util.clip_image_embeddings(images, model=clip_model, preprocess=preprocess)
    elif global_embs.dim() != 2 or global_embs.shape[0] != len(images):
        raise ValueError(f"global_embs must be [{len(images)}, D] for {len(images)} images, "
                         f"got {tuple(global_embs.shape)}")

    crops = [d.crop for dets in detections for d in dets]
    crop_embs = (util.clip_image_embeddings(crops, model=clip_model, preprocess=preprocess) if crops
                 else global_embs.new_zeros(0, global_embs.shape[-1]))
    local_embs = list(torch.split(crop_embs, [len(dets) for dets in detections]))
    return build_remix_slots(global_embs, local_embs, slot=slot), detections
