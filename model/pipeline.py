"""SSV2A as one object: built from ssv2a.json, loaded strictly from ssv2a.pth, and its inference helpers.

    model = load_ssv2a()                          # ssv2a.json + checkpoints/ssv2a.pth, cached per process
    claps = model.clips_to_claps(crop_clips)      # [N, 768] CLIP -> [N, 512] CLAP (fold, then generate)
    clap = slots_to_clap(slots, model=model)      # remix slots [B, 64, 768] -> cycle-mixed CLAP [B, 512]

Randomness: every sampling function takes `generator`, a torch.Generator (normally on the CPU). With
generator=None the noise comes from torch's global CPU RNG, so torch.manual_seed(seed) controls it. Noise is
always drawn on the generator's device and then moved to the model's, so one seed gives the same noise on
the CPU and on a GPU. The networks are deterministic in eval mode (the only mode used here).

Checkpoint format (the official one): torch.save({'timestamp': str, 'manifold_state': ...,
'generator_state': ..., 'remixer_state': ...}); each state dict is loaded strictly. Other top-level entries
(an optimizer, an epoch, numpy scalars of a training run) are read weights-only, ignored and named.
"""
import copy
import functools
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from model.checkpoints import (CheckpointError, _first, checkpoint_path, file_identity, load_torch_file,
                               state_dict_problems)
from model.networks import build_networks, l2_normalize, mean_of_draws

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = ROOT / "ssv2a.json"
STATE_KEYS = ("manifold_state", "generator_state", "remixer_state")

# SSV2A's inference defaults (the authors' infer_i2a.py): 64 cycle-mix rounds, 64 remixes a round, and every
# Gaussian averaged over 64 draws
CYCLE_ITS, CYCLE_SAMPLES, VAR_SAMPLES = 64, 64, 64


class CheckpointMismatchError(CheckpointError, ValueError):
    """The checkpoint's state dicts do not fit the networks the config describes."""


def read_config(config):
    """(config dict, where it came from) from a dict or a path to a JSON file like ssv2a.json."""
    if isinstance(config, dict):
        return copy.deepcopy(config), "<config dict>"
    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"SSV2A config not found: {path} (the released config is {DEFAULT_CONFIG_PATH})")
    try:
        return json.loads(path.read_text()), str(path)
    except json.JSONDecodeError as err:
        raise ValueError(f"SSV2A config {path} is not valid JSON: {err}") from err


# -----------------------------------------------------------------------------
# the model


