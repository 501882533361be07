"""SAM2 point-prompt masks: M_neg on the original image, M_pos on the edited one (plan step 1).

    seg = load_sam2_predictor()          # SAM2.1 Hiera-L, loaded once per process
    seg.set_image("images/original.jpg") # encodes the image once
    masks, scores = seg.predict([[680, 707]], [1])   # cheap; call again after every click

    m_neg = get_mask("images/original.jpg", 680, 707)                 # float32 [H, W] in {0, 1}
    m_neg = get_mask("images/original.jpg", [680, 500], [707, 300], [1, 0])   # + a negative point

Images go through util.open_image, the same pixels CLIP and YOLO see, so the mask lines up with them. Points
are pixels of the image file as a viewer shows it; masks come at the working size every model reads the
image at (the file's own size up to util.MAX_IMAGE_SIDE on the long side).
"""
import contextlib
import functools
import re
from pathlib import Path

import numpy as np
import torch

from util import get_device, image_size, load_image_rgb, new_file, open_image

SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_l.yaml"   # must match checkpoints/sam2.1_hiera_large.pt
SAM2_OVERRIDES = []   # hydra overrides of SAM2_CONFIG; none for the release (the release-format test shrinks it)
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

    Numpy in, numpy out. Points are (x, y) pixels of the image as a viewer shows it (util.open_image's
    original size); labels are 1 (on the object) or 0 (not on the object); masks are at the working size.
    On CUDA the model runs under bfloat16 autocast as in sam2's own demos; elsewhere in plain float32.
    """

    def __init__(self, predictor):
        self.predictor = predictor        # sam2.sam2_image_predictor.SAM2ImagePredictor
        self.image_size = None            # (W, H) of the image set last, in the pixels points are given in
        self.working_size = None          # (W, H) SAM2 saw it at (and the masks have)
        self.image_name = None            # its path, for error messages
        self.image_key = None             # what was encoded, so a second set_image of it costs nothing
        self._features = None

    @property
    def device(self):
        return self.predictor.device

    @property
    def scale(self):
        """Working pixels per original pixel (1.0 for images up to util.MAX_IMAGE_SIDE)."""
        return self.working_size[0] / self.image_size[0]

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def set_image(self, image, name=None):
        """Encode an image (path or PIL image); the encoding is reused by every predict() that follows.

        name: what error messages call the image (default: its path). The same path set twice in a row is
        encoded once (point prompts and automatic proposals on one image share the encoding).
        """
        key = ("path", str(Path(image).resolve()), Path(image).stat().st_mtime_ns) \
            if isinstance(image, (str, Path)) and Path(image).is_file() else None
        # the predictor may be shared: only skip when its current features are still the ones we computed
        if key is not None and key == self.image_key and self.image_size is not None \
                and self.predictor._is_image_set and self.predictor._features is self._features:
            return
        rgb, original = open_image(image)
        self.image_name = name or (str(image) if isinstance(image, (str, Path)) else None)
        self.image_size = self.image_key = None  # a failed encode must not leave the previous image behind
        with torch.no_grad(), self._autocast():
            self.predictor.set_image(np.array(rgb))  # a writable copy, as torch wants
        self.image_size, self.working_size, self.image_key = original, rgb.size, key
        self._features = self.predictor._features

    def predict(self, points, labels, multimask_output=False):
        """Masks for point prompts on the current image.

        points: [N, 2] (x, y) pixels of the original image; labels: [N] of 1/0. Returns (masks float32
        [C, H, W] in {0, 1} at the working size, scores float32 [C]) with C = 1, or 3 when multimask_output.
        """
        if self.image_size is None:
            raise RuntimeError("PointSegmenter.predict() needs an image: call set_image(image) first")
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        labels = _check_labels(labels, len(points))
        check_points_inside(points, self.image_size, self.image_name)
        with torch.no_grad(), self._autocast():
            masks, scores, _ = self.predictor.predict(point_coords=points * self.scale, point_labels=labels,
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

def _build_sam2(device_str="cpu"):
    """SAM2_CONFIG's network with random weights (ckpt_path=None: sam2 would otherwise read the file itself)."""
    from sam2.build_sam import build_sam2
    return build_sam2(SAM2_CONFIG, ckpt_path=None, device=device_str, hydra_overrides_extra=list(SAM2_OVERRIDES))


