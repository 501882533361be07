"""Plan step 9: did the manipulated audio move the way the edit did? Two scorers, many seeds, a verdict, plots.

The three audios (baseline_original from I_0, baseline_edited from I_1, manipulated from E_final) are made
for several seeds. Each sound source (the removed one, the added one, the kept ones) gets a score per audio
and seed from:

- the verdict's scorer, the plan's "audio classifier": an AudioSet tagger, the Audio Spectrogram Transformer
  (MIT/ast-finetuned-audioset-10-10-0.4593, through transformers). Each AudioSet class has its own sigmoid,
  so scores of different sources do not compete; a source's score is the max over its AudioSet classes
  (AUDIO_CLASSES in main.py). A source with no AudioSet class is left to the CLAP view and listed so.
- a second view, LAION-CLAP zero-shot (HTSAT-tiny + RoBERTa, 630k-audioset-best.pt): a softmax over a closed
  list of text labels. Weaker evidence: raising P(added) pushes every other label down, and CLAP is the same
  model family as the embedding that conditions AudioLDM, so it partly measures itself.

The verdict answers two questions, each paired per seed and by each scorer on its own (no number ever
mixes the two):

1. Method's own effect (the headline): manipulated - baseline_edited. Both rows carry I_1's YOLO crops and
   draw the same noise; only slot 0 differs (E_final vs plain CLIP of I_1), so this is what the SVD
   manipulation did beyond what plain I_1 does. With the method switched off it must read 'no effect'.
2. Edit followed (the plan's step 9): manipulated - baseline_original. Plain I_1 passes most of this by
   itself, since its crops already hold the added object and lack the removed one.

Checks of each question, reported as mean ± std, a t-based 95% confidence interval and the fraction of
seeds where the check holds:

    removed_decreased            score(removed) goes down (by more than the effect floor)
    added_increased              score(added) goes up (by more than the effect floor)
    kept_within_tolerance:<s>    |change of score(s)| <= tolerance, for each kept source
    contrast                     (change of added) - (change of removed) > 0: the sweep ranks by this

Statuses, the same in the printout, run.json, results.json, sweep.csv and pairs.csv: PASS (the whole
interval on the expected side and beyond the floor EVAL_MIN_EFFECT; inside the tolerance for a kept
source), weak (only the mean is), FAIL (the mean is on the wrong side), no effect (an up/down mean below
the floor: float noise is not a result). One seed has no interval, so it is never PASS. A failing check
is a research result, not an error. CLAP also reports whether the manipulated audio lies nearer to
baseline_edited than to baseline_original (embedding cosine distance, label-distribution KL).

The CLAP model is built here instead of through laion_clap.CLAP_Module because that class downloads
roberta-base weights in its constructor and unpickles its checkpoint with weights_only=False; we build the
same modules from local configs and load the checkpoint's tensors with torch.load(weights_only=True).

    classifier, clap = load_ast(), load_clap()       # once per process (tiny_ast(), tiny_clap() for tests)
    results = evaluate_run(audio, seeds, {"removed": "cat", "added": "duck", "kept": ["dog"]}, run_dir,
                           classifier, clap, class_map={"cat": ["Cat", "Meow"]}, clap_labels={"cat": "a cat meowing"})
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

from model.checkpoints import (CheckpointError, _first, check_tokenizer, checkpoint_path, hf_model_dir,
                               load_pretrained_strictly, load_torch_file, read_pretrained, state_dict_problems)
from util import get_device, new_file

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


def read_clap_state(path):
    """(state dict with 'module.' stripped, names of the ignored top-level entries) of a LAION-CLAP checkpoint.

    The release is a training checkpoint: {'epoch', 'name', 'state_dict' (saved from DistributedDataParallel,
    so every key starts with 'module.'), 'optimizer'} whose optimizer keeps numpy.float64 learning rates. It
    is read weights-only (numpy scalars allowed, nothing else) and memory-mapped, so the optimizer's tensors
    are never read into memory.
    """
    checkpoint = load_torch_file(path, "clap", what="LAION-CLAP checkpoint", mmap=True)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        state, ignored = checkpoint["state_dict"], sorted(str(k) for k in checkpoint if k != "state_dict")
    elif isinstance(checkpoint, dict) and checkpoint and all(hasattr(v, "shape") for v in checkpoint.values()):
        state, ignored = checkpoint, []   # a bare state dict
    else:
        found = _first(sorted(map(str, checkpoint))) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path} holds no state dict (found {found or 'an empty dict'}); "
                              "expected LAION-CLAP's 630k-audioset-best.pt")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    return state, ignored


def load_clap_weights(model, path):
    """Load a LAION-CLAP checkpoint into model: tensors only, 'module.' prefixes stripped, strict key check."""
    state, ignored = read_clap_state(path)
    check_clap_state(model, state, path)
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)
    if ignored:
        print(f"  {Path(path).name}: ignored top-level entries {_first(ignored)} (training state)")
    return model


def check_clap_state(model, state, path):
    """CheckpointError naming the keys when state does not fit model (the stale position_ids are allowed)."""
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not (k in _STALE_KEYS and k not in own)}
    problems = state_dict_problems(own, state)
    if problems:
        raise CheckpointError(
            f"{path} does not fit HTSAT-tiny + RoBERTa non-fusion CLAP: " + "; ".join(problems) + ".\n"
            "  Use 630k-audioset-best.pt (not a fusion or PANN checkpoint): python -m model.checkpoints clap")


def verify_clap_file(path):
    """Check a LAION-CLAP checkpoint's keys and shapes against HTSAT-tiny + the cached roberta-base config."""
    from transformers import RobertaConfig
    state, ignored = read_clap_state(path)
    model = build_clap_model(read_pretrained(RobertaConfig.from_pretrained, hf_model_dir("roberta", download=False),
                                             "the roberta-base config", "roberta"))
    check_clap_state(model, state, path)
    return f"{path}: {len(state)} tensors fit HTSAT-tiny + RoBERTa" + (
        f" (ignored entries: {_first(ignored)})" if ignored else "")


