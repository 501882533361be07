"""Train CIAP, the lab's image-to-CLAP encoder, on paired images and audio (model/ciap.py says what it is).

    python train_ciap.py --pairs pairs.csv                      # head on frozen CLIP ViT-L/14, targets: frozen CLAP
    python train_ciap.py --pairs pairs.csv --ENCODER=resnet18   # the related project's ImageNet ResNet18 instead
    python train_ciap.py --smoke                                # tiny random twins, CPU, a synthetic colour->pitch set
    python train_ciap.py --resume outputs/<run>                 # on from the run's last checkpoint, in a new folder
    accelerate launch --multi_gpu --num_processes 4 train_ciap.py --pairs pairs.csv   # the same script on 4 GPUs

pairs.csv: a header row and columns image,audio (paths relative to the CSV's folder) and optionally split (train or
val). Every row, image and audio file is checked before any model loads. The frozen encoders' features are computed
once and cached, so an epoch costs only the head. Every run writes a new folder outputs/<timestamp>_ciap-<encoder>/
with run.json, pairs.csv (the pairs as trained on), features.safetensors, resumable checkpoint_eNNNN.safetensors,
the final ciap.safetensors, results.json (retrieval both ways against chance) and curves.png.
"""
import contextlib
import csv
import functools
import io
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

# the project's run machinery (run folders, run.json, settings syntax, errors), as main.py uses it
from errors import UserError
from inputs import csv_text
from runs import check_output_dir, new_run_dir, recorded_run, run_file, write_json
from settings import coerce, device_problems, named_override, output_dir_problems, take_smoke

# -----------------------------------------------------------------------------
# configuration: every constant can be overridden as --NAME=value (names are case-insensitive)
PAIRS = ""                    # the pairs CSV (also --pairs FILE): columns image,audio[,split]
OUTPUT_DIR = "outputs"        # each run gets its own sub-folder here
RUN_NAME = ""                 # suffix of the run folder; '' = 'ciap-<encoder>'
ENCODER = "clip-head"         # 'clip-head': a head on frozen CLIP ViT-L/14 (E_final can go through it); 'resnet18'
TARGET = "clap"               # 'clap': frozen CLAP audio embeddings (AudioLDM's space); 'scratch': an audio encoder
#                               trained from scratch (its own space, which AudioLDM never saw: retrieval only)
HIDDEN_DIM = 1024             # width of the projection head's hidden layer
EPOCHS = 30                   # passes over the training pairs
BATCH_SIZE = 256              # pairs per step and process: each pair's negatives are the other pairs of its batch
LEARNING_RATE = 1e-3          # AdamW's peak learning rate, after the warm-up, then cosine decay to 0
WEIGHT_DECAY = 0.01           # AdamW's decoupled weight decay, 0-1
WARMUP = 0.05                 # fraction of all steps with a linear warm-up, 0-0.5
TEMPERATURE = 0.07            # the learned temperature's start (CLIP's), 0.01-1; capped below at 0.01
VAL_FRACTION = 0.1            # share of pairs held out for validation when pairs.csv has no split column, 0-0.5
CACHE_FEATURES = True         # False: the frozen CLIP/ResNet and CLAP encode every batch of every epoch again
REUSE_FEATURES = ""           # an earlier run's features.safetensors: the files found in it are not encoded again
FEATURE_BATCH = 32            # images or clips per pass of a frozen encoder
CHECKPOINT_EVERY = 5          # epochs between resumable checkpoints (the last epoch is always saved)
SEED = 0                      # weights' initialisation, the split (no split column) and the batch order
DEVICE = ""                   # '' = what accelerate gives this process (its GPU, else the CPU); 'cpu'
SMOKE = False                 # tiny random-weight twins on the CPU: checks the plumbing (and the loop: see README)
SYNTHETIC_PAIRS = 64          # --smoke without --pairs: the size of the synthetic colour -> pitch set it makes
# -----------------------------------------------------------------------------

CONFIG_KEYS = [k for k, v in list(globals().items()) if k.isupper() and not k.startswith("_")
               and isinstance(v, (int, float, str, bool))]
# the synthetic set of --smoke has 48 training pairs: small batches give several steps per epoch
SMOKE_SETTINGS = dict(EPOCHS=120, BATCH_SIZE=16, HIDDEN_DIM=256, LEARNING_RATE=3e-3, CHECKPOINT_EVERY=20, DEVICE="cpu")
RESUME_MAY_CHANGE = ("EPOCHS", "DEVICE", "OUTPUT_DIR", "RUN_NAME", "CHECKPOINT_EVERY")
PAIRS_HELP = "a CSV with a header row and columns image,audio (paths relative to the CSV's folder) and optionally " \
             "split (train or val)"
SPLITS = {"train": "train", "val": "val", "validation": "val", "valid": "val"}
AUDIO_SECONDS = 10.0          # CLAP reads the first 10 s of a clip (scorers.CLAP_SAMPLES): no need to read more
FEATURES_FORMAT = "ciap-features/1"
SHOWN_PROBLEMS = 20           # a pairs file with thousands of bad rows gets a message of 20 lines and a count


def default_config():
    return {k: globals()[k] for k in CONFIG_KEYS}


# -----------------------------------------------------------------------------
# command line and settings