def read_sam2_state(path, model=None):
    """The state dict of a SAM 2 release file ({'model': state_dict}, as sam2's _load_checkpoint reads it),
    read weights-only and checked key by key and shape by shape against model (default: SAM2_CONFIG's network,
    built after the file was read, so a missing or unreadable file costs no build); CheckpointError otherwise."""
    from model.checkpoints import CheckpointError, load_torch_file, state_dict_problems
    checkpoint = load_torch_file(path, "sam2", what="SAM2 checkpoint")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        found = (f"a dict with keys {', '.join(sorted(map(str, checkpoint)))[:200]}" if isinstance(checkpoint, dict)
                 else f"a {type(checkpoint).__name__}")
        raise CheckpointError(f"{path} is not a SAM 2 release checkpoint: sam2 reads {{'model': state_dict}}, "
                              f"found {found}. Use Meta's sam2.1_hiera_large.pt: python -m model.checkpoints sam2")
    model = _build_sam2("cpu") if model is None else model
    problems = state_dict_problems(model.state_dict(), checkpoint["model"])
    if problems:
        raise CheckpointError(f"{path} does not fit SAM 2.1 Hiera-L ({SAM2_CONFIG}): " + "; ".join(problems)
                              + ".\n  Another SAM variant's weights? Use sam2.1_hiera_large.pt: "
                                "python -m model.checkpoints sam2")
    return model, checkpoint["model"]


def verify_sam2_file(path):
    """Check a SAM 2 checkpoint against SAM2_CONFIG's network (built on the CPU, not run)."""
    _, state = read_sam2_state(path)
    return f"{path}: {{'model': {len(state)} tensors}} fits {SAM2_CONFIG}"


@functools.lru_cache(maxsize=None)
def _load_sam2(device_str):
    from sam2.sam2_image_predictor import SAM2ImagePredictor
    from model.checkpoints import checkpoint_path
    ckpt = checkpoint_path("sam2")
    print(f"Loading SAM2.1 Hiera-L from {ckpt} on {device_str}")
    # our own read instead of build_sam2(ckpt_path=...): sam2's loader raises a bare RuntimeError (its key
    # lists go to the log) or a KeyError for a file of another format
    model, state = read_sam2_state(ckpt)
    model.load_state_dict(state, strict=True)
    return PointSegmenter(SAM2ImagePredictor(model.to(device_str).eval()))


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

    point_x, point_y: numbers, or lists of the same length for several points, in pixels of the image;
    point_labels: 1 (on the object) / 0 (not on it) per point, or one label for all. SAM2 returns its single
    mask (multimask_output=False), at the working size (util.open_image). predictor: a PointSegmenter
    (default: the cached SAM2.1 Hiera-L).
    """
    seg = _segmenter(predictor)
    points = _points(point_x, point_y)
    labels = _check_labels(point_labels, len(points))
    name = str(image_path) if isinstance(image_path, (str, Path)) else None
    check_points_inside(points, image_size(image_path), name)   # before the encode, which takes seconds
    seg.set_image(image_path, name=name)
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
        name = str(image) if isinstance(image, (str, Path)) else None
        check_points_inside(points, image_size(image), name)
        seg.set_image(image, name=name)
        masks, scores = seg.predict(points, point_labels, multimask_output=True)
        result.append(masks[int(np.argmax(scores))])
    return result


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
# masks from a name: SAM2 proposes, CLIP picks (the lab's "approach 1: proposal-based SAM2+CLIP")

# SAM2AutomaticMaskGenerator options (its documented arguments). The related project (SCLIP + SAM2) used 32
# points a side, pred_iou_thresh 0.88 and stability_score_thresh 0.95; here 16 points a side finds the objects of
# a two-object edit pair at a quarter of the cost, and looser thresholds keep more proposals for CLIP to judge.
PROPOSAL_OPTIONS = dict(points_per_side=16, points_per_batch=64, pred_iou_thresh=0.8, stability_score_thresh=0.92,
                        box_nms_thresh=0.7, crop_n_layers=0)
MAX_PROPOSALS = 64        # CLIP scores at most this many proposals (those SAM2 is surest of)
# the tiny random-weight SAM2 is sure of nothing and its masks are noise (their run-length codes are huge):
# few prompts, no quality filter, so smoke runs and tests get a proposal in about a second
TINY_PROPOSAL_OPTIONS = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
# what a proposal may be instead of the named object: the pair's other object and the kept sources (the caller's
# other_names), plus scene parts
BACKGROUND_PROMPTS = ("a photo of the background", "a photo of the sky", "a photo of the ground",
                      "a photo of a wall", "a photo of something else")


class NoMatchError(ValueError):
    """No SAM2 proposal matches the object's name well enough; the message names the object and what to try."""


