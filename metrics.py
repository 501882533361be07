"""Set-level figures a paper table reports: FAD with VGGish embeddings, FD and KL with PANNs CNN14.

FAD (Kilgour et al., 2019) fits a Gaussian to the embeddings of each set of clips and reports the Fréchet
distance between the two Gaussians,

    FD = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

The embedding network is VGGish (Hershey et al., 2017) as the torchvggish package (0.2) ports it, with the
weights it publishes (vggish-10086976.pth, fetched and checked through model/checkpoints.py like every other
model): one 128-d embedding per 0.96 s of 16 kHz audio, before the PCA/quantisation post-processing and
without the last ReLU, the setting of the frechet_audio_distance package (use_pca=False, use_activation=False).
FADs from other toolkits (Google's TF original with PCA, other embeddings, other clip lengths) are not
comparable: every figure here carries the name of the embedding that produced it.

    python evaluation.py fad DIR_A DIR_B              # two folders of .wav files
    python evaluation.py fad outputs/<manifest run>   # manipulated / baseline_edited / baseline_original sets
    python evaluation.py fad outputs/<run> --reference real_audio/   # ... and each set against real audio

FD and KL are audioldm_eval's (the toolkit AudioLDM-family papers report), through panns_inference's own CNN14
class (0.1.1): for 16 kHz audio the CNN14 PANNs trained at 16 kHz (Cnn14_16k_mAP=0.438.pth, registry entry
'panns_cnn14_16k': window 512, hop 160, 64 mels 50-8000 Hz), every file mono, DC removed, resampled to 16 kHz and
zero-padded to 2 s as audioldm_eval's loader does. FD is the Fréchet distance between the sets' 2048-d clip
embeddings (one per file). KL comes in audioldm_eval's two definitions, both from CNN14's 527 logits and both
KL(reference || generated) summed over classes and averaged over paired files: 'softmax' over the logits (its
headline KL) and 'sigmoid' of each logit without renormalising (its KL_Sigmoid). Files pair by their key: the
same relative path in two folders, the same pair and seed in a manifest; never by their position in a list.
Every figure is stored with the name of its definition (FD_DEFINITION, KL_DEFINITIONS). `--cnn14=32k` uses the
32 kHz release (Cnn14_mAP=0.431.pth, entry 'panns_cnn14'), audioldm_eval's model for 32 kHz audio.

    python evaluation.py fd DIR_A DIR_B / python evaluation.py kl DIR_REF DIR_GEN

Caveats (also printed with every figure): a Gaussian of d=128 dimensions needs well over 128 embeddings per
set; with fewer the covariance is rank-deficient and FAD is biased upward and noisy (the figure is still
printed, with a warning). FAD is biased by the set size, so compare only sets of similar size.
"""
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np

from audio_io import AUDIO_NAMES
from errors import path_problem, shown

# VGGish's published front end (torchvggish's vggish_params): 16 kHz, 0.96 s examples of 96 x 64 log-mel
VGGISH_SAMPLE_RATE = 16000
VGGISH_DIM = 128
VGGISH_NAME = ("VGGish (torchvggish 0.2 port of the TF AudioSet model, vggish-10086976.pth), 128-d per 0.96 s "
               "at 16 kHz, no PCA, no last ReLU")


# -----------------------------------------------------------------------------
# the Fréchet distance