def parse_args(argv, cfg):
    """Apply the command line to cfg. Returns (mode, resume target, names given on the command line)."""
    mode, target, given, overrides = "train", None, set(), []
    args = take_smoke(argv, cfg, SMOKE_SETTINGS)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-h", "--help"):
            return "help", None, given
        if arg in ("--pairs", "--resume"):
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise UserError(f"{arg} needs a {'CSV file' if arg == '--pairs' else 'run folder or checkpoint'}: "
                                f"python train_ciap.py {arg} {'pairs.csv' if arg == '--pairs' else 'outputs/<run>'}")
            if arg == "--pairs":
                overrides.append(("PAIRS", args[i + 1]))
            else:
                mode, target = "resume", args[i + 1]
            i += 2
            continue
        if arg.startswith("--") and "=" in arg:
            overrides.append(named_override(arg, cfg))
        else:
            raise UserError(f"unknown argument {arg!r}; see python train_ciap.py --help")
        i += 1
    for name, value in overrides:
        cfg[name] = coerce(name, value, cfg[name])
        if name in ("PAIRS", "OUTPUT_DIR", "REUSE_FEATURES"):
            cfg[name] = os.path.expanduser(cfg[name])
        given.add(name)
        print(f"Overriding: {name} = {cfg[name]!r}")
    return mode, target, given


def usage():
    return "\n".join([__doc__.strip(), "", "Settings (defaults):"] + [f"  --{k}={globals()[k]!r}" for k in CONFIG_KEYS])


SETTING_RULES = {
    # name: (kind, low, high, what the valid range is)
    "HIDDEN_DIM": ("int", 1, 65536, "a whole number in 1-65536 (typical 512-2048)"),
    "EPOCHS": ("int", 1, 100_000, "a whole number >= 1"),
    "BATCH_SIZE": ("int", 2, 1 << 20, "a whole number >= 2 (InfoNCE needs negatives; typical 64-1024)"),
    "LEARNING_RATE": ("float", 1e-12, 1.0, "a number in (0, 1] (typical 1e-4-3e-3)"),
    "WEIGHT_DECAY": ("float", 0.0, 1.0, "a number in [0, 1] (typical 0-0.1)"),
    "WARMUP": ("float", 0.0, 0.5, "a fraction of the steps in [0, 0.5]"),
    "TEMPERATURE": ("float", 0.01, 1.0, "a number in [0.01, 1] (CLIP starts at 0.07)"),
    "VAL_FRACTION": ("float", 1e-9, 0.5, "a fraction in (0, 0.5]"),
    "FEATURE_BATCH": ("int", 1, 4096, "a whole number >= 1"),
    "CHECKPOINT_EVERY": ("int", 1, 100_000, "a whole number of epochs >= 1"),
    "SEED": ("int", 0, 2**32 - 1, "a whole number in 0-4294967295"),
    "SYNTHETIC_PAIRS": ("int", 8, 10_000, "a whole number in 8-10000"),
}


def check_settings(cfg):
    """UserError listing every setting that cannot work, one line each, before anything loads."""
    from model.ciap import ENCODERS, TARGETS
    problems = []
    for name, (kind, low, high, rule) in SETTING_RULES.items():
        value = cfg[name]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (kind == "float" or float(value).is_integer()) and low <= value <= high
        if not ok:
            problems.append(f"{name}={value!r} is out of range: it must be {rule}")
    if cfg["ENCODER"] not in ENCODERS:
        problems.append(f"ENCODER={cfg['ENCODER']!r} is not an image encoder: use one of {', '.join(ENCODERS)}")
    if cfg["TARGET"] not in TARGETS:
        problems.append(f"TARGET={cfg['TARGET']!r} is not a target: use one of {', '.join(TARGETS)}")
    if cfg["DEVICE"] not in ("", "cpu", "cuda"):
        problems.append(f"DEVICE={cfg['DEVICE']!r}: give '' (accelerate's choice: each process its GPU) or 'cpu'; pick "
                        "GPUs with CUDA_VISIBLE_DEVICES")
    else:
        problems += device_problems(cfg["DEVICE"], cfg["SMOKE"])
    if not cfg["PAIRS"] and not cfg["SMOKE"]:
        problems.append(f"no pairs file: python train_ciap.py --pairs pairs.csv ({PAIRS_HELP})")
    if cfg["REUSE_FEATURES"] and not cfg["CACHE_FEATURES"]:
        problems.append("REUSE_FEATURES is read only with CACHE_FEATURES=True")
    problems += output_dir_problems(cfg["OUTPUT_DIR"])
    if problems:
        raise UserError(problems[0] if len(problems) == 1 else
                        f"{len(problems)} settings cannot work:\n  " + "\n  ".join(problems))


# -----------------------------------------------------------------------------
# 1. the pairs: every row, image and audio checked before any model loads


@dataclass
class Pairs:
    """The pairs as trained on: resolved paths, each row's split and CSV line, and the notes worth a warning."""
    path: Path
    images: list
    audios: list
    split: list
    lines: list
    notes: list = field(default_factory=list)

    def ids(self, split):
        return [i for i, s in enumerate(self.split) if s == split]


def read_audio(path, seconds=AUDIO_SECONDS):
    """(float64 mono wave of at most `seconds`, sample rate); ValueError saying what is wrong and what to do."""
    import numpy as np
    import soundfile as sf
    try:
        info = sf.info(str(path))
    except Exception as err:   # libsndfile's own words: 'Format not recognised', ...
        raise ValueError(f"audio {path} cannot be read ({str(err).strip() or type(err).__name__}); soundfile reads "
                         "WAV, FLAC and OGG: convert it, e.g. ffmpeg -i in.mp3 out.wav") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise ValueError(f"audio {path} holds no samples; export it again")
    try:
        wave, rate = sf.read(str(path), frames=min(info.frames, math.ceil(seconds * info.samplerate)),
                             dtype="float64", always_2d=True)
    except Exception as err:
        raise ValueError(f"audio {path}: reading its samples failed ({err}); the file looks damaged") from None
    if len(wave) == 0:
        raise ValueError(f"audio {path} holds no samples; export it again")
    if not np.isfinite(wave).all():
        raise ValueError(f"audio {path} contains NaN or infinite samples: repair or re-export it")
    return wave.mean(axis=1), rate


def _resolve(cell, base):
    path = Path(os.path.expanduser(cell.strip()))
    return path if path.is_absolute() else base / path


