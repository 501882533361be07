"""CLIP token extraction, SAM2-mask-to-patch alignment, SVD manipulation and embedding mixing.

Shapes follow the research plan (ViT-L/14 at 224 px): tokens [N, 257, 768] = 1 CLS + 16x16 patches,
patch weights [B, 256], every embedding [768] and L2-normalised.
"""
import contextlib
import errno
import functools
import os
import random
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps, UnidentifiedImageError

CLIP_RESOLUTION = 224   # ViT-L/14 input size; 224 / 14 = 16 patches a side


# -----------------------------------------------------------------------------
# devices, seeds and images

def set_seed(seed):
    """Seed every random generator the pipeline draws from (Python, numpy, torch on all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def unit_norm_report(**embs):
    """'emb_bg (768,) |e|=1.0000, ...': the shape and L2 norm of each named embedding, as the steps print them."""
    return ", ".join(f"{name} {tuple(e.shape)} |e|={float(e.float().norm()):.4f}" for name, e in embs.items())


def get_device(requested=None):
    """torch.device to run on: the requested one, else cuda -> mps -> cpu."""
    if requested is not None:
        try:
            device = torch.device(requested)
        except RuntimeError as err:   # 'gpu', 'cuda:x': torch's own message names the valid types
            raise RuntimeError(f"{requested!r} is not a device name ({str(err).splitlines()[0][:200]}); "
                               "use cuda, cuda:1, mps or cpu") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {requested!r} was asked for but CUDA is not available on this machine; "
                               "use device='cpu' (slow) or run on a machine with an NVIDIA GPU")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {requested!r} was asked for but this machine has "
                               f"{torch.cuda.device_count()} CUDA device(s), numbered from 0")
        mps = getattr(torch.backends, "mps", None)
        if device.type == "mps" and not (mps is not None and mps.is_available()):
            raise RuntimeError(f"device {requested!r} was asked for but MPS (Apple-silicon GPU) is not available on "
                               "this machine; use device='cpu', or cuda on a machine with an NVIDIA GPU")
        if device.type not in ("cpu", "cuda", "mps"):   # meta holds no data; xpu, hip ... are not supported here
            raise RuntimeError(f"device {requested!r} cannot run the models here: use cuda, mps or cpu"
                               + (" (meta is PyTorch's device without data, for shapes only)"
                                  if device.type == "meta" else ""))
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


# Every model works at a fixed input size (SAM2 1024 px, YOLO 640, CLIP 224), so no step needs more pixels
# than this: bigger images are read at this size (JPEGs decoded at 1/2 .. 1/8 scale directly), which bounds
# time and memory by the models, not by the file. Points stay in the pixels of the file as a viewer shows it.
MAX_IMAGE_SIDE = 2048
MIN_IMAGE_SIDE = 32       # smaller images hold no object a 14-px patch or a detector could see
MAX_ASPECT = 10.0         # CLIP sees the centre square: beyond 10:1 it would see under a tenth of the image


def _open(path):
    """PIL image of a file, lazily (header only), or a ValueError that says why it cannot be opened safely."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path} (check the path, relative to {Path.cwd()})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # handled: big images are read small
            return Image.open(path)
    except Image.DecompressionBombError as err:
        w, h = _header_size(path)
        raise ValueError(f"image {path} is {w} x {h} pixels ({w * h / 1e6:.0f} MP): more than PIL decodes safely "
                         f"({2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} MP, a guard against decompression bombs). Shrink "
                         f"it first, e.g. to {MAX_IMAGE_SIDE} px on its long side: the models see at most 1024 px "
                         "anyway") from err
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {path}: {err}; use a JPEG or PNG file") from err


