"""Plan step 9: did the manipulated audio move the way the edit did? CLAP zero-shot scores, a verdict, plots.

For each audio (baseline_original from I_0, baseline_edited from I_1, manipulated from the SVD embedding)
LAION-CLAP gives a softmax over text labels ("a cat meowing", "a duck quacking", ...). The verdict asks
five questions, each answered with its numbers and PASS/FAIL (a FAIL is a research result, not an error):

    added_increased        P(added)   manipulated > baseline_original
    removed_decreased      P(removed) manipulated < baseline_original
    kept_within_tolerance  every kept label: |P manipulated - P baseline_original| <= tolerance
    closer_to_edited_clap  cosine distance in CLAP audio space: d(manip, edited) < d(manip, original)
    closer_to_edited_kl    KL(P_edited || P_manip) < KL(P_original || P_manip)

The scorer is laion-clap's CLAP module (HTSAT-tiny audio branch, RoBERTa text branch, 630k-audioset-best.pt,
non-fusion). It is built here instead of through laion_clap.CLAP_Module because that class downloads
roberta-base weights in its constructor and unpickles its checkpoint with weights_only=False; we build the
same modules from local configs and load the checkpoint's tensors with torch.load(weights_only=True).

    clap = load_clap()                                # once per process (tiny_clap() for tests / --smoke)
    results = evaluate_run(audios, labels, "a cat meowing", "a duck quacking", ["a dog barking"], run_dir, clap)
"""
import functools
import importlib.util
import json
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from model.checkpoints import CheckpointError, check_tokenizer, checkpoint_path, hf_model_dir
from util import get_device

CLAP_DIM = 512                 # joint audio-text embedding width of every LAION-CLAP model
CLAP_SAMPLE_RATE = 48000       # HTSAT-tiny's front end (audio_cfg of laion's HTSAT-tiny.json)
CLAP_SAMPLES = 480000          # 10 s at 48 kHz: the clip length the non-fusion model was trained on
TEXT_LENGTH = 77               # laion pads/truncates every caption to 77 RoBERTa tokens
AUDIO_NAMES = ("baseline_original", "baseline_edited", "manipulated")
# roberta-base's architecture (its config.json); load_clap reads the real file, the architecture test uses this
ROBERTA_BASE = dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1,
                    layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)
# keys that the released checkpoint stores but that recent transformers keep as non-persistent buffers
_STALE_KEYS = ("text_branch.embeddings.position_ids", "text_branch.embeddings.token_type_ids")


# -----------------------------------------------------------------------------
# building laion-clap's CLAP offline

def _laion_modules():
    """laion-clap's clap_module package, imported without laion_clap/__init__.py.

    laion_clap/__init__.py imports its training code, which calls BertTokenizer/RobertaTokenizer/
    BartTokenizer.from_pretrained at import time: offline that means minutes of HTTP retries (or silently
    empty tokenizers). The model code itself lives in the top-level package clap_module inside the
    laion_clap folder, which is how laion_clap imports it too (it appends that folder to sys.path).
    """
    spec = importlib.util.find_spec("laion_clap")
    if spec is None or spec.origin is None:
        raise ImportError("laion-clap is not installed in this environment; pip install -r requirements.txt")
    folder = os.path.dirname(spec.origin)
    if folder not in sys.path:
        sys.path.append(folder)   # appended, not inserted: its 'training'/'evaluate' must not shadow others
    import clap_module.htsat
    import clap_module.model
    from clap_module.factory import _MODEL_CONFIGS
    return clap_module.model, clap_module.htsat, _MODEL_CONFIGS


def htsat_tiny_audio_cfg():
    """The audio config of laion's HTSAT-tiny (48 kHz, 1024-window, 480 hop, 64 mel bins, 50-14000 Hz)."""
    _, _, configs = _laion_modules()
    return dict(configs["HTSAT-tiny"]["audio_cfg"])


