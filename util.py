"""CLIP token extraction, SAM2-mask-to-patch alignment, SVD manipulation and embedding mixing.

Shapes follow the research plan (ViT-L/14 at 224 px): tokens [N, 257, 768] = 1 CLS + 16x16 patches,
patch weights [B, 256], every embedding [768] and L2-normalised.
"""
import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

CLIP_RESOLUTION = 224   # ViT-L/14 input size; 224 / 14 = 16 patches a side


# -----------------------------------------------------------------------------
# devices and images

def get_device(requested=None):
    """torch.device to run on: the requested one, else cuda -> mps -> cpu."""
    if requested is not None:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {requested!r} was asked for but CUDA is not available on this machine; "
                               "use device='cpu' (slow) or run on a machine with an NVIDIA GPU")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def load_image_rgb(image):
    """An 8-bit RGB PIL image from a path or a PIL image of any mode.

    Every model in the project (SAM2, CLIP, YOLO) and every figure reads images through this function, so
    a mask drawn on one lines up with the tokens of another: EXIF rotation is applied (what a photo viewer
    shows), transparency is composited on white, 16-bit and palette images become 8-bit RGB.
    """
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path} (check the path, relative to {Path.cwd()})")
        try:
            img = Image.open(path)
            img.load()
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"cannot read image {path}: {err}; use a JPEG or PNG file") from err
    elif isinstance(image, Image.Image):
        img = image
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
    return img.convert("RGB")


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
