"""The verdict's two scorers: audio in, a score per sound source out (plan step 9's "audio classifier").

- The AudioSet classifier, the plan's "audio classifier": the Audio Spectrogram Transformer
  (MIT/ast-finetuned-audioset-10-10-0.4593, through transformers). Each AudioSet class has its own sigmoid,
  so scores of different sources do not compete; a source's score is the max over its AudioSet classes.
  Which classes judge a source is decided in layers, and the layer is named everywhere the figure goes
  (resolve_audio_classes): AUDIO_CLASSES (the researcher's choice; 'a proxy' when none of its classes carries
  the source's name), a match on the words of AudioSet's display names, the names CLAP's text encoder puts
  nearest to the source's label (above EVAL_CLASS_MIN_SIMILARITY), else CLAP alone.
- A second view, LAION-CLAP zero-shot (HTSAT-tiny + RoBERTa, 630k-audioset-best.pt). A source's CLAP score
  is the cosine of the audio's embedding with its own label's text embedding (the zero-shot logit before the
  softmax), so another source's score cannot move it: a softmax over the run's closed label list would
  lower the kept source's score whenever the added one rose, biasing the kept check toward FAIL exactly
  when the method works. The softmax is kept only for the label-distribution KL. CLAP is the same model
  family as the embedding that conditions AudioLDM, so it partly measures itself: weaker evidence.

score_run puts every audio of every seed through both and returns plain arrays; verdict.py judges them.

The CLAP model is built here instead of through laion_clap.CLAP_Module because that class downloads
roberta-base weights in its constructor and unpickles its checkpoint with weights_only=False; we build the
same modules from local configs and load the checkpoint's tensors with torch.load(weights_only=True).

    classifier, clap = load_ast(), load_clap()       # once per process (tiny_ast(), tiny_clap() for tests)
    scores = score_run(audio, ["cat", "duck", "dog"], classifier, clap, {"cat": ["Cat", "Meow"]}, {"cat": "a cat meowing"})
"""
import functools
import importlib.util
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from audio_io import resample
from model.checkpoints import (CHECKPOINTS, CheckpointError, _first, check_tokenizer, checkpoint_path, hf_model_dir,
                               load_pretrained_strictly, load_torch_file, read_pretrained, state_dict_problems)
from util import get_device

CLAP_DIM = 512                 # joint audio-text embedding width of every LAION-CLAP model
CLAP_SAMPLE_RATE = 48000       # HTSAT-tiny's front end (audio_cfg of laion's HTSAT-tiny.json)
CLAP_SAMPLES = 480000          # 10 s at 48 kHz: the clip length the non-fusion model was trained on
TEXT_LENGTH = 77               # laion pads/truncates every caption to 77 RoBERTa tokens
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
        a = resample(a[:math.ceil(CLAP_SAMPLES * down / up)], int(sample_rate), CLAP_SAMPLE_RATE)
        a = (np.clip(a, -1.0, 1.0) * 32767.0).astype(np.int16).astype(np.float32) / 32767.0
        if len(a) > CLAP_SAMPLES:
            a = a[:CLAP_SAMPLES]
        elif len(a) < CLAP_SAMPLES:
            a = np.tile(a, CLAP_SAMPLES // len(a))
            a = np.pad(a, (0, CLAP_SAMPLES - len(a)))
        waves.append(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)))
    return waves



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


def clap_name(smoke=False, seed=0):
    """The name the CLAP scorer carries (load_clap's, or tiny_clap(seed)'s), known without loading it: what a CIAP
    checkpoint records as the CLAP it was trained against."""
    return f"tiny random CLAP (seed {seed})" if smoke else f"laion-clap {CHECKPOINTS['clap'].filename}"


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
    return ClapScorer(model, tokenizer, "cpu", name=clap_name(smoke=True, seed=seed))


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
        waves = [resample(w, sample_rate, rate) for w in _mono_list(audios)]
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


# -----------------------------------------------------------------------------
# which AudioSet classes judge each sound source: in layers, and the layer that decided is named