def _assemble_clap(audio_branch, audio_width, text_branch, audio_cfg):
    """laion-clap's CLAP module around the given audio and text branches, with the same submodule names.

    CLAP.__init__ would build its RoBERTa text branch with RobertaModel.from_pretrained('roberta-base')
    (a download, and weights the checkpoint overwrites anyway), so we set what its __init__ sets for the
    non-fusion 'roberta' configuration: the two 512-wide projection heads (Linear-ReLU-Linear), the two
    MLP transforms (only used in training, but part of the checkpoint) and the two logit scales. The
    state-dict keys therefore match the released checkpoint; load_state_dict(strict=True) verifies it.
    """
    laion_model, _, _ = _laion_modules()
    text_width = text_branch.config.hidden_size
    clap = laion_model.CLAP.__new__(laion_model.CLAP)
    nn.Module.__init__(clap)
    clap.audio_cfg = laion_model.CLAPAudioCfp(**audio_cfg)
    clap.text_cfg = laion_model.CLAPTextCfg(
        context_length=TEXT_LENGTH, vocab_size=text_branch.config.vocab_size, width=text_width,
        heads=text_branch.config.num_attention_heads, layers=text_branch.config.num_hidden_layers,
        model_type="roberta")
    clap.enable_fusion, clap.fusion_type = False, "None"
    clap.joint_embed_shape, clap.mlp_act, clap.context_length = CLAP_DIM, "relu", TEXT_LENGTH
    clap.audio_branch = audio_branch
    clap.text_branch = text_branch
    clap.text_branch_type = "roberta"
    clap.text_transform = laion_model.MLPLayers(units=[CLAP_DIM, CLAP_DIM, CLAP_DIM], dropout=0.1)
    clap.text_projection = nn.Sequential(nn.Linear(text_width, CLAP_DIM), nn.ReLU(), nn.Linear(CLAP_DIM, CLAP_DIM))
    clap.audio_transform = laion_model.MLPLayers(units=[CLAP_DIM, CLAP_DIM, CLAP_DIM], dropout=0.1)
    clap.audio_projection = nn.Sequential(nn.Linear(audio_width, CLAP_DIM), nn.ReLU(), nn.Linear(CLAP_DIM, CLAP_DIM))
    clap.logit_scale_a = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    clap.logit_scale_t = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    return clap.eval()


def build_clap_model(roberta_config):
    """The real-size architecture (HTSAT-tiny + RoBERTa of roberta_config) with random weights."""
    from transformers import RobertaConfig, RobertaModel
    laion_model, htsat, _ = _laion_modules()
    if isinstance(roberta_config, dict):
        roberta_config = RobertaConfig(**roberta_config)
    audio_cfg = htsat_tiny_audio_cfg()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.meshgrid")   # laion's Swin windows; harmless
        audio_branch = htsat.create_htsat_model(laion_model.CLAPAudioCfp(**audio_cfg), enable_fusion=False)
    return _assemble_clap(audio_branch, audio_branch.num_features, RobertaModel(roberta_config), audio_cfg)


