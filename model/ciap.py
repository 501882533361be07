"""CIAP, the lab's own image-to-CLAP encoder: an image in, a unit vector in CLAP's 512-d audio space out.

Trained contrastively on paired images and audio (train_ciap.py): the embedding of an image should lie nearest
to the CLAP audio embedding of the audio paired with it, among the other audios of its batch (symmetric InfoNCE
with a learned temperature, in-batch negatives, as CLIP and CLAP are trained). It is a second road from an image
embedding to AudioLDM next to SSV2A's remixer.

Image encoders (ENCODERS), each a projection head on the features of a frozen backbone:
  'clip-head'  CLIP ViT-L/14 image embeddings [N, 768] (util.clip_image_embeddings). The method's E_final is such an
               embedding, so this is the encoder the SVD edit can go through (load_ciap).
  'resnet18'   torchvision's ResNet18 with its ImageNet weights (the related project's backbone; registry entry
               'resnet18'), its 512-d pooled features. It reads pixels, so E_final cannot go through it: it is a
               retrieval baseline for the same pairs.
Targets (TARGETS):
  'clap'       the frozen CLAP audio encoder's embeddings: the space AudioLDM is conditioned in.
  'scratch'    an audio encoder trained from scratch next to the image encoder (the related project's way), on
               log-mel statistics. Its space is its own, which AudioLDM never saw: load_ciap refuses it as a back
               end; it is there to compare retrieval, nothing more.

    ciap = load_ciap("outputs/<run>/ciap.safetensors", "cuda")   # a module: [N, 768] CLIP -> [N, 512], unit norm
    claps = ciap(e_final[None])                                  # ciap.info: encoder, CLIP and CLAP it was trained with
    audio, claps = clips_to_audio(clips, ciap, aldm, seed=[42, 42])   # main.py's back end (CIAP_CHECKPOINT)

Checkpoints are safetensors files (weights only, nothing in them can run code). The tensors are the model's
state dict ('image_head.*', 'audio_head.*', 'logit_scale'); a training checkpoint adds the optimizer's state
('optimizer.*') and the batch-order generator ('rng.*'), which load_ciap ignores. The metadata (JSON strings)
says what the weights mean: encoder, target, widths, the image and audio models whose features they were
trained on, the epoch, the training settings and the curves so far.
"""
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from model.checkpoints import CheckpointError, checkpoint_path, load_torch_file, state_dict_problems

CLIP_DIM = 768           # CLIP ViT-L/14's embedding width (E_final's)
CLAP_DIM = 512           # CLAP's joint embedding width (scorers.CLAP_DIM): what AudioLDM is conditioned on
RESNET_DIM = 512         # ResNet18's pooled feature width (its fc layer's input)
MEL_BANDS = 64           # the scratch audio encoder's input: mean and std of 64 log-mel bands
SCRATCH_AUDIO_DIM = 2 * MEL_BANDS
SCRATCH_SAMPLE_RATE = 16000
ENCODERS = ("clip-head", "resnet18")
TARGETS = ("clap", "scratch")
IMAGE_DIMS = {"clip-head": CLIP_DIM, "resnet18": RESNET_DIM}
FORMAT = "ciap/1"
MAX_LOGIT_SCALE = 100.0  # CLIP's cap on exp(logit_scale): a temperature below 0.01 only sharpens noise
REAL_CLIP_NAME = "openai-clip ViT-L/14 (ViT-L-14.pt)"
REAL_RESNET_NAME = "torchvision ResNet18 ImageNet (resnet18-f37072fd.pth)"
RECALL_AT = (1, 5, 10)
TRAINING_PREFIXES = ("optimizer.", "rng.")   # entries of a training checkpoint that are not the model


def tiny_clip_name(seed=0):
    return f"tiny random CLIP (seed {seed})"


def tiny_resnet_name(seed=0):
    return f"tiny random ResNet18 (seed {seed})"


# -----------------------------------------------------------------------------
# the model and its loss


class ProjectionHead(nn.Module):
    """Frozen features [N, in_dim] -> unit vectors [N, out_dim]: LayerNorm, Linear, GELU, Linear, L2 norm.

    The LayerNorm puts CLIP's unit-norm embeddings (entries ~0.04) and ResNet's pooled activations (~1) on one
    scale, so one learning rate suits both encoders.
    """

    def __init__(self, in_dim, hidden_dim, out_dim=CLAP_DIM):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x):
        return F.normalize(self.fc2(F.gelu(self.fc1(self.norm(x)))), dim=-1)