def gaussian_stats(embeddings):
    """Mean and covariance (unbiased, rows = samples) of [n, d] embeddings."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need at least 2 embeddings of shape [n, d] for a covariance, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(mu_a, sigma_a, mu_b, sigma_b):
    """|mu_a - mu_b|^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^(1/2)).

    Tr((S_a S_b)^(1/2)) is computed as the sum of square roots of the eigenvalues of A S_b A, A = S_a^(1/2)
    (a symmetric PSD matrix with the same eigenvalues as S_a S_b): two symmetric eigendecompositions, no
    general matrix square root, so a rank-deficient covariance gives no complex parts to discard.
    """
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    sigma_a, sigma_b = np.atleast_2d(sigma_a).astype(np.float64), np.atleast_2d(sigma_b).astype(np.float64)
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape or sigma_a.shape != (len(mu_a), len(mu_a)):
        raise ValueError(f"shapes do not match: mu {mu_a.shape} / {mu_b.shape}, sigma {sigma_a.shape} / "
                         f"{sigma_b.shape}")
    w, v = np.linalg.eigh((sigma_a + sigma_a.T) / 2)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = root_a @ sigma_b @ root_a
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2 * trace_root)


# -----------------------------------------------------------------------------
# VGGish, through torchvggish's own model and front end


def _torchvggish():
    from torchvggish import torchvggish, vggish_input
    return torchvggish, vggish_input


def build_vggish():
    """torchvggish's VGGish architecture (no weights, no PCA), its last ReLU replaced by an identity."""
    import torch.nn as nn
    tv, _ = _torchvggish()
    model = tv._vgg(postprocess=False)   # _vgg builds the network only; vggish() would download in its body
    model.embeddings[-1] = nn.Identity()
    return model.eval()


def read_vggish(path):
    """VGGish with the weights at path (torch.load weights-only), every key and shape checked first."""
    from model.checkpoints import CheckpointError, load_torch_file, state_dict_problems
    state = load_torch_file(path, "vggish")
    model = build_vggish()
    problems = state_dict_problems(model.state_dict(), state) if isinstance(state, dict) else [
        f"holds a {type(state).__name__}, not a state dict"]
    if problems:
        raise CheckpointError(f"{path} does not fit torchvggish's VGGish: " + "; ".join(problems))
    model.load_state_dict(state)
    return model


def verify_vggish_file(path):
    model = read_vggish(path)
    return f"{path}: {sum(p.numel() for p in model.parameters()):,} parameters fit torchvggish's VGGish"


def load_vggish(device="cpu"):
    """The published VGGish weights (checkpoint registry entry 'vggish'; fetched on first use when online)."""
    from model.checkpoints import checkpoint_path
    path = checkpoint_path("vggish")
    return Embedder(read_vggish(path).to(device), VGGISH_NAME, str(path))


def tiny_vggish(seed=0):
    """VGGish's structure (torchvggish's VGG class and front end) at a tiny width, random weights: for tests."""
    import torch
    import torch.nn as nn
    tv, _ = _torchvggish()
    torch.manual_seed(seed)
    features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))   # 96 x 64 -> 6 x 4
    model = tv.VGG(features, postprocess=False)
    model.embeddings = nn.Sequential(nn.Linear(8 * 4 * 6, 32), nn.ReLU(), nn.Linear(32, VGGISH_DIM), nn.Identity())
    return Embedder(model.eval(), "tiny random-weight VGGish (tests only: figures mean nothing)", "")


class Embedder:
    """A VGGish model and its front end: embed(wave, rate) -> [frames, 128]."""

    def __init__(self, model, name, weights):
        self.model, self.name, self.weights = model, name, weights

    @property
    def device(self):
        return next(self.model.parameters()).device

    def embed(self, wave, sample_rate):
        import torch
        _, vggish_input = _torchvggish()
        wave = np.asarray(wave, dtype=np.float64)
        if wave.ndim == 2:
            wave = wave.mean(axis=1)   # soundfile gives [samples, channels]
        examples = vggish_input.waveform_to_examples(wave, sample_rate, return_tensor=True)   # resamples to 16 kHz
        if examples.shape[0] == 0:
            return np.zeros((0, VGGISH_DIM))
        with torch.no_grad():
            return self.model(examples.float().to(self.device)).reshape(-1, VGGISH_DIM).cpu().double().numpy()


# -----------------------------------------------------------------------------
# PANNs CNN14, through panns_inference's own model class, configured per sample rate as audioldm_eval does