def _row_problems(row, base, has_split):
    """(image path, audio path, split, problems) of one CSV row; each problem is one line."""
    from util import open_image
    problems, paths = [], {}
    for column in ("image", "audio"):
        cell = (row.get(column) or "").strip()
        if not cell:
            problems.append(f"the {column} cell is empty")
            continue
        path = paths[column] = _resolve(cell, base)
        if not path.is_file():
            problems.append(f"{column} {cell!r} not found (looked at {path}; paths are relative to the CSV's folder)")
            continue
        try:   # decode every pixel and read the samples now: a damaged file fails here, not after the models load
            open_image(path) if column == "image" else read_audio(path)
        except (ValueError, OSError) as err:
            problems.append(str(err).splitlines()[0])
    split = "train"
    if has_split:
        value = (row.get("split") or "").strip().lower()
        split = SPLITS.get(value)
        if split is None:
            problems.append(f"split {row.get('split')!r} is neither train nor val")
    return paths.get("image"), paths.get("audio"), split, problems


def read_pairs(path, cfg):
    """Pairs of a pairs CSV, every row checked; UserError naming every bad row (one line each) and what to do."""
    from tqdm import tqdm
    path = Path(path)
    if not path.is_file():
        raise UserError(f"pairs file not found: {path}. Give {PAIRS_HELP}")
    text = csv_text(path.read_bytes(), "pairs file", path)
    reader = csv.DictReader(io.StringIO(text))
    columns = [(c or "").strip().lower() for c in (reader.fieldnames or [])]
    missing = [c for c in ("image", "audio") if c not in columns]
    if missing:
        raise UserError(f"pairs file {path} lacks the column(s) {', '.join(missing)} in its header row "
                        f"(found: {', '.join(columns) or 'nothing'}); give {PAIRS_HELP}")
    reader.fieldnames = columns
    has_split = "split" in columns
    base = path.resolve().parent
    rows = []
    for row in reader:
        if any((v or "").strip() for k, v in row.items() if k is not None):   # a blank line is no pair
            rows.append((reader.line_num, row))
    # decoding images and audio releases the GIL: threads check a large file several times faster
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        checked = list(tqdm(pool.map(lambda r: _row_problems(r[1], base, has_split), rows), total=len(rows),
                            desc="checking pairs", unit="pair", disable=len(rows) < 1000, leave=False))
    images, audios, split, lines, problems = [], [], [], [], []
    for (line, _), (image, audio, s, row_problems) in zip(rows, checked):
        problems += [f"line {line}: {p}" for p in row_problems]
        images.append(image), audios.append(audio), split.append(s), lines.append(line)
    if not images:
        raise UserError(f"pairs file {path} has a header but no pairs; give {PAIRS_HELP}")
    if problems:
        bad = len({p.split(":")[0] for p in problems})
        shown = problems[:SHOWN_PROBLEMS] + ([f"... and {len(problems) - SHOWN_PROBLEMS} more"]
                                             if len(problems) > SHOWN_PROBLEMS else [])
        raise UserError(f"pairs file {path}: {bad} of {len(images)} rows cannot be used (nothing was loaded; fix or "
                        "remove them):\n  " + "\n  ".join(shown))
    pairs = Pairs(path, images, audios, split, lines)
    if not has_split:
        assign_split(pairs, cfg["VAL_FRACTION"], cfg["SEED"])
    n_val, n_train = len(pairs.ids("val")), len(pairs.ids("train"))
    if n_val < 2 or n_train < 2:
        raise UserError(f"pairs file {path} gives {n_train} training and {n_val} validation pairs: each needs at "
                        "least 2 (retrieval ranks a pair among others)" + ("" if has_split else
                                                                          "; add pairs or raise VAL_FRACTION"))
    pairs.notes += pair_notes(pairs)
    return pairs


def assign_split(pairs, fraction, seed):
    """A seeded choice of round(fraction * n) validation pairs (at least 2), the same for the same file and seed."""
    import torch
    n = len(pairs.images)
    n_val = min(max(2, round(fraction * n)), n - 2)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    val = set(order[:n_val])
    pairs.split = ["val" if i in val else "train" for i in range(n)]


def pair_notes(pairs):
    """Warnings: repeated pairs, and validation pairs whose files also occur in training (not held out)."""
    notes, seen = [], {}
    for i, key in enumerate(zip(pairs.images, pairs.audios)):
        if key in seen:
            notes.append(f"line {pairs.lines[i]} repeats line {pairs.lines[seen[key]]} (same image and audio)")
        seen.setdefault(key, i)
    train_files = {p for i in pairs.ids("train") for p in (pairs.images[i], pairs.audios[i])}
    shared = [i for i in pairs.ids("val") if pairs.images[i] in train_files or pairs.audios[i] in train_files]
    if shared:
        notes.append(f"{len(shared)} validation pair(s) share an image or audio file with a training pair (first: line "
                     f"{pairs.lines[shared[0]]}): their retrieval is not a held-out test; give a split column")
    return notes


def write_pairs(pairs, path):
    """The pairs as trained on (absolute paths, the split used): --resume reads this copy."""
    from util import new_file
    with new_file(path, "x", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "audio", "split"])
        writer.writerows([str(a), str(b), s] for a, b, s in zip(pairs.images, pairs.audios, pairs.split))