class CIAP(nn.Module):
    """The trainable part of CIAP: the image head, the audio head ('scratch' target only) and the temperature.

    forward(image features, audio features) -> (image embeddings, audio embeddings, logit scale), all that the
    loss needs, in one call (DistributedDataParallel synchronises the gradients of what forward touches).
    With the 'clap' target the audio features are CLAP embeddings already, and only normalised.
    """

    def __init__(self, encoder="clip-head", target="clap", hidden_dim=1024, temperature=0.07):
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        self.encoder, self.target = encoder, target
        self.image_head = ProjectionHead(IMAGE_DIMS[encoder], hidden_dim)
        self.audio_head = ProjectionHead(SCRATCH_AUDIO_DIM, hidden_dim) if target == "scratch" else None
        # CLIP's initialisation: logits = exp(logit_scale) * cosine, starting at temperature 0.07
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def embed_audio(self, audio_features):
        if self.audio_head is None:
            return F.normalize(audio_features, dim=-1)
        return self.audio_head(audio_features)

    def scale(self):
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, image_features, audio_features):
        return self.image_head(image_features), self.embed_audio(audio_features), self.scale()


def info_nce(image_emb, audio_emb, logit_scale):
    """Symmetric InfoNCE with in-batch negatives: pair i's image should pick audio i among the batch's audios, and
    audio i image i; the mean of the two cross-entropies (CLIP's loss). Rows must be unit vectors."""
    logits = logit_scale * image_emb @ audio_emb.T
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


# -----------------------------------------------------------------------------
# retrieval: the evaluation


def retrieval_ranks(queries, keys):
    """Rank of key i among all keys for query i (1 = best), by cosine similarity of unit rows.

    Tied keys share the mean of the ranks they span: a model that maps everything to one vector ranks every key
    (n + 1) / 2, chance's median, and never scores a hit by a tie.
    """
    sim = queries.double() @ keys.double().T
    true = sim.diagonal()[:, None]
    higher = (sim > true).sum(1).double()
    tied = (sim == true).sum(1).double() - 1
    return 1 + higher + tied / 2


def retrieval_metrics(image_emb, audio_emb, ks=RECALL_AT):
    """Retrieval both ways over paired rows: recall at k, median and mean rank, each with its chance level.

    {'pairs': n, 'image_to_audio': {'R@1': ..., 'median_rank': ..., 'mean_rank': ...}, 'audio_to_image': {...},
     'chance': {'R@1': min(1, n) / n, ..., 'median_rank': (n + 1) / 2, 'mean_rank': (n + 1) / 2}}
    Chance is a retriever that ranks the n candidates at random: P(rank <= k) = k / n.
    """
    n = len(image_emb)
    if n < 2 or len(audio_emb) != n:
        raise ValueError(f"retrieval needs n >= 2 paired rows, got {n} images and {len(audio_emb)} audios")
    out = {"pairs": n}
    for name, queries, keys in (("image_to_audio", image_emb, audio_emb), ("audio_to_image", audio_emb, image_emb)):
        ranks = retrieval_ranks(queries, keys).cpu().numpy()
        out[name] = {**{f"R@{k}": float((ranks <= k).mean()) for k in ks},
                     "median_rank": float(np.median(ranks)), "mean_rank": float(ranks.mean())}
    out["chance"] = {**{f"R@{k}": min(k, n) / n for k in ks}, "median_rank": (n + 1) / 2, "mean_rank": (n + 1) / 2}
    return out


def format_retrieval(metrics, ks=RECALL_AT):
    """Two lines, each figure with chance beside it in brackets."""
    chance = metrics["chance"]
    lines = [f"Retrieval on {metrics['pairs']} validation pairs (chance in brackets):"]
    for name, label in (("image_to_audio", "image -> audio"), ("audio_to_image", "audio -> image")):
        m = metrics[name]
        figures = "  ".join(f"R@{k} {m[f'R@{k}']:.3f} [{chance[f'R@{k}']:.3f}]" for k in ks)
        lines.append(f"  {label}: {figures}  median rank {m['median_rank']:g} [{chance['median_rank']:g}]")
    return "\n".join(lines)


# -----------------------------------------------------------------------------
# ResNet18: the related project's image backbone, frozen, its ImageNet weights through the registry