# audioldm_eval (the toolkit AudioLDM-family papers report) scores 16 kHz audio with the CNN14 that PANNs trained
# on 16 kHz AudioSet and 32 kHz audio with the 32 kHz release; ours is 16 kHz, so '16k' is the default. The
# 32 kHz model on upsampled 16 kHz audio would see an empty 8-14 kHz band it was trained to hear.
CNN14_VARIANTS = {
    "16k": dict(checkpoint="panns_cnn14_16k", weights="Cnn14_16k_mAP=0.438.pth",
                config=dict(sample_rate=16000, window_size=512, hop_size=160, mel_bins=64, fmin=50, fmax=8000,
                            classes_num=527)),
    "32k": dict(checkpoint="panns_cnn14", weights="Cnn14_mAP=0.431.pth",
                config=dict(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000,
                            classes_num=527)),
}
CNN14_DEFAULT = "16k"
CNN14_MIN_SAMPLES_S = 2.0   # audioldm_eval's loader zero-pads shorter clips to 2 s before CNN14 reads them


def cnn14_name(variant):
    c = CNN14_VARIANTS[variant]["config"]
    return (f"PANNs CNN14 (panns_inference 0.1.1 model class, {CNN14_VARIANTS[variant]['weights']}) at "
            f"{c['sample_rate'] // 1000} kHz: window {c['window_size']}, hop {c['hop_size']}, {c['mel_bins']} mels "
            f"{c['fmin']}-{c['fmax']} Hz; 2048-d clip embedding and 527 AudioSet logits")


# what each figure is, stored next to it (results and printouts): FDs and KLs made otherwise do not compare
FD_DEFINITION = ("Fréchet distance between Gaussians fitted to the sets' 2048-d CNN14 clip embeddings, one per file "
                 "(audioldm_eval's FD)")
KL_EPS = 1e-6   # audioldm_eval adds it to the generated clip's probabilities inside the log
KL_DEFINITIONS = {
    "softmax": "sum over the 527 classes of p_ref (log p_ref - log(p_gen + 1e-6)), p = softmax of CNN14's logits, "
               "mean over paired files (audioldm_eval's 'KL', AudioGen's formulation)",
    "sigmoid": "sum over the 527 classes of s_ref (log s_ref - log(s_gen + 1e-6)), s = sigmoid of CNN14's logits, "
               "not renormalised (so not a divergence of two distributions), mean over paired files "
               "(audioldm_eval's 'KL_Sigmoid')",
}


def _panns_models():
    """panns_inference.models, imported without running the package's __init__, which fetches a label CSV
    with wget (and writes ~/panns_data) at import time. Registered under a private name."""
    name = "_panns_inference_pkg"
    if name not in sys.modules:
        spec = importlib.util.find_spec("panns_inference")   # finds the package without executing it
        if spec is None:
            raise ImportError("panns-inference is not installed: pip install panns-inference==0.1.1")
        package = types.ModuleType(name)
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules[name] = package
    return importlib.import_module(f"{name}.models")


def _variant(variant):
    if variant not in CNN14_VARIANTS:
        raise ValueError(f"CNN14 variant {variant!r} is not one of {', '.join(CNN14_VARIANTS)}")
    return CNN14_VARIANTS[variant]


def build_cnn14(variant=CNN14_DEFAULT):
    return _panns_models().Cnn14(**_variant(variant)["config"]).eval()


def read_cnn14(path, variant=CNN14_DEFAULT):
    """CNN14 with the release checkpoint at path ({'model': state_dict, ...}, torch.load weights-only). The 16 and
    32 kHz releases differ in their front end's filter shapes, so the wrong file for the variant is refused."""
    from model.checkpoints import CheckpointError, load_torch_file, state_dict_problems
    entry = _variant(variant)
    ckpt = load_torch_file(path, entry["checkpoint"])
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        keys = sorted(map(str, ckpt))[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a PANNs release checkpoint: it holds {{'model': state_dict, ...}}, "
                              f"this file has {keys}")
    model = build_cnn14(variant)
    problems = state_dict_problems(model.state_dict(), ckpt["model"])
    if problems:
        raise CheckpointError(f"{path} does not fit PANNs CNN14 at {variant} ({entry['config']}; the release file is "
                              f"{entry['weights']}): " + "; ".join(problems))
    model.load_state_dict(ckpt["model"])
    return model


def verify_cnn14_file(path, variant="32k"):
    model = read_cnn14(path, variant)
    return f"{path}: {sum(p.numel() for p in model.parameters()):,} parameters fit PANNs CNN14 at {variant}"


def verify_cnn14_16k_file(path):
    return verify_cnn14_file(path, "16k")