def _header_size(path):
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None   # header only: nothing is decoded
    try:
        with Image.open(path) as img:
            return img.size
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _displayed_size(img):
    """(W, H) after EXIF rotation, from the header (no decoding)."""
    w, h = img.size
    orientation = img.getexif().get(0x0112, 1) if hasattr(img, "getexif") else 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def working_size(size, max_side=MAX_IMAGE_SIDE):
    """The size every model and figure reads an image of `size` at: the same, or scaled to max_side."""
    w, h = size
    scale = min(1.0, max_side / max(w, h))
    return (w, h) if scale == 1.0 else (max(1, round(w * scale)), max(1, round(h * scale)))


def open_image(image, max_side=MAX_IMAGE_SIDE):
    """(8-bit RGB PIL image at the working size, the original (W, H) as a viewer shows it).

    Every model in the project (SAM2, CLIP, YOLO) and every figure reads images through here, so a mask drawn
    on one lines up with the tokens of another: EXIF rotation is applied (what a photo viewer shows),
    transparency is composited on white, 16-bit and palette images become 8-bit RGB, and an image larger than
    max_side on its long side is read at that size. Points given in original pixels map to working pixels by
    working.width / original[0].
    """
    if isinstance(image, (str, Path)):
        img = _open(image)
        try:
            original = _displayed_size(img)
            target = working_size(original, max_side)
            if target != original and img.format == "JPEG":
                # let libjpeg decode at the largest 1/2^k scale still above the target: 8000 px costs 1000 px
                raw_target = target if img.size == original else target[::-1]
                img.draft("RGB", raw_target)
            img.load()
        except (OSError, ValueError) as err:   # truncated or damaged after a readable header
            raise ValueError(f"cannot read image {image}: {err}; the file looks truncated or damaged") from err
    elif isinstance(image, Image.Image):
        img = image
        original = _displayed_size(img)
        target = working_size(original, max_side)
    else:
        raise TypeError(f"expected an image path or a PIL.Image, got {type(image).__name__}")

    img = ImageOps.exif_transpose(img)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        values = np.asarray(img, dtype=np.float64)
        full_scale = 65535.0 if values.max() > 255 else 255.0
        img = Image.fromarray(np.clip(values / full_scale * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    img = img.convert("RGB")
    if img.size != target:
        img = img.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return img, original


def image_size(image):
    """(W, H) of an image as a viewer shows it (EXIF rotation applied), from the file's header: no decoding."""
    if isinstance(image, Image.Image):
        return _displayed_size(image)
    with _open(image) as img:
        return _displayed_size(img)


def load_image_rgb(image):
    """An 8-bit RGB PIL image at the working size (see open_image), from a path or a PIL image of any mode."""
    return open_image(image)[0]


def inspect_image(path):
    """Check an image file before any model loads: {'size', 'working_size', 'warnings'}; ValueError if unusable.

    Refused: files PIL cannot open safely (not an image, truncated, a decompression bomb), images smaller than
    MIN_IMAGE_SIDE on a side and strips longer than MAX_ASPECT:1. Warned: fully transparent images (they read
    as plain white), images bigger than MAX_IMAGE_SIDE (read at that size), wide images (CLIP sees the centre).
    """
    img = _open(path)
    size = _displayed_size(img)
    w, h = size
    if min(w, h) < MIN_IMAGE_SIDE:
        raise ValueError(f"image {path} is {w} x {h} pixels: each side needs at least {MIN_IMAGE_SIDE} px for SAM2, "
                         "YOLO and CLIP to see anything")
    if max(w, h) / min(w, h) > MAX_ASPECT:
        raise ValueError(f"image {path} is {w} x {h} pixels, an aspect ratio of {max(w, h) / min(w, h):.0f}:1: CLIP "
                         f"sees only its centre square, under 1/{MAX_ASPECT:.0f} of it. Crop it to at most "
                         f"{MAX_ASPECT:.0f}:1 around the objects")
    # decode every pixel now, as the models will: a file cut short after a readable header (a third of a JPEG)
    # fails here, not after the models load (open_image says "truncated or damaged")
    open_image(path)
    notes = []
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        try:
            alpha = img.convert("RGBA").getchannel("A")
        except OSError as err:
            raise ValueError(f"cannot read image {path}: {err}; the file looks truncated or damaged") from err
        if alpha.getextrema()[1] == 0:
            notes.append(f"{path} is fully transparent (alpha 0 everywhere): it reads as a plain white image, so "
                         "SAM2, YOLO and CLIP see nothing. Export it without transparency")
    if working_size(size) != size:
        notes.append(f"{path} is {w} x {h} pixels: every model reads it at {working_size(size)[0]} x "
                     f"{working_size(size)[1]} (points stay in the file's pixels)")
    if max(w, h) / min(w, h) > 1.5:
        x0, y0, x1, y1 = clip_view_box(size)
        notes.append(f"{path} is not square: CLIP sees only its centre ({x0:g}-{x1:g} x {y0:g}-{y1:g} px); objects "
                     "outside that square do not reach the CLIP tokens")
    return {"size": size, "working_size": working_size(size), "warnings": notes}


def safe_name(text, limit=40):
    """A file-name component from user text: ASCII letters, digits, '-', '_' and single inner '.', never empty.

    The one sanitiser for every file or folder name built from user text (object names, RUN_NAME, manifest
    fields, image stems). Separators, '..', drive letters and control characters cannot survive, so a name
    can never leave the folder it is joined to; accents become their base letters ('Kätzchen' -> 'Katzchen');
    a name with nothing left ('猫') or longer than `limit` ends in a short hash of the original, so such
    names stay apart.
    """
    import hashlib
    import re
    import unicodedata
    text = str(text)
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_text)
    name = re.sub(r"[-.]*-[-.]*", "-", re.sub(r"\.{2,}", ".", name)).strip("-_.")   # no '..', no leading dot
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
    if not name:
        return f"x{digest}"
    if len(name) > limit:
        return f"{name[:max(1, limit - 9)].rstrip('-_')}-{digest}"
    return name


@contextlib.contextmanager
def new_file(path, mode="xb", **kwargs):
    """open(path, mode) for a file that must not exist yet, which appears under its name only when complete.

    Every result file goes through here. The data goes to a hidden '.<name>.part' next to it and is linked to
    `path` after the last byte is written, so a full disk, a crash or Ctrl-C mid-write leaves no truncated file
    under a name that looks finished (the part file is removed), and an existing file is never replaced
    (FileExistsError, as open(path, 'x') would raise). An OSError names the file it was writing.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(errno.EEXIST, "already exists and is never overwritten; choose a new name", str(path))
    part = path.with_name(f".{path.name}.part")
    try:
        with open(part, mode.replace("x", "w"), **kwargs) as f:   # a stale part of a killed run is ours
            yield f
        try:
            os.link(part, path)   # fails if `path` appeared meanwhile: never replaces a file
        except FileExistsError:
            raise
        except OSError:           # a file system without hard links (EPERM, ENOTSUP): check, then rename
            if path.exists():
                raise FileExistsError(errno.EEXIST, "already exists and is never overwritten", str(path)) from None
            os.replace(part, path)
    except OSError as err:
        if err.filename is None:   # a disk-full error from deep inside a writer: say which file it was
            err.filename = str(path)
        raise
    finally:
        part.unlink(missing_ok=True)


def clip_view_box(size):
    """(x0, y0, x1, y1) in an image's pixels of the centre square CLIP's resize + centre crop keeps."""
    w, h = size
    side = min(w, h)
    x0, y0 = (w - side) / 2, (h - side) / 2
    return x0, y0, x0 + side, y0 + side


# -----------------------------------------------------------------------------
# CLIP: one loader for the whole process

@functools.lru_cache(maxsize=None)
def _load_clip(device_str):
    import clip
    from model.checkpoints import checkpoint_path
    # The release is a TorchScript archive: it is only opened after its SHA-256 matched OpenAI's published
    # hash; openai-clip then rebuilds an eager model from its weights (fp16 on CUDA, fp32 on CPU).
    path = checkpoint_path("clip")
    print(f"Loading CLIP ViT-L/14 from {path} on {device_str}")
    model, preprocess = clip.load(str(path), device=device_str, jit=False)
    return model.eval(), preprocess


def verify_clip_file(path):
    """The CLIP release is OpenAI's TorchScript archive (model.checkpoints.verify has matched its SHA-256)."""
    import zipfile
    from model.checkpoints import CheckpointError
    if not zipfile.is_zipfile(path) or not any(n.endswith(("constants.pkl", "/code/__torch__.py"))
                                               for n in zipfile.ZipFile(path).namelist()):
        raise CheckpointError(f"CLIP checkpoint {path} is not a TorchScript archive (OpenAI ships ViT-L-14.pt as one)")
    return f"{path}: SHA-256 matches OpenAI's published hash (TorchScript archive)"


def load_clip(device=None):
    """(model, preprocess) for CLIP ViT-L/14, loaded once per process and device."""
    return _load_clip(str(get_device(device)))


def tiny_clip(seed=0, embed_dim=768):
    """(model, preprocess): openai-clip's CLIP class with random weights and tiny widths.

    Same code path and same interface as ViT-L/14 (224 px, patch 14, 257 tokens of width embed_dim), so it
    stands in for the real model in tests and smoke runs. Seeded: the same seed gives the same weights.
    """
    import clip
    from clip.model import CLIP
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(embed_dim=embed_dim, image_resolution=CLIP_RESOLUTION, vision_layers=2, vision_width=64,
                     vision_patch_size=14, context_length=77, vocab_size=49408, transformer_width=64,
                     transformer_heads=1, transformer_layers=1)
    return model.float().eval(), clip.clip._transform(CLIP_RESOLUTION)


def _clip_or_default(model, preprocess, device):
    if model is None:
        return load_clip(device)
    if preprocess is None:
        raise ValueError("pass the preprocess that belongs to the CLIP model you passed")
    return model, preprocess


@torch.no_grad()
def extract_full_clip_tokens(images, batch_size=64, device=None, model=None, preprocess=None):
    """All 257 tokens of CLIP's last layer for each image, projected and L2-normalised.

    images: paths or PIL images. Returns float32 [N, 257, 768] on the CPU: token 0 is the CLS token (equal to
    CLIP's own normalised encode_image output), tokens 1..256 the 16x16 patches in row-major order.
    """
    if isinstance(images, (str, Path, Image.Image)):
        images = [images]
    if len(images) == 0:
        raise ValueError("extract_full_clip_tokens got no images")
    model, preprocess = _clip_or_default(model, preprocess, device)
    visual = model.visual
    dtype, dev = visual.conv1.weight.dtype, visual.conv1.weight.device

    chunks = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack([preprocess(load_image_rgb(im)) for im in images[start:start + batch_size]])
        x = visual.conv1(batch.to(dev, dtype))                          # [B, width, 16, 16]
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)      # [B, 256, width]
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        x = visual.ln_pre(x)
        x = visual.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)    # openai-clip's blocks are sequence-first
        # encode_image stops at ln_post(x[:, 0]) @ proj; the plan needs every token in the same space
        x = visual.ln_post(x) @ visual.proj                              # [B, 257, 768]
        chunks.append(F.normalize(x.float(), dim=-1).cpu())
    return torch.cat(chunks)