def load_clap_weights(model, path):
    """Load a LAION-CLAP checkpoint into model: tensors only, 'module.' prefixes stripped, strict key check."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:   # truncated zip, or objects that weights_only refuses to unpickle
        raise CheckpointError(f"cannot read the CLAP checkpoint {path}: {type(err).__name__}: {err}\n"
                              f"  Fix: delete it and fetch it again: python -m model.checkpoints clap") from err
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path} holds no state dict (got {type(checkpoint).__name__}); "
                              "expected LAION-CLAP's 630k-audioset-best.pt")
    # the released file was saved from a DistributedDataParallel wrapper
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    own = model.state_dict()
    for key in _STALE_KEYS:
        if key in state and key not in own:
            del state[key]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit HTSAT-tiny + RoBERTa non-fusion CLAP: {len(missing)} missing keys "
            f"{missing[:4]}, {len(unexpected)} unexpected keys {unexpected[:4]}.\n"
            "  Use 630k-audioset-best.pt (not a fusion or PANN checkpoint): python -m model.checkpoints clap")
    bad_shapes = [k for k in own if own[k].shape != state[k].shape]
    if bad_shapes:
        raise CheckpointError(f"{path}: tensors of the wrong shape for {bad_shapes[:4]} "
                              f"(e.g. {tuple(state[bad_shapes[0]].shape)} vs {tuple(own[bad_shapes[0]].shape)})")
    model.load_state_dict(state, strict=True)
    return model


def check_roberta_tokenizer(tokenizer, vocab_size=None):
    """CheckpointError when the RoBERTa tokenizer is silently empty: every label would get the same probability."""
    return check_tokenizer(tokenizer, "roberta", vocab_size, where="the RoBERTa tokenizer for CLAP")


# -----------------------------------------------------------------------------
# the scorer

class ClapScorer:
    """A CLAP model, its tokenizer and device; turns audio and label texts into unit 512-d embeddings."""

    def __init__(self, model, tokenizer, device, name):
        self.model, self.tokenizer, self.device, self.name = model, tokenizer, torch.device(device), name

    @property
    def logit_scale(self):
        """exp(logit_scale_a): the audio-side temperature CLAP's zero-shot classification uses."""
        return float(self.model.logit_scale_a.detach().exp())

    @torch.no_grad()
    def audio_embeddings(self, audios, sample_rate, batch_size=8):
        """float32 [B, 512] on the CPU, L2-normalised; audios: numpy [B, n] or a list of 1-D arrays."""
        waves = prepare_waveforms(audios, sample_rate)
        embs = []
        for i in range(0, len(waves), batch_size):
            batch = [{"waveform": w} for w in waves[i:i + batch_size]]
            embs.append(self.model.get_audio_embedding(batch).float().cpu())
        return F.normalize(torch.cat(embs), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, labels):
        """float32 [L, 512] on the CPU, L2-normalised, in the order of labels."""
        labels = _check_label_list(labels)
        tokens = self.tokenizer(labels, padding="max_length", truncation=True, max_length=TEXT_LENGTH,
                                return_tensors="pt")
        data = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
        return F.normalize(self.model.get_text_embedding(data).float().cpu(), dim=-1)


def prepare_waveforms(audios, sample_rate):
    """What HTSAT-tiny reads: a list of float32 [480000] tensors at 48 kHz, as laion prepares them.

    Resampled with a polyphase filter, then quantised to int16 and back (laion's
    get_audio_embedding_from_data does the same: CLAP was trained on 16-bit audio, so this clips to
    [-1, 1] as a file would). Shorter audio is repeated and zero-padded to 10 s ('repeatpad'); longer audio
    keeps its first 10 s, where laion takes a random 10 s crop, so that scores are repeatable.
    """
    from scipy.signal import resample_poly
    if isinstance(audios, torch.Tensor):
        audios = audios.detach().cpu().numpy()
    if isinstance(audios, np.ndarray):
        if audios.ndim != 2:
            raise ValueError(f"audios must be [B, n] or a list of 1-D arrays, got an array of shape {audios.shape}")
        audios = list(audios)
    if not isinstance(sample_rate, (int, float, np.number)) or sample_rate <= 0 or sample_rate != int(sample_rate):
        raise ValueError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    g = math.gcd(int(sample_rate), CLAP_SAMPLE_RATE)
    up, down = CLAP_SAMPLE_RATE // g, int(sample_rate) // g
    waves = []
    for i, a in enumerate(audios):
        a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"audio {i} must be a non-empty mono 1-D array, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"audio {i} contains NaN or infinite samples")
        # cut before resampling, so a 12 s clip and its first 10 s give the same samples (and less work)
        a = a[:math.ceil(CLAP_SAMPLES * down / up)]
        if (up, down) != (1, 1):
            a = resample_poly(a, up, down)
        a = (np.clip(a, -1.0, 1.0) * 32767.0).astype(np.int16).astype(np.float32) / 32767.0
        if len(a) > CLAP_SAMPLES:
            a = a[:CLAP_SAMPLES]
        elif len(a) < CLAP_SAMPLES:
            a = np.tile(a, CLAP_SAMPLES // len(a))
            a = np.pad(a, (0, CLAP_SAMPLES - len(a)))
        waves.append(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)))
    if not waves:
        raise ValueError("no audio given")
    return waves