def make_synthetic_pairs(folder, n=SYNTHETIC_PAIRS, val_every=4):
    """A set every pair of which can be told apart: pair i is a 64 x 64 image of one colour (hue i / n of the first
    85% of the colour wheel, so the ends do not meet) and a 1 s tone whose pitch rises with the hue (200 Hz to 4 kHz,
    log-spaced). Every val_every-th pair is validation: it lies between training pairs, so the hue -> pitch map the
    head learns must interpolate. Writes images/, audio/ and pairs.csv into folder; returns the CSV's path."""
    import colorsys

    import numpy as np
    import soundfile as sf
    from PIL import Image
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "audio").mkdir(exist_ok=True)
    rate, t = 16000, np.arange(16000) / 16000
    rows = []
    for i, (hue, pitch) in enumerate(zip(np.linspace(0, 0.85, n), np.geomspace(200, 4000, n))):
        rgb = tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue, 0.9, 0.9))
        Image.new("RGB", (64, 64), rgb).save(folder / "images" / f"{i:04d}.png")
        sf.write(folder / "audio" / f"{i:04d}.wav", 0.5 * np.sin(2 * np.pi * pitch * t), rate, subtype="PCM_16")
        rows.append([f"images/{i:04d}.png", f"audio/{i:04d}.wav", "val" if i % val_every == val_every // 2 else "train"])
    with open(folder / "pairs.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image", "audio", "split"], *rows])
    return folder / "pairs.csv"


# -----------------------------------------------------------------------------
# 2. the frozen encoders whose features CIAP learns from


class Encoders:
    """The frozen image backbone (CLIP ViT-L/14 or ResNet18) and CLAP, each loaded once; smoke: tiny random twins."""

    def __init__(self, cfg, device):
        self.encoder, self.target, self.smoke = cfg["ENCODER"], cfg["TARGET"], cfg["SMOKE"]
        self.device, self.batch = device, cfg["FEATURE_BATCH"]
        self.load_seconds = {}

    def load(self):
        for name in ("image", "clap"):
            start = time.perf_counter()
            getattr(self, name)
            self.load_seconds[name] = round(time.perf_counter() - start, 2)

    @functools.cached_property
    def image(self):
        """(model, preprocess): CLIP ViT-L/14 (or its tiny twin), or ResNet18 without its classifier."""
        import util
        from model import ciap
        if self.encoder == "clip-head":
            model, preprocess = util.tiny_clip() if self.smoke else util.load_clip(str(self.device))
            return model.to(self.device), preprocess
        resnet = ciap.tiny_resnet18() if self.smoke else ciap.load_resnet18(self.device)
        return ciap.ResNetFeatures(resnet).to(self.device), ciap.resnet_preprocess()

    @functools.cached_property
    def clap(self):
        """The CLAP scorer whose audio embeddings are the targets (None for TARGET='scratch')."""
        import scorers
        if self.target != "clap":
            return None
        scorer = scorers.tiny_clap() if self.smoke else scorers.load_clap(str(self.device))
        scorer.model.to(self.device)
        return scorer

    @property
    def image_name(self):
        from model import ciap
        if self.encoder == "clip-head":
            return ciap.tiny_clip_name() if self.smoke else ciap.REAL_CLIP_NAME
        return ciap.tiny_resnet_name() if self.smoke else ciap.REAL_RESNET_NAME

    @property
    def audio_name(self):
        from model import ciap
        if self.target == "clap":
            return self.clap.name
        return f"log-mel statistics ({ciap.MEL_BANDS} bands, mean and std over time, 16 kHz)"

    def encode_images(self, paths):
        """float32 [n, 768] CLIP embeddings (unit norm, E_final's space) or [n, 512] ResNet18 features, on the CPU."""
        import torch

        import util
        model, preprocess = self.image
        if self.encoder == "clip-head":
            return util.clip_image_embeddings(list(paths), batch_size=self.batch, model=model, preprocess=preprocess)
        chunks = []
        with torch.no_grad():
            for start in range(0, len(paths), self.batch):
                x = torch.stack([preprocess(util.load_image_rgb(p)) for p in paths[start:start + self.batch]])
                chunks.append(model(x.to(self.device)).float().cpu())
        return torch.cat(chunks)

    def encode_audio(self, paths):
        """float32 [n, 512] CLAP audio embeddings (unit norm), or [n, 128] log-mel statistics (scratch), on the CPU."""
        import torch

        from audio_io import resample
        from model.ciap import mel_statistics
        from scorers import CLAP_SAMPLE_RATE
        if self.target != "clap":
            return torch.stack([mel_statistics(*read_audio(p)) for p in paths])
        waves = [resample(wave, rate, CLAP_SAMPLE_RATE) for wave, rate in map(read_audio, paths)]
        return self.clap.audio_embeddings(waves, CLAP_SAMPLE_RATE, batch_size=self.batch)


# -----------------------------------------------------------------------------
# 3. features: computed once and cached, or (CACHE_FEATURES=False) again for every batch


def _unique(paths):
    """(unique paths in first-seen order, the index of each path in them)."""
    order = list(dict.fromkeys(paths))
    where = {p: i for i, p in enumerate(order)}
    return order, [where[p] for p in paths]


def _stamp(path):
    """What identifies a file's content cheaply for the feature cache: its absolute path, size and mtime."""
    st = Path(path).stat()
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


def read_feature_cache(path, image_model, audio_model):
    """{'image': {stamp: tensor row}, 'audio': {...}} of an earlier run's features.safetensors; UserError if unreadable.

    Rows computed with other encoders are not reused (nothing is, for that side), and the output says so.
    """
    from safetensors import SafetensorError, safe_open
    path = Path(path)
    if path.is_dir():
        path = path / "features.safetensors"
    try:
        with safe_open(str(path), framework="pt") as f:
            meta, tensors = f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("format") != FEATURES_FORMAT:
            raise ValueError(f"its metadata says format {meta.get('format')!r}, not {FEATURES_FORMAT!r}")
        found = {}
        for side, model in (("image", image_model), ("audio", audio_model)):
            if json.loads(meta[f"{side}_model"]) != model:
                print(f"  {path.name}: {side} features of {json.loads(meta[f'{side}_model'])!r}, not {model!r}: "
                      "not reused")
                found[side] = {}
                continue
            stamps = json.loads(meta[f"{side}_files"])
            found[side] = {tuple(s): tensors[side][i] for i, s in enumerate(stamps)}
        return found
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        raise UserError(f"REUSE_FEATURES={str(path)!r} cannot be used ({type(err).__name__}: {err}); give an earlier "
                        "run's features.safetensors, or '' to compute the features") from None