def clip_image_embeddings(images, batch_size=64, device=None, model=None, preprocess=None):
    """CLIP image embeddings [N, 768], L2-normalised: SSV2A's global and per-crop embeddings."""
    return extract_full_clip_tokens(images, batch_size, device, model, preprocess)[:, 0]


# -----------------------------------------------------------------------------
# SAM2 masks -> CLIP patch grid

CLIP_PATCH = 14          # ViT-L/14 patch size in pixels
CLIP_GRID = CLIP_RESOLUTION // CLIP_PATCH   # 16 patches a side, 256 in all
COVERAGE_TOL = 1e-5     # float noise of the resampled coverage; far below one pixel's share of a patch (1/196)


def _mask_batch(mask):
    """float32 [B, H, W] from a numpy array or tensor [H, W] or [B, H, W] of any numeric/bool dtype."""
    if isinstance(mask, np.ndarray):
        m = torch.from_numpy(np.asarray(mask, dtype=np.float32))
    elif torch.is_tensor(mask):
        m = mask.detach().float()
    else:
        raise TypeError(f"mask must be a numpy array or a torch tensor, got {type(mask).__name__}")
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"mask must have shape [H, W] or [B, H, W], got {tuple(m.shape)}")
    if m.numel() == 0:
        raise ValueError(f"mask is empty (shape {tuple(m.shape)}); expected a SAM2 mask of the image's size")
    if not torch.isfinite(m).all():
        raise ValueError("mask contains NaN or Inf values")
    lo, hi = m.min().item(), m.max().item()
    if lo < 0 or hi > 1:
        # a 0/255 mask would otherwise count every partly covered patch as fully inside
        raise ValueError(f"mask values must lie in [0, 1], got min {lo:g} and max {hi:g}; "
                         "convert a 0/255 image mask with `mask > 127` first")
    return m


