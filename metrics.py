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

FD and KL use PANNs CNN14 (Kong et al., 2020) through panns_inference's own model class (0.1.1) and the weights
it publishes (Cnn14_mAP=0.431.pth, registry entry 'panns_cnn14'), at 32 kHz: FD is the Fréchet distance between
the sets' 2048-d clip embeddings (one per file), KL the mean over paired files (same relative path, or the same
pair and seed of a manifest) of KL(p_reference || p_generated), p = the 527 AudioSet probabilities of a clip
divided by their sum. KLs from other toolkits (softmax vs sigmoid outputs, other pairings) do not compare.

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
# PANNs CNN14, through panns_inference's own model class

# panns_inference's AudioTagging configuration of Cnn14 (the released checkpoint's front end)
PANNS_CNN14 = dict(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000,
                   classes_num=527)
PANNS_NAME = ("PANNs CNN14 (panns_inference 0.1.1 model class, Cnn14_mAP=0.431.pth), 2048-d clip embedding and "
              "527 AudioSet probabilities at 32 kHz")


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


def build_cnn14():
    return _panns_models().Cnn14(**PANNS_CNN14).eval()


def read_cnn14(path):
    """CNN14 with the release checkpoint at path ({'model': state_dict, ...}, torch.load weights-only)."""
    from model.checkpoints import CheckpointError, load_torch_file, state_dict_problems
    ckpt = load_torch_file(path, "panns_cnn14")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        keys = sorted(map(str, ckpt))[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a PANNs release checkpoint: it holds {{'model': state_dict, ...}}, "
                              f"this file has {keys}")
    model = build_cnn14()
    problems = state_dict_problems(model.state_dict(), ckpt["model"])
    if problems:
        raise CheckpointError(f"{path} does not fit PANNs CNN14 ({PANNS_CNN14}): " + "; ".join(problems))
    model.load_state_dict(ckpt["model"])
    return model


def verify_cnn14_file(path):
    model = read_cnn14(path)
    return f"{path}: {sum(p.numel() for p in model.parameters()):,} parameters fit PANNs CNN14"


def load_cnn14(device="cpu"):
    from model.checkpoints import checkpoint_path
    path = checkpoint_path("panns_cnn14")
    return Cnn14Scorer(read_cnn14(path).to(device), PANNS_NAME, str(path))


def tiny_cnn14(seed=0):
    """CNN14's layer sequence (panns_inference's class, its forward and front end) at a tiny width: tests only."""
    import torch
    import torch.nn as nn
    from torchlibrosa.augmentation import SpecAugmentation
    from torchlibrosa.stft import LogmelFilterBank, Spectrogram
    m = _panns_models()
    torch.manual_seed(seed)
    c = PANNS_CNN14
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
    return Cnn14Scorer(model.eval(), "tiny random-weight CNN14 (tests only: figures mean nothing)", "")


class Cnn14Scorer:
    """CNN14 on one clip: (2048-d embedding, 527 AudioSet probabilities)."""

    def __init__(self, model, name, weights):
        self.model, self.name, self.weights = model, name, weights

    def __call__(self, wave, sample_rate):
        import torch
        from audio_io import resample
        wave = np.asarray(wave, dtype=np.float64)
        wave = wave.mean(axis=1) if wave.ndim == 2 else wave
        wave = resample(wave, int(sample_rate), PANNS_CNN14["sample_rate"])
        device = next(self.model.parameters()).device
        with torch.no_grad():
            out = self.model(torch.as_tensor(wave, dtype=torch.float32, device=device)[None])
        return out["embedding"][0].double().cpu().numpy(), out["clipwise_output"][0].double().cpu().numpy()