@functools.lru_cache(maxsize=None)
def _load_clap(device_str):
    from transformers import RobertaConfig, RobertaTokenizer
    path = checkpoint_path("clap")   # first, so a missing checkpoint is the error the user sees
    folder = hf_model_dir("roberta")
    tokenizer = RobertaTokenizer.from_pretrained(folder)
    config = RobertaConfig.from_pretrained(folder)
    check_roberta_tokenizer(tokenizer, vocab_size=config.vocab_size)
    print(f"Loading LAION-CLAP (HTSAT-tiny + RoBERTa) from {path} on {device_str}")
    model = load_clap_weights(build_clap_model(config), path)
    return ClapScorer(model.to(device_str).eval(), tokenizer, device_str, name=f"laion-clap {Path(path).name}")


def load_clap(device=None):
    """The real LAION-CLAP scorer (630k-audioset-best.pt), built once per process and device."""
    return _load_clap(str(get_device(device)))


@functools.lru_cache(maxsize=None)
def tiny_clap(seed=0):
    """A random-weight CLAP of the same classes and interface (48 kHz 10 s front end, 512-d), built offline.

    HTSAT with 1 block per stage and width 8 instead of 2-2-6-2 and 96; RoBERTa with 1 layer of width 32;
    the in-memory byte-level BPE tokenizer of model.aldm. Scores from it are meaningless, by design.
    """
    from transformers import RobertaConfig, RobertaModel
    from model.aldm import _tiny_tokenizer
    laion_model, htsat, _ = _laion_modules()
    tokenizer = _tiny_tokenizer()
    audio_cfg = htsat_tiny_audio_cfg()
    # fork_rng: building the tiny model must not move the caller's global torch RNG
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.meshgrid")
        torch.manual_seed(seed)
        audio_branch = htsat.HTSAT_Swin_Transformer(
            spec_size=256, patch_size=4, patch_stride=(4, 4), num_classes=audio_cfg["class_num"], embed_dim=8,
            depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=8,
            config=laion_model.CLAPAudioCfp(**audio_cfg), enable_fusion=False, fusion_type="None")
        # initializer_range 0.3, not 0.02: with small random weights one layer barely mixes the tokens into
        # <s>, whose pooled output then is the same for every label (cosine 0.99999)
        text_branch = RobertaModel(RobertaConfig(
            vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=TEXT_LENGTH + 3, type_vocab_size=1,
            layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2, initializer_range=0.3))
        model = _assemble_clap(audio_branch, audio_branch.num_features, text_branch, audio_cfg)
    check_roberta_tokenizer(tokenizer, vocab_size=model.text_branch.config.vocab_size)
    return ClapScorer(model, tokenizer, "cpu", name=f"tiny random CLAP (seed {seed})")


# -----------------------------------------------------------------------------
# scores

def _as_numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _check_label_list(labels):
    if isinstance(labels, str) or not labels or not all(isinstance(x, str) and x.strip() for x in labels):
        raise ValueError(f"labels must be a non-empty list of non-empty strings, got {labels!r}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct, got {labels!r}")
    return list(labels)


def label_probabilities(audio_embs, text_embs, logit_scale=None):
    """[B, L] softmax over labels of logit_scale * cos(audio, text), as CLAP zero-shot classification does.

    logit_scale: the model's exp(logit_scale_a) (ClapScorer.logit_scale); None = CLAP's initial 1/0.07.
    """
    a = F.normalize(torch.as_tensor(_as_numpy(audio_embs), dtype=torch.float32), dim=-1)
    t = F.normalize(torch.as_tensor(_as_numpy(text_embs), dtype=torch.float32), dim=-1)
    if a.ndim != 2 or t.ndim != 2 or a.shape[1] != t.shape[1]:
        raise ValueError(f"need audio [B, D] and text [L, D] embeddings, got {tuple(a.shape)} and {tuple(t.shape)}")
    scale = 1 / 0.07 if logit_scale is None else float(logit_scale)
    return torch.softmax(scale * a @ t.T, dim=-1)