def downsample_mask_to_patch_weights(mask, patch_grid_size=CLIP_GRID, threshold=0.5):
    """Binary CLIP patch weights [B, patch_grid_size**2] float32, exactly as the research plan (step 3).

    The whole mask is resized to 224x224 (bilinear), so a non-square image is squashed; CLIP itself sees a
    centre crop instead. The pipeline uses mask_to_patch_weights, which follows CLIP's geometry; this one is
    kept for parity with the plan and earlier runs.
    mask: numpy array or tensor, [H, W] or [B, H, W], values in [0, 1] (bool and integer 0/1 masks work).
    """
    if CLIP_RESOLUTION % patch_grid_size != 0:
        raise ValueError(f"patch_grid_size={patch_grid_size} does not divide the {CLIP_RESOLUTION}-pixel CLIP input")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    m = _mask_batch(mask)
    m = F.interpolate(m[:, None], size=(CLIP_RESOLUTION, CLIP_RESOLUTION), mode="bilinear", align_corners=False)
    cell = CLIP_RESOLUTION // patch_grid_size
    coverage = F.avg_pool2d(m, kernel_size=cell, stride=cell).flatten(1)   # fraction of each patch in the mask
    return (coverage >= threshold).float()


def align_mask_to_clip_view(mask):
    """The mask as CLIP's preprocess sees its image: [B, 224, 224] float32 in [0, 1].

    CLIP resizes the SHORT side to 224 (bicubic, antialiased) and centre-crops 224x224, so on a non-square
    image the sides are cut off rather than squashed. The mask goes through the same torchvision ops, which
    keeps every mask pixel on the patch its image pixel lands on. Bicubic overshoots at the mask's edges;
    the clamp keeps values as coverage fractions.
    """
    m = _mask_batch(mask)
    m = TF.resize(m, CLIP_RESOLUTION, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    m = TF.center_crop(m, [CLIP_RESOLUTION, CLIP_RESOLUTION])
    return m.clamp(0.0, 1.0)


def mask_to_patch_weights(mask, threshold=0.5, fallback=True):
    """CLIP patch weights [B, 256] float32 for SAM2 masks, aligned with what CLIP sees. The pipeline's step 3.

    Each patch's coverage (fraction of its pixels inside the mask, after align_mask_to_clip_view) is
    binarised at `threshold` as in the plan. threshold=None returns the coverage itself.
    Small objects: when a mask is non-empty but covers no patch up to `threshold`, binarisation would leave
    an empty region and the SVD step could not run. With fallback=True the most-covered patch(es) keep their
    coverage (a soft weight <= threshold) and a warning says so; svd_manipulate_embeddings then selects them
    through its own fallback and reports it. fallback=False returns the plain binarisation.
    """
    if threshold is not None and not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1] or None, got {threshold}")
    m = _mask_batch(mask)
    view = align_mask_to_clip_view(m)
    coverage = F.avg_pool2d(view[:, None], kernel_size=CLIP_PATCH, stride=CLIP_PATCH).flatten(1)
    if threshold is None:
        return coverage
    # resampling leaves float noise: a patch exactly half covered must still pass a 0.5 threshold (the plan's >=)
    weights = (coverage >= threshold - COVERAGE_TOL).float()
    mask_area = m.flatten(1).sum(1)
    for b in range(weights.shape[0]):
        if weights[b].any() or mask_area[b] == 0:
            continue
        if coverage[b].max() == 0:
            warnings.warn(f"mask {b} is not empty but lies entirely outside the centre {CLIP_RESOLUTION}x"
                          f"{CLIP_RESOLUTION} crop that CLIP sees of a non-square image: CLIP has no patch of "
                          "this object", stacklevel=2)
        elif fallback:
            top = coverage[b] >= coverage[b].max() - 1e-6
            weights[b, top] = coverage[b, top]
            warnings.warn(f"mask {b} covers at most {coverage[b].max().item():.0%} of any CLIP patch (threshold "
                          f"{threshold}); keeping its {int(top.sum())} most-covered patch(es) with their coverage "
                          "as weight. A bigger object or a closer crop gives the SVD step more to work with",
                          stacklevel=2)
    return weights