class SSV2A(nn.Module):
    """Manifold + Generator + Remixer of one SSV2A config; always in eval mode unless you train it."""

    def __init__(self, config, config_source="<config dict>"):
        super().__init__()
        self.config = copy.deepcopy(config)
        self.config_source = str(config_source)
        self.clip_dim = int(config["clip_dim"])
        self.clap_dim = int(config["clap_dim"])
        self.manifold_dim = int(config["manifold_dim"])
        self.slot = int(config["remixer"]["slot"])
        self.manifold, self.generator, self.remixer = build_networks(config)
        self.timestamp = ""
        self.ignored_entries = []   # top-level checkpoint entries load_checkpoint did not use
        self.checkpoint_file = None  # {'path', 'bytes', 'sha256'} of the file load_checkpoint read (run.json)
        self.eval()

    @classmethod
    def from_config(cls, config):
        """Random-weight model from a config dict or the path of a JSON config (ssv2a.json)."""
        config, source = read_config(config)
        return cls(config, source)

    @property
    def device(self):
        return self.manifold.logit_scale.device

    # -------------------------------------------------------------------------
    # checkpoint in the official format

    def checkpoint_state(self, timestamp=""):
        return {"timestamp": timestamp or self.timestamp,
                "manifold_state": self.manifold.state_dict(),
                "generator_state": self.generator.state_dict(),
                "remixer_state": self.remixer.state_dict()}

    def save_checkpoint(self, path, timestamp=""):
        torch.save(self.checkpoint_state(timestamp), path)

    def load_checkpoint(self, path):
        """Load an official-format checkpoint file strictly; see CheckpointMismatchError.

        Top-level entries other than timestamp and the three state dicts are ignored; their names are kept in
        self.ignored_entries and printed. The file's path, size and SHA-256 are kept in self.checkpoint_file.
        """
        path = Path(path)
        state = _read_checkpoint_file(path)
        self.check_states(state, path)
        for name, module in self._modules_by_state().items():
            module.load_state_dict(state[name], strict=True)
        self.timestamp = str(state.get("timestamp", ""))
        self.checkpoint_file = file_identity(path)
        self.ignored_entries = sorted(str(k) for k in state if k not in (*STATE_KEYS, "timestamp"))
        if self.ignored_entries:
            print(f"  {path.name}: ignored top-level entries {_first(self.ignored_entries)} (not used for inference)")
        return self

    def _modules_by_state(self):
        return dict(zip(STATE_KEYS, (self.manifold, self.generator, self.remixer)))

    def check_states(self, state, path):
        """CheckpointMismatchError naming the keys when the checkpoint's state dicts do not fit these networks."""
        problems = []
        for name, module in self._modules_by_state().items():
            problems += [f"{name}: {p}" for p in state_dict_problems(module.state_dict(), state[name])]
        if problems:
            raise CheckpointMismatchError(
                f"SSV2A checkpoint {path} and config {self.config_source} disagree "
                f"(networks built from the config, checkpoint loaded strictly):\n  " + "\n  ".join(problems)
                + "\n  Use the config released with this checkpoint (or the checkpoint trained with this config).")

    # -------------------------------------------------------------------------
    # inference helpers (the original's fold_clips, fold_claps, fold2claps, remixer.sample)

    def _as_input(self, x, width, what):
        x = torch.as_tensor(x)
        if x.ndim == 0 or x.shape[-1] != width:
            raise ValueError(f"{what} must be [..., {width}], got shape {tuple(x.shape)}")
        return x.to(self.device, torch.float32)

    @torch.no_grad()
    def fold_clips(self, clips, var_samples=VAR_SAMPLES, generator=None, mean_only=False):
        """CLIP embeddings [..., clip_dim] -> manifold codes [..., manifold_dim] (mean of var_samples draws).

        Not normalised (as the original). mean_only: the Gaussian's mean instead of a draw.
        """
        mu, log_sigma = self.manifold.clip_encoder(self._as_input(clips, self.clip_dim, "clips"))
        return mu if mean_only else mean_of_draws(mu, log_sigma, var_samples, generator)

    @torch.no_grad()
    def fold_claps(self, claps, var_samples=VAR_SAMPLES, generator=None, mean_only=False):
        """CLAP embeddings [..., clap_dim] -> manifold codes [..., manifold_dim]; see fold_clips."""
        mu, log_sigma = self.manifold.clap_encoder(self._as_input(claps, self.clap_dim, "claps"))
        return mu if mean_only else mean_of_draws(mu, log_sigma, var_samples, generator)

    @torch.no_grad()
    def generate_claps(self, folds, var_samples=VAR_SAMPLES, generator=None, mean_only=False):
        """Manifold codes [..., manifold_dim] -> L2-normalised CLAPs [..., clap_dim] (the original's fold2claps)."""
        mu, log_sigma = self.generator(self._as_input(folds, self.manifold_dim, "folds"))
        return l2_normalize(mu if mean_only else mean_of_draws(mu, log_sigma, var_samples, generator))

    @torch.no_grad()
    def clips_to_claps(self, clips, var_samples=VAR_SAMPLES, generator=None, mean_only=False):
        """CLIP embeddings [..., clip_dim] -> L2-normalised CLAPs [..., clap_dim]: fold, then generate."""
        folds = self.fold_clips(clips, var_samples, generator, mean_only)
        return self.generate_claps(folds, var_samples, generator, mean_only)

    @torch.no_grad()
    def remix_sample(self, src, src_clips, var_samples=VAR_SAMPLES, generator=None, shuffle=False, mean_only=False):
        """One remix per image: src [B, slot, manifold_dim] + src_clips [B, slot, clip_dim] -> CLAP [B, clap_dim].

        L2-normalised. shuffle permutes the slots first, as the original does; in eval mode that changes
        nothing but rounding (the styler has no positional embedding and its attention sums over tokens).
        """
        src = self._as_input(src, self.manifold_dim, "src")
        src_clips = self._as_input(src_clips, self.clip_dim, "src_clips")
        if shuffle:
            order = torch.randperm(src.shape[1], generator=generator, device=generator.device if generator
                                   is not None else "cpu").to(self.device)
            src, src_clips = src[:, order], src_clips[:, order]
        mu, log_sigma = self.remixer.styler(src, src_clips)
        return l2_normalize(mu if mean_only else mean_of_draws(mu, log_sigma, var_samples, generator))

    def _slots(self, slots):
        slots = torch.as_tensor(slots)
        if slots.ndim != 3 or slots.shape[1:] != (self.slot, self.clip_dim) or slots.shape[0] == 0:
            raise ValueError(f"remix slots must be [B, {self.slot}, {self.clip_dim}] (slot 0 = global embedding, "
                             f"then object crops, zero padding), got shape {tuple(slots.shape)}")
        return slots.to(self.device, torch.float32)

    @torch.no_grad()
    def remix_slots(self, slots, var_samples=VAR_SAMPLES, generator=None, mean_only=False):
        """One remix of remix slots [B, slot, clip_dim] (no cycle mix): fold every slot, remix, L2-normalise."""
        slots = self._slots(slots)
        src = self.fold_clips(slots, var_samples, generator, mean_only)
        return self.remix_sample(src, slots, var_samples, generator, mean_only=mean_only)

    # -------------------------------------------------------------------------
    # cycle mix

    @torch.no_grad()
    def cycle_mix(self, slots, its=CYCLE_ITS, samples=CYCLE_SAMPLES, var_samples=VAR_SAMPLES, generator=None,
                  pin_global=False):
        """SSV2A's cycle mix: the remix of each image's slots whose CLAP agrees most evenly with its sources.

        slots: [B, slot, clip_dim], slot 0 the global CLIP embedding, then the object crops, zeros after.
        Returns L2-normalised CLAPs [B, clap_dim] on the model's device.

        The original's algorithm, its + 1 rounds: every slot (zero padding too) is folded once; each round
        draws per-slot source CLAPs from the generator with slot 0's zeroed, from round 1 on replaces slot
        0's code by the fold of the best remix so far, draws `samples` remixes, scores each by the std over
        all slots of its cosine to the source CLAPs, and keeps the lowest score if it beats the best so far.
        Computed faster but with the same distribution of outputs:
        - in eval mode every network is deterministic, so the generator runs once (slots 1.. never change
          and slot 0's CLAP is zeroed) and the styler once a round: its `samples` calls in the original
          differ only in their noise (its slot shuffle changes nothing: no positional embedding, attention
          summed over tokens), so all `samples` remixes are one batched draw;
        - a mean of var_samples draws is drawn once with the std / sqrt(var_samples) (networks.mean_of_draws);
        - the clap encoder reruns only after the best remix changed.
        One deliberate difference: the original starts from a best score of 1 and an uninitialised best
        CLAP (garbage if no remix scores below 1); we start from +inf, so round 0 always sets it.
        pin_global=True (an ablation, not the original): slot 0 keeps its own CLIP fold in every round instead
        of the best remix's, so a manipulated global embedding acts on every round, not just round 0 (it
        still reaches every round through the styler's CLIP input either way).
        Noise order (what tests/test_model_ssv2a.py's serial reference replays): [B, slot, manifold_dim]
        for the slot folds, then per round [B, slot, clap_dim] for the source CLAPs, [B, manifold_dim] for
        slot 0's code (rounds >= 1) and [B, samples, clap_dim] for the remixes.
        """
        if self.training:
            raise RuntimeError("cycle_mix needs eval mode (dropout would make the remix draws differ); call .eval()")
        if its < 0 or samples < 1 or var_samples < 1:
            raise ValueError(f"cycle_mix needs its >= 0, samples >= 1, var_samples >= 1; got {its}, {samples}, "
                             f"{var_samples}")
        slots = self._slots(slots)
        B, rows = slots.shape[0], torch.arange(slots.shape[0], device=self.device)

        src = self.fold_clips(slots, var_samples, generator)               # [B, slot, manifold_dim]
        gen_mu, gen_log_sigma = self.generator(src)                        # [B, slot, clap_dim]
        best_claps = torch.zeros(B, self.clap_dim, device=self.device)
        best_scores = torch.full((B,), math.inf, device=self.device)
        fold = None  # the clap encoder's (mu, log_sigma) of best_claps
        best_changed = True
        for i in range(its + 1):
            src_claps = l2_normalize(mean_of_draws(gen_mu, gen_log_sigma, var_samples, generator))
            src_claps[:, 0] = 0  # the global slot is not a sound source: cosine 0, still counted in the std
            if i > 0 and not pin_global:  # re-inject the best remix so far as the global slot's code
                if best_changed or fold is None:
                    fold = self.manifold.clap_encoder(best_claps)
                src[:, 0] = mean_of_draws(*fold, var_samples, generator)
            remix_mu, remix_log_sigma = self.remixer.styler(src, slots)    # [B, clap_dim]
            shape = (B, samples, self.clap_dim)
            remix = l2_normalize(mean_of_draws(remix_mu[:, None].expand(shape), remix_log_sigma[:, None].expand(shape),
                                               var_samples, generator))   # [B, samples, clap_dim]
            cosine = torch.einsum("bsc,bnc->bsn", remix, src_claps)
            cosine = cosine / (remix.norm(dim=-1)[:, :, None] * src_claps.norm(dim=-1)[:, None, :] + 1e-6)
            scores = cosine.std(dim=-1)                                    # [B, samples]
            pick = scores.argmin(dim=-1)
            better = scores[rows, pick] < best_scores
            best_scores = torch.where(better, scores[rows, pick], best_scores)
            best_claps = torch.where(better[:, None], remix[rows, pick], best_claps)
            best_changed = bool(better.any())
        return best_claps