CLASS_MIN_SIMILARITY = 0.5     # main.EVAL_CLASS_MIN_SIMILARITY's default (the CLAP-text layer's threshold)
NEAREST_CLASSES = 3            # AudioSet classes the CLAP-text layer proposes per source
LAYERS = ("AUDIO_CLASSES", "name match", "nearest by CLAP text", "CLAP alone")
# plurals that no suffix rule undoes (AudioSet names animals and people in the singular: 'Goose', 'Mouse')
IRREGULAR_SINGULARS = {"geese": "goose", "mice": "mouse", "oxen": "ox", "children": "child", "men": "man",
                       "women": "woman", "people": "person", "teeth": "tooth", "feet": "foot", "lice": "louse",
                       "calves": "calf", "wolves": "wolf", "leaves": "leaf", "knives": "knife", "wives": "wife"}
# where in a display name the source's name was found, best first: a listener who says 'dogs' means 'Dog'
# (the whole name), not the wild-canid 'Canidae, dogs, wolves' (a later part)
NAME_PLACES = ("the whole name", "the first comma part", "a later comma part", "a part in the parentheses")


def singular_forms(phrase):
    """{phrase, and what its last word reads as in the singular}: 'dogs' -> {'dogs', 'dog'}, 'geese' -> {'geese',
    'goose'}, 'church bells' -> {'church bells', 'church bell'}. Lower case, spaces collapsed. Every candidate is
    kept (a rule may misfire: 'bus' -> 'bu'); two names match when their sets share a form."""
    words = " ".join(str(phrase).lower().split()).split(" ")
    head, last = words[:-1], words[-1]
    forms = {last}
    if last in IRREGULAR_SINGULARS:
        forms.add(IRREGULAR_SINGULARS[last])
    if last.endswith("ies") and len(last) > 4:
        forms.add(last[:-3] + "y")
    if last.endswith("ves") and len(last) > 4:
        forms |= {last[:-3] + "f", last[:-3] + "fe"}
    if last.endswith(("ses", "xes", "zes", "ches", "shes")):
        forms.add(last[:-2])
    if last.endswith("s") and not last.endswith("ss") and len(last) > 3:
        forms.add(last[:-1])
    return {" ".join(head + [f]) for f in forms}


def name_places(label):
    """[(place index in NAME_PLACES, term)] of an AudioSet display name: 'Roaring cats (lions, tigers)' ->
    [(0, 'roaring cats'), (3, 'lions'), (3, 'tigers')]; 'Canidae, dogs, wolves' -> [(1, 'canidae'),
    (2, 'dogs'), (2, 'wolves')]; a name of one part is 'the whole name'."""
    outside, _, rest = label.partition("(")
    parts = [p.strip().lower() for p in outside.split(",") if p.strip()]
    places = [(0, parts[0])] if len(parts) == 1 else [(1, parts[0])] + [(2, p) for p in parts[1:]]
    places += [(3, p.strip().lower()) for p in rest.rpartition(")")[0].split(",") if p.strip()]
    return places


def name_match(source, labels):
    """(AudioSet names, where found) matched by the words of their display names: the source's name (singular
    or plural) equal to the whole name, a comma-separated part or a part in parentheses. Only the best place
    found counts ('dogs' -> ['Dog'], found as the whole name); ([], None) when no name holds it."""
    forms = singular_forms(source)
    best, found = len(NAME_PLACES), []
    for label in labels:
        places = [place for place, term in name_places(label) if singular_forms(term) & forms]
        if places and min(places) < best:
            best, found = min(places), [label]
        elif places and min(places) == best:
            found.append(label)
    return found, (NAME_PLACES[best] if found else None)


def nearest_classes(query, class_embs, labels, k=NEAREST_CLASSES):
    """The k AudioSet names whose text embeddings are nearest (cosine) to one query embedding:
    [(name, similarity)], nearest first, and the median similarity over every name (the scale of the figure)."""
    q = F.normalize(torch.as_tensor(_as_numpy(query), dtype=torch.float64).reshape(1, -1), dim=-1)
    c = F.normalize(torch.as_tensor(_as_numpy(class_embs), dtype=torch.float64), dim=-1)
    sims = (q @ c.T)[0]
    top = torch.topk(sims, min(k, len(labels)))
    return [(labels[int(i)], float(s)) for s, i in zip(top.values, top.indices)], float(sims.median())