def load_cnn14(device="cpu", variant=CNN14_DEFAULT):
    """The release CNN14 of the variant (registry entry panns_cnn14_16k or panns_cnn14; fetched when online)."""
    from model.checkpoints import checkpoint_path
    path = checkpoint_path(_variant(variant)["checkpoint"])
    return Cnn14Scorer(read_cnn14(path, variant).to(device), cnn14_name(variant), str(path), variant)


def tiny_cnn14(seed=0, variant=CNN14_DEFAULT):
    """CNN14's layer sequence (panns_inference's class, its forward and the variant's front end) at a tiny width:
    tests only."""
    import torch
    import torch.nn as nn
    from torchlibrosa.augmentation import SpecAugmentation
    from torchlibrosa.stft import LogmelFilterBank, Spectrogram
    m = _panns_models()
    torch.manual_seed(seed)
    c = _variant(variant)["config"]
    model = m.Cnn14.__new__(m.Cnn14)   # the class's forward, with narrower layers than its constructor makes
    nn.Module.__init__(model)
    model.spectrogram_extractor = Spectrogram(n_fft=c["window_size"], hop_length=c["hop_size"],
                                              win_length=c["window_size"], window="hann", center=True,
                                              pad_mode="reflect", freeze_parameters=True)
    model.logmel_extractor = LogmelFilterBank(sr=c["sample_rate"], n_fft=c["window_size"], n_mels=c["mel_bins"],
                                              fmin=c["fmin"], fmax=c["fmax"], ref=1.0, amin=1e-10, top_db=None,
                                              freeze_parameters=True)
    model.spec_augmenter = SpecAugmentation(time_drop_width=64, time_stripes_num=2, freq_drop_width=8,
                                            freq_stripes_num=2)
    model.bn0 = nn.BatchNorm2d(c["mel_bins"])
    widths = [1, 4, 4, 8, 8, 16, 16]
    for i in range(1, 7):
        setattr(model, f"conv_block{i}", m.ConvBlock(widths[i - 1], widths[i]))
    model.fc1, model.fc_audioset = nn.Linear(16, 16), nn.Linear(16, c["classes_num"])
    return Cnn14Scorer(model.eval(), f"tiny random-weight CNN14 at {variant} (tests only: figures mean nothing)", "",
                       variant)


class Cnn14Scorer:
    """CNN14 on one clip: (2048-d embedding, 527 AudioSet logits), read as audioldm_eval reads a file."""

    def __init__(self, model, name, weights, variant=CNN14_DEFAULT):
        self.model, self.name, self.weights, self.variant = model, name, weights, variant
        self.sample_rate = _variant(variant)["config"]["sample_rate"]

    def prepare(self, wave, sample_rate):
        """Mono (the channels' mean), DC removed, at the model's rate, zero-padded to 2 s: audioldm_eval's loader
        (which takes the first channel; our audio is mono, where the two agree)."""
        from audio_io import resample
        wave = np.asarray(wave, dtype=np.float64)
        wave = wave.mean(axis=1) if wave.ndim == 2 else wave
        wave = resample(wave - wave.mean(), int(sample_rate), self.sample_rate)
        return np.pad(wave, (0, max(0, int(CNN14_MIN_SAMPLES_S * self.sample_rate) - len(wave))))

    def __call__(self, wave, sample_rate):
        import torch
        device = next(self.model.parameters()).device
        logits = []
        # the class's forward returns sigmoid(logits) only; the logits are fc_audioset's output, taken as it leaves
        hook = self.model.fc_audioset.register_forward_hook(lambda module, args, out: logits.append(out))
        try:
            with torch.no_grad():
                out = self.model(torch.as_tensor(self.prepare(wave, sample_rate), dtype=torch.float32,
                                                 device=device)[None])
        finally:
            hook.remove()
        return out["embedding"][0].double().cpu().numpy(), logits[0][0].double().cpu().numpy()


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _log_sigmoid(x):
    x = np.asarray(x, np.float64)
    return -np.logaddexp(0.0, -x)   # log(1 / (1 + e^-x)) without overflow for large |x|