def build_resnet18():
    """torchvision's ResNet18 (the architecture of resnet18-f37072fd.pth) with random weights."""
    from torchvision.models import resnet18
    return resnet18(weights=None).eval()


def tiny_resnet18(seed=0):
    """A random-weight twin for tests and smoke runs: torchvision's ResNet class with one BasicBlock per stage
    instead of two, so the same code path, input (3 x 224 x 224) and 512-d pooled feature, a third of the work."""
    from torchvision.models.resnet import BasicBlock, ResNet
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ResNet(BasicBlock, [1, 1, 1, 1]).eval()


def check_resnet18_state(model, state, path):
    problems = state_dict_problems(model.state_dict(), state) if isinstance(state, dict) else [
        f"it holds a {type(state).__name__}, not a state dict"]
    if problems:
        raise CheckpointError(f"{path} does not fit torchvision's ResNet18: " + "; ".join(problems) + ".\n"
                              "  Use torchvision's resnet18-f37072fd.pth: python -m model.checkpoints resnet18")


def verify_resnet18_file(path):
    """Check the ImageNet ResNet18 file's keys and shapes against torchvision's ResNet18 (read weights-only)."""
    state = load_torch_file(path, "resnet18", what="ResNet18 checkpoint", mmap=True)
    model = build_resnet18()
    check_resnet18_state(model, state, path)
    return f"{path}: {len(state)} tensors fit torchvision's ResNet18"


def load_resnet18(device="cpu"):
    """torchvision's ResNet18 with its ImageNet weights (registry entry 'resnet18'), strictly, in eval mode."""
    path = checkpoint_path("resnet18")
    state = load_torch_file(path, "resnet18", what="ResNet18 checkpoint")
    model = build_resnet18()
    check_resnet18_state(model, state, path)
    model.load_state_dict(state)
    return model.to(device).eval()


class ResNetFeatures(nn.Module):
    """A ResNet without its classifier: images [N, 3, 224, 224] (ImageNet-normalised) -> pooled features [N, 512]."""

    def __init__(self, resnet):
        super().__init__()
        resnet.fc = nn.Identity()
        self.resnet = resnet.eval()

    def forward(self, x):
        return self.resnet(x)


def resnet_preprocess():
    """torchvision's evaluation transform of its ImageNet weights: resize 256, centre crop 224, ImageNet mean/std."""
    from torchvision.models import ResNet18_Weights
    return ResNet18_Weights.IMAGENET1K_V1.transforms()


# -----------------------------------------------------------------------------
# the scratch target's audio input: what a small audio encoder trained from scratch can read


def mel_statistics(wave, sample_rate):
    """float32 [128]: the mean and standard deviation over time of each of 64 log-mel bands (dB / 100) of a mono
    wave resampled to 16 kHz. A summary an MLP can read without learning time invariance."""
    from audio_io import resample
    from evaluation import analysis_log_mel
    wave = resample(np.asarray(wave, dtype=np.float64), int(sample_rate), SCRATCH_SAMPLE_RATE)
    mel = analysis_log_mel(wave, SCRATCH_SAMPLE_RATE, n_mels=MEL_BANDS) / 100.0   # dB: ~[-100, 0] -> ~[-1, 0]
    return torch.from_numpy(np.concatenate([mel.mean(axis=1), mel.std(axis=1)]).astype(np.float32))


# -----------------------------------------------------------------------------
# checkpoints: safetensors with the metadata that says what the weights mean


def save_ciap(path, model, meta, extra=None):
    """Write model's state dict (+ extra tensors) and meta (JSON-able values) to a new safetensors file.

    The file appears complete or not at all, and never replaces an existing one (util.new_file).
    """
    from safetensors.torch import save

    from util import new_file
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({k: v.detach().cpu().contiguous() for k, v in (extra or {}).items()})
    metadata = {"format": FORMAT, **{k: json.dumps(v) for k, v in meta.items() if k != "format"}}
    with new_file(path) as f:
        f.write(save(tensors, metadata))
    return Path(path)