def verify_roberta_folder(folder):
    """The roberta-base tokenizer and config that CLAP's text branch is built from, checked for emptiness."""
    from transformers import RobertaConfig, RobertaTokenizer
    config = read_pretrained(RobertaConfig.from_pretrained, folder, "the roberta-base config", "roberta")
    tokenizer = check_roberta_tokenizer(read_pretrained(RobertaTokenizer.from_pretrained, folder,
                                                        "the roberta-base tokenizer", "roberta"),
                                        vocab_size=config.vocab_size)
    return f"{folder}: tokenizer of {len(tokenizer)} entries for a {config.vocab_size}-token RoBERTa"


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
    if not isinstance(sample_rate, (int, float, np.number)) or sample_rate <= 0 or sample_rate != int(sample_rate):
        raise ValueError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    g = math.gcd(int(sample_rate), CLAP_SAMPLE_RATE)
    up, down = CLAP_SAMPLE_RATE // g, int(sample_rate) // g
    waves = []
    for a in _mono_list(audios):
        # cut before resampling, so a 12 s clip and its first 10 s give the same samples (and less work)
        a = _resample(a[:math.ceil(CLAP_SAMPLES * down / up)], int(sample_rate), CLAP_SAMPLE_RATE)
        a = (np.clip(a, -1.0, 1.0) * 32767.0).astype(np.int16).astype(np.float32) / 32767.0
        if len(a) > CLAP_SAMPLES:
            a = a[:CLAP_SAMPLES]
        elif len(a) < CLAP_SAMPLES:
            a = np.tile(a, CLAP_SAMPLES // len(a))
            a = np.pad(a, (0, CLAP_SAMPLES - len(a)))
        waves.append(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)))
    return waves


def _resample(wave, rate, target):
    """A polyphase resampling of a 1-D wave from rate to target Hz (the same wave when they are equal)."""
    if int(rate) == int(target):
        return wave
    from scipy.signal import resample_poly
    g = math.gcd(int(rate), int(target))
    return resample_poly(wave, int(target) // g, int(rate) // g)


@functools.lru_cache(maxsize=None)
def _load_clap(device_str):
    from transformers import RobertaConfig, RobertaTokenizer
    path = checkpoint_path("clap")   # first, so a missing checkpoint is the error the user sees
    folder = hf_model_dir("roberta")
    tokenizer = read_pretrained(RobertaTokenizer.from_pretrained, folder, "the roberta-base tokenizer", "roberta")
    config = read_pretrained(RobertaConfig.from_pretrained, folder, "the roberta-base config", "roberta")
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
# the AudioSet classifier (the plan's "audio classifier"): Audio Spectrogram Transformer

AST_REPO = "MIT/ast-finetuned-audioset-10-10-0.4593"
AST_SAMPLE_RATE = 16000        # AudioLDM's own rate: no resampling between generator and classifier
AUDIOSET_LABELS_FILE = Path(__file__).resolve().parent / "model" / "audioset_labels.csv"


@functools.lru_cache(maxsize=None)
def audioset_labels():
    """The 527 AudioSet display names in index order (the ontology's class_labels_indices.csv)."""
    import csv
    with open(AUDIOSET_LABELS_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    return tuple(r["display_name"] for r in sorted(rows, key=lambda r: int(r["index"])))


class AudioClassifier:
    """An AudioSet tagger: waveforms -> independent per-class probabilities (sigmoid of each class's logit).

    Multi-label, as AudioSet is: P(Cat) and P(Speech) do not compete, so raising one source's score does not
    lower another's (unlike CLAP's softmax over a closed label list).
    """

    def __init__(self, model, feature_extractor, device, name):
        self.model, self.feature_extractor, self.device, self.name = model, feature_extractor, torch.device(device), name

    @property
    def labels(self):
        """Class names by index, from the loaded model's own id2label (the authority at run time)."""
        id2label = self.model.config.id2label
        return [id2label[i] for i in range(len(id2label))]

    @torch.no_grad()
    def class_probabilities(self, audios, sample_rate, batch_size=8):
        """float64 numpy [B, n_classes]: sigmoid(logits) of the model, as transformers' audio-classification
        pipeline computes them with function_to_apply='sigmoid'."""
        rate = int(self.feature_extractor.sampling_rate)
        waves = [_resample(w, sample_rate, rate) for w in _mono_list(audios)]
        out = []
        for i in range(0, len(waves), batch_size):
            features = self.feature_extractor([w.astype(np.float32) for w in waves[i:i + batch_size]],
                                              sampling_rate=rate, return_tensors="pt")
            x = features["input_values"].to(self.device, self.model.dtype)
            out.append(torch.sigmoid(self.model(input_values=x).logits.float()).cpu().double().numpy())
        return np.concatenate(out)


def _mono_list(audios):
    """float64 numpy waves from [B, n] (numpy or torch) or a list of 1-D arrays; ValueError saying what is wrong."""
    if isinstance(audios, torch.Tensor):
        audios = audios.detach().cpu().numpy()
    if isinstance(audios, np.ndarray):
        if audios.ndim != 2:
            raise ValueError(f"audios must be [B, n] or a list of 1-D arrays, got an array of shape {audios.shape}")
        audios = list(audios)
    waves = [np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64) for a in audios]
    for i, w in enumerate(waves):
        if w.ndim != 1 or w.size == 0:
            raise ValueError(f"audio {i} must be a non-empty mono 1-D array, got shape {w.shape}")
        if not np.isfinite(w).all():
            raise ValueError(f"audio {i} contains NaN or infinite samples")
    if not waves:
        raise ValueError("no audio given")
    return waves


def _read_ast(folder):
    """(model, feature extractor) of a local AST snapshot, the weights checked key by key against config.json."""
    from transformers import ASTFeatureExtractor, ASTForAudioClassification
    model = load_pretrained_strictly(ASTForAudioClassification, folder, "the AST classifier", "ast")
    try:
        feature_extractor = ASTFeatureExtractor.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"the AST feature extractor in {folder} is unusable ({err}); "
                              "python -m model.checkpoints ast") from err
    if len(model.config.id2label) != 527:
        raise CheckpointError(f"{folder} classifies {len(model.config.id2label)} classes, not AudioSet's 527")
    return model.eval(), feature_extractor