class CachedFeatures:
    """Every unique file's features computed once (the processes share the files out), then indexed per batch."""

    def __init__(self, pairs, encoders, state, reuse=""):
        import torch
        self.image_files, self.image_of = _unique(pairs.images)
        self.audio_files, self.audio_of = _unique(pairs.audios)
        found = read_feature_cache(reuse, encoders.image_name, encoders.audio_name) if reuse else {}
        start = time.perf_counter()
        self.image = self._features(self.image_files, encoders.encode_images, found.get("image", {}), state, "images")
        self.audio = self._features(self.audio_files, encoders.encode_audio, found.get("audio", {}), state, "audio")
        self.seconds = round(time.perf_counter() - start, 3)
        self.image_of, self.audio_of = torch.tensor(self.image_of), torch.tensor(self.audio_of)
        self.device = state.device
        self.image, self.audio = self.image.to(self.device), self.audio.to(self.device)

    @staticmethod
    def _features(files, encode, found, state, what):
        import torch
        from accelerate.utils import gather_object
        from tqdm import tqdm
        stamps = [tuple(_stamp(f)) for f in files]
        todo = [i for i, s in enumerate(stamps) if s not in found]
        if found:
            print(f"  {what}: {len(files) - len(todo)} of {len(files)} features reused from REUSE_FEATURES")
        rows = {i: found[s] for i, s in enumerate(stamps) if s in found}
        with state.split_between_processes(todo) as mine:   # contiguous shares, in order
            local = []
            batch = 256
            for start in tqdm(range(0, len(mine), batch), desc=f"encoding {what}", unit="batch",
                              disable=not state.is_main_process or not mine, leave=False):
                local.append(encode([files[i] for i in mine[start:start + batch]]))
        parts = gather_object([torch.cat(local) if local else None])   # every process's share, in process order
        computed = torch.cat([p for p in parts if p is not None]) if todo else None
        rows.update({i: computed[k] for k, i in enumerate(todo)})
        return torch.stack([rows[i] for i in range(len(files))]).float()

    def batch(self, pair_ids):
        return self.image[self.image_of[pair_ids]], self.audio[self.audio_of[pair_ids]]

    def save(self, path, encoders):
        from safetensors.torch import save

        from util import new_file
        meta = {"format": FEATURES_FORMAT, "image_model": json.dumps(encoders.image_name),
                "audio_model": json.dumps(encoders.audio_name),
                "image_files": json.dumps([_stamp(f) for f in self.image_files]),
                "audio_files": json.dumps([_stamp(f) for f in self.audio_files])}
        with new_file(path) as f:
            f.write(save({"image": self.image.cpu().contiguous(), "audio": self.audio.cpu().contiguous()}, meta))


class LiveFeatures:
    """CACHE_FEATURES=False: each batch's files are read and encoded by the frozen models again, every epoch."""

    def __init__(self, pairs, encoders, state):
        self.pairs, self.encoders, self.device, self.seconds = pairs, encoders, state.device, 0.0

    def batch(self, pair_ids):
        ids = [int(i) for i in pair_ids]
        return (self.encoders.encode_images([self.pairs.images[i] for i in ids]).to(self.device),
                self.encoders.encode_audio([self.pairs.audios[i] for i in ids]).to(self.device))


# -----------------------------------------------------------------------------
# 4. model, optimiser, schedule; checkpoints and resume


def learning_rate(step, total, cfg):
    """Linear warm-up over WARMUP of the steps, then cosine decay to 0: a function of the step alone, so a resumed
    run continues the schedule exactly."""
    warm = round(cfg["WARMUP"] * total)
    if step < warm:
        return cfg["LEARNING_RATE"] * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return cfg["LEARNING_RATE"] * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def optimizer_tensors(optimizer):
    """(tensors, param_groups) of an optimizer's state, for a safetensors file: every state entry a tensor
    'optimizer.<param>.<name>', the groups (plain numbers) as JSON metadata."""
    import torch
    state = optimizer.state_dict()
    tensors = {f"optimizer.{i}.{name}": (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
               for i, entry in state["state"].items() for name, v in entry.items()}
    return tensors, state["param_groups"]


def optimizer_state(tensors, groups):
    """The optimizer state_dict that optimizer_tensors took apart."""
    state = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in groups]
    return {"state": state, "param_groups": groups}


def model_meta(cfg, encoders, pairs, epoch, step, history):
    from model import ciap
    return {"encoder": cfg["ENCODER"], "target": cfg["TARGET"], "hidden_dim": cfg["HIDDEN_DIM"],
            "image_dim": ciap.IMAGE_DIMS[cfg["ENCODER"]], "embed_dim": ciap.CLAP_DIM,
            "audio_dim": ciap.CLAP_DIM if cfg["TARGET"] == "clap" else ciap.SCRATCH_AUDIO_DIM,
            "image_model": encoders.image_name, "audio_model": encoders.audio_name, "smoke": cfg["SMOKE"],
            "epoch": epoch, "step": step, "pairs": {"train": len(pairs.ids("train")), "val": len(pairs.ids("val"))},
            "config": {k: cfg[k] for k in CONFIG_KEYS}, "history": history}