def score_audios(audios, labels, clap=None, sample_rate=16000):
    """CLAP zero-shot scores of named audios.

    audios: dict name -> 1-D numpy waveform at sample_rate. Returns {'labels', 'probs': name -> [L] list,
    'audio_embs': name -> float32 numpy [512], 'logit_scale', 'clap': the scorer's name}.
    """
    labels = _check_label_list(labels)
    if not isinstance(audios, dict) or not audios:
        raise ValueError("audios must be a non-empty dict of name -> 1-D waveform")
    clap = load_clap() if clap is None else clap
    names = list(audios)
    audio_embs = clap.audio_embeddings([audios[n] for n in names], sample_rate)
    probs = label_probabilities(audio_embs, clap.text_embeddings(labels), clap.logit_scale)
    return {"labels": labels,
            "probs": {n: [float(p) for p in probs[i]] for i, n in enumerate(names)},
            "audio_embs": {n: audio_embs[i].numpy() for i, n in enumerate(names)},
            "logit_scale": clap.logit_scale, "clap": clap.name}


# -----------------------------------------------------------------------------
# the verdict

def _check_roles(labels, removed_label, added_label, kept_labels):
    labels = _check_label_list(labels)
    for role, label in [("removed_label", removed_label), ("added_label", added_label)]:
        if label not in labels:
            raise ValueError(f"{role} {label!r} is not one of the labels {labels}")
    if removed_label == added_label:
        raise ValueError(f"removed_label and added_label are both {removed_label!r}")
    kept_labels = list(kept_labels)
    for label in kept_labels:
        if label not in labels:
            raise ValueError(f"kept label {label!r} is not one of the labels {labels}")
        if label in (removed_label, added_label):
            raise ValueError(f"kept label {label!r} is also the removed or added label")
    return labels, kept_labels


