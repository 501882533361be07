"""SAM2 point-prompt masks: M_neg on the original image, M_pos on the edited one (plan step 1).

    seg = load_sam2_predictor()          # SAM2.1 Hiera-L, loaded once per process
    seg.set_image("images/original.jpg") # encodes the image once
    masks, scores = seg.predict([[680, 707]], [1])   # cheap; call again after every click

    m_neg = get_mask("images/original.jpg", 680, 707)                 # float32 [H, W] in {0, 1}
    m_neg = get_mask("images/original.jpg", [680, 500], [707, 300], [1, 0])   # + a negative point

Images go through util.load_image_rgb, the same pixels CLIP and YOLO see, so the mask lines up with them.
"""
import contextlib
import functools
import pickle
from pathlib import Path

import numpy as np
import torch

from util import get_device, load_image_rgb

SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_l.yaml"   # must match checkpoints/sam2.1_hiera_large.pt
TINY_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
# Hiera-T as released takes ~3 s to encode one image on an idle CPU. A 4-block, 16-wide trunk and a 64-wide
# neck/decoder keep sam2's classes, its 1024 px input and its 256x256 low-res masks, but encode in ~0.3 s.
# Global attention is off because sam2's Hiera cannot put it on a q-pooling block, and with one block per
# stage every later block pools. Only the image path is shrunk consistently: this model is not for video.
TINY_OVERRIDES = [
    "++model.image_encoder.trunk.embed_dim=16",
    "++model.image_encoder.trunk.stages=[1,1,1,1]",
    "++model.image_encoder.trunk.global_att_blocks=[]",
    "++model.image_encoder.neck.backbone_channel_list=[128,64,32,16]",
    "++model.image_encoder.neck.d_model=64",
    "++model.image_encoder.neck.position_encoding.num_pos_feats=64",
    "++model.memory_attention.num_layers=1",   # video-only; one layer keeps the build quick
]


class PointSegmenter:
    """SAM2ImagePredictor with the project's conventions: set_image once, then predict per click.

    Numpy in, numpy out. Points are (x, y) pixels of the image as load_image_rgb returns it; labels are
    1 (on the object) or 0 (not on the object). On CUDA the model runs under bfloat16 autocast as in
    sam2's own demos; elsewhere in plain float32.
    """

    def __init__(self, predictor):
        self.predictor = predictor        # sam2.sam2_image_predictor.SAM2ImagePredictor
        self.image_size = None            # (W, H) of the image set last
        self.image_name = None            # its path, for error messages

    @property
    def device(self):
        return self.predictor.device

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def set_image(self, image, name=None):
        """Encode an image (path or PIL image); the encoding is reused by every predict() that follows.

        name: what error messages call the image (default: its path).
        """
        rgb = load_image_rgb(image)
        self.image_name = name or (str(image) if isinstance(image, (str, Path)) else None)
        self.image_size = None  # a failed encode must not leave the previous image's size behind
        with torch.no_grad(), self._autocast():
            self.predictor.set_image(np.array(rgb))  # a writable copy, as torch wants
        self.image_size = rgb.size

    def predict(self, points, labels, multimask_output=False):
        """Masks for point prompts on the current image.

        points: [N, 2] (x, y) pixels; labels: [N] of 1/0. Returns (masks float32 [C, H, W] in {0, 1},
        scores float32 [C]) with C = 1, or 3 when multimask_output.
        """
        if self.image_size is None:
            raise RuntimeError("PointSegmenter.predict() needs an image: call set_image(image) first")
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        labels = _check_labels(labels, len(points))
        check_points_inside(points, self.image_size, self.image_name)
        with torch.no_grad(), self._autocast():
            masks, scores, _ = self.predictor.predict(point_coords=points, point_labels=labels,
                                                      multimask_output=multimask_output)
        return masks.astype(np.float32), scores.astype(np.float32)


def _check_labels(labels, n_points):
    labels = np.asarray(labels)
    if labels.ndim == 0:
        labels = np.full(n_points, labels)  # one label for every point
    labels = labels.reshape(-1)
    if len(labels) != n_points:
        raise ValueError(f"got {n_points} point(s) but {len(labels)} label(s); give one label per point "
                         "(1 = on the object, 0 = not on it) or a single label for all")
    if n_points == 0:
        raise ValueError("no points given: SAM2 needs at least one (x, y) point on the object")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"point labels must be 1 (on the object) or 0 (not on it), got {labels.tolist()}")
    return labels.astype(np.int32)