def kl_divergence(p, q, eps=1e-10):
    """KL(p || q) of two vectors of class probabilities, each divided by its sum first (nats); eps keeps
    tables with zeros finite. The one KL of the project: CLAP's label distributions in the verdict, PANNs'
    class probabilities here."""
    p = np.clip(np.asarray(p, np.float64), eps, None)
    q = np.clip(np.asarray(q, np.float64), eps, None)
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def cosine_distance(a, b):
    """1 - cos(a, b) of two embeddings (numpy or torch), in float64."""
    a = np.asarray(a.detach().cpu() if hasattr(a, "detach") else a, dtype=np.float64).ravel()
    b = np.asarray(b.detach().cpu() if hasattr(b, "detach") else b, dtype=np.float64).ravel()
    return float(1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def panns_figures(sets, scorer, pairs=()):
    """FD between every two sets (clip embeddings) and KL over paired files: pairs = [(set_ref, set_gen)]."""
    out = {name: [scorer(*_read(f)) for f in files] for name, files in sets.items()}
    names = list(sets)
    fd = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ea, eb = np.stack([e for e, _ in out[a]]), np.stack([e for e, _ in out[b]])
            fd[f"{a} vs {b}"] = fad(ea, eb) if min(len(ea), len(eb)) >= 2 else {"skipped": "fewer than 2 clips"}
    kl = {}
    for ref, gen in pairs:
        values = [kl_divergence(p, q) for (_, p), (_, q) in zip(out[ref], out[gen])]
        kl[f"KL({ref} || {gen})"] = {"mean": float(np.mean(values)), "n": len(values),
                                    "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
    return {"model": scorer.name, "weights": scorer.weights, "fd": fd, "kl": kl}


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


def manifest_sets(run_dir):
    """The three audio sets of a manifest run: every seed's wav of every finished pair, by audio name."""
    import json
    run_dir = Path(run_dir)
    sets = {name: [] for name in AUDIO_NAMES}
    for pair in sorted(p for p in run_dir.iterdir() if p.is_dir() and (p / "run.json").is_file()):
        try:
            record = json.loads((pair / "run.json").read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{shown(pair / 'run.json')} cannot be read ({err})") from None
        if record.get("status") != "finished":
            continue
        for wav in record.get("wavs", []):
            name = next((n for n in AUDIO_NAMES if wav == f"{n}.wav" or wav.startswith(f"{n}_seed")), None)
            if name:
                sets[name].append(pair / wav)
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


def fad(emb_a, emb_b):
    """The FAD of two [n, 128] embedding sets, with the caveats that apply to them."""
    caveats = [f"{len(e)} embeddings in set {k}: fewer than the {e.shape[1]} dimensions, so its covariance is "
               f"rank-deficient and FAD is biased and noisy" for k, e in (("A", emb_a), ("B", emb_b))
               if len(e) <= e.shape[1]]
    value = frechet_distance(*gaussian_stats(emb_a), *gaussian_stats(emb_b))
    return {"fad": value, "n_a": len(emb_a), "n_b": len(emb_b), "caveats": caveats}


def reference_list(reference):
    """--reference DIR or the reference_audio column's files and folders, as a list of paths."""
    return [reference] if isinstance(reference, (str, Path)) else list(reference or [])


def reference_files(refs):
    """The audio files of reference folders and files, each checked (wav_files, check_audio_file)."""
    return [f for r in refs for f in (wav_files(r) if Path(r).is_dir() else [check_audio_file(r)])]


def manifest_fads(run_dir, embedder, reference=None):
    """FAD between the three sets of a manifest run (and of each against a reference folder)."""
    sets = {k: v for k, v in manifest_sets(run_dir).items() if v}
    emb = {k: set_embeddings(v, embedder) for k, v in sets.items()}
    refs = reference_list(reference)
    if refs:
        emb["reference"] = set_embeddings(reference_files(refs), embedder)
    names = list(emb)
    figures = {f"{a} vs {b}": fad(emb[a], emb[b]) for i, a in enumerate(names) for b in names[i + 1:]}
    return {"embedding": embedder.name, "weights": embedder.weights, "reference": [str(r) for r in refs],
            "files": {k: len(v) for k, v in sets.items()}, "fad": figures}


def manifest_panns(run_dir, scorer, reference=None):
    """FD between the sets of a manifest run (and the reference) and KL of the manipulated audio against each
    baseline of the same pair and seed."""
    sets = {k: v for k, v in manifest_sets(run_dir).items() if v}
    if reference_list(reference):
        sets["reference"] = reference_files(reference_list(reference))
    pairs = [(b, "manipulated") for b in ("baseline_edited", "baseline_original") if b in sets and "manipulated" in sets]
    return {**panns_figures(sets, scorer, pairs), "files": {k: len(v) for k, v in sets.items()}}


def paired_files(dir_ref, dir_gen):
    """Files of two folders with the same relative path (KL needs a reference clip for each generated one)."""
    ref = {p.relative_to(dir_ref): p for p in wav_files(dir_ref)}
    gen = {p.relative_to(dir_gen): p for p in wav_files(dir_gen)}
    common = sorted(set(ref) & set(gen))
    if not common:
        raise FileNotFoundError(f"{dir_ref} and {dir_gen} share no file names: KL pairs each generated clip with "
                                f"the reference clip of the same name")
    return [ref[k] for k in common], [gen[k] for k in common]


def input_files(what, folders, reference=None):
    """The files `python evaluation.py what folders...` reads, listed and checked (wav_files) before any model
    loads: a manifest run's three sets and the reference, or two folders (paired by name for KL)."""
    if len(folders) == 1:
        return manifest_sets(folders[0]), reference_files(reference_list(reference))
    if what == "kl":
        return paired_files(Path(folders[0]), Path(folders[1]))
    return [wav_files(folder) for folder in folders]


USAGE = """usage: python evaluation.py fad DIR_A DIR_B           FAD (VGGish) between two folders of audio
       python evaluation.py fd DIR_A DIR_B            FD (PANNs CNN14 clip embeddings)
       python evaluation.py kl DIR_REF DIR_GEN        KL (PANNs CNN14), files paired by name
       python evaluation.py fad|fd|kl RUN_DIR [--reference DIR]   a manifest run's three sets (and real audio)
       options: --smoke (tiny random-weight models: checks the plumbing), --DEVICE=cuda"""


def main(argv):
    """python evaluation.py fad|fd|kl DIR_A DIR_B | RUN_DIR [--reference DIR] [--smoke] [--DEVICE=cpu]."""
    from model.checkpoints import CheckpointError
    argv = list(argv)
    reference = None
    if "--reference" in argv:
        i = argv.index("--reference")
        reference = argv[i + 1] if i + 1 < len(argv) else ""
        del argv[i:i + 2]
    args = [a for a in argv if not a.startswith("--")]
    flags = [a for a in argv if a.startswith("--")]
    device = next((f.split("=", 1)[1] for f in flags if f.lower().startswith("--device=")), "cpu")
    unknown = [f for f in flags if f != "--smoke" and not f.lower().startswith("--device=")]
    if not args or args[0] not in ("fad", "fd", "kl") or len(args) not in (2, 3) or unknown or reference == "" \
            or (reference and len(args) == 3):
        print(USAGE, file=sys.stderr)
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
        scorer = tiny_cnn14() if smoke else load_cnn14(device)
        if len(args) == 2:
            result = manifest_panns(args[1], scorer, reference)
        elif what == "fd":
            result = panns_figures({args[1]: wav_files(args[1]), args[2]: wav_files(args[2])}, scorer)
        else:
            ref, gen = paired_files(Path(args[1]), Path(args[2]))
            result = panns_figures({args[1]: ref, args[2]: gen}, scorer, [(args[1], args[2])])
    except (FileNotFoundError, ValueError, CheckpointError, ImportError) as err:
        print(f"Error: {err}", file=sys.stderr)
        return 2
    print(format_panns(result, what))
    return 0


def format_panns(result, what="fd"):
    lines = [f"{'FD' if what == 'fd' else 'FD and KL'} with {result['model']}"]
    for name, f in result["fd"].items():
        if "skipped" in f:
            lines.append(f"  FD {name:37s} skipped: {f['skipped']}")
        else:
            lines.append(f"  FD {name:37s} {f['fad']:.4f}   ({f['n_a']} / {f['n_b']} clips)")
            lines += [f"    caveat: {c}" for c in f["caveats"]]
    for name, k in result["kl"].items():
        lines.append(f"  {name:40s} {k['mean']:.4f} +- {k['std']:.4f} nats over {k['n']} paired clips")
    lines.append("  FD and KL depend on the model, its version and the set sizes: compare only figures made the same way.")
    return "\n".join(lines)


def format_fads(result):
    lines = [f"FAD with {result['embedding']}"]
    for name, f in result["fad"].items():
        lines.append(f"  {name:40s} {f['fad']:.4f}   ({f['n_a']} / {f['n_b']} embeddings)")
        lines += [f"    caveat: {c}" for c in f["caveats"]]
    lines.append("  FAD depends on the embedding, its version and the set sizes: compare only figures made the same way.")
    return "\n".join(lines)