def clap_text_layer(text, query, class_embs, labels, min_similarity=CLASS_MIN_SIMILARITY):
    """The CLAP-text layer's decision for one source: the NEAREST_CLASSES display names nearest to its CLAP label
    (query: the label's text embedding; class_embs: the names'), proposed with their cosine similarity; those
    that reach min_similarity judge the source, and if none does, CLAP alone judges it."""
    proposed, median = nearest_classes(query, class_embs, labels)
    used = [(n, s) for n, s in proposed if s >= min_similarity]
    shown = ", ".join(f"{n!r} {s:.2f}" for n, s in proposed)
    if used:
        entry = {"classes": [n for n, _ in used], "layer": "nearest by CLAP text",
                 "why": f"nearest by CLAP text {used[0][1]:.2f}",
                 "detail": f"nearest by CLAP text to {text!r}: {shown} (used: >= {min_similarity:g}; median over "
                           f"the {len(labels)} names {median:.2f})"}
    else:
        entry = {"classes": [], "layer": "CLAP alone",
                 "why": f"CLAP alone: nearest class {proposed[0][1]:.2f} < {min_similarity:g}",
                 "detail": f"no name match, and the AudioSet names nearest to {text!r} by CLAP text ({shown}; "
                           f"median {median:.2f}) stay below EVAL_CLASS_MIN_SIMILARITY={min_similarity:g}"}
    return {**entry, "proposed": [[n, round(s, 4)] for n, s in proposed]}


def class_text_embeddings(clap, labels):
    """CLAP text embeddings of the classifier's display names, computed once per scorer and list of names."""
    key = tuple(labels)
    cache = clap.__dict__.setdefault("_class_text_embeddings", {})
    if key not in cache:
        cache[key] = clap.text_embeddings(list(labels))
    return cache[key]


def resolve_audio_classes(sources, class_map, labels, clap=None, clap_labels=None,
                          min_similarity=CLASS_MIN_SIMILARITY):
    """Which of the classifier's classes judge each sound source, and why: (source -> judged, notes).

    judged = {'classes': [names], 'layer': one of LAYERS, 'why': the short reason that goes into every table,
    'detail': one line for people, 'proposed': [[name, similarity], ...] (CLAP-text layer)}. Layers, in order:
      1. AUDIO_CLASSES (class_map): the researcher's choice, exact display names; 'a proxy' when none of them
         carries the source's name (the example's 'astronaut' -> Speech); [] there = CLAP alone, on purpose.
      2. name match: the source's name, singular or plural, is a display name, a comma-separated part of one
         or a part in its parentheses ('tigers' -> 'Roaring cats (lions, tigers)', 'geese' -> 'Goose').
      3. nearest by CLAP text: the display names CLAP's text encoder puts nearest to the source's CLAP label
         (clap_label: EVAL_LABELS' text, else 'the sound of a <name>'), the NEAREST_CLASSES of them whose cosine
         similarity reaches min_similarity. Needs clap (a ClapScorer); without it this layer is skipped.
      4. CLAP alone: no AudioSet class judges the source; the classifier's checks leave it out.
    ValueError for an AUDIO_CLASSES name the classifier does not know, listing the closest ones it has.
    """
    labels = list(labels)
    judged, notes = {}, []
    for source in sources:
        names = class_map.get(source)
        if names is not None:
            check_class_names(source, names, labels)
        matched, place = name_match(source, labels)
        if names is not None and names:
            shared = [n for n in names if n in matched]
            entry = {"classes": list(names), "layer": "AUDIO_CLASSES",
                     "why": "set in AUDIO_CLASSES" if shared else "set in AUDIO_CLASSES: a proxy",
                     "detail": (f"set in AUDIO_CLASSES (the name matches {shared[0]!r})" if shared else
                                f"set in AUDIO_CLASSES: a proxy the researcher chose (" + (
                                    f"the name matches {', '.join(map(repr, matched))}, which is not listed)"
                                    if matched else f"no AudioSet class is named {source!r})"))}
        elif names is not None:
            entry = {"classes": [], "layer": "CLAP alone", "why": "CLAP alone: [] in AUDIO_CLASSES",
                     "detail": "AUDIO_CLASSES gives it no AudioSet class ([]): only the CLAP view judges it"}
        elif matched:
            entry = {"classes": matched, "layer": "name match", "why": "name match",
                     "detail": f"name match: {source!r} matches {place} of " + ", ".join(map(repr, matched))}
        elif clap is None:
            entry = {"classes": [], "layer": "CLAP alone", "why": "CLAP alone: no name match",
                     "detail": "no AudioSet name holds it (the CLAP-text layer needs the loaded CLAP)"}
        else:
            text = clap_label(source, clap_labels or {})
            entry = clap_text_layer(text, clap.text_embeddings([text])[0], class_text_embeddings(clap, labels), labels,
                                    min_similarity)
        judged[source] = entry
        if entry["layer"] != "AUDIO_CLASSES":
            notes.append(f"{source!r} -> {', '.join(map(repr, entry['classes'])) or 'no AudioSet class'}: "
                         f"{entry['detail']}")
    return judged, notes