def check_points_inside(points, image_size, image_name=None):
    """ValueError naming the image size when an (x, y) point lies off the image (SAM2 would silently clamp it)."""
    width, height = image_size
    for x, y in points:
        if not (0 <= x < width and 0 <= y < height):
            name = f" {image_name}" if image_name else ""
            raise ValueError(
                f"point (x={x:g}, y={y:g}) is outside the image{name} of {width} x {height} pixels (W x H): "
                f"x must be in [0, {width}) counted from the left edge, y in [0, {height}) from the top. Find the "
                f"object's coordinates with `python verify_masks.py --image <image> --interactive`")


def _points(point_x, point_y):
    """[N, 2] (x, y) array from two scalars or two equal-length lists."""
    xs, ys = np.atleast_1d(np.asarray(point_x, dtype=np.float64)), np.atleast_1d(np.asarray(point_y, dtype=np.float64))
    if xs.ndim != 1 or xs.shape != ys.shape:
        raise ValueError(f"point_x and point_y must be two numbers or two lists of the same length, "
                         f"got {np.shape(point_x)} and {np.shape(point_y)}")
    return np.stack([xs, ys], axis=1)


# -----------------------------------------------------------------------------
# predictors: the real SAM2.1 Hiera-L, and a tiny random-weight one for tests and smoke runs

@functools.lru_cache(maxsize=None)
def _load_sam2(device_str):
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor
    from model.checkpoints import CheckpointError, checkpoint_path
    # build_sam2 silently builds RANDOM weights when ckpt_path is None, so it only ever sees a path that
    # the registry has verified and that is still there now.
    ckpt = checkpoint_path("sam2")
    if ckpt is None or not Path(ckpt).is_file():
        raise CheckpointError(f"SAM2 checkpoint sam2.1_hiera_large.pt not found at {ckpt}; "
                              "run: python -m model.checkpoints sam2")
    print(f"Loading SAM2.1 Hiera-L from {ckpt} on {device_str}")
    try:
        model = build_sam2(SAM2_CONFIG, str(ckpt), device=device_str)
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, KeyError, pickle.UnpicklingError) as err:  # a damaged file or another SAM2 variant's weights
        raise CheckpointError(f"{ckpt} is not a SAM 2.1 Hiera-L checkpoint for {SAM2_CONFIG} ({err}); "
                              "delete it and run: python -m model.checkpoints sam2") from err
    return PointSegmenter(SAM2ImagePredictor(model))


def load_sam2_predictor(device=None):
    """PointSegmenter around SAM2.1 Hiera-L, loaded once per process and device (cuda -> mps -> cpu)."""
    return _load_sam2(str(get_device(device)))


@functools.lru_cache(maxsize=None)
def _tiny_sam2(seed, device_str):
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # ckpt_path=None on purpose: random weights, real architecture (sam2's own classes and transforms)
        model = build_sam2(TINY_CONFIG, ckpt_path=None, device=device_str, hydra_overrides_extra=TINY_OVERRIDES)
    return PointSegmenter(SAM2ImagePredictor(model))


def tiny_sam2_predictor(seed=0, device="cpu"):
    """PointSegmenter around a tiny random-weight SAM2 (for tests and `main.py --smoke`); cached per seed.

    The same seed gives the same weights. Masks are meaningless but have the real shapes and code path.
    """
    return _tiny_sam2(int(seed), str(torch.device(device)))


def _segmenter(predictor):
    if predictor is None:
        return load_sam2_predictor()
    if isinstance(predictor, PointSegmenter):
        return predictor
    from sam2.sam2_image_predictor import SAM2ImagePredictor
    if isinstance(predictor, SAM2ImagePredictor):
        return PointSegmenter(predictor)
    raise TypeError(f"predictor must be a PointSegmenter or a SAM2ImagePredictor, got {type(predictor).__name__}")


# -----------------------------------------------------------------------------
# masks

def get_mask(image_path, point_x, point_y, point_labels=1, predictor=None):
    """Binary SAM2 mask of the object under the point(s): float32 [H, W] with values in {0, 1}.

    point_x, point_y: numbers, or lists of the same length for several points; point_labels: 1 (on the
    object) / 0 (not on it) per point, or one label for all. SAM2 returns its single mask
    (multimask_output=False). predictor: a PointSegmenter (default: the cached SAM2.1 Hiera-L).
    """
    seg = _segmenter(predictor)
    points = _points(point_x, point_y)
    labels = _check_labels(point_labels, len(points))
    rgb, name = _image_and_name(image_path)
    check_points_inside(points, rgb.size, name)   # before the encode, which takes seconds with the real model
    seg.set_image(rgb, name=name)
    masks, _ = seg.predict(points, labels, multimask_output=False)
    return masks[0]