def verify_ast_folder(folder):
    """Check a local AST snapshot by loading it as load_ast does: weights, config with 527 classes, features."""
    model, _ = _read_ast(folder)
    return f"{folder}: AST with {len(model.state_dict())} tensors, {len(model.config.id2label)} AudioSet classes"


@functools.lru_cache(maxsize=None)
def _load_ast(device_str):
    folder = hf_model_dir("ast")
    print(f"Loading the AudioSet classifier {AST_REPO} from {folder} on {device_str}")
    model, feature_extractor = _read_ast(folder)
    # fp32 on every device: 86 M parameters cost little, and scores are compared in the third decimal
    return AudioClassifier(model.to(device_str).eval(), feature_extractor, device_str, name=AST_REPO)


def load_ast(device=None):
    """The real AudioSet classifier (AST, MIT/ast-finetuned-audioset-10-10-0.4593), built once per device."""
    return _load_ast(str(get_device(device)))


@functools.lru_cache(maxsize=None)
def tiny_ast(seed=0):
    """A random-weight AST of the same class and interface: the real feature extractor (16 kHz, 128 mel bins,
    1024 frames), the 527 AudioSet labels, one layer of width 32 instead of twelve of 768. Meaningless scores."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification
    labels = audioset_labels()
    config = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                       num_labels=len(labels), id2label=dict(enumerate(labels)),
                       label2id={n: i for i, n in enumerate(labels)}, initializer_range=0.3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ASTForAudioClassification(config).eval()
    return AudioClassifier(model, ASTFeatureExtractor(), "cpu", name=f"tiny random AST (seed {seed})")


def resolve_audio_classes(sources, class_map, labels):
    """Which of the classifier's classes stand for each sound source: (source -> [class names], notes).

    class_map[source] lists AudioSet display names (exact, as the model's id2label spells them); a source
    missing from class_map is matched by name ('dog' -> 'Dog', 'rooster' -> 'Chicken, rooster'); an empty
    list, or no match, means the source has no AudioSet class and its checks use CLAP instead (a note says so).
    ValueError for a name the model does not know, listing the closest ones it does.
    """
    import difflib
    labels = list(labels)
    resolved, notes = {}, []
    for source in sources:
        names = class_map.get(source)
        if names is None:
            key = source.strip().lower()
            names = [lab for lab in labels
                     if key == lab.lower() or key in [part.strip().lower() for part in lab.split(",")]][:1]
            if names:
                notes.append(f"'{source}' -> AudioSet class {names[0]!r} (matched by name)")
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"AUDIO_CLASSES[{source!r}] must be a list of AudioSet class names, got {names!r}")
        unknown = [n for n in names if n not in labels]
        if unknown:
            lower = {lab.lower(): lab for lab in labels}
            hints = []
            for n in unknown:
                close = difflib.get_close_matches(n, labels, n=4, cutoff=0.5)
                close += [lab for lab in labels if n.lower() in lab.lower() and lab not in close][:4]
                close = ([lower[n.lower()]] if n.lower() in lower else []) + [c for c in close if c.lower() != n.lower()]
                hints.append(f"{n!r} (close: {', '.join(repr(c) for c in close[:5]) or 'none'})")
            raise ValueError(f"AUDIO_CLASSES[{source!r}]: the classifier has no class " + "; ".join(hints)
                             + ". Use the exact AudioSet display names (model/audioset_labels.csv)")
        if not names:
            notes.append(f"'{source}' has no AudioSet class: only the CLAP view judges it")
        resolved[source] = list(names)
    return resolved, notes


def source_scores(class_probs, resolved, labels):
    """source -> [B] score: the max, over the source's classes, of the independent class probabilities."""
    index = {name: i for i, name in enumerate(labels)}
    return {source: class_probs[:, [index[n] for n in names]].max(axis=1)
            for source, names in resolved.items() if names}


# -----------------------------------------------------------------------------
# CLAP scores

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


def clap_label(source, clap_labels):
    """CLAP's text label of a sound source: its entry in clap_labels, else 'the sound of a <source>'."""
    return clap_labels.get(source) or f"the sound of a {source}"


def clap_label_list(sources, clap_labels):
    """CLAP's closed label list: each source's label, then the other clap_labels texts (distractors).

    ValueError when two entries share a text (their probabilities could not be told apart).
    """
    labels = [clap_label(s, clap_labels) for s in sources]
    labels += [t for t in clap_labels.values() if t not in labels]
    return _check_label_list(labels)


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


# -----------------------------------------------------------------------------
# scoring a run: every audio of every seed, by both scorers

def score_run(audio, sources, classifier, clap, class_map, clap_labels, sample_rate=16000):
    """Both scorers on a table of audios.

    audio: [S, R, T] (seeds x audio rows) float waveforms. sources: the sound-source names to score.
    class_map: source -> AudioSet class names (see resolve_audio_classes); clap_labels: source -> CLAP text
    label, other entries are distractor labels. Returns a dict of plain arrays:
      classifier: source -> [S, R] (only sources with AudioSet classes), classes: source -> [names],
      clap_probs: [S, R, L] with clap_labels_list [L], clap_source_index: source -> label index,
      clap_embs: [S, R, 512], notes: lines to show the user.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 3 or 0 in audio.shape:
        raise ValueError(f"audio must be [seeds, rows, samples], got shape {audio.shape}")
    S, R, _ = audio.shape
    flat = list(audio.reshape(S * R, -1))
    # equal audios are scored once: a batched network gives two equal rows of a batch slightly different
    # outputs, and a method that changed nothing must score exactly nothing
    first = {}
    same_as = [first.setdefault(a.tobytes(), i) for i, a in enumerate(flat)]
    drawn = sorted(set(same_as))
    column = [drawn.index(j) for j in same_as]
    unique = [flat[i] for i in drawn]
    resolved, notes = resolve_audio_classes(sources, class_map, classifier.labels)
    class_probs = classifier.class_probabilities(unique, sample_rate)[column]
    per_source = {s: v.reshape(S, R) for s, v in source_scores(class_probs, resolved, classifier.labels).items()}
    labels = clap_label_list(sources, clap_labels)
    embs = clap.audio_embeddings(unique, sample_rate)[column]
    probs = label_probabilities(embs, clap.text_embeddings(labels), clap.logit_scale).double().numpy()
    return {"classifier": per_source, "classes": resolved, "classifier_name": classifier.name,
            "clap_probs": probs.reshape(S, R, -1), "clap_labels": labels,
            "clap_source_index": {s: labels.index(clap_label(s, clap_labels)) for s in sources},
            "clap_embs": embs.double().numpy().reshape(S, R, -1), "clap_name": clap.name,
            "logit_scale": clap.logit_scale, "notes": notes}


# -----------------------------------------------------------------------------
# the verdict: two questions, paired differences over seeds

EXPECT = {"up": "> 0", "down": "< 0", "same": "within the tolerance"}
STATUSES = ("PASS", "weak", "FAIL", "no effect")
# PASS: the whole 95% interval is on the expected side and beyond the effect floor (inside +-tolerance for a
# kept source); weak: only the mean is; FAIL: the mean is on the wrong side (outside the tolerance);
# no effect: an up/down change whose mean is below the floor (float noise is not a result)

# the two questions each verdict answers; the first is the headline
QUESTIONS = {
    "method_effect": dict(title="Method's own effect", base="baseline_edited", short="effect",
                          about="manipulated vs baseline_edited: same crops and noise, only slot 0 differs, so "
                                "this is what the SVD manipulation did beyond plain I_1"),
    "edit_followed": dict(title="Edit followed", base="baseline_original", short="edit",
                          about="manipulated vs baseline_original: the plan's step 9 (plain I_1 passes most of "
                                "it by itself: its crops already changed)"),
}
SCORERS = {"classifier": "audioset", "clap": "clap"}
STATUS_COLOURS = {"PASS": "tab:green", "weak": "tab:olive", "FAIL": "tab:red", "no effect": "0.45"}   # view key -> the short name used in table columns


def paired_stats(deltas, expect, tolerance=0.0, confidence=0.95, min_effect=0.0):
    """Statistics of paired differences (one per seed) for a check that expects them up, down or the same.

    Returns mean, std (ddof 1), a t-based confidence interval of the mean (None for one seed), the fraction
    of seeds where the check holds (beyond the floor min_effect for up/down, within +-tolerance for same)
    and the status (STATUSES). One seed has no interval, so it is never PASS.
    """
    from scipy.stats import t as student_t
    if expect not in EXPECT:
        raise ValueError(f"expect must be one of {list(EXPECT)}, got {expect!r}")
    if not 0 <= min_effect < 1:
        raise ValueError(f"min_effect is a difference in [0, 1), got {min_effect!r}")
    d = np.asarray(deltas, dtype=np.float64).ravel()
    if d.size == 0 or not np.isfinite(d).all():
        raise ValueError(f"deltas must be finite numbers, got {deltas!r}")
    n, mean = len(d), float(d.mean())
    std = float(d.std(ddof=1)) if n > 1 else None
    ci = None
    if n > 1:
        half = float(student_t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
        ci = [mean - half, mean + half]
    if expect == "same":
        holds = np.abs(d) <= tolerance
        status = ("PASS" if ci is not None and ci[0] >= -tolerance and ci[1] <= tolerance
                  else "weak" if abs(mean) <= tolerance else "FAIL")
    else:
        sign = 1.0 if expect == "up" else -1.0
        holds = sign * d > min_effect
        near = None if ci is None else (ci[0] if expect == "up" else -ci[1])   # the bound nearest to zero
        if mean == 0 or abs(mean) < min_effect:
            status = "no effect"
        elif sign * mean < 0:
            status = "FAIL"
        else:
            status = "PASS" if near is not None and near > min_effect else "weak"
    return {"deltas": [float(x) for x in d], "mean": mean, "std": std, "ci95": ci, "n": n,
            "fraction_holds": float(holds.mean()), "status": status, "expect": expect,
            "tolerance": float(tolerance) if expect == "same" else None,
            "min_effect": float(min_effect) if expect != "same" else None}


def overall_status(checks):
    """One status for a set of checks: FAIL if any fails, PASS if all pass, 'no effect' if every up/down
    check is no effect (kept sources staying put is then what nothing happening looks like), else weak."""
    statuses = [c["status"] for c in checks.values()]
    moving = [c["status"] for c in checks.values() if c["expect"] != "same"]
    if not statuses:
        return "no checks"
    if "FAIL" in statuses:
        return "FAIL"
    if moving and all(s == "no effect" for s in moving):
        return "no effect"
    return "PASS" if all(s == "PASS" for s in statuses) else "weak"


def _view(scorer, checks, contrast, extra=None):
    counts = {s: sum(c["status"] == s for c in checks.values()) for s in STATUSES}
    return {"scorer": scorer, "checks": checks, "status": overall_status(checks), "counts": counts,
            "contrast": contrast, **(extra or {})}


def compare_rows(scores, roles, base, test, tolerance=0.05, min_effect=0.01, names=("base", "test")):
    """Row `test` against row `base` of score_run's table, paired per seed, for each scorer on its own.

    Checks: added_increased (score(added) test - base > 0), removed_decreased (< 0), kept_within_tolerance:<s>
    (|change| <= tolerance); and the contrast (change of added) - (change of removed), expected > 0.
    The classifier view holds only sources with an AudioSet class (never a CLAP number); the CLAP view holds
    every source. names: what base and test are called in the descriptions.
    Returns {"base", "test", "classifier": view, "clap": view}; a view is {scorer, checks, status, counts, contrast}.
    """
    if not 0 <= tolerance <= 1:
        raise ValueError(f"tolerance is a probability difference in [0, 1], got {tolerance!r}")
    check_roles(roles)
    clap_index = scores["clap_source_index"]
    tables = {"classifier": ("P_audioset", {s: v[:, [base, test]] for s, v in scores["classifier"].items()}),
              "clap": ("P_clap", {s: scores["clap_probs"][:, [base, test], i] for s, i in clap_index.items()})}
    jobs = [("removed_decreased", roles["removed"], "down"), ("added_increased", roles["added"], "up")]
    jobs += [(f"kept_within_tolerance:{k}", k, "same") for k in roles["kept"]]
    out = {"base": names[0], "test": names[1]}
    for view, (what, table) in tables.items():
        checks = {}
        for check, source, expect in jobs:
            if source not in table:
                continue
            b, t = (np.asarray(table[source][:, i], dtype=np.float64) for i in (0, 1))
            checks[check] = {"source": source,
                             "description": f"{what}({source}): {names[1]} - {names[0]} {EXPECT[expect]}",
                             names[0]: b.tolist(), names[1]: t.tolist(),
                             **paired_stats(t - b, expect, tolerance, min_effect=min_effect)}
        contrast = None
        if roles["added"] in table and roles["removed"] in table:
            d = lambda s: np.diff(np.asarray(table[s], dtype=np.float64), axis=1)[:, 0]   # noqa: E731
            contrast = {"description": f"change of {what}({roles['added']}) - change of {what}({roles['removed']}) > 0",
                        **paired_stats(d(roles["added"]) - d(roles["removed"]), "up", min_effect=min_effect)}
        name = scores["classifier_name"] if view == "classifier" else scores["clap_name"]
        missing = [s for s in [roles["removed"], roles["added"], *roles["kept"]] if s not in table]
        out[view] = _view(name, checks, contrast, {"not_judged": missing} if missing else None)
    return out


def check_roles(roles):
    """ValueError unless roles names a removed and an added source and kept ones, all different."""
    for role in ("removed", "added"):
        if not isinstance(roles.get(role), str) or not roles[role]:
            raise ValueError(f"roles needs a {role!r} source name, got {roles!r}")
    if not isinstance(roles.get("kept", []), (list, tuple)):
        raise ValueError(f"roles['kept'] must be a list of source names, got {roles!r}")
    if roles["removed"] == roles["added"] or set(roles.get("kept", [])) & {roles["removed"], roles["added"]}:
        raise ValueError(f"the removed, added and kept sources must differ, got {roles!r}")
    return roles


def build_verdict(scores, roles, tolerance=0.05, rows=(0, 1, 2), min_effect=0.01):
    """The two questions, each by the classifier and by CLAP (a second view), paired per seed.

    scores: score_run's dict; roles: {'removed': name, 'added': name, 'kept': [names]}; rows: which rows of
    scores are (baseline_original, baseline_edited, manipulated). min_effect: the floor below which an up/down
    change is 'no effect' (the CLAP distance checks use the same floor, in their own units). The headline is the method's own effect by the classifier (CLAP when the classifier
    judges neither the added nor the removed source).
    """
    o, e, m = rows
    result = {q: compare_rows(scores, roles, {"method_effect": e, "edit_followed": o}[q], m, tolerance, min_effect,
                              names=(QUESTIONS[q]["base"], "manipulated")) for q in QUESTIONS}
    embs, clap_probs = scores["clap_embs"][:, [o, e, m]], scores["clap_probs"][:, [o, e, m]]
    d_orig = np.array([_cosine_distance(x[2], x[0]) for x in embs])
    d_edit = np.array([_cosine_distance(x[2], x[1]) for x in embs])
    kl_orig = np.array([_kl(p[0], p[2]) for p in clap_probs])
    kl_edit = np.array([_kl(p[1], p[2]) for p in clap_probs])
    result["clap_distances"] = {
        "closer_to_edited_clap": {
            "description": "CLAP audio cosine distance: d(manip, original) - d(manip, edited) > 0",
            "to_original": d_orig.tolist(), "to_edited": d_edit.tolist(),
            **paired_stats(d_orig - d_edit, "up", min_effect=min_effect)},
        "closer_to_edited_kl": {
            "description": "KL(P_original || P_manip) - KL(P_edited || P_manip) > 0, in nats",
            "kl_original": kl_orig.tolist(), "kl_edited": kl_edit.tolist(),
            **paired_stats(kl_orig - kl_edit, "up", min_effect=min_effect)}}
    view = result["method_effect"]["classifier"]
    judged = view["checks"].keys() & {"added_increased", "removed_decreased"}
    head_view = "classifier" if judged else "clap"
    result["headline"] = {"question": "method_effect", "view": head_view,
                          "scorer": result["method_effect"][head_view]["scorer"],
                          "status": result["method_effect"][head_view]["status"]}
    result.update(roles={"removed": roles["removed"], "added": roles["added"], "kept": list(roles["kept"])},
                  tolerance=float(tolerance), min_effect=float(min_effect), n_seeds=int(clap_probs.shape[0]),
                  scorers={"classifier": scores["classifier_name"], "clap": scores["clap_name"]})
    return result


def _num(x, signed=True):
    """4 decimals, or 2 significant digits for tiny non-zero values (random-weight runs move scores by 1e-5)."""
    if x != 0 and abs(x) < 1e-3:
        return f"{x:+.1e}" if signed else f"{x:.1e}"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _pm(stats):
    text = _num(stats["mean"])
    if stats["std"] is not None:
        text += f" ± {_num(stats['std'], signed=False)}"
    return text


def _stat_line(c):
    ci = f"95% CI [{_num(c['ci95'][0])}, {_num(c['ci95'][1])}]" if c["ci95"] else "no CI with one seed"
    return f"delta {_pm(c)}, {ci}, holds in {c['fraction_holds']:.0%} of seeds"


VIEW_TITLES = {"classifier": "AudioSet classifier", "clap": "CLAP (second view)"}


def format_verdict(result):
    """Both questions as a printable table, the method's own effect first (statuses, means ± stds, CIs)."""
    head = result["headline"]
    lines = [f"HEADLINE: method's own effect ({VIEW_TITLES[head['view']]}): {head['status']}   "
             f"[floor {result['min_effect']:g}, kept tolerance {result['tolerance']:g}, {result['n_seeds']} seed(s)]"]
    for q, info in QUESTIONS.items():
        lines.append(f"\n{info['title']}: {info['about']}")
        for view in ("classifier", "clap"):
            v = result[q][view]
            counts = ", ".join(f"{n} {s}" for s, n in v["counts"].items() if n)
            lines.append(f"  {VIEW_TITLES[view]} [{v['scorer']}]: {v['status']}  ({counts or 'no checks'})")
            items = list(v["checks"].items()) + ([("contrast", v["contrast"])] if v["contrast"] else [])
            for name, c in items:
                lines.append(f"    {c['status']:9s} {name:34s}{c['description']}")
                lines.append(f"    {'':9s} {'':34s}{_stat_line(c)}")
            if v.get("not_judged"):
                lines.append(f"    (no AudioSet class, judged by CLAP only: {', '.join(v['not_judged'])})")
    lines.append("\nCLAP embedding distances (manipulated nearer to baseline_edited than to baseline_original):")
    for name, c in result["clap_distances"].items():
        lines.append(f"    {c['status']:9s} {name:34s}{c['description']}")
        lines.append(f"    {'':9s} {'':34s}{_stat_line(c)}")
    return "\n".join(lines)