def read_ciap(path, training_state=False):
    """(tensors, metadata) of a CIAP safetensors file; CheckpointError saying what is wrong.

    training_state=False leaves out the optimizer and generator entries (the model's tensors only).
    """
    from safetensors import SafetensorError, safe_open
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"CIAP checkpoint not found: {path}. Train one with python train_ciap.py --pairs "
                              "pairs.csv; its run folder holds ciap.safetensors")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            keys = [k for k in f.keys() if training_state or not k.startswith(TRAINING_PREFIXES)]
            tensors = {k: f.get_tensor(k) for k in keys}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"CIAP checkpoint {path} is not a readable safetensors file ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200] if str(err) else ''}): truncated, damaged or not a "
                              "checkpoint at all") from err
    if raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a CIAP checkpoint (its metadata says format "
                              f"{raw.get('format')!r}, expected {FORMAT!r}): train_ciap.py writes them")
    try:
        meta = {k: (json.loads(v) if k != "format" else v) for k, v in raw.items()}
    except ValueError as err:
        raise CheckpointError(f"CIAP checkpoint {path} has damaged metadata ({err})") from err
    missing = [k for k in ("encoder", "target", "hidden_dim", "image_dim", "embed_dim", "image_model", "audio_model")
               if k not in meta]
    if missing:
        raise CheckpointError(f"CIAP checkpoint {path} lacks metadata {', '.join(missing)}: not written by train_ciap.py")
    return tensors, meta


def model_from_checkpoint(tensors, meta, path="checkpoint"):
    """The CIAP module the metadata describes, with the tensors loaded strictly."""
    if meta["encoder"] not in ENCODERS or meta["target"] not in TARGETS:
        raise CheckpointError(f"{path}: encoder {meta['encoder']!r} / target {meta['target']!r} is not one of "
                              f"{ENCODERS} / {TARGETS}")
    if meta["image_dim"] != IMAGE_DIMS[meta["encoder"]] or meta["embed_dim"] != CLAP_DIM:
        raise CheckpointError(f"{path}: a {meta['encoder']} checkpoint maps {IMAGE_DIMS[meta['encoder']]}-d features "
                              f"to {CLAP_DIM}-d, but its metadata says {meta['image_dim']} -> {meta['embed_dim']}")
    model = CIAP(meta["encoder"], meta["target"], int(meta["hidden_dim"]))
    model_state = {k: v for k, v in tensors.items() if not k.startswith(TRAINING_PREFIXES)}
    problems = state_dict_problems(model.state_dict(), model_state)
    if problems:
        raise CheckpointError(f"{path} does not fit the CIAP model its metadata describes ({meta['encoder']}, "
                              f"target {meta['target']}, hidden {meta['hidden_dim']}): " + "; ".join(problems))
    model.load_state_dict(model_state)
    return model.eval()


class ClipToClap(nn.Module):
    """A trained CIAP head as a back end: CLIP ViT-L/14 embeddings [N, 768] (or [768]) -> [N, 512] unit vectors in
    the CLAP space it was trained against. `info` holds the checkpoint's metadata."""

    def __init__(self, head, info):
        super().__init__()
        self.head, self.info = head, info

    def forward(self, clip_embeddings):
        x = torch.as_tensor(clip_embeddings)
        x = x[None] if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[1] != CLIP_DIM:
            raise ValueError(f"CIAP takes CLIP ViT-L/14 embeddings [N, {CLIP_DIM}], got shape {tuple(x.shape)}")
        weight = self.head.fc1.weight
        return self.head(x.to(weight.device, weight.dtype)).float()


class ImagesToClap(nn.Module):
    """A trained ResNet18 CIAP: ImageNet-normalised images [N, 3, 224, 224] -> [N, 512] unit vectors."""

    def __init__(self, backbone, head, info):
        super().__init__()
        self.backbone, self.head, self.info = ResNetFeatures(backbone), head, info

    def forward(self, images):
        return self.head(self.backbone(images)).float()