def get_masks(images, x, y, labels=1, predictor=None):
    """Best-scoring of SAM2's 3 candidate masks for each image: a list of float32 [H, W] in {0, 1}.

    x, y: numbers (the same point in every image, as the original batch helper) or lists with one entry
    per image, each entry a number or a list of points; labels: per point as in get_mask, or per image.
    """
    if isinstance(images, (str, Path)) or not isinstance(images, (list, tuple)):
        images = [images]
    n = len(images)
    seg = _segmenter(predictor)
    if _is_number(x) and _is_number(y):
        xs, ys, ls = [x] * n, [y] * n, [labels] * n
    else:
        xs, ys = _per_image(x, n, "x"), _per_image(y, n, "y")
        ls = [labels] * n if _is_number(labels) else _per_image(labels, n, "labels")

    result = []
    for image, xi, yi, li in zip(images, xs, ys, ls):
        points = _points(xi, yi)
        point_labels = _check_labels(li, len(points))
        rgb, name = _image_and_name(image)
        check_points_inside(points, rgb.size, name)
        seg.set_image(rgb, name=name)
        masks, scores = seg.predict(points, point_labels, multimask_output=True)
        result.append(masks[int(np.argmax(scores))])
    return result


def _image_and_name(image):
    return load_image_rgb(image), (str(image) if isinstance(image, (str, Path)) else None)


def _is_number(value):
    return isinstance(value, (int, float, np.number)) or (isinstance(value, np.ndarray) and value.ndim == 0)


def _per_image(value, n, name):
    if _is_number(value):
        raise ValueError(f"{name} is a single number while the points are given per image; give one entry per image")
    if len(value) != n:
        raise ValueError(f"{name} has {len(value)} entries for {n} image(s); give one per image, "
                         "or plain numbers for the same point in every image")
    return list(value)


# -----------------------------------------------------------------------------
# figures

def save_mask_figure(image, mask, path=None, points=None, labels=None, title=None):
    """3-panel matplotlib Figure: the image (a star per point), the mask, the mask tinted over the image.

    image: path or PIL image (read via load_image_rgb, the pixels SAM2 saw); mask: [H, W], nonzero = object.
    points: [[x, y], ...] pixels; labels: 1/0 per point (green star = on the object, red = not on it),
    default all 1. path: where to save a PNG; an existing file is never overwritten (FileExistsError).
    """
    from matplotlib.figure import Figure   # object API: no pyplot state, nothing kept alive after return

    rgb = np.asarray(load_image_rgb(image))
    mask = np.asarray(mask)
    height, width = rgb.shape[:2]
    if mask.ndim != 2 or mask.shape != (height, width):
        shape = f"{mask.shape[1]} x {mask.shape[0]}" if mask.ndim == 2 else f"shape {mask.shape}"
        raise ValueError(f"mask of {shape} pixels (W x H) does not match the image of {width} x {height} "
                         "pixels: draw a mask on the image SAM2 segmented")
    on = mask > 0.5
    points = np.zeros((0, 2)) if points is None else np.asarray(points, dtype=np.float64).reshape(-1, 2)
    labels = _check_labels(1 if labels is None else labels, len(points)) if len(points) else np.zeros(0, int)

    fig = Figure(figsize=(15, 5.4), layout="constrained")   # constrained: keeps the suptitle off the panel titles
    axes = fig.subplots(1, 3)
    axes[0].imshow(rgb)
    for label, color in ((1, "limegreen"), (0, "red")):
        chosen = points[labels == label]
        if len(chosen):
            axes[0].scatter(chosen[:, 0], chosen[:, 1], marker="*", s=350, c=color, edgecolors="white",
                            linewidths=1.2, label="on the object" if label else "not on the object")
    axes[0].set_title("image + points" if len(points) else "image")
    axes[1].imshow(on, cmap="gray", vmin=0, vmax=1)
    axes[1].set_title(f"mask: {int(on.sum())} px ({on.mean() * 100:.1f}%)")
    overlay = rgb.astype(np.float32) / 255.0
    overlay[on] = 0.45 * overlay[on] + 0.55 * np.array([1.0, 0.1, 0.1])   # red tint, as the plan draws it
    axes[2].imshow(overlay)
    axes[2].set_title("overlay")
    for ax in axes:
        ax.set_axis_off()
    if title is None and isinstance(image, (str, Path)):
        title = str(image)
    if title:
        fig.suptitle(title)

    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            f = open(path, "xb")   # exclusive create: also safe against another run writing the same name
        except FileExistsError:
            raise FileExistsError(f"{path} already exists and is never overwritten; choose a new file name") from None
        with f:
            try:
                fig.savefig(f, format="png", dpi=100)
            except BaseException:
                f.close()
                path.unlink()   # no half-written PNG left behind under a name that is now taken
                raise
    return fig