def _rows_of_view(question, view, v):
    items = list(v["checks"].items()) + ([("contrast", v["contrast"])] if v["contrast"] else [])
    for name, c in items:
        lo, hi = c["ci95"] if c["ci95"] else (None, None)
        yield {"question": question, "scorer": SCORERS.get(view, view), "check": name, "status": c["status"],
               "mean": c["mean"], "std": c["std"], "ci_low": lo, "ci_high": hi,
               "fraction_holds": c["fraction_holds"], "n": c["n"], "description": c["description"]}


def verdict_rows(result):
    """The verdict as a flat list of dicts (question, scorer, check, status, mean, std, ci_low, ci_high,
    fraction_holds, n, description): the method's own effect first; for tables and the browser bench."""
    rows = []
    for q in QUESTIONS:
        for view in ("classifier", "clap"):
            rows += _rows_of_view(q, view, result[q][view])
    rows += _rows_of_view("clap_distances", "clap", {"checks": result["clap_distances"], "contrast": None})
    return rows


def verdict_columns(result):
    """One flat table row (sweep.csv, pairs.csv): '<effect|edit> <audioset|clap> <check> <field>' columns,
    so that no column ever mixes the two scorers; plus each question's status per scorer."""
    row = {}
    for q, info in QUESTIONS.items():
        for view, short in SCORERS.items():
            v = result[q][view]
            prefix = f"{info['short']} {short}"
            row[f"{prefix} status"] = v["status"]
            items = list(v["checks"].items()) + ([("contrast", v["contrast"])] if v["contrast"] else [])
            for name, c in items:
                row[f"{prefix} {name} status"] = c["status"]
                row[f"{prefix} {name} mean"] = round(c["mean"], 6)
                if c["ci95"]:
                    row[f"{prefix} {name} ci_low"], row[f"{prefix} {name} ci_high"] = (round(x, 6) for x in c["ci95"])
                row[f"{prefix} {name} fraction_holds"] = round(c["fraction_holds"], 4)
    row["headline"] = result["headline"]["status"]
    row["headline scorer"] = SCORERS[result["headline"]["view"]]
    return row