def check_class_names(source, names, labels):
    """ValueError unless names is a list of the classifier's own display names (close matches suggested)."""
    import difflib
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
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


# -----------------------------------------------------------------------------
# scoring a run: every audio of every seed, by both scorers

def source_cosines(audio_embs, text_embs):
    """[B, L] cosine of each audio embedding with each label's text embedding: CLAP's zero-shot logit before the
    temperature and the softmax. Column l depends on label l alone, so no other label can move it."""
    a = F.normalize(torch.as_tensor(_as_numpy(audio_embs), dtype=torch.float64), dim=-1)
    t = F.normalize(torch.as_tensor(_as_numpy(text_embs), dtype=torch.float64), dim=-1)
    if a.ndim != 2 or t.ndim != 2 or a.shape[1] != t.shape[1]:
        raise ValueError(f"need audio [B, D] and text [L, D] embeddings, got {tuple(a.shape)} and {tuple(t.shape)}")
    return torch.stack([a @ t[i] for i in range(len(t))], dim=1)   # column by column: not even rounding is shared


def score_run(audio, sources, classifier, clap, class_map, clap_labels, sample_rate=16000,
              class_min_similarity=CLASS_MIN_SIMILARITY):
    """Both scorers on a table of audios.

    audio: [S, R, T] (seeds x audio rows) float waveforms. sources: the sound-source names to score.
    class_map: source -> AudioSet class names (AUDIO_CLASSES; the other layers of resolve_audio_classes fill in
    the rest, class_min_similarity is the CLAP-text layer's threshold); clap_labels: source -> CLAP text label,
    other entries are distractor labels. Returns a dict of plain arrays:
      classifier: source -> [S, R] probabilities (only sources with AudioSet classes), classes: source -> [names],
      judged_by: source -> which classes judge it and why (resolve_audio_classes),
      clap: source -> [S, R] cosine of the audio with the source's own label (no other label enters it),
      clap_probs: [S, R, L] softmax over the labels clap_labels [L] (for the label-distribution KL only),
      clap_source_index: source -> label index, clap_embs: [S, R, 512], notes: lines to show the user.
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
    judged, notes = resolve_audio_classes(sources, class_map, classifier.labels, clap, clap_labels,
                                          class_min_similarity)
    resolved = {s: j["classes"] for s, j in judged.items()}
    class_probs = classifier.class_probabilities(unique, sample_rate)[column]
    per_source = {s: v.reshape(S, R) for s, v in source_scores(class_probs, resolved, classifier.labels).items()}
    labels = clap_label_list(sources, clap_labels)
    index = {s: labels.index(clap_label(s, clap_labels)) for s in sources}
    embs = clap.audio_embeddings(unique, sample_rate)
    # each label on its own: a batch of labels would change the others' embeddings in their last bits
    text = torch.cat([clap.text_embeddings([label]) for label in labels])
    # scored once per distinct audio, then copied: a matrix product gives equal rows unequal last bits
    cosines = source_cosines(embs, text).numpy()[column]
    probs = label_probabilities(embs, text, clap.logit_scale).double().numpy()[column]
    embs = embs[column]
    return {"classifier": per_source, "classes": resolved, "judged_by": judged, "classifier_name": classifier.name,
            "clap": {s: cosines[:, i].reshape(S, R) for s, i in index.items()},
            "clap_probs": probs.reshape(S, R, -1), "clap_labels": labels, "clap_source_index": index,
            "clap_embs": embs.double().numpy().reshape(S, R, -1), "clap_name": clap.name,
            "logit_scale": clap.logit_scale, "notes": notes}