def background_embedding(patches_1, m_neg, m_pos):
    """Mean of the edited image's patches outside both masks, L2-normalised: E_bg [768] (plan steps 4, 6).

    patches_1: [256, 768]; m_neg, m_pos: patch weights [256] (or [1, 256]). A patch is background when
    (1 - m_neg) * (1 - m_pos) > 0.5. When the masks leave no background patch, a warning is issued and a
    zero vector is returned: it adds nothing to mix_embeddings, whose weights then act on the other parts.
    """
    patches_1 = torch.as_tensor(patches_1)
    m_neg, m_pos = _patch_weight_vector(m_neg, "m_neg"), _patch_weight_vector(m_pos, "m_pos")
    if patches_1.ndim != 2 or patches_1.shape[0] != m_neg.shape[0] or m_neg.shape != m_pos.shape:
        raise ValueError(f"expected patches_1 [P, D] and patch weights [P], got {tuple(patches_1.shape)}, "
                         f"m_neg {tuple(m_neg.shape)}, m_pos {tuple(m_pos.shape)}")
    bg = ((1 - m_neg) * (1 - m_pos) > 0.5).to(patches_1.device)
    if not bg.any():
        warnings.warn("no background patch left: the masks cover every CLIP patch; E_bg is a zero vector and "
                      "adds nothing to the mix", stacklevel=2)
        return torch.zeros(patches_1.shape[1], dtype=patches_1.dtype, device=patches_1.device)
    emb_bg = patches_1[bg].float().mean(dim=0)
    return (emb_bg / emb_bg.norm()).to(patches_1.dtype)