def headline_record(result):
    """What run.json keeps of a verdict: the headline and each question's status per scorer."""
    return {"headline": result["headline"], "min_effect": result["min_effect"], "tolerance": result["tolerance"],
            **{q: {SCORERS[v]: result[q][v]["status"] for v in SCORERS} for q in QUESTIONS}}


def format_scores(scores, sources, rows=(0, 1, 2)):
    """Mean ± std over seeds of each source's score per audio, for both scorers."""
    rows = list(rows)
    lines = [f"  {'source':14s}{'scorer':12s}" + "".join(f"{n:>22s}" for n in AUDIO_NAMES)]
    for source in sources:
        tables = []
        if source in scores["classifier"]:
            tables.append(("AudioSet", scores["classifier"][source][:, rows]))
        tables.append(("CLAP", scores["clap_probs"][:, rows, scores["clap_source_index"][source]]))
        for scorer, v in tables:
            cells = "".join(f"{_mean_std(v[:, i]):>22s}" for i in range(3))
            lines.append(f"  {source:14s}{scorer:12s}{cells}")
    return "\n".join(lines)


def _mean_std(x):
    x = np.asarray(x, dtype=np.float64)
    return f"{x.mean():.4f}" + (f" ± {x.std(ddof=1):.4f}" if len(x) > 1 else "")