def _cross_terms(log_p, q, eps):
    """sum over the last axis of p (log p - log(q + eps)), p = exp(log_p); a class with p = 0 adds 0."""
    p = np.exp(log_p)
    return np.sum(np.where(p > 0, p * (log_p - np.log(q + eps)), 0.0), axis=-1)


def kl_softmax(logits_ref, logits_gen, eps=KL_EPS):
    """KL_DEFINITIONS['softmax'] of one pair of logit vectors [527] (or per row of [n, 527]), in nats."""
    return _cross_terms(_log_softmax(logits_ref), np.exp(_log_softmax(logits_gen)), eps)


def kl_sigmoid(logits_ref, logits_gen, eps=KL_EPS):
    """KL_DEFINITIONS['sigmoid'] of one pair of logit vectors [527] (or per row of [n, 527]), in nats."""
    return _cross_terms(_log_sigmoid(logits_ref), np.exp(_log_sigmoid(logits_gen)), eps)


def kl_divergence(p, q, eps=1e-10):
    """KL(p || q) of two vectors of class probabilities, each divided by its sum first (nats); eps keeps
    tables with zeros finite. The KL between label distributions (CLAP's in the verdict); PANNs' set-level
    KLs start from logits: kl_softmax and kl_sigmoid."""
    p = np.clip(np.asarray(p, np.float64), eps, None)
    q = np.clip(np.asarray(q, np.float64), eps, None)
    p, q = p / p.sum(), q / q.sum()
    return float(_cross_terms(np.log(p), q, 0.0))


def cosine_distance(a, b):
    """1 - cos(a, b) of two embeddings (numpy or torch), in float64."""
    a = np.asarray(a.detach().cpu() if hasattr(a, "detach") else a, dtype=np.float64).ravel()
    b = np.asarray(b.detach().cpu() if hasattr(b, "detach") else b, dtype=np.float64).ravel()
    return float(1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def paired_kl(logits_ref, logits_gen):
    """Both KLs over the files two keyed sets share: logits_* = {key: [527]}. A file pairs only with the file of
    the same key (in a manifest: the same pair and seed), never by position in a list."""
    keys = sorted(set(logits_ref) & set(logits_gen))
    if not keys:
        raise ValueError("the two sets share no file keys: KL pairs each generated clip with the reference clip of "
                         "the same key (file name, or pair and seed)")
    ref = np.stack([logits_ref[k] for k in keys])
    gen = np.stack([logits_gen[k] for k in keys])
    out = {"n": len(keys), "unpaired": {"reference only": len(set(logits_ref) - set(keys)),
                                        "generated only": len(set(logits_gen) - set(keys))}}
    for name, kl in (("softmax", kl_softmax), ("sigmoid", kl_sigmoid)):
        values = kl(ref, gen)
        out[name] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                     "definition": KL_DEFINITIONS[name]}
    return out


def panns_figures(sets, scorer, pairs=()):
    """FD between every two sets (clip embeddings) and both KLs over files of the same key, pairs = [(ref, gen)].
    sets: {set name: {file key: path}}."""
    out = {name: {key: scorer(*_read(f)) for key, f in files.items()} for name, files in sets.items()}
    names = list(sets)
    fd = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ea, eb = np.stack([e for e, _ in out[a].values()]), np.stack([e for e, _ in out[b].values()])
            fd[f"{a} vs {b}"] = (frechet_figure(ea, eb, "FD") | {"definition": FD_DEFINITION}
                                 if min(len(ea), len(eb)) >= 2 else {"skipped": "fewer than 2 clips"})
    kl = {f"KL({ref} || {gen})": paired_kl({k: v for k, (_, v) in out[ref].items()},
                                           {k: v for k, (_, v) in out[gen].items()}) for ref, gen in pairs}
    return {"model": scorer.name, "weights": scorer.weights, "variant": scorer.variant, "fd": fd, "kl": kl}