def _patch_weight_vector(weights, name):
    w = torch.as_tensor(weights).detach().float()
    if w.ndim == 2 and w.shape[0] == 1:   # the [1, 256] a mask function returns for one mask
        w = w[0]
    if w.ndim != 1:
        raise ValueError(f"{name} must be patch weights [P] or [1, P], got shape {tuple(w.shape)}")
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"{name} must hold finite, non-negative patch weights")
    return w


# -----------------------------------------------------------------------------
# SVD manipulation of a region's tokens

SVD_MODES = ("suppress", "boost")


def svd_manipulate_embeddings(cls_token, patch_tokens, mask_weights, k=10, mode="suppress", alpha=0.1, beta=2.0,
                              return_info=False):
    """One embedding [768] for the masked region with its top-k singular values scaled (plan step 5, Task 1.2).

    X = [cls_token; patches with mask_weights > 0.5] is decomposed as U S V^T; S[:k] is scaled by alpha
    (mode='suppress') or beta (mode='boost'); the rebuilt rows are averaged with weights [1.0; their mask
    weights] and the result L2-normalised, returned in cls_token's dtype. With return_info=True, returns
    (embedding, info), info a plain dict for run.json (k_requested, k_effective, n_rows, n_patches, rank,
    no_op, fallback, ...).

    Traps handled: an empty region raises; a region too small for any patch to pass 0.5 falls back to its
    most-covered patch(es) with a warning; when k reaches the rank of X every singular value is scaled alike
    and the final normalisation undoes it, so the call changes nothing: a warning says so and info['no_op'].
    """
    if mode not in SVD_MODES:
        raise ValueError(f"mode must be one of {SVD_MODES}, got {mode!r}")
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    scale = float(alpha if mode == "suppress" else beta)
    if not np.isfinite(scale) or scale < 0:
        raise ValueError(f"{'alpha' if mode == 'suppress' else 'beta'} must be a finite number >= 0, got {scale}")
    cls_token, patch_tokens = torch.as_tensor(cls_token), torch.as_tensor(patch_tokens)
    if cls_token.ndim != 1 or patch_tokens.ndim != 2 or patch_tokens.shape[1] != cls_token.shape[0]:
        raise ValueError(f"expected cls_token [D] and patch_tokens [P, D], got {tuple(cls_token.shape)} and "
                         f"{tuple(patch_tokens.shape)}")
    w = _patch_weight_vector(mask_weights, "mask_weights").to(patch_tokens.device)
    if w.shape[0] != patch_tokens.shape[0]:
        raise ValueError(f"mask_weights has {w.shape[0]} entries but there are {patch_tokens.shape[0]} patch tokens")
    if not (torch.isfinite(cls_token).all() and torch.isfinite(patch_tokens).all()):
        raise ValueError("cls_token or patch_tokens contain NaN or Inf")

    selected = w > 0.5
    fallback = not selected.any()
    if fallback:
        if w.max() <= 0:
            raise ValueError("the mask selects no CLIP patch (all mask weights are 0): the SAM2 point probably "
                             "missed the object, or the object lies outside CLIP's centre crop. Check the point "
                             "with `python verify_masks.py --image <image> --x <x> --y <y>`")
        selected = w >= w.max() - 1e-6
        warnings.warn(f"no patch is more than half inside the mask (largest weight {w.max().item():.2f}); "
                      f"using the {int(selected.sum())} most-covered patch(es) instead", stacklevel=2)

    # float32: torch's SVD has no half-precision kernels, and fp16 tokens lose the small singular values
    dtype, device = cls_token.dtype, patch_tokens.device
    X = torch.cat([cls_token.to(device)[None], patch_tokens[selected]]).float()   # [1 + n, D]
    if device.type == "mps":   # no SVD kernel on MPS
        X = X.cpu()
    U, S, Vt = torch.linalg.svd(X, full_matrices=False)
    k_eff = min(k, S.shape[0])
    S_new = S.clone()
    S_new[:k_eff] = S[:k_eff] * scale
    X_new = U @ torch.diag(S_new) @ Vt

    weights = torch.cat([torch.ones(1, device=X.device), w[selected].to(X.device)])
    weights = weights / weights.sum()
    emb = (weights[:, None] * X_new).sum(dim=0)
    norm = emb.norm()
    if not torch.isfinite(norm) or norm < 1e-12:
        raise ValueError(f"the manipulated embedding has zero norm ({mode} with scale {scale} removed every "
                         f"component); use k < {S.shape[0]} or a non-zero {'alpha' if mode == 'suppress' else 'beta'}")
    emb = (emb / norm).to(device=device, dtype=dtype)

    # rank as torch.linalg.matrix_rank counts it: scaling every non-negligible singular value alike is a no-op
    rank = int((S > S[0] * max(X.shape) * torch.finfo(S.dtype).eps).sum())
    no_op = scale == 1.0 or k_eff >= rank
    if no_op and scale != 1.0:
        warnings.warn(f"k={k} reaches all {rank} non-zero singular values of the {X.shape[0]}x{X.shape[1]} "
                      f"matrix [CLS; {X.shape[0] - 1} patches]: all are scaled by {scale} and the L2 "
                      f"normalisation cancels it, so '{mode}' changes nothing. Use k < {rank} or a bigger mask",
                      stacklevel=2)
    if not return_info:
        return emb
    info = dict(mode=mode, scale=scale, k_requested=k, k_effective=k_eff, n_rows=X.shape[0],
                n_patches=X.shape[0] - 1, n_singular=S.shape[0], rank=rank, no_op=bool(no_op),
                fallback=bool(fallback), patch_indices=torch.nonzero(selected).flatten().tolist(),
                topk_energy=float((S[:k_eff] ** 2).sum() / (S ** 2).sum()))
    return emb, info