def _read_checkpoint_file(path):
    """The checkpoint's top-level dict, read weights-only; CheckpointError when it is not SSV2A's format."""
    state = load_torch_file(path, "ssv2a", what="SSV2A checkpoint")
    if not isinstance(state, dict) or any(not isinstance(state.get(k), dict) for k in STATE_KEYS):
        found = _first(sorted(map(str, state))) if isinstance(state, dict) else f"a {type(state).__name__}"
        raise CheckpointError(f"{path} is not an SSV2A checkpoint: expected a dict with state dicts "
                              f"{', '.join(STATE_KEYS)}, found {found or 'an empty dict'}")
    return state


def verify_ssv2a_file(path, config=None):
    """Check an ssv2a.pth against the networks of config (default ssv2a.json) without allocating them."""
    config = DEFAULT_CONFIG_PATH if config is None else config
    state = _read_checkpoint_file(Path(path))
    with torch.device("meta"):   # shapes only: no 330 MB of random weights
        model = SSV2A.from_config(config)
    model.check_states(state, path)
    n = sum(len(state[k]) for k in STATE_KEYS)
    extra = sorted(str(k) for k in state if k not in (*STATE_KEYS, "timestamp"))
    return (f"{path}: {n} tensors fit {model.config_source}" + (f" (ignored entries: {_first(extra)})"
                                                                 if extra else ""))