def _kl(p, q, eps=1e-12):
    """KL(p || q) in nats; eps keeps hand-made tables with zeros finite."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, None)
    q = np.clip(np.asarray(q, dtype=np.float64), eps, None)
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def _cosine_distance(a, b):
    a = _as_numpy(a).astype(np.float64).ravel()
    b = _as_numpy(b).astype(np.float64).ravel()
    return float(1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def verdict(probs, audio_embs, labels, removed_label, added_label, kept_labels, tolerance=0.05):
    """The five checks of the plan on the three audios' label probabilities and CLAP audio embeddings.

    probs: name -> [L] probabilities; audio_embs: name -> [512]; names are baseline_original,
    baseline_edited, manipulated. Returns {'checks': {check: {'passed', 'numbers', 'description'}},
    'n_passed', 'n_checks', 'passed_all', and the inputs that define it}. All numbers are plain floats.
    """
    labels, kept_labels = _check_roles(labels, removed_label, added_label, kept_labels)
    if not 0 <= tolerance <= 1:
        raise ValueError(f"tolerance is a probability difference in [0, 1], got {tolerance!r}")
    for what, table in [("probs", probs), ("audio_embs", audio_embs)]:
        missing = [n for n in AUDIO_NAMES if n not in table]
        if missing:
            raise ValueError(f"{what} has no entry for {missing}; the verdict needs {list(AUDIO_NAMES)}")
    P = {n: _as_numpy(probs[n]).astype(np.float64).ravel() for n in AUDIO_NAMES}
    for n, p in P.items():
        if len(p) != len(labels):
            raise ValueError(f"probs[{n!r}] has {len(p)} entries for {len(labels)} labels")
    o, e, m = P["baseline_original"], P["baseline_edited"], P["manipulated"]
    i_add, i_rem = labels.index(added_label), labels.index(removed_label)
    checks = {}

    checks["added_increased"] = {
        "passed": bool(m[i_add] > o[i_add]),
        "numbers": {"original": float(o[i_add]), "manipulated": float(m[i_add]), "edited": float(e[i_add]),
                    "delta": float(m[i_add] - o[i_add])},
        "description": f"P({added_label}) manipulated > original"}

    checks["removed_decreased"] = {
        "passed": bool(m[i_rem] < o[i_rem]),
        "numbers": {"original": float(o[i_rem]), "manipulated": float(m[i_rem]), "edited": float(e[i_rem]),
                    "delta": float(m[i_rem] - o[i_rem])},
        "description": f"P({removed_label}) manipulated < original"}

    diffs = {label: float(m[labels.index(label)] - o[labels.index(label)]) for label in kept_labels}
    worst = max((abs(d) for d in diffs.values()), default=0.0)
    checks["kept_within_tolerance"] = {
        "passed": bool(worst <= tolerance),
        "numbers": {"max_abs_delta": worst, "tolerance": float(tolerance),
                    **{f"delta {label}": d for label, d in diffs.items()}},
        "description": (f"|P manipulated - P original| <= {tolerance:g} for {', '.join(kept_labels)}"
                        if kept_labels else "no kept labels (passes trivially)")}

    d_edit = _cosine_distance(audio_embs["manipulated"], audio_embs["baseline_edited"])
    d_orig = _cosine_distance(audio_embs["manipulated"], audio_embs["baseline_original"])
    checks["closer_to_edited_clap"] = {
        "passed": bool(d_edit < d_orig),
        "numbers": {"to_edited": d_edit, "to_original": d_orig,
                    "edited_to_original": _cosine_distance(audio_embs["baseline_edited"],
                                                           audio_embs["baseline_original"])},
        "description": "CLAP audio cosine distance: manipulated->edited < manipulated->original"}

    # KL(baseline || manipulated): how much the manipulated distribution misses each baseline, with the
    # baseline as the reference distribution (the same direction for both, so they compare)
    kl_edit, kl_orig = _kl(e, m), _kl(o, m)
    checks["closer_to_edited_kl"] = {
        "passed": bool(kl_edit < kl_orig),
        "numbers": {"kl_edited_manipulated": kl_edit, "kl_original_manipulated": kl_orig},
        "description": "KL(P_edited || P_manip) < KL(P_original || P_manip), in nats"}

    n_passed = sum(c["passed"] for c in checks.values())
    return {"checks": checks, "n_passed": n_passed, "n_checks": len(checks), "passed_all": n_passed == len(checks),
            "labels": labels, "removed_label": removed_label, "added_label": added_label,
            "kept_labels": kept_labels, "tolerance": float(tolerance),
            "probs": {n: [float(x) for x in P[n]] for n in AUDIO_NAMES}}


def format_verdict(v):
    """The verdict as a printable table: label probabilities per audio, then each check with its numbers."""
    labels = v["labels"]
    width = max(len(label) for label in labels) + 2
    roles = {v["removed_label"]: "removed", v["added_label"]: "added", **{k: "kept" for k in v["kept_labels"]}}
    lines = ["CLAP label probabilities", f"  {'label':{width}s}{'role':9s}" + "".join(f"{n:>19s}" for n in AUDIO_NAMES)]
    for i, label in enumerate(labels):
        lines.append(f"  {label:{width}s}{roles.get(label, ''):9s}" + "".join(f"{v['probs'][n][i]:19.4f}" for n in AUDIO_NAMES))
    lines.append(f"Verdict: {v['n_passed']}/{v['n_checks']} checks passed")
    for name, c in v["checks"].items():
        numbers = ", ".join(f"{k} {x:.4f}" for k, x in c["numbers"].items())
        lines.append(f"  {'PASS' if c['passed'] else 'FAIL'}  {name:24s}{c['description']}")
        lines.append(f"        {'':24s}{numbers}")
    return "\n".join(lines)


# -----------------------------------------------------------------------------
# figures

def plot_label_probabilities(probs, labels, path):
    """Grouped bar chart: one group per label, one bar per audio. Writes a PNG and returns its path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(probs)
    x = np.arange(len(labels))
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(labels) + 2), 4))
    for j, name in enumerate(names):
        p = np.asarray(probs[name], dtype=float)
        bars = ax.bar(x + (j - (len(names) - 1) / 2) * width, p, width, label=str(name))
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, labels, rotation=15, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("CLAP zero-shot probability")
    ax.legend(fontsize=8)
    ax.set_title("Label probabilities per audio")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def mel_filterbank(sample_rate, n_fft, n_mels=64, fmin=0.0, fmax=None):
    """[n_mels, n_fft // 2 + 1] triangular filters, equally spaced on the HTK mel scale, of equal area.

    Equal area (Slaney's normalisation) keeps white noise flat across bands; unnormalised triangles grow
    with their bandwidth and paint the high bands bright whatever the sound.
    """
    fmax = sample_rate / 2 if fmax is None else fmax
    mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)
    hz = lambda m: 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)
    edges = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - lower) / (centre - lower)
    falling = (upper - bins[None]) / (upper - centre)
    weights = np.clip(np.minimum(rising, falling), 0.0, None) * (2.0 / (upper - lower))
    return weights.astype(np.float32)