def check_ciap_meta(meta, path, encoder="clip-head", clip_model=None, clap_model=None):
    """CheckpointError unless a checkpoint's metadata fits the use: its encoder kind, for the back end its target
    space (CLAP's), and when given, the CLIP and CLAP the caller uses. What load_ciap checks before building."""
    kind = meta["encoder"]
    if encoder is not None and kind != encoder:
        if encoder == "clip-head" and kind == "resnet18":
            raise CheckpointError(
                f"{path} is a ResNet18 CIAP checkpoint: it reads pixels through ResNet18, not CLIP embeddings. E_final "
                f"is a CLIP ViT-L/14 embedding, so the audio back end needs a checkpoint trained with "
                f"ENCODER='clip-head' (python train_ciap.py --pairs pairs.csv --ENCODER=clip-head)")
        raise CheckpointError(f"{path} is a {kind} CIAP checkpoint; a {encoder} one is needed here")
    if encoder == "clip-head" and meta["target"] != "clap":
        raise CheckpointError(
            f"{path} was trained against its own audio encoder, trained from scratch (TARGET={meta['target']!r}): its "
            f"512-d space is not CLAP's, and AudioLDM, which was trained on CLAP's space, has never seen it. It can "
            f"rank audio for images, not condition AudioLDM. Train with TARGET='clap' for the back end")
    for name, wanted, recorded in (("CLIP", clip_model, meta["image_model"]), ("CLAP", clap_model, meta["audio_model"])):
        if wanted is not None and wanted != recorded:
            raise CheckpointError(f"{path} was trained on the features of {name} {recorded!r}, but {wanted!r} is "
                                  f"used here: its weights fit only the model it was trained with (a smoke "
                                  f"checkpoint fits only the tiny random models). Train it again with this {name}")


def check_ciap_file(path, encoder="clip-head", clip_model=None, clap_model=None):
    """The metadata of a CIAP checkpoint that load_ciap would accept (its tensors checked against the model its
    metadata describes, on the CPU); CheckpointError otherwise. The input checks call it before any model loads."""
    tensors, meta = read_ciap(path)
    check_ciap_meta(meta, path, encoder, clip_model, clap_model)
    model_from_checkpoint(tensors, meta, path)
    return meta


def load_ciap(path, device=None, encoder="clip-head", clip_model=None, clap_model=None, backbone=None):
    """A trained CIAP checkpoint as a module in eval mode, its metadata checked first; CheckpointError otherwise.

    encoder='clip-head' (the back end): a ClipToClap, [N, 768] CLIP embeddings -> [N, 512] CLAP-space unit
    vectors. A ResNet18 checkpoint, or one whose audio space was trained from scratch, is refused with the reason.
    encoder='resnet18': an ImagesToClap around `backbone` (default: the registry's ImageNet ResNet18).
    encoder=None: whichever the file holds. clip_model / clap_model: when given, the names of the CLIP and CLAP the
    caller uses (model.ciap.REAL_CLIP_NAME, a ClapScorer's name; loader.run_model_names gives main.py's); a checkpoint
    trained against others is refused, because its weights fit only the features of the models it was trained on.
    The module's `checkpoint_file` is the file's path, size and SHA-256 (what a run records).
    """
    from model.checkpoints import file_identity
    from util import get_device
    tensors, meta = read_ciap(path)
    kind = meta["encoder"]
    check_ciap_meta(meta, path, encoder, clip_model, clap_model)
    model = model_from_checkpoint(tensors, meta, path)
    device = get_device(device)
    info = {k: v for k, v in meta.items() if k not in ("config", "history", "optimizer_groups")}
    if kind == "clip-head":
        module = ClipToClap(model.image_head, info).to(device).eval()
    else:
        if backbone is None:
            if meta["image_model"] != REAL_RESNET_NAME:
                raise CheckpointError(f"{path} was trained on {meta['image_model']!r}, not the ImageNet ResNet18: "
                                      f"pass that backbone (backbone=...)")
            backbone = load_resnet18(device)
        module = ImagesToClap(backbone, model.image_head, info).to(device).eval()
    module.checkpoint_file = file_identity(path)
    return module


@torch.no_grad()
def clips_to_audio(clips, head, aldm, duration=10.0, steps=200, guidance=2.5, seed=42, sampler="ddim"):
    """The CIAP back end: CLIP embeddings [B, 768] -> (audio float32 numpy [B, duration * 16000], CLAP-space
    embeddings [B, 512] on the CPU). The trained head maps each row; AudioLDM then runs once for the batch through
    the call SSV2A's remix CLAPs take (model.aldm.emb_to_audio), each row's noise from its own seed alone."""
    from model.aldm import emb_to_audio
    claps = head(clips).float().cpu()
    audio = emb_to_audio(aldm, claps, duration=duration, steps=steps, guidance=guidance, seed=seed, sampler=sampler)
    return audio, claps


def describe(meta):
    """One line naming what a checkpoint is, for printouts."""
    return (f"CIAP {meta['encoder']} -> {meta['target']} space, hidden {meta['hidden_dim']}, epoch "
            f"{meta.get('epoch', '?')}; image features: {meta['image_model']}; audio: {meta['audio_model']}")