# settings of ssv2a.json that name files on the machine it was written on (ours point into checkpoints/)
LOCAL_PATH_FIELDS = ("checkpoints", "classes", "detector.detection_model", "detector.segment_model",
                     "manifold.clap_voc")


def config_differences(published, config=None):
    """(our config's source, ['key: ours x, published y', ...]): a published ssv2a.json (the one in the authors'
    Drive folder) against ours (default ssv2a.json), settings that name local files aside. ValueError when the
    published file is not a JSON object."""
    ours, source = read_config(DEFAULT_CONFIG_PATH if config is None else config)
    theirs, _ = read_config(published)
    if not isinstance(theirs, dict):
        raise ValueError(f"{published} holds a JSON {type(theirs).__name__}, not an SSV2A config (an object)")
    ours, theirs = _flat_settings(ours), _flat_settings(theirs)
    absent = object()
    show = lambda value: "(absent)" if value is absent else json.dumps(value)   # noqa: E731
    return source, [f"{key}: ours {show(ours.get(key, absent))}, published {show(theirs.get(key, absent))}"
                    for key in dict.fromkeys([*ours, *theirs])
                    if key not in LOCAL_PATH_FIELDS and ours.get(key, absent) != theirs.get(key, absent)]


def _flat_settings(config, prefix=""):
    """{'remixer.styler.nhead': 8, ...}: nested settings under dotted names."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flat_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# -----------------------------------------------------------------------------
# loaders


def load_ssv2a(config_path=None, ckpt_path=None, device=None):
    """The released SSV2A, in eval mode, loaded once per process (per config, checkpoint and device).

    config_path: default ssv2a.json at the repo root. ckpt_path: default checkpoints/ssv2a.pth through the
    checkpoint registry (CheckpointError with download instructions when missing).
    """
    from util import get_device
    config_path = Path(config_path) if config_path is not None else DEFAULT_CONFIG_PATH
    ckpt_path = Path(ckpt_path) if ckpt_path is not None else checkpoint_path("ssv2a")
    return _load_ssv2a(str(config_path.resolve()), str(ckpt_path.resolve()), str(get_device(device)))


@functools.lru_cache(maxsize=None)
def _load_ssv2a(config_path, ckpt_path, device):
    print(f"Loading SSV2A from {ckpt_path} (config {config_path}) on {device}")
    model = SSV2A.from_config(config_path).load_checkpoint(ckpt_path)
    return model.to(device).eval()


# Same architecture and interface as the release (CLIP 768 in, CLAP 512 out, 64 slots), tiny inside
TINY_SSV2A_CONFIG = {
    "audioldm_version": "audioldm-s-full-v2", "checkpoints": "", "classes": "", "fps": 4, "sample_rate": 16000,
    "clip_dim": 768, "clap_dim": 512, "manifold_dim": 32,
    "detector": {"detection_model": "checkpoints/yolov8x-oiv7.pt", "segment_model": "", "crop": True,
                 "conf": 0.25, "iou": 0, "max_det": 64, "top_k": 16, "ps_topk": 32, "kneedle": True, "rf_its": 0},
    "manifold": {"variational": True, "arch": "mlp", "layers": [32, 32, 48, 48, 64, 64], "dropout": 0.2,
                 "resnet": True, "kl_weight": 0.00005, "cr_weight": 0.35},
    "generator": {"disabled": False, "variational": True, "arch": "mlp", "layers": [32, 32, 40, 40, 48, 48, 64, 64],
                  "dropout": 0.2, "resnet": True, "kl_weight": 0.00005},
    "remixer": {"slot": 64, "cfg": 0.2, "guidance": "manifold",
                "styler": {"variational": True, "kl_weight": 0.00005, "arch": "transformer", "embed_dim": 32,
                           "num_layers": 1, "nhead": 4, "dropout": 0.2}},
}


def tiny_ssv2a(seed=0):
    """A random-weight SSV2A of TINY_SSV2A_CONFIG (~0.2 M parameters), eval mode, on the CPU; not cached."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SSV2A(TINY_SSV2A_CONFIG, "TINY_SSV2A_CONFIG").eval()