def resume_source(target, cfg, given):
    """(checkpoint path, its tensors and metadata, cfg to run with) of --resume RUN_DIR or a checkpoint file."""
    from model.checkpoints import CheckpointError
    from model.ciap import read_ciap
    target = Path(target)
    if target.is_dir():
        found = sorted(target.glob("checkpoint_e*.safetensors"))
        if not found:
            raise UserError(f"--resume {target}: no checkpoint_e*.safetensors in it (the run stopped before its first "
                            "checkpoint, CHECKPOINT_EVERY): start it again")
        target = found[-1]
    elif not target.is_file():
        raise UserError(f"--resume {target}: no such folder or file; give a CIAP run folder or one of its "
                        "checkpoint_e*.safetensors")
    try:
        tensors, meta = read_ciap(target, training_state=True)
    except CheckpointError as err:
        raise UserError(f"--resume: {err}") from None
    if "optimizer_groups" not in meta:
        raise UserError(f"--resume {target}: it holds no training state (ciap.safetensors is a final model); give "
                        "its run folder or a checkpoint_e*.safetensors")
    changed = sorted(given - set(RESUME_MAY_CHANGE))
    if changed:
        raise UserError(f"--resume runs with the settings the checkpoint was trained with; only "
                        f"{', '.join(RESUME_MAY_CHANGE)} may change. Got {', '.join(changed)}")
    resumed = {**default_config(), **meta["config"], **{k: cfg[k] for k in given}}
    if meta["epoch"] >= resumed["EPOCHS"]:
        raise UserError(f"--resume {target}: the checkpoint is at epoch {meta['epoch']} of EPOCHS="
                        f"{resumed['EPOCHS']}: nothing is left to train; give --EPOCHS=<more> to go on")
    pairs_copy = target.parent / "pairs.csv"
    if not pairs_copy.is_file():
        raise UserError(f"--resume {target}: its run folder has no pairs.csv (the pairs it was trained on)")
    resumed["PAIRS"] = str(pairs_copy)
    cached = target.parent / "features.safetensors"
    if resumed["CACHE_FEATURES"] and cached.is_file():
        resumed["REUSE_FEATURES"] = str(cached)
    return target, tensors, meta, resumed


# -----------------------------------------------------------------------------
# 5. training: epochs of shuffled batches, validation after each, checkpoints


def evaluate(model, source, val_ids, batch_size):
    """(validation loss in batches of the training size, retrieval metrics over all validation pairs)."""
    import torch

    from model.ciap import info_nce, retrieval_metrics
    with torch.no_grad():
        image_f, audio_f = source.batch(val_ids)
        image, audio, scale = model(image_f, audio_f)
        chunks = [slice(s, s + batch_size) for s in range(0, len(val_ids), batch_size)]
        chunks = [c for c in chunks if len(range(*c.indices(len(val_ids)))) >= 2]   # one pair has no negative
        loss = sum(float(info_nce(image[c], audio[c], scale)) for c in chunks) / len(chunks)
    return loss, retrieval_metrics(image.cpu(), audio.cpu())


def epoch_entry(epoch, train_loss, val_loss, metrics, scale, seconds, pairs_seen):
    return {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "temperature": 1.0 / scale,
            "image_to_audio": metrics["image_to_audio"], "audio_to_image": metrics["audio_to_image"],
            "chance": metrics["chance"], "val_pairs": metrics["pairs"],
            "train_seconds": round(seconds, 4), "pairs_per_s": round(pairs_seen / seconds, 1) if seconds else None}