def _read(path):
    """(wave, rate) of one audio file; ValueError naming it when it is not a regular file (a FIFO is never
    opened: it would wait for a writer forever) or soundfile cannot read its samples."""
    import soundfile as sf
    problem = path_problem(path)
    if problem:
        raise ValueError(f"{shown(path)} {problem}: only regular audio files are read")
    try:
        wave, rate = sf.read(str(path), dtype="float64")
    except Exception as err:   # noqa: BLE001 -- libsndfile's errors come as several types; each is named here
        raise ValueError(f"{shown(path)}: reading its samples failed ({_sf_words(err)}); the file may be damaged. "
                         "Replace it or move it out of the set") from None
    return wave, rate


def _sf_words(err):
    return (getattr(err, "error_string", "") or str(err)).strip().rstrip(".") or type(err).__name__


# -----------------------------------------------------------------------------
# sets of audio files


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def wav_files(folder):
    """Every .wav / .flac / .ogg file under folder, sorted, each checked before any is read (check_audio_file):
    a FIFO, a device or a file that is not audio stops the listing with its name, so nothing hangs and no set
    silently lacks a file. Sub-folders are searched (one named x.wav too)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{shown(folder)} is not a folder of audio files")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and not p.is_dir())
    if not files:
        raise FileNotFoundError(f"{shown(folder)} holds no .wav / .flac / .ogg files")
    for f in files:
        check_audio_file(f)
    return files


def check_audio_file(path):
    """ValueError naming path unless it is a regular file whose header soundfile reads. Only metadata and the
    header are read: a FIFO is never opened, and a 10-hour file costs nothing here."""
    import soundfile as sf
    problem = path_problem(path)
    if problem:
        raise ValueError(f"{shown(path)} {problem}: only regular audio files are read. Move it out of the folder; "
                         "stopped, because a set-level figure uses every file of its set")
    try:
        sf.info(str(path))
    except Exception as err:   # noqa: BLE001 -- libsndfile says 'Format not recognised', ... in its own words
        raise ValueError(f"{shown(path)} is not audio that soundfile reads ({_sf_words(err)}): convert it to WAV, "
                         "FLAC or OGG, or move it out of the folder; stopped, because a set-level figure uses every "
                         "file of its set") from None
    return Path(path)


def keyed_files(folder):
    """{relative path: file} of a folder's audio: the key that pairs a file with its namesake in another folder."""
    return {p.relative_to(folder).as_posix(): p for p in wav_files(folder)}