# -----------------------------------------------------------------------------
# pipeline entry points


def slots_to_clap(slots, model=None, its=CYCLE_ITS, samples=CYCLE_SAMPLES, var_samples=VAR_SAMPLES, generator=None,
                  pin_global=False):
    """Cycle-mixed CLAP [B, clap_dim] (L2-normalised, on the model's device) of remix slots [B, slot, clip_dim].

    Slot 0 holds the global (or manipulated) CLIP embedding, slots 1.. the object crops, zeros after.
    model: default the released model (load_ssv2a()). Randomness: see the module docstring.
    """
    model = model if model is not None else load_ssv2a()
    return model.cycle_mix(slots, its=its, samples=samples, var_samples=var_samples, generator=generator,
                           pin_global=pin_global)


def slots_to_audio(slots, model=None, aldm=None, its=CYCLE_ITS, samples=CYCLE_SAMPLES, var_samples=VAR_SAMPLES,
                   duration=10.0, steps=200, guidance=2.5, seed=42, pin_global=False, sampler="ddim"):
    """Remix slots [B, slot, 768] -> (audio float32 numpy [B, duration * 16000], CLAPs [B, 512] on the CPU).

    seed: an int for every row, or one int per row. Each row draws its cycle-mix noise and its AudioLDM noise
    from its own seed alone, whatever its batch mates: a baseline and a manipulated row of the same seed
    differ only by their slots, and a setting found in a sweep gives the same audio when run on its own.
    AudioLDM runs once for the whole batch. aldm: an AudioLDMPipeline (default model.aldm.load_audioldm()).
    pin_global: see SSV2A.cycle_mix; sampler: see model.aldm.SAMPLERS.
    """
    from model.aldm import emb_to_audio, load_audioldm
    model = model if model is not None else load_ssv2a()
    seeds = [int(seed)] * len(slots) if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
    if len(seeds) != len(slots):
        raise ValueError(f"got {len(seeds)} seeds for {len(slots)} rows of slots")
    claps = torch.cat([slots_to_clap(slots[b:b + 1], model, its=its, samples=samples, var_samples=var_samples,
                                     generator=torch.Generator().manual_seed(s), pin_global=pin_global)
                       for b, s in enumerate(seeds)])
    aldm = aldm if aldm is not None else load_audioldm()
    audio = emb_to_audio(aldm, claps, duration=duration, steps=steps, guidance=guidance, seed=seeds, sampler=sampler)
    return audio, claps.cpu()