# -----------------------------------------------------------------------------
# figures

def plot_scores(scores, sources, path, rows=(0, 1, 2), seeds=None, result=None):
    """Grouped bars (mean over seeds, error bar = std, dots = single seeds) for each scorer, and the verdict.

    Left: the AudioSet classifier's score of each source; next: CLAP's label probability; then (with a
    build_verdict result) one panel per question, method's own effect first: each check's paired difference
    (manipulated - baseline_edited, manipulated - baseline_original) by the headline's scorer, mean with its
    95% interval and status, seeds as dots, the effect floor / kept tolerance band shaded. Writes a PNG.
    """
    from matplotlib.figure import Figure
    rows = list(rows)
    panels = [("AudioSet classifier score (independent sigmoid)",
               {s: scores["classifier"][s][:, rows] for s in sources if s in scores["classifier"]}),
              ("CLAP zero-shot probability (softmax over labels)",
               {s: scores["clap_probs"][:, rows, scores["clap_source_index"][s]] for s in sources})]
    n_panels = 2 + (len(QUESTIONS) if result is not None else 0)
    fig = Figure(figsize=(max(4.8, 1.5 * len(sources) + 1.5) * n_panels, 5.0), layout="constrained")
    axes = fig.subplots(1, n_panels)
    width = 0.8 / len(AUDIO_NAMES)
    for ax, (title, table) in zip(axes, panels):
        names = list(table)
        x = np.arange(len(names))
        for j, audio_name in enumerate(AUDIO_NAMES):
            vals = np.array([table[s][:, j] for s in names]) if names else np.zeros((0, 1))
            pos = x + (j - 1) * width
            mean = vals.mean(axis=1) if names else []
            std = vals.std(axis=1, ddof=1) if names and vals.shape[1] > 1 else None
            bars = ax.bar(pos, mean, width, yerr=std, capsize=3, label=audio_name, alpha=0.85)
            ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
            for k in range(len(names)):
                ax.scatter(np.full(vals.shape[1], pos[k]), vals[k], s=8, c="k", zorder=3)
        ax.set_xticks(x, names)
        ax.set_ylim(0, 1.08)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    if result is not None:
        for ax, (q, info) in zip(axes[2:], QUESTIONS.items()):
            view = result[q][result["headline"]["view"]]
            checks = list(view["checks"].items()) + ([("contrast", view["contrast"])] if view["contrast"] else [])
            for i, (name, c) in enumerate(checks):
                lo, hi = c["ci95"] if c["ci95"] else (c["mean"], c["mean"])
                ax.errorbar([i], [c["mean"]], yerr=[[c["mean"] - lo], [hi - c["mean"]]], fmt="o",
                            color=STATUS_COLOURS[c["status"]], capsize=5)
                ax.scatter(np.full(len(c["deltas"]), i + 0.12), c["deltas"], s=10, c="k", zorder=3)
                band = c["tolerance"] if c["expect"] == "same" else c["min_effect"]
                ax.fill_between([i - 0.3, i + 0.3], -band, band, color="0.85", zorder=0)
                ax.annotate(c["status"], (i, hi), textcoords="offset points", xytext=(0, 6), ha="center",
                            fontsize=8, color=STATUS_COLOURS[c["status"]])
            ax.axhline(0, color="0.4", lw=0.8)
            ax.set_xticks(range(len(checks)), [n.replace("kept_within_tolerance:", "kept: ") for n, _ in checks],
                          rotation=12)
            ax.set_title(f"{info['title']} ({VIEW_TITLES[result['headline']['view']]}): manipulated - "
                         f"{info['base']}\nper seed, mean and 95% CI; grey: effect floor / kept tolerance\n"
                         "green PASS, olive weak, red FAIL, grey no effect", fontsize=9)
    n = len(seeds) if seeds is not None else scores["clap_probs"].shape[0]
    fig.suptitle(f"Scores per source and audio: mean ± std over {n} seed(s), dots = single seeds", fontsize=10)
    with new_file(path) as f:   # complete or absent, never replaced
        fig.savefig(f, format="png", dpi=110)
    return Path(path)