def manifest_sets(run_dir):
    """The three audio sets of a manifest run, by audio name: {name: {'<pair folder>/seed<N>': wav}} over every
    seed's wav of every finished pair. The key (pair and seed) is what KL pairs files by."""
    import json
    run_dir = Path(run_dir)
    sets = {name: {} for name in AUDIO_NAMES}
    for pair in sorted(p for p in run_dir.iterdir() if p.is_dir() and (p / "run.json").is_file()):
        try:
            record = json.loads((pair / "run.json").read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{shown(pair / 'run.json')} cannot be read ({err})") from None
        if record.get("status") != "finished":
            continue
        first_seed = (record.get("seeds") or [None])[0]
        for wav in record.get("wavs", []):
            for name in AUDIO_NAMES:
                if wav == f"{name}.wav":
                    seed = first_seed
                elif wav.startswith(f"{name}_seed") and wav[len(name) + 5:-4].isdigit():
                    seed = int(wav[len(name) + 5:-4])
                else:
                    continue
                sets[name][f"{pair.name}/seed{seed}"] = pair / wav
    if not any(sets.values()):
        raise FileNotFoundError(f"{run_dir} has no finished pair folders with audio (is it a manifest run?)")
    return sets


def set_embeddings(files, embedder):
    chunks = []
    for f in files:
        wave, rate = _read(f)
        try:
            chunks.append(embedder.embed(wave, rate))
        except (ValueError, RuntimeError) as err:   # e.g. a clip of a few samples: name the file it came from
            raise ValueError(f"{shown(f)}: VGGish cannot embed it ({len(wave)} samples at {rate} Hz: {err})") from None
    return np.concatenate(chunks) if chunks else np.zeros((0, VGGISH_DIM))


def frechet_figure(emb_a, emb_b, what="FAD"):
    """The Fréchet distance of two [n, d] embedding sets, with the caveats that apply to them."""
    caveats = [f"{len(e)} embeddings in set {k}: fewer than the {e.shape[1]} dimensions, so its covariance is "
               f"rank-deficient and {what} is biased and noisy" for k, e in (("A", emb_a), ("B", emb_b))
               if len(e) <= e.shape[1]]
    value = frechet_distance(*gaussian_stats(emb_a), *gaussian_stats(emb_b))
    return {what.lower(): value, "n_a": len(emb_a), "n_b": len(emb_b), "caveats": caveats}


def fad(emb_a, emb_b):
    """The FAD of two [n, 128] VGGish embedding sets, with its caveats."""
    return frechet_figure(emb_a, emb_b, "FAD")


def reference_list(reference):
    """--reference DIR or the reference_audio column's files and folders, as a list of paths."""
    return [reference] if isinstance(reference, (str, Path)) else list(reference or [])


def reference_files(refs):
    """The audio files of reference folders and files, each checked (wav_files, check_audio_file)."""
    return [f for r in refs for f in (wav_files(r) if Path(r).is_dir() else [check_audio_file(r)])]


def manifest_fads(run_dir, embedder, reference=None):
    """FAD between the three sets of a manifest run (and of each against a reference folder)."""
    sets = {k: list(v.values()) for k, v in manifest_sets(run_dir).items() if v}
    emb = {k: set_embeddings(v, embedder) for k, v in sets.items()}
    refs = reference_list(reference)
    if refs:
        emb["reference"] = set_embeddings(reference_files(refs), embedder)
    names = list(emb)
    figures = {f"{a} vs {b}": fad(emb[a], emb[b]) for i, a in enumerate(names) for b in names[i + 1:]}
    return {"embedding": embedder.name, "weights": embedder.weights, "reference": [str(r) for r in refs],
            "files": {k: len(v) for k, v in sets.items()}, "fad": figures}


def manifest_panns(run_dir, scorer, reference=None):
    """FD between the sets of a manifest run (and the reference) and both KLs of the manipulated audio against
    each baseline of the same pair and seed."""
    sets = {k: v for k, v in manifest_sets(run_dir).items() if v}
    if reference_list(reference):   # real audio pairs with nothing generated: FD only
        sets["reference"] = {f"reference/{i}": f for i, f in enumerate(reference_files(reference_list(reference)))}
    pairs = [(b, "manipulated") for b in ("baseline_edited", "baseline_original") if b in sets and "manipulated" in sets]
    return {**panns_figures(sets, scorer, pairs), "files": {k: len(v) for k, v in sets.items()}}


def input_files(what, folders, reference=None):
    """The files `python evaluation.py what folders...` reads, listed and checked (wav_files) before any model
    loads: a manifest run's three sets and the reference, or two folders' keyed files (KL: they must share keys)."""
    if len(folders) == 1:
        return manifest_sets(folders[0]), reference_files(reference_list(reference))
    sets = [keyed_files(folder) for folder in folders]
    if what == "kl" and not set(sets[0]) & set(sets[1]):
        raise ValueError(f"{folders[0]} and {folders[1]} share no file keys: KL pairs each generated clip with the "
                         "reference clip of the same path in its folder")
    return sets


USAGE = """usage: python evaluation.py fad DIR_A DIR_B           FAD (VGGish) between two folders of audio
       python evaluation.py fd DIR_A DIR_B            FD (PANNs CNN14 clip embeddings)
       python evaluation.py kl DIR_REF DIR_GEN        KL, softmax and sigmoid (PANNs CNN14 logits), files paired
                                                      by their path in each folder
       python evaluation.py fad|fd|kl RUN_DIR [--reference DIR]   a manifest run's three sets (and real audio)
       options: --smoke (tiny random-weight models: checks the plumbing), --DEVICE=cuda,
                --cnn14=16k|32k (FD / KL: the 16 kHz CNN14, audioldm_eval's for 16 kHz audio, is the default)"""


def main(argv):
    """python evaluation.py fad|fd|kl DIR_A DIR_B | RUN_DIR [--reference DIR] [--smoke] [--DEVICE=cpu] [--cnn14=16k]."""
    from model.checkpoints import CheckpointError
    argv = list(argv)
    reference = None
    if "--reference" in argv:
        i = argv.index("--reference")
        reference = argv[i + 1] if i + 1 < len(argv) else ""
        del argv[i:i + 2]
    args = [a for a in argv if not a.startswith("--")]
    flags = [a for a in argv if a.startswith("--")]
    option = lambda name, default: next((f.split("=", 1)[1] for f in flags   # noqa: E731
                                         if f.lower().startswith(f"--{name}=")), default)
    device, variant = option("device", "cpu"), option("cnn14", CNN14_DEFAULT)
    unknown = [f for f in flags if f != "--smoke" and not f.lower().startswith(("--device=", "--cnn14="))]
    if not args or args[0] not in ("fad", "fd", "kl") or len(args) not in (2, 3) or unknown or reference == "" \
            or (reference and len(args) == 3):
        print(USAGE, file=sys.stderr)
        return 2
    if variant not in CNN14_VARIANTS:
        print(f"Error: --cnn14={variant} is not one of {', '.join(CNN14_VARIANTS)}", file=sys.stderr)
        return 2
    smoke, what = "--smoke" in flags, args[0]
    try:
        input_files(what, args[1:], reference)   # every file checked before a model loads: no FIFO is opened
        if what == "fad":
            embedder = tiny_vggish() if smoke else load_vggish(device)
            if len(args) == 3:
                emb = [set_embeddings(wav_files(d), embedder) for d in args[1:]]
                result = {"embedding": embedder.name, "weights": embedder.weights,
                          "fad": {f"{args[1]} vs {args[2]}": fad(*emb)}}
            else:
                result = manifest_fads(args[1], embedder, reference)
            print(format_fads(result))
            return 0
        scorer = tiny_cnn14(variant=variant) if smoke else load_cnn14(device, variant)
        if len(args) == 2:
            result = manifest_panns(args[1], scorer, reference)
        elif what == "fd":
            result = panns_figures({args[1]: keyed_files(args[1]), args[2]: keyed_files(args[2])}, scorer)
        else:
            result = panns_figures({args[1]: keyed_files(args[1]), args[2]: keyed_files(args[2])}, scorer,
                                   [(args[1], args[2])])
    except (FileNotFoundError, ValueError, CheckpointError, ImportError) as err:
        print(f"Error: {err}", file=sys.stderr)
        return 2
    print(format_panns(result, what))
    return 0


def format_panns(result, what="fd"):
    lines = [f"{'FD' if what == 'fd' else 'FD and KL'} with {result['model']}"]
    if result["fd"]:
        lines.append(f"  FD: {FD_DEFINITION}")
    for name, f in result["fd"].items():
        if "skipped" in f:
            lines.append(f"  FD {name:37s} skipped: {f['skipped']}")
        else:
            lines.append(f"  FD {name:37s} {f['fd']:.4f}   ({f['n_a']} / {f['n_b']} clips)")
            lines += [f"    caveat: {c}" for c in f["caveats"]]
    if result["kl"]:
        lines += [f"  KL {kind}: {text}" for kind, text in KL_DEFINITIONS.items()]
    for name, k in result["kl"].items():
        for kind in KL_DEFINITIONS:
            lines.append(f"  {name + ' ' + kind:40s} {k[kind]['mean']:.4f} +- {k[kind]['std']:.4f} nats over "
                         f"{k['n']} paired clips")
        unpaired = {side: n for side, n in k["unpaired"].items() if n}
        if unpaired:
            lines.append("    not paired (no file of the same key): " +
                         ", ".join(f"{n} {side}" for side, n in unpaired.items()))
    lines.append("  FD and KL depend on the model, its version, the definition and the set sizes: compare only "
                 "figures made the same way.")
    return "\n".join(lines)


def format_fads(result):
    lines = [f"FAD with {result['embedding']}"]
    for name, f in result["fad"].items():
        lines.append(f"  {name:40s} {f['fad']:.4f}   ({f['n_a']} / {f['n_b']} embeddings)")
        lines += [f"    caveat: {c}" for c in f["caveats"]]
    lines.append("  FAD depends on the embedding, its version and the set sizes: compare only figures made the same way.")
    return "\n".join(lines)