class _EncodedPredictor:
    """The segmenter's predictor, as SAM2AutomaticMaskGenerator uses it, without re-encoding the image.

    The generator calls set_image on the (uncropped) image and reset_predictor when done; the segmenter has
    already encoded that image, so both become no-ops and every proposal reuses the one image embedding.
    """

    def __init__(self, predictor):
        self._predictor = predictor

    def set_image(self, image):
        if tuple(image.shape[:2]) != tuple(self._predictor._orig_hw[0]):
            raise RuntimeError("proposals on crops of the image would need their own encoding (crop_n_layers=0)")

    def reset_predictor(self):
        pass

    def __getattr__(self, name):
        return getattr(self._predictor, name)


def propose_masks(image, predictor=None, rgb=None, **options):
    """SAM2's automatic mask proposals for an image (sam2's SAM2AutomaticMaskGenerator.generate).

    Runs on the segmenter's model and its encoding of the image (set_image is shared with point prompts).
    options override PROPOSAL_OPTIONS; rgb: the image as load_image_rgb reads it, when the caller has it.
    Returns the generator's records (segmentation bool [H, W] at the
    working size, bbox XYWH, area, predicted_iou, stability_score, point_coords), best first.
    """
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    seg = _segmenter(predictor)
    seg.set_image(image, name=str(image) if isinstance(image, (str, Path)) else None)
    generator = SAM2AutomaticMaskGenerator(seg.predictor.model, **{**PROPOSAL_OPTIONS, **options})
    generator.predictor = _EncodedPredictor(seg.predictor)
    rgb = np.array(load_image_rgb(image) if rgb is None else rgb)
    with torch.no_grad(), seg._autocast():
        records = generator.generate(rgb)
    return sorted(records, key=lambda r: -r["predicted_iou"] * r["stability_score"])


# CLIP's mean colour (its preprocess normalises it to 0): what CLIP sees outside a proposal's mask
NEUTRAL = tuple(round(255 * c) for c in (0.48145466, 0.4578275, 0.40821073))   # (123, 117, 104)


def proposal_crops(image, records):
    """Each proposal as CLIP judges it: its masked pixels only (the rest CLIP's mean colour), cut to the mask's
    box and padded to a square (CLIP's centre crop would cut it). Masked, not the box alone: a sprawling
    proposal's box may hold most of the image, the named object included, while its mask holds none of it."""
    from PIL import Image as PILImage
    rgb = np.asarray(load_image_rgb(image))
    crops = []
    for r in records:
        seg = np.asarray(r["segmentation"], dtype=bool)
        if seg.shape != rgb.shape[:2]:
            raise ValueError(f"a proposal's mask is {seg.shape[1]} x {seg.shape[0]} but the image is "
                             f"{rgb.shape[1]} x {rgb.shape[0]}: proposals must come from this image at its "
                             "working size")
        ys, xs = np.nonzero(seg)
        if len(ys) == 0:
            raise ValueError("an empty proposal has nothing for CLIP to score; drop proposals with area 0 first")
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        crop = np.where(seg[y0:y1, x0:x1, None], rgb[y0:y1, x0:x1], np.array(NEUTRAL, dtype=np.uint8))
        h, w = crop.shape[:2]
        side = max(h, w)
        square = np.empty((side, side, 3), np.uint8)
        square[:] = NEUTRAL
        top, left = (side - h) // 2, (side - w) // 2
        square[top:top + h, left:left + w] = crop
        crops.append(PILImage.fromarray(square))
    return crops


def name_prompt(name, template="a photo of a {}"):
    """The CLIP prompt of an object name: template.format(name), with 'a {}' read as 'an {}' before a name that
    starts with a vowel ('a photo of an astronaut'); the first letter stands in for the vowel sound."""
    if str(name).strip()[:1].lower() in tuple("aeiou"):
        template = re.sub(r"\b([Aa]) \{\}", r"\1n {}", template)
    return template.format(name)