def log_mel(audio, sample_rate, n_mels=64):
    """[n_mels, frames] log-mel power in dB (10 ms hop, 40 ms Hann window, 64 Slaney-normalised HTK mel bands
    up to sample_rate / 2), through transformers' audio_utils."""
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function
    audio = np.asarray(audio, dtype=np.float64).ravel()
    hop = max(1, sample_rate // 100)
    n_fft = 4 * hop
    filters = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
                              max_frequency=sample_rate / 2, sampling_rate=sample_rate, norm="slaney", mel_scale="htk")
    # equal-area (Slaney) bands keep white noise flat; reflect padding needs more samples than half a window
    return spectrogram(audio, window_function(n_fft, "hann"), frame_length=n_fft, hop_length=hop, power=2.0,
                       pad_mode="reflect" if len(audio) > n_fft // 2 else "constant", mel_filters=filters,
                       mel_floor=1e-10, log_mel="dB")


def plot_spectrograms(audios, sample_rate, path):
    """Log-mel spectrograms of the named audios side by side, on one colour scale. Writes a PNG."""
    from matplotlib.figure import Figure
    mels = {name: log_mel(a, sample_rate) for name, a in audios.items()}
    top = max(float(m.max()) for m in mels.values())
    fig = Figure(figsize=(4.2 * len(mels) + 1, 3.4), layout="constrained")
    axes = fig.subplots(1, len(mels), squeeze=False, sharey=True)
    for ax, (name, mel) in zip(axes[0], mels.items()):
        seconds = len(np.asarray(audios[name]).ravel()) / sample_rate
        im = ax.imshow(mel, origin="lower", aspect="auto", extent=[0, seconds, 0, mel.shape[0]],
                       vmin=top - 80, vmax=top, cmap="magma")
        ax.set_title(str(name))
        ax.set_xlabel("time (s)")
    axes[0][0].set_ylabel(f"mel band (0-{sample_rate // 2} Hz)")
    fig.colorbar(im, ax=axes[0].tolist(), label="dB")
    with new_file(path) as f:   # complete or absent, never replaced
        fig.savefig(f, format="png", dpi=110)
    return Path(path)


# -----------------------------------------------------------------------------
# preservation: how much of a recording A_0 an edit kept (step 8)

PRESERVATION_METRICS = {
    "log_mel_l1_db": "mean |log-mel(A_0) - log-mel(edit)| in dB (lower = closer)",
    "log_spectral_distance_db": "log-spectral distance in dB, STFT power, mean over frames (lower = closer)",
    "clap_cosine": "cosine of the CLAP audio embeddings (higher = closer)",
    "onset_correlation": "Pearson correlation of librosa's onset-strength envelopes (higher = same timing)",
}


def log_mel_l1(a, b, sample_rate):
    """Mean absolute difference of the two audios' log-mel spectrograms (log_mel above), in dB."""
    ma, mb = log_mel(a, sample_rate), log_mel(b, sample_rate)
    n = min(ma.shape[1], mb.shape[1])
    return float(np.abs(ma[:, :n] - mb[:, :n]).mean())