def log_mel(audio, sample_rate, n_mels=64):
    """[n_mels, frames] log-mel power in dB (10 ms hop, 40 ms Hann window, 64 mel bands to sample_rate / 2).

    torch.stft rather than librosa: librosa's first call compiles numba kernels for tens of seconds.
    """
    audio = torch.as_tensor(np.asarray(audio, dtype=np.float32).ravel())
    hop = max(1, sample_rate // 100)
    n_fft = 4 * hop
    spec = torch.stft(audio, n_fft, hop_length=hop, window=torch.hann_window(n_fft), center=True,
                      pad_mode="constant" if len(audio) <= n_fft // 2 else "reflect", return_complex=True)
    power = spec.abs() ** 2
    mel = torch.from_numpy(mel_filterbank(sample_rate, n_fft, n_mels)) @ power
    return (10.0 * torch.log10(mel.clamp_min(1e-10))).numpy()


def plot_spectrograms(audios, sample_rate, path):
    """Log-mel spectrograms of the named audios side by side, on one colour scale. Writes a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    mels = {name: log_mel(a, sample_rate) for name, a in audios.items()}
    top = max(float(m.max()) for m in mels.values())
    fig, axes = plt.subplots(1, len(mels), figsize=(4.2 * len(mels) + 1, 3.4), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, (name, mel) in zip(axes[0], mels.items()):
        seconds = len(np.asarray(audios[name]).ravel()) / sample_rate
        im = ax.imshow(mel, origin="lower", aspect="auto", extent=[0, seconds, 0, mel.shape[0]],
                       vmin=top - 80, vmax=top, cmap="magma")
        ax.set_title(str(name))
        ax.set_xlabel("time (s)")
    axes[0][0].set_ylabel(f"mel band (0-{sample_rate // 2} Hz)")
    fig.colorbar(im, ax=axes[0].tolist(), label="dB")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


# -----------------------------------------------------------------------------
# one run

def evaluate_run(audios, labels, removed_label, added_label, kept_labels, run_dir, clap=None, sample_rate=16000,
                 tolerance=0.05):
    """Score the three audios, print the verdict, write results.json, label_probs.png and spectrograms.png.

    Never overwrites: an existing run_dir/results.json raises FileExistsError before any work is done.
    """
    labels, kept_labels = _check_roles(labels, removed_label, added_label, kept_labels)
    missing = [n for n in AUDIO_NAMES if n not in audios]
    if missing:
        raise ValueError(f"audios has no entry for {missing}; evaluate_run needs {list(AUDIO_NAMES)}")
    run_dir = Path(run_dir)
    results_path = run_dir / "results.json"
    if results_path.exists():
        raise FileExistsError(f"{results_path} already exists; evaluate into a new run folder")
    run_dir.mkdir(parents=True, exist_ok=True)

    scores = score_audios(audios, labels, clap, sample_rate)
    v = verdict(scores["probs"], scores["audio_embs"], labels, removed_label, added_label, kept_labels, tolerance)
    shown = {n: audios[n] for n in AUDIO_NAMES}
    plot_label_probabilities({n: scores["probs"][n] for n in AUDIO_NAMES}, labels, run_dir / "label_probs.png")
    plot_spectrograms(shown, sample_rate, run_dir / "spectrograms.png")
    results = {"labels": labels, "removed_label": removed_label, "added_label": added_label,
               "kept_labels": kept_labels, "tolerance": float(tolerance), "probs": scores["probs"],
               "verdict": v, "clap": scores["clap"], "logit_scale": scores["logit_scale"],
               "sample_rate": int(sample_rate), "figures": ["label_probs.png", "spectrograms.png"]}
    with open(results_path, "x") as f:   # 'x': fail rather than overwrite if another run raced us here
        json.dump(results, f, indent=2)
    print(format_verdict(v))
    print(f"Results: {results_path}")
    return results