def score_proposals(crops, prompts, clip_model, preprocess):
    """[N, P] softmax over the text prompts of CLIP's scaled cosine, for each crop (openai-clip's zero-shot).

    Crops go through util.clip_image_embeddings, the same image path as the pipeline's step 2; texts through
    the same CLIP's encode_text. The scale is the model's own logit_scale.exp() (100 for ViT-L/14).
    """
    from util import clip_image_embeddings
    image_embs = clip_image_embeddings(crops, model=clip_model, preprocess=preprocess)     # [N, D], unit norm
    text_embs = text_embeddings(prompts, clip_model)
    scale = float(clip_model.logit_scale.detach().exp())
    return torch.softmax(scale * image_embs @ text_embs.T, dim=-1)


@torch.no_grad()
def text_embeddings(prompts, clip_model):
    """CLIP's encode_text of the prompts, L2-normalised, float32 on the CPU: [P, D]."""
    import clip
    device = clip_model.token_embedding.weight.device
    tokens = clip.tokenize(list(prompts), truncate=True).to(device)
    embs = clip_model.encode_text(tokens).float().cpu()
    return embs / embs.norm(dim=-1, keepdim=True)


def segment_by_text(image, name, text=None, other_names=(), predictor=None, clip_model=None, preprocess=None,
                    min_score=0.3, union=False, proposals=None, prompt_template="a photo of a {}", **options):
    """The mask of the object called `name`, found without points: (mask float32 [H, W], info).

    1. SAM2 proposes masks (propose_masks; the image is encoded once, shared with point prompts).
    2. CLIP scores each proposal's masked crop (proposal_crops) against the object's prompt (text, default
       name_prompt: 'a photo of a <name>', 'an' before a vowel), the other names (the pair's other object and the
       kept sources) and a few background prompts (softmax over all of them).
    3. The proposal with the highest P(object) is the mask; union=True adds every proposal whose best prompt
       is the object's and whose P(object) >= min_score (objects SAM2 splits into parts).
    4. NoMatchError when no proposal reaches min_score: a clear error, never a silent wrong mask.
    info: prompts, every candidate's box (file pixels), area, SAM2 scores and P(object), the chosen indices.
    proposals: precomputed propose_masks records (tests inject their own).
    """
    from util import load_clip
    if clip_model is None:
        clip_model, preprocess = load_clip()
    text = text or name_prompt(name, prompt_template)
    prompts = [text] + [name_prompt(o, prompt_template) for o in other_names if o != name] + list(BACKGROUND_PROMPTS)
    prompts = list(dict.fromkeys(prompts))
    rgb, original = open_image(image)   # read once: the proposals, the crops and the boxes' scale all use it
    records = propose_masks(image, predictor, rgb=rgb, **options) if proposals is None else list(proposals)
    records = [r for r in records if r["area"] > 0][:MAX_PROPOSALS]   # an empty proposal is no object
    where = Path(image).name if isinstance(image, (str, Path)) else "the image"
    if not records:
        raise NoMatchError(f"SAM2 proposed no mask in {where}, so '{name}' cannot be found by name. Give it SAM2 "
                           f"points instead: python verify_masks.py --image {image} --interactive --name {name}")
    probs = score_proposals(proposal_crops(rgb, records), prompts, clip_model, preprocess)
    p_object = probs[:, 0]
    order = torch.argsort(p_object, descending=True).tolist()
    best = order[0]
    to_file = original[0] / rgb.width
    candidates = [{"index": i, "bbox_xywh": [round(v * to_file, 1) for v in r["bbox"]],
                   "area_fraction": round(float(r["area"]) / (rgb.width * rgb.height), 4),
                   "predicted_iou": round(float(r["predicted_iou"]), 4),
                   "stability_score": round(float(r["stability_score"]), 4),
                   "p_object": round(float(p_object[i]), 4), "best_prompt": prompts[int(probs[i].argmax())]}
                  for i, r in enumerate(records)]
    candidates = [candidates[i] for i in order]   # ranked
    if float(p_object[best]) < min_score:
        top = ", ".join(f"#{c['index']} P={c['p_object']:.2f} ({c['best_prompt']!r} wins)" for c in candidates[:3])
        raise NoMatchError(
            f"no SAM2 proposal in {where} looks like '{name}' to CLIP: the best P({text!r}) is "
            f"{float(p_object[best]):.2f}, below TEXT_MIN_SCORE={min_score:g} (best candidates: {top}). Try other "
            f"wording ({{'text': 'a photo of a ...'}}), or give SAM2 points: "
            f"python verify_masks.py --image {image} --interactive --name {name}")
    chosen = [best]
    if union:
        chosen += [i for i in order[1:] if float(p_object[i]) >= min_score and int(probs[i].argmax()) == 0]
    mask = np.zeros(records[best]["segmentation"].shape, dtype=bool)
    for i in chosen:
        mask |= np.asarray(records[i]["segmentation"], dtype=bool)
    info = {"text": text, "prompts": prompts, "chosen": chosen, "score": round(float(p_object[best]), 4),
            "min_score": min_score, "union": bool(union), "candidates": candidates,
            "segmentations": {i: records[i]["segmentation"] for i in order[:8]}}
    return mask.astype(np.float32), info