# -----------------------------------------------------------------------------
# mixing (plan steps 6-7)

def _mix(parts):
    """L2-normalised sum of weight * embedding; parts = [(embedding name, embedding, weight name, weight)]."""
    embs, weights = {}, {}
    for name, emb, weight_name, weight in parts:
        emb = torch.as_tensor(emb)
        if emb.ndim != 1:
            raise ValueError(f"{name} must be an embedding [D], got shape {tuple(emb.shape)}")
        if not torch.isfinite(emb).all():
            raise ValueError(f"{name} contains NaN or Inf; check the step that produced it")
        if not np.isfinite(float(weight)):
            raise ValueError(f"mixing weight {weight_name} must be a finite number, got {weight}")
        embs[name], weights[weight_name] = emb, float(weight)
    if len({e.shape for e in embs.values()}) != 1:
        raise ValueError("embeddings differ in shape: " + ", ".join(f"{n} {tuple(e.shape)}" for n, e in embs.items()))
    listed = ", ".join(f"{n}={w:g}" for n, w in weights.items())
    total = sum(weights.values())
    if abs(total - 1.0) >= 0.01:
        warnings.warn(f"mixing weights sum to {total:g}, not 1 ({listed}); the result is L2-normalised anyway",
                      stacklevel=3)
    first = next(iter(embs.values()))
    mixed = sum(w * e.to(first.device).float() for w, e in zip(weights.values(), embs.values()))
    norm = mixed.norm()
    if norm < 1e-6:
        raise ValueError(f"the mixed embedding has ~0 norm with weights {listed}; the weighted parts cancel or "
                         "are zero: give more weight to the non-zero ones")
    return (mixed / norm).to(first.dtype)


def mix_embeddings(normal, boost, suppress, bg, w_direct=0.4, w_boost=0.4, w_suppress=0.1, w_bg=0.1):
    """E_final [768] = MIX_DIRECT*normal + MIX_BETA*boost + MIX_ALPHA*suppress + MIX_GAMMA*bg, L2-normalised.

    normal is the plain CLIP embedding of the edited image. Warns when the weights do not sum to 1 (within
    0.01); raises ValueError when an input holds NaN/Inf or the mix cancels to ~0 norm.
    """
    return _mix([("normal", normal, "w_direct", w_direct), ("boost", boost, "w_boost", w_boost),
                 ("suppress", suppress, "w_suppress", w_suppress), ("bg", bg, "w_bg", w_bg)])


def combine_manipulated_embeddings(emb_suppress, emb_boost, emb_bg, alpha=0.2, beta=0.5, gamma=0.3):
    """The plan's three-way mix (Task 1.3): alpha*E_suppress + beta*E_boost + gamma*E_bg, L2-normalised [768]."""
    return _mix([("emb_suppress", emb_suppress, "alpha", alpha), ("emb_boost", emb_boost, "beta", beta),
                 ("emb_bg", emb_bg, "gamma", gamma)])