def train(cfg, pairs, encoders, accelerator, run_dir, record, resume=None, progress=None):
    """Steps 3-6 in the run folder: features, model, epochs, final model and figures. Returns the results."""
    import torch
    from tqdm import tqdm

    from model.ciap import CIAP, format_retrieval, info_nce, save_ciap
    main_process, n_proc, rank = accelerator.is_main_process, accelerator.num_processes, accelerator.process_index
    timings = {"models_s": encoders.load_seconds}

    # 3. features
    print("3. Features of the frozen encoders" + (" (computed once, cached)" if cfg["CACHE_FEATURES"] else
                                                   " (computed again for every batch: CACHE_FEATURES=False)"))
    if cfg["CACHE_FEATURES"]:
        source = CachedFeatures(pairs, encoders, accelerator.state, cfg["REUSE_FEATURES"])
        if main_process:
            source.save(run_file(run_dir, "features.safetensors"), encoders)
        print(f"  {len(source.image_files)} images -> {tuple(source.image.shape)}, {len(source.audio_files)} audio -> "
              f"{tuple(source.audio.shape)} in {source.seconds:.1f} s")
    else:
        source = LiveFeatures(pairs, encoders, accelerator.state)
    timings["features_s"] = source.seconds

    # 4. model, optimiser (and the state of a resumed run)
    train_ids, val_ids = torch.tensor(pairs.ids("train")), torch.tensor(pairs.ids("val"))
    per_process = min(cfg["BATCH_SIZE"], len(train_ids) // n_proc)
    if per_process < 2:
        raise UserError(f"{len(train_ids)} training pairs over {n_proc} processes leave fewer than 2 pairs a batch: "
                        "InfoNCE needs negatives; add pairs or use fewer processes")
    steps_per_epoch = len(train_ids) // (per_process * n_proc)
    total_steps = steps_per_epoch * cfg["EPOCHS"]
    if per_process < cfg["BATCH_SIZE"]:
        print(f"  BATCH_SIZE={cfg['BATCH_SIZE']} is more than the {len(train_ids)} training pairs allow: batches of "
              f"{per_process} per process")
    with torch.random.fork_rng(devices=[]):   # the weights depend on SEED alone, not on what ran before
        torch.manual_seed(cfg["SEED"])
        model = CIAP(cfg["ENCODER"], cfg["TARGET"], cfg["HIDDEN_DIM"], cfg["TEMPERATURE"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["LEARNING_RATE"], weight_decay=cfg["WEIGHT_DECAY"])
    order = torch.Generator().manual_seed(cfg["SEED"])   # batch order: the same in every process
    epoch, step, history = 0, 0, []
    if resume is not None:
        path, tensors, meta = resume
        model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith(("optimizer.", "rng."))})
        optimizer.load_state_dict(optimizer_state(tensors, meta["optimizer_groups"]))
        order.set_state(tensors["rng.shuffle"])
        epoch, step, history = meta["epoch"], meta["step"], meta["history"]
        print(f"  resumed from {path} at epoch {epoch}, step {step}")
    model, optimizer = accelerator.prepare(model, optimizer)
    plain = accelerator.unwrap_model(model)
    print(f"4. CIAP {cfg['ENCODER']} -> {cfg['TARGET']}: {sum(p.numel() for p in plain.parameters()):,} trainable "
          f"parameters; {len(train_ids)} training pairs, {steps_per_epoch} steps of {per_process} x {n_proc} "
          f"process(es) an epoch; {len(val_ids)} validation pairs")

    # 5. epochs
    first_epoch = epoch
    print(f"5. Training epochs {epoch + 1}-{cfg['EPOCHS']}")
    bar = tqdm(total=total_steps, initial=step, desc="training", unit="step", disable=not main_process)
    while epoch < cfg["EPOCHS"]:
        epoch += 1
        start, losses = time.perf_counter(), []
        model.train()
        shuffled = train_ids[torch.randperm(len(train_ids), generator=order)]
        for s in range(steps_per_epoch):
            first = (s * n_proc + rank) * per_process   # this process's share of the step's global batch
            image_f, audio_f = source.batch(shuffled[first:first + per_process])
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total_steps, cfg)
            image, audio, scale = model(image_f, audio_f)
            loss = info_nce(image, audio, scale)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            losses.append(loss.detach())
            step += 1
            bar.update(1)
        seconds = time.perf_counter() - start
        model.eval()
        val_loss, metrics = evaluate(plain, source, val_ids, per_process)
        entry = epoch_entry(epoch, float(torch.stack(losses).mean()), val_loss, metrics, float(plain.scale().detach()),
                            seconds, steps_per_epoch * per_process * n_proc)
        history.append(entry)
        bar.set_postfix(epoch=epoch, loss=f"{entry['train_loss']:.3f}",
                        val_R1=f"{metrics['image_to_audio']['R@1']:.2f}/{metrics['chance']['R@1']:.2f}")
        if main_process:
            record.update(history=history, epochs_done=epoch)
            if epoch % cfg["CHECKPOINT_EVERY"] == 0 or epoch == cfg["EPOCHS"]:
                tensors, groups = optimizer_tensors(optimizer)
                save_ciap(run_file(run_dir, f"checkpoint_e{epoch:04d}.safetensors"), plain,
                          {**model_meta(cfg, encoders, pairs, epoch, step, history), "optimizer_groups": groups},
                          {**tensors, "rng.shuffle": order.get_state()})
            if progress is not None:
                progress(epoch, entry)
    bar.close()

    # 6. the final model, its retrieval against chance, the curves
    if not main_process:
        return None
    save_ciap(run_file(run_dir, "ciap.safetensors"), plain, model_meta(cfg, encoders, pairs, epoch, step, history))
    final = history[-1]
    metrics = {"pairs": final["val_pairs"], "image_to_audio": final["image_to_audio"],
               "audio_to_image": final["audio_to_image"], "chance": final["chance"]}
    print("6. " + format_retrieval(metrics))
    fresh = history[first_epoch:]   # the epochs this run trained (a resumed run's history starts earlier)
    timings.update(epochs_s=round(sum(h["train_seconds"] for h in fresh), 3),
                   train_pairs_per_s=round(sum(h["pairs_per_s"] for h in fresh) / len(fresh), 1))
    results = {"retrieval": metrics, "val_loss": final["val_loss"], "train_loss": final["train_loss"],
               "temperature": final["temperature"], "epochs": epoch, "steps": step, "timings": timings,
               "model": "ciap.safetensors", "encoder": cfg["ENCODER"], "target": cfg["TARGET"],
               "image_model": encoders.image_name, "audio_model": encoders.audio_name}
    write_json(run_file(run_dir, "results.json"), results)
    plot_curves(history, run_file(run_dir, "curves.png"), title=f"CIAP {cfg['ENCODER']} -> {cfg['TARGET']}"
                + (" (smoke: tiny random twins)" if cfg["SMOKE"] else ""))
    record.update(results=results, timings=timings)
    print(f"  throughput: {timings['train_pairs_per_s']:,.0f} training pairs/s"
          + (f" after {timings['features_s']:.1f} s of feature caching" if cfg["CACHE_FEATURES"] else
             " (features computed every batch)"))
    return results


def plot_curves(history, path, title="CIAP"):
    """Loss (train, validation), recall at 1/5/10 both ways and the median rank per epoch, chance drawn beside."""
    from matplotlib.figure import Figure

    from util import new_file
    epochs, chance = [h["epoch"] for h in history], history[-1]["chance"]
    fig = Figure(figsize=(15, 4.8), layout="constrained")
    loss_ax, recall_ax, rank_ax = fig.subplots(1, 3)
    loss_ax.plot(epochs, [h["train_loss"] for h in history], label="train")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], label="validation")
    loss_ax.set(title="InfoNCE loss (symmetric, in-batch negatives)", xlabel="epoch")
    loss_ax.legend()
    for key, colour in {"R@1": "tab:blue", "R@5": "tab:orange", "R@10": "tab:green"}.items():
        recall_ax.plot(epochs, [h["image_to_audio"][key] for h in history], color=colour, label=f"{key} image->audio")
        recall_ax.plot(epochs, [h["audio_to_image"][key] for h in history], color=colour, ls="--",
                       label=f"{key} audio->image")
        recall_ax.axhline(chance[key], color=colour, ls=":", lw=1.5, label=f"{key} chance")
    recall_ax.set(title=f"validation recall ({history[-1]['val_pairs']} pairs)", xlabel="epoch", ylim=(-0.02, 1.02))
    recall_ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    rank_ax.plot(epochs, [h["image_to_audio"]["median_rank"] for h in history], label="image->audio")
    rank_ax.plot(epochs, [h["audio_to_image"]["median_rank"] for h in history], ls="--", label="audio->image")
    rank_ax.axhline(chance["median_rank"], color="0.4", ls=":", label="chance")
    rank_ax.set(title="validation median rank (1 = best)", xlabel="epoch", ylim=(0, None))
    rank_ax.legend()
    fig.suptitle(title)
    with new_file(path) as f:
        fig.savefig(f, format="png", dpi=110)