def save_proposals_figure(image, mask, info, path=None, title=None, top=7):
    """The chosen mask and the next best proposals, ranked with their CLIP scores: a 2 x 4 grid of panels."""
    from matplotlib.figure import Figure
    rgb, _ = open_image(image)
    rgb = np.asarray(rgb).astype(np.float32) / 255.0
    ranked = [c for c in info["candidates"] if c["index"] in info.get("segmentations", {})][:top]
    fig = Figure(figsize=(16, 8.4), layout="constrained")
    axes = fig.subplots(2, 4).ravel()

    def overlay(ax, m, colour, caption):
        shown = rgb.copy()
        on = np.asarray(m) > 0.5
        shown[on] = 0.45 * shown[on] + 0.55 * np.array(colour)
        ax.imshow(shown)
        ax.set_title(caption, fontsize=9)
        ax.set_axis_off()

    overlay(axes[0], mask, (1.0, 0.1, 0.1), f"chosen {info['chosen']}: P={info['score']:.3f}\n{info['text']!r}")
    for ax, c in zip(axes[1:], ranked):
        picked = c["index"] in info["chosen"]
        overlay(ax, info["segmentations"][c["index"]], (1.0, 0.1, 0.1) if picked else (0.1, 0.4, 1.0),
                f"#{c['index']} P={c['p_object']:.3f}{' (chosen)' if picked else ''}\nbest prompt: {c['best_prompt']}")
    for ax in axes[1 + len(ranked):]:
        ax.set_axis_off()
    fig.suptitle(title or (str(image) if isinstance(image, (str, Path)) else "proposals"))
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with new_file(path) as f:   # complete or absent, never replaced
            fig.savefig(f, format="png", dpi=90)
    return fig


# -----------------------------------------------------------------------------
# figures

def save_mask_figure(image, mask, path=None, points=None, labels=None, title=None):
    """3-panel matplotlib Figure: the image (a star per point), the mask, the mask tinted over the image.

    image: path or PIL image (read via load_image_rgb, the pixels SAM2 saw); mask: [H, W], nonzero = object.
    points: [[x, y], ...] pixels; labels: 1/0 per point (green star = on the object, red = not on it),
    default all 1. path: where to save a PNG; an existing file is never overwritten (FileExistsError).
    """
    from matplotlib.figure import Figure   # object API: no pyplot state, nothing kept alive after return

    rgb, original = open_image(image)
    scale = rgb.width / original[0]   # points are in the file's pixels, the figure in working pixels
    rgb = np.asarray(rgb)
    mask = np.asarray(mask)
    height, width = rgb.shape[:2]
    if mask.ndim != 2 or mask.shape != (height, width):
        shape = f"{mask.shape[1]} x {mask.shape[0]}" if mask.ndim == 2 else f"shape {mask.shape}"
        raise ValueError(f"mask of {shape} pixels (W x H) does not match the image of {width} x {height} "
                         "pixels: draw a mask on the image SAM2 segmented")
    on = mask > 0.5
    points = np.zeros((0, 2)) if points is None else np.asarray(points, dtype=np.float64).reshape(-1, 2) * scale
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
            # exclusive, and complete or absent: no half-written PNG under a name that is now taken
            with new_file(path) as f:
                fig.savefig(f, format="png", dpi=100)
        except FileExistsError:
            raise FileExistsError(f"{path} already exists and is never overwritten; choose a new file name") from None
    return fig