def log_spectral_distance(a, b, sample_rate, floor=1e-10):
    """LSD in dB: per frame the RMS over frequency of 10 log10(P_a / P_b) (STFT power, 40 ms Hann window, 10 ms
    hop, powers floored at `floor`), then the mean over frames."""
    from transformers.audio_utils import spectrogram, window_function
    hop = max(1, int(sample_rate) // 100)
    n_fft = 4 * hop

    def power(x):
        x = np.asarray(x, dtype=np.float64).ravel()
        return spectrogram(x, window_function(n_fft, "hann"), frame_length=n_fft, hop_length=hop, power=2.0,
                           pad_mode="reflect" if len(x) > n_fft // 2 else "constant")

    pa, pb = power(a), power(b)
    n = min(pa.shape[1], pb.shape[1])
    diff = 10 * np.log10(np.maximum(pa[:, :n], floor)) - 10 * np.log10(np.maximum(pb[:, :n], floor))
    return float(np.sqrt((diff ** 2).mean(axis=0)).mean())


def onset_correlation(a, b, sample_rate):
    """Pearson correlation of librosa's onset-strength envelopes: do the events of b fall where a's do?
    0.0 when either envelope is flat (no onsets: the correlation is undefined)."""
    import librosa
    ea = librosa.onset.onset_strength(y=np.asarray(a, dtype=np.float32).ravel(), sr=int(sample_rate))
    eb = librosa.onset.onset_strength(y=np.asarray(b, dtype=np.float32).ravel(), sr=int(sample_rate))
    n = min(len(ea), len(eb))
    ea, eb = ea[:n] - ea[:n].mean(), eb[:n] - eb[:n].mean()
    denom = float(np.sqrt((ea ** 2).sum() * (eb ** 2).sum()))
    return float((ea * eb).sum() / denom) if denom > 0 else 0.0


def preservation(audio, sample_rate, clap_embs=None, base=0):
    """Every preservation metric of each row of audio [S, R, T] against row `base` (A_0), per seed.

    clap_embs: [S, R, 512] (score_run's) for the CLAP cosine, which is left out without them. Returns
    {row index or name: {metric: {'per_seed': [S], 'mean', 'std'}}} for every row but base (keys are row indexes;
    step 8 names them). std is None for one seed.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 3 or 0 in audio.shape:
        raise ValueError(f"audio must be [seeds, rows, samples], got shape {audio.shape}")
    S, R, _ = audio.shape
    out = {}
    for r in range(R):
        if r == base:
            continue
        per = {"log_mel_l1_db": [log_mel_l1(audio[s, base], audio[s, r], sample_rate) for s in range(S)],
               "log_spectral_distance_db": [log_spectral_distance(audio[s, base], audio[s, r], sample_rate)
                                            for s in range(S)],
               "onset_correlation": [onset_correlation(audio[s, base], audio[s, r], sample_rate) for s in range(S)]}
        if clap_embs is not None:
            e = np.asarray(clap_embs, dtype=np.float64)
            per["clap_cosine"] = [1.0 - _cosine_distance(e[s, r], e[s, base]) for s in range(S)]
        out[r] = {m: {"per_seed": v, "mean": float(np.mean(v)),
                      "std": float(np.std(v, ddof=1)) if len(v) > 1 else None} for m, v in per.items()}
    return out


def format_preservation(result, names=None):
    """preservation()'s dict as a table: one line per row, mean ± std per metric."""
    metrics = list(PRESERVATION_METRICS)
    lines = ["  Preservation of A_0 (mean ± std over seeds)  " + "".join(f"{m:>28s}" for m in metrics)]
    for row, per in result.items():
        name = names[row] if names is not None and isinstance(row, int) else str(row)
        cells = "".join(f"{_mean_std(per[m]['per_seed']):>28s}" if m in per else f"{'-':>28s}" for m in metrics)
        lines.append(f"  {name:46s}{cells}")
    return "\n".join(lines)


# -----------------------------------------------------------------------------
# one run

def evaluate_run(audio, seeds, roles, run_dir, classifier, clap, class_map=None, clap_labels=None,
                 sample_rate=16000, tolerance=0.05, extra=None, min_effect=0.01):
    """Score the three audios of every seed, print the verdict, write results.json, scores.png, spectrograms.png.

    audio: [S, 3, T] (seeds x baseline_original, baseline_edited, manipulated); seeds: the S seeds.
    roles: {'removed', 'added', 'kept'} source names. extra: more entries for results.json (e.g. how far
    E_final moved the remix). Never overwrites: an existing run_dir/results.json raises FileExistsError first.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 3 or audio.shape[1] != 3 or audio.shape[0] != len(seeds):
        raise ValueError(f"audio must be [{len(seeds)} seeds, 3 audios, samples], got shape {audio.shape}")
    check_roles(roles)
    sources = [roles["removed"], roles["added"], *roles["kept"]]
    resolve_audio_classes(sources, class_map or {}, classifier.labels)   # unknown class names fail before any work
    run_dir = Path(run_dir)
    results_path = run_dir / "results.json"
    if results_path.exists():
        raise FileExistsError(f"{results_path} already exists; evaluate into a new run folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    scores = score_run(audio, sources, classifier, clap, class_map or {}, clap_labels or {}, sample_rate)
    for note in scores["notes"]:
        print(f"  {note}")
    result = build_verdict(scores, roles, tolerance, min_effect=min_effect)
    plot_scores(scores, sources, run_dir / "scores.png", seeds=seeds, result=result)
    plot_spectrograms(dict(zip(AUDIO_NAMES, audio[0])), sample_rate, run_dir / "spectrograms.png")
    results = {"seeds": [int(s) for s in seeds], "audios": list(AUDIO_NAMES), "sources": sources,
               **result, "scores": scores_record(scores, sources),
               "sample_rate": int(sample_rate), "figures": ["scores.png", "spectrograms.png"], **(extra or {})}
    with new_file(results_path, "x") as f:   # fail rather than overwrite if another run raced us here
        json.dump(results, f, indent=2)
    print(format_scores(scores, sources))
    print(format_verdict(result))
    print(f"Results: {results_path}")
    return results


def scores_record(scores, sources, rows=(0, 1, 2)):
    """The per-seed scores as plain lists for results.json: scorer -> source -> audio -> [S]."""
    rows = list(rows)
    classifier = {s: {n: scores["classifier"][s][:, r].tolist() for n, r in zip(AUDIO_NAMES, rows)}
                  for s in sources if s in scores["classifier"]}
    clap = {s: {n: scores["clap_probs"][:, r, scores["clap_source_index"][s]].tolist()
                for n, r in zip(AUDIO_NAMES, rows)} for s in sources}
    return {"classifier": {"name": scores["classifier_name"], "classes": scores["classes"], "per_seed": classifier},
            "clap": {"name": scores["clap_name"], "labels": scores["clap_labels"], "logit_scale": scores["logit_scale"],
                     "per_seed": clap,
                     "all_labels_per_seed": {n: scores["clap_probs"][:, r].tolist() for n, r in zip(AUDIO_NAMES, rows)}},
            "notes": scores["notes"]}


if __name__ == "__main__":   # python evaluation.py fad DIR_A DIR_B: set-level figures (metrics.py)
    import metrics
    sys.exit(metrics.main(sys.argv[1:]))