# -----------------------------------------------------------------------------
# the run


def run(cfg, mode, target, given, progress=None, encoders_class=None):
    from accelerate import Accelerator

    from model.checkpoints import CheckpointError
    accelerator = Accelerator(cpu=cfg["SMOKE"] or cfg["DEVICE"] == "cpu")
    main_process = accelerator.is_main_process
    # every process checks everything; only the main one prints and writes
    with contextlib.redirect_stdout(io.StringIO()) if not main_process else contextlib.nullcontext():
        if cfg["SMOKE"]:
            print("=" * 78 + "\nSMOKE RUN: tiny RANDOM-WEIGHT twins of CLIP / ResNet18 and CLAP on the CPU. What it "
                  "learns is\nthe synthetic pairs' colour -> pitch map in random feature spaces: it checks the loop, "
                  "not a model.\n" + "=" * 78)
        resume = None
        if mode == "resume":
            path, tensors, meta, resumed = resume_source(target, cfg, given)
            cfg.clear()
            cfg.update(resumed)   # in place: main() reads the run folder from it after an interrupt
            resume = (path, tensors, meta)
            print(f"Resuming {path} (epoch {meta['epoch']}) with the settings it was trained with")
        # 1. settings and every pair, before any model loads
        check_settings(cfg)
        if not cfg["PAIRS"]:   # --smoke without --pairs: make the synthetic set (its own folder, like a run's)
            folder = new_run_dir(cfg["OUTPUT_DIR"], "ciap-synthetic-pairs") if main_process else None
            from accelerate.utils import broadcast_object_list
            folder = Path(broadcast_object_list([str(folder)])[0])
            if main_process:
                make_synthetic_pairs(folder, cfg["SYNTHETIC_PAIRS"])
            accelerator.wait_for_everyone()
            cfg["PAIRS"] = str(folder / "pairs.csv")
            print(f"Synthetic pairs (colour -> pitch): {cfg['PAIRS']}")
        print(f"1. Pairs: {cfg['PAIRS']}")
        pairs = read_pairs(cfg["PAIRS"], cfg)
        print(f"  {len(pairs.images)} pairs: {len(pairs.ids('train'))} training, {len(pairs.ids('val'))} validation")
        for note in pairs.notes:
            print(f"WARNING: {note}")
        check_output_dir(cfg["OUTPUT_DIR"])
        # 2. the frozen encoders, every checkpoint opened before a run folder exists
        print(f"2. Frozen encoders on {accelerator.device} ({accelerator.num_processes} process(es))")
        encoders = (encoders_class or Encoders)(cfg, accelerator.device)
        try:
            encoders.load()
        except CheckpointError as err:
            raise UserError(str(err)) from None
        print(f"  image: {encoders.image_name}\n  audio: {encoders.audio_name}")
        run_dir = None
        if main_process:
            name = cfg["RUN_NAME"] or f"ciap-{cfg['ENCODER']}" + ("_resumed" if resume else "")
            run_dir = new_run_dir(cfg["OUTPUT_DIR"], name + ("_smoke" if cfg["SMOKE"] else ""))
        from accelerate.utils import broadcast_object_list
        run_dir = Path(broadcast_object_list([str(run_dir)])[0])
        cfg["_RUN_DIR"] = str(run_dir)
        print(f"Run folder: {run_dir}")
        data = {"mode": "train_ciap", "command": " ".join(sys.argv), "config": {k: cfg[k] for k in CONFIG_KEYS},
                "smoke": cfg["SMOKE"], "device": str(accelerator.device), "processes": accelerator.num_processes,
                "pairs": {"file": str(pairs.path.resolve()), "train": len(pairs.ids("train")),
                          "val": len(pairs.ids("val"))},
                "encoders": {"image": encoders.image_name, "audio": encoders.audio_name},
                "model_load_s": encoders.load_seconds, "warnings": pairs.notes}
        if resume:
            data["resumed_from"] = {"checkpoint": str(Path(resume[0]).resolve()), "epoch": resume[2]["epoch"]}
        start = time.perf_counter()
        with recorded_run(run_dir, data) if main_process else contextlib.nullcontext() as record:
            if main_process:
                write_pairs(pairs, run_file(run_dir, "pairs.csv"))
            train(cfg, pairs, encoders, accelerator, run_dir, record, resume, progress)
        accelerator.wait_for_everyone()
        print(f"\nDone in {time.perf_counter() - start:.1f} s. Everything is in {run_dir}/")
    return 0


def main(argv=None, progress=None, encoders_class=None):
    """Parse the command line, check the settings and every pair, then train into a new run folder.

    progress(epoch, entry): called by the main process after each epoch (its checkpoint written), e.g. to stop a run.
    encoders_class: an Encoders subclass providing other frozen models (tests/bench_ciap.py: real-size random ones).
    """
    from model.checkpoints import CheckpointError
    cfg = default_config()
    try:
        mode, target, given = parse_args(sys.argv[1:] if argv is None else argv, cfg)
        if mode == "help":
            print(usage())
            return 0
        return run(cfg, mode, target, given, progress, encoders_class)
    except (UserError, CheckpointError) as err:
        print(f"\nError: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        where = cfg.get("_RUN_DIR")
        print("\nInterrupted. " + (f"run.json in {where} says 'interrupted'; go on from its last checkpoint with: "
                                   f"python train_ciap.py --resume {where}" if where else "No run folder was made yet."),
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