def image_to_audio(images, global_embs=None, model=None, aldm=None, yolo=None, clip_model=None, preprocess=None,
                   its=CYCLE_ITS, samples=CYCLE_SAMPLES, var_samples=VAR_SAMPLES, duration=10.0, steps=200,
                   guidance=2.5, seed=42, device=None):
    """SSV2A end to end: images -> detect -> global + crop CLIPs -> slots -> cycle_mix -> AudioLDM.

    images: paths or PIL images. global_embs: None = each image's own CLIP embedding in slot 0 (the original
    SSV2A, our baselines), or [B, 768] to put there instead (plan step 8.2). Every model argument defaults to
    its cached loader, so pass the ones you already hold and nothing loads twice. Saves nothing.
    Returns a dict: audio [B, n] numpy, claps [B, 512], slots [B, slot, 768], detections (per image).
    """
    model = model if model is not None else load_ssv2a(device=device)
    from model.detect import image_remix_slots
    slots, detections = image_remix_slots(images, yolo=yolo, clip_model=clip_model, preprocess=preprocess,
                                          detector_cfg=model.config.get("detector"), global_embs=global_embs,
                                          slot=model.slot, device=device)
    audio, claps = slots_to_audio(slots, model, aldm, its=its, samples=samples, var_samples=var_samples,
                                  duration=duration, steps=steps, guidance=guidance, seed=seed)
    return {"audio": audio, "claps": claps, "slots": slots.cpu(), "detections": detections}


def manipulated_image_to_audio(image, global_embedding, **kwargs):
    """image_to_audio for one image with slot 0 replaced by a manipulated CLIP embedding [768] (plan step 8.2).

    The objects still come from `image` (I_1): YOLO crops keep the local sound sources; only the global
    context is ours. Same keyword arguments and return value as image_to_audio (B = 1).
    """
    global_embedding = torch.as_tensor(global_embedding, dtype=torch.float32).cpu()
    if global_embedding.ndim == 2 and global_embedding.shape[0] == 1:
        global_embedding = global_embedding[0]
    if global_embedding.ndim != 1:
        raise ValueError(f"global_embedding must be one CLIP embedding [768], got shape {tuple(global_embedding.shape)}")
    if isinstance(image, (list, tuple)):
        raise ValueError("manipulated_image_to_audio takes one image; use image_to_audio(images, global_embs=...) "
                         "for a batch")
    return image_to_audio([image], global_embs=global_embedding[None], **kwargs)
