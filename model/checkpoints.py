"""Every pretrained checkpoint the project uses, in one place.

For each: where it comes from, how big it is (or its SHA-256 where the publisher gives one), and how it
is fetched. Files live in ``checkpoints/`` next to this repo; Hugging Face models live in the usual
Hugging Face cache (``HF_HOME``), because laion-clap and diffusers look there themselves.

    path = checkpoint_path("sam2")        # downloads on first use when online, verifies, returns the path
    repo = hf_model_dir("audioldm")       # same for a Hugging Face repo: returns the local snapshot folder

Offline and missing, both raise CheckpointError naming the file, the folder looked in, and the command or
URL that fixes it. From the shell: ``python -m model.checkpoints`` (all) or ``... sam2 yolo`` (some),
``--check`` to open every file that is there and check its format, keys and shapes (``verify``).

ssv2a.pth, which its authors publish only in a Google Drive folder, is fetched with gdown: the folder's listing,
then the file of that name (``_drive_fetch``, the one network call). It is checked as its loader reads it before
it takes its name, and its size and SHA-256 are printed; when Drive refuses, the message says what Drive said.

Every checkpoint file is read with ``load_torch_file``: torch.load(weights_only=True), which rebuilds tensors
and plain data only and never runs code from the file. The one widening: numpy scalars and dtypes, which
training checkpoints keep in their optimizer state (LAION-CLAP's learning rate is a numpy.float64).
"""
import hashlib
import html
import importlib
import os
import pickle
import re
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT_DIR = Path(os.environ.get("CHECKPOINT_DIR", ROOT / "checkpoints"))
FETCH_HINT = "python -m model.checkpoints {name}   (or: bash checkpoints/download_ckpts.sh)"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or does not verify; the message says how to fix it."""


@dataclass(frozen=True)
class Checkpoint:
    name: str              # registry key, used on the command line
    what: str              # one line for humans
    filename: str = ""     # file under CHECKPOINT_DIR ('' for Hugging Face repos)
    url: str = ""          # direct download URL ('' when it must be fetched by hand)
    drive_folder: str = ""  # a public Google Drive folder that holds `filename` (fetched with gdown)
    drive_config: str = ""  # a config file that folder may hold next to it, compared with ours on download
    sha256: str = ""       # full SHA-256 when the publisher gives one
    sha256_prefix: str = ""  # the start of the SHA-256, where the publisher gives only that (torch.hub's names)
    min_bytes: int = 0     # a smaller file is certainly truncated
    hf_repo: str = ""      # Hugging Face repo id, for models fetched with huggingface_hub
    hf_files: tuple = ()   # the snapshot's files that the loader reads: all are fetched, all must be there
    hf_optional: tuple = ()  # further files fetched when the repo has them (allow_patterns)
    manual: str = ""       # how to fetch it by hand when there is no direct URL ({path}: where it goes)


CHECKPOINTS = {c.name: c for c in [
    Checkpoint(
        name="clip", what="CLIP ViT-L/14 (OpenAI), the image encoder SSV2A was trained on; ~890 MiB",
        filename="ViT-L-14.pt",
        url="https://openaipublic.azureedge.net/clip/models/"
            "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
        # OpenAI publishes the hash as the URL's folder name (openai-clip checks the same value)
        sha256="b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
        min_bytes=800_000_000,
    ),
    Checkpoint(
        name="sam2", what="SAM 2.1 Hiera-L (Meta), config configs/sam2.1/sam2.1_hiera_l.yaml; ~857 MiB",
        filename="sam2.1_hiera_large.pt",
        url="https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_large.pt",
        min_bytes=800_000_000,
    ),
    Checkpoint(
        name="yolo", what="YOLOv8x trained on Open Images V7 (601 classes, Ultralytics); ~137 MiB",
        filename="yolov8x-oiv7.pt",
        url="https://github.com/ultralytics/assets/releases/download/v8.4.0/yolov8x-oiv7.pt",
        min_bytes=100_000_000,
    ),
    Checkpoint(
        name="ssv2a", what="SSV2A release (manifold, generator, remixer; 82,318,210 float32 parameters); 329 MB",
        filename="ssv2a.pth",
        # the authors publish it in this Google Drive folder only (next to ssv2a.json, agg.pth, ...)
        drive_folder="https://drive.google.com/drive/folders/17SAuZ2sZrTYf21BiNKhRsEfdj-fbeQQN",
        drive_config="ssv2a.json",
        # the authors publish no hash: each download prints the file's SHA-256 (and run.json records it); once
        # the published file's hash is known, put it here and it is checked like CLIP's and CLAP's
        sha256="",
        min_bytes=82_318_210 * 4,
        manual="or by hand (when Google Drive refuses): open\n"
               "  https://drive.google.com/drive/folders/17SAuZ2sZrTYf21BiNKhRsEfdj-fbeQQN\n"
               "  download ssv2a.pth and save it as {path}",
    ),
    Checkpoint(
        name="audioldm", what="AudioLDM-S-full-v2 (diffusers format: VAE, UNet, CLAP text encoder, HiFi-GAN); 1.68 GB",
        hf_repo="cvssp/audioldm-s-full-v2",
        # the repo holds every weight twice (.bin and .safetensors); diffusers and transformers read the
        # safetensors when they are there, so only those are fetched
        hf_files=("model_index.json", "scheduler/scheduler_config.json",
                  "text_encoder/config.json", "text_encoder/model.safetensors",
                  "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json",
                  "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                  "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
                  "vocoder/config.json", "vocoder/model.safetensors"),
        # the slow tokenizer's files (1.3 MB), for a transformers that reads them instead of tokenizer.json
        hf_optional=("tokenizer/merges.txt", "tokenizer/vocab.json", "tokenizer/special_tokens_map.json"),
    ),
    Checkpoint(
        name="clap", what="LAION-CLAP 630k+AudioSet, HTSAT-tiny, non-fusion (the verdict's second view); 1.86 GB",
        filename="630k-audioset-best.pt",
        url="https://huggingface.co/lukewys/laion_clap/resolve/main/630k-audioset-best.pt",
        # the hub's Git LFS object id of the file (a training checkpoint of 1.86 GB: weights + optimizer)
        sha256="8053c9775516af2f4902e1e8281e356cc1bf7a85e8b761908170767b77c3f037",
        min_bytes=1_000_000_000,
    ),
    Checkpoint(
        name="roberta", what="roberta-base tokenizer and config, which laion-clap builds its text branch from; 3 MB",
        hf_repo="roberta-base",
        # config and tokenizer only: the text branch's weights come from the CLAP checkpoint itself
        hf_files=("config.json", "vocab.json", "merges.txt"),
        hf_optional=("tokenizer.json", "tokenizer_config.json"),
    ),
    Checkpoint(
        name="ast", what="Audio Spectrogram Transformer fine-tuned on AudioSet (527 classes, mAP 0.459): step 9's "
                         "audio classifier; 346 MB",
        hf_repo="MIT/ast-finetuned-audioset-10-10-0.4593",
        hf_files=("config.json", "preprocessor_config.json", "model.safetensors"),
    ),
    Checkpoint(
        name="vggish", what="VGGish (AudioSet, Hershey et al. 2017) as ported by torchvggish 0.2: the embedding "
                            "of the set-level FAD (metrics.py); 72,141,184 float32 parameters, 289 MB",
        filename="vggish-10086976.pth",
        # torch.hub's naming: '10086976' is the start of the file's SHA-256 (the publisher gives no full hash)
        url="https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
        min_bytes=72_141_184 * 4,
    ),
    Checkpoint(
        name="panns_cnn14_16k", what="PANNs CNN14 trained on 16 kHz AudioSet (Kong et al. 2020, mAP 0.438; window "
                                     "512, hop 160, 64 mels 50-8000 Hz): the FD / KL of metrics.py for 16 kHz audio, "
                                     "as audioldm_eval; 81,033,231 parameters, ~324 MB",
        filename="Cnn14_16k_mAP=0.438.pth",
        url="https://zenodo.org/record/3987831/files/Cnn14_16k_mAP%3D0.438.pth?download=1",
        min_bytes=300_000_000,
    ),
    Checkpoint(
        name="panns_cnn14", what="PANNs CNN14 at 32 kHz (Kong et al. 2020, AudioSet mAP 0.431), panns_inference's "
                                 "release: FD / KL with --cnn14=32k only (audioldm_eval's model for 32 kHz audio); "
                                 "81,837,071 parameters, ~327 MB",
        filename="Cnn14_mAP=0.431.pth",
        url="https://zenodo.org/record/3987831/files/Cnn14_mAP%3D0.431.pth?download=1",
        min_bytes=300_000_000,   # panns_inference itself re-downloads a file under 3e8 bytes as incomplete
    ),
    Checkpoint(
        name="resnet18", what="ResNet18 with torchvision's ImageNet weights (IMAGENET1K_V1): the backbone of the "
                              "CIAP 'resnet18' image encoder (train_ciap.py); 11,689,512 parameters, 45 MiB",
        filename="resnet18-f37072fd.pth",
        url="https://download.pytorch.org/models/resnet18-f37072fd.pth",
        # torch.hub's naming: 'f37072fd' is the start of the file's SHA-256, checked on download and on use
        sha256_prefix="f37072fd",
        min_bytes=11_689_512 * 4,
    ),
]}


def _entry(name):
    if name not in CHECKPOINTS:
        raise KeyError(f"unknown checkpoint {name!r}; known: {', '.join(CHECKPOINTS)}")
    return CHECKPOINTS[name]


def _sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_identity(path):
    """{'path', 'bytes', 'sha256'} of a file: what a run records of the weights it read, to compare copies."""
    path = Path(path)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": _sha256(path)}


def _problem(ckpt, path, check_hash):
    """Why the file at path is not usable ('' when it is)."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size < ckpt.min_bytes:
        return f"truncated ({size:,} bytes, expected at least {ckpt.min_bytes:,})"
    if check_hash and ckpt.sha256 and _sha256(path) != ckpt.sha256:
        return "corrupt (SHA-256 does not match the published hash)"
    if check_hash and ckpt.sha256_prefix and not _sha256(path).startswith(ckpt.sha256_prefix):
        return f"corrupt (SHA-256 does not start with the published {ckpt.sha256_prefix})"
    return ""


def _fix_message(ckpt, path, problem, cause=None):
    lines = [f"Checkpoint '{ckpt.filename}' ({ckpt.what}) is {problem}.", f"  Looked in: {path}"]
    if ckpt.url or ckpt.drive_folder:
        lines.append(f"  Fix, on a machine with internet: {FETCH_HINT.format(name=ckpt.name)}")
    if ckpt.manual:
        lines.append("  " + ckpt.manual.format(path=path))
    else:
        lines.append(f"  or download {ckpt.url}\n  by hand and save it as {path}")
    if cause is not None and ckpt.drive_folder:   # what Drive (or the check of what it sent) said, on one line
        lines.append(f"  (automatic download from Google Drive failed: {_said(cause)})")
    elif cause is not None:
        lines.append(f"  (automatic download failed: {type(cause).__name__}: {cause})")
    return "\n".join(lines)


def _said(err, width=600):
    """'Type: message' on one line (gdown's messages run over several), at most `width` characters."""
    text = f"{type(err).__name__}: {' '.join(str(err).split())}"
    return text if len(text) <= width else text[:width - 4] + " ..."


def _download(ckpt, path):
    """Fetch ckpt into a temporary folder next to path; it takes its final name only once it passed the checks,
    and nothing of a failed or interrupted download is left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if ckpt.drive_folder:
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            part = Path(tmp) / ckpt.filename
            _download_from_drive(ckpt, part, path)
            shutil.move(str(part), path)
        return
    import torch.hub  # torch's downloader: progress bar, temp file, atomic move
    print(f"Downloading {ckpt.filename} from {ckpt.url}")
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        part = Path(tmp) / ckpt.filename
        torch.hub.download_url_to_file(ckpt.url, str(part), hash_prefix=ckpt.sha256 or ckpt.sha256_prefix or None,
                                       progress=True)
        shutil.move(str(part), path)


# -----------------------------------------------------------------------------
# Google Drive (ssv2a.pth): gdown does the talking to Drive, including the page Drive shows before a large file


class DriveFileMissing(LookupError):
    """The Drive folder's listing holds no file of the name asked for."""


class DriveRefused(RuntimeError):
    """Drive sent something other than the file (a web page: quota exceeded, no permission, a sign-in)."""


def _drive_fetch(folder_url, filename, dest):
    """The one network call of a Drive download: list the public folder, then fetch its file `filename` to dest.

    gdown (imported only here) reads the folder's listing, then downloads the file by its id, through the
    confirmation page Drive shows for large files. Raises what gdown raises when Drive refuses or the network
    is down (gdown.FileURLRetrievalError, gdown.DownloadError, requests' ConnectionError), DriveFileMissing
    when the listing holds no such file.
    """
    try:
        import gdown
    except ImportError as err:
        raise ImportError(f"gdown is not installed ({err}): pip install -r requirements.txt") from err
    listing = gdown.download_folder(url=folder_url, skip_download=True, quiet=True, timeout=60)
    ids = {entry.path: entry.id for entry in listing}
    if filename not in ids:
        raise DriveFileMissing(f"the folder {folder_url} lists no {filename} "
                               f"(it lists: {_first(sorted(ids)) or 'nothing'})")
    gdown.download(id=ids[filename], output=str(dest), quiet=False, timeout=60)
    return dest


def _web_page(path):
    """'' unless the file at path is an HTML page (what Drive sends instead of a file it refuses); else what
    the page says: its title, and Drive's error line where it has one."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if not head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        return ""
    text = head.decode("utf-8", "replace")
    found = [re.sub(r"<[^>]+>", "", m.group(1)).strip() for m in
             (re.search(r"<title[^>]*>(.*?)</title>", text, re.S | re.I),
              re.search(r'class="uc-error-subcaption"[^>]*>(.*?)</p>', text, re.S | re.I)) if m]
    said = " ".join(html.unescape(" | ".join(t for t in found if t)).split())
    return said[:300] or f"an HTML page of {path.stat().st_size:,} bytes"


def _download_from_drive(ckpt, part, path):
    """ckpt's file from its Drive folder into part (a temporary name next to path), checked before it may take
    path's name: not a web page, not cut short, the published SHA-256 where there is one, and opened as its
    loader opens it (weights-only, every key and shape against the architecture). Prints its size and SHA-256;
    compares the folder's config (ckpt.drive_config) with ours where the folder holds one."""
    print(f"Downloading {ckpt.filename} from Google Drive (gdown): {ckpt.drive_folder}")
    _drive_fetch(ckpt.drive_folder, ckpt.filename, part)
    if not part.is_file():
        raise DriveRefused(f"gdown reported no error but wrote no {ckpt.filename}")
    page = _web_page(part)
    if page:
        raise DriveRefused(f"Google Drive sent a web page instead of {ckpt.filename}: {page}")
    problem = _problem(ckpt, part, check_hash=False)
    if problem:
        raise DriveRefused(f"the file Google Drive sent is {problem}")
    size, sha = part.stat().st_size, _sha256(part)
    if ckpt.sha256 and sha != ckpt.sha256:
        raise CheckpointError(f"the file Google Drive sent is corrupt: SHA-256 {sha} does not match the published "
                              f"{ckpt.sha256}")
    try:
        summary = _verifier(ckpt.name)(part)
    except Exception as err:   # a CheckpointError, or a loader's own error on a damaged file
        raise CheckpointError(f"the file Google Drive sent does not verify: "
                              f"{_said(err).replace(str(part), ckpt.filename)}") from err
    print(f"  {summary.replace(str(part), str(path))}")
    print(f"  {ckpt.filename}: {size:,} bytes, SHA-256 {sha}"
          + (" (the published hash)" if ckpt.sha256 else
             f"\n  (no published hash to check against: compare with a colleague's copy, `sha256sum {path}`)"))
    if ckpt.drive_config:
        print(f"  {_compare_drive_config(ckpt, part.parent)}")


def _compare_drive_config(ckpt, folder):
    """One line: the Drive folder's config file against ours (CONFIG_COMPARERS), or why it was not compared.
    Never fatal: the checkpoint itself was already checked against our config."""
    name, published = ckpt.drive_config, folder / ckpt.drive_config
    try:
        _drive_fetch(ckpt.drive_folder, name, published)
    except DriveFileMissing:
        return f"the Drive folder holds no {name}: nothing to compare with ours"
    except Exception as err:   # the checkpoint is in hand: a refused config is a note, not a failure
        return f"{name} not compared with ours: fetching it failed ({_said(err, 300)})"
    module, func = CONFIG_COMPARERS[ckpt.name].split(":")
    try:
        ours, differences = getattr(importlib.import_module(module), func)(published)
    except ValueError as err:
        return f"NOTE: the Drive folder's {name} is not a readable config ({_said(err, 300)}): not compared"
    if not differences:
        return f"the Drive folder's {name} is the same as ours ({ours}), file paths aside"
    return (f"NOTE: the Drive folder's {name} differs from ours ({ours}) in {len(differences)} setting(s): "
            f"{_first(differences, 5, width=160)}. {ckpt.filename} was checked against ours and fits it")


def checkpoint_path(name, download=True, check_hash=True, path=None):
    """Local path of a file checkpoint, downloading it first if needed and allowed.

    check_hash: verify the SHA-256 where one is published (costs a read of the file).
    path: where the file lives (default CHECKPOINT_DIR / its filename): main.py's CHECKPOINT_PATH for ssv2a.
    """
    ckpt = _entry(name)
    if ckpt.hf_repo:
        raise ValueError(f"{name!r} is a Hugging Face repo; use hf_model_dir({name!r})")
    path = CHECKPOINT_DIR / ckpt.filename if path is None else Path(path)
    problem = _problem(ckpt, path, check_hash)
    if not problem:
        return path
    if not (ckpt.url or ckpt.drive_folder) or not download:
        raise CheckpointError(_fix_message(ckpt, path, problem))
    try:
        _download(ckpt, path)
    except Exception as err:  # offline, HTTP error, hash mismatch: all end in the same advice
        raise CheckpointError(_fix_message(ckpt, path, problem, cause=err)) from err
    problem = _problem(ckpt, path, check_hash)
    if problem:
        raise CheckpointError(_fix_message(ckpt, path, f"{problem} right after downloading"))
    return path


def hf_model_dir(name, download=True):
    """Local snapshot folder of a Hugging Face checkpoint, downloading it first if needed and allowed.

    A folder counts as there only when every file of the entry's hf_files is in it: huggingface_hub returns
    a cached snapshot offline even when a download was interrupted half-way.
    """
    from huggingface_hub import snapshot_download
    ckpt = _entry(name)
    if not ckpt.hf_repo:
        raise ValueError(f"{name!r} is a file checkpoint; use checkpoint_path({name!r})")
    patterns = list(ckpt.hf_files + ckpt.hf_optional) or None
    try:
        folder = snapshot_download(ckpt.hf_repo, allow_patterns=patterns, local_files_only=True)
        missing = _missing_files(ckpt, folder)
        if not missing:
            return folder
        cause = FileNotFoundError(f"the cached snapshot {folder} lacks {_first(missing, 4)}")
    except Exception as err:
        cause = err
    if not download:
        raise CheckpointError(_hf_message(ckpt, cause)) from cause
    try:
        folder = snapshot_download(ckpt.hf_repo, allow_patterns=patterns)
    except Exception as err:
        raise CheckpointError(_hf_message(ckpt, err)) from err
    missing = _missing_files(ckpt, folder)
    if missing:
        raise CheckpointError(_hf_message(ckpt, FileNotFoundError(f"the download lacks {_first(missing, 4)}")))
    return folder


def _missing_files(ckpt, folder):
    return [f for f in ckpt.hf_files if not (Path(folder) / f).is_file()]


def _hf_message(ckpt, cause):
    from huggingface_hub.constants import HF_HUB_CACHE
    return "\n".join([
        f"Hugging Face model '{ckpt.hf_repo}' ({ckpt.what}) is not in the local cache.",
        f"  Looked in: {HF_HUB_CACHE}",
        f"  Fix, on a machine with internet: {FETCH_HINT.format(name=ckpt.name)}",
        f"  or: huggingface-cli download {ckpt.hf_repo} " + " ".join(ckpt.hf_files)
        + (" (HF_HUB_OFFLINE=1 is set: unset it to allow the download)" if os.environ.get("HF_HUB_OFFLINE") else ""),
        f"  ({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''})",
    ])


def _first(items, n=5, width=80):
    """'a, b, c, ... (12 in all)': key lists in messages stay short however many keys differ, and however long
    each key is (a file with 5000-character keys gives a message of a few hundred characters)."""
    items = [str(i) if len(str(i)) <= width else f"{str(i)[:width - 25]}...({len(str(i))} characters)" for i in items]
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


# -----------------------------------------------------------------------------
# reading checkpoint files: tensors and plain data, never code

def _numpy_globals():
    """numpy's scalar and dtype constructors under the names numpy 1 and numpy 2 pickle them with."""
    import numpy as np
    scalar = np.float64(0).__reduce__()[0]          # numpy.core.multiarray.scalar (numpy._core in numpy 2)
    kinds = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
             np.float16, np.float32, np.float64)
    dtype_classes = list(dict.fromkeys(type(np.dtype(k)) for k in kinds))   # numpy.dtypes.Float64DType, ...
    return [np.dtype, *dtype_classes, (scalar, "numpy.core.multiarray.scalar"),
            (scalar, "numpy._core.multiarray.scalar")]


def _refusal(err):
    """The global a weights-only load refused ('?' when torch named none), or '' when err is no such refusal."""
    text = str(err)
    for pattern in (r"GLOBAL ([\w.]+)", r"but got <class '([^']+)'>"):
        m = re.search(pattern, text)
        if m:
            return m.group(1)
    return "?" if "Weights only load failed" in text else ""


def _fix_line(name, path=None, missing=False):
    if name in CHECKPOINTS:
        ckpt, lines = CHECKPOINTS[name], []
        if ckpt.url or ckpt.drive_folder or ckpt.hf_repo:
            lines.append(f"  Fix{'' if missing else ': delete it, then'} on a machine with internet: "
                         f"{FETCH_HINT.format(name=name)}")
        if ckpt.manual:
            lines.append("  " + ckpt.manual.format(path=path or CHECKPOINT_DIR / ckpt.filename))
        return "\n".join(lines)
    return "  Fix: put the publisher's file there" if missing else "  Fix: replace it with the publisher's file"


def load_torch_file(path, name=None, what=None, mmap=False):
    """torch.load(path, weights_only=True), also accepting numpy scalars; CheckpointError saying what went wrong.

    name: the registry entry (for the fix in messages); what: how messages call the file. mmap: map the file
    instead of reading it (a cheap look at keys and shapes). Two kinds of failure are told apart, because
    their fixes differ: a file that is not a readable torch archive (truncated download, garbage, an HTML error
    page: fetch it again) and a readable file that holds an object other than tensors and plain data (a
    pickled class or function: a format we do not allow, which a new download does not change).
    """
    import torch
    path = Path(path)
    what = what or (f"'{CHECKPOINTS[name].filename}'" if name in CHECKPOINTS else "checkpoint")
    check_torch_archive(path, name, what)
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        refused = _refusal(err)
        if refused:
            detail = "" if refused != "?" else f" ({_one_line(err)})"
            raise CheckpointError(
                f"{what} {path} holds an object of type {refused}, which a weights-only load does not rebuild "
                f"(unsupported global {refused}){detail}. Only tensors, plain Python data and numpy scalars are read; "
                "code stored in a checkpoint is never run.\n"
                f"  This is not the publisher's format (a fresh download of the official file does not contain "
                f"such objects). Use the official file or one saved as plain tensors.") from err
        raise CheckpointError(f"{what} {path} is not a readable PyTorch checkpoint ({_one_line(err)}): truncated, "
                              f"damaged or not a checkpoint at all.\n{_fix_line(name, path)}") from err
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{what} {path} is not a readable PyTorch checkpoint ({_one_line(err)}): truncated, "
                              f"damaged or not a checkpoint at all ({path.stat().st_size:,} bytes).\n"
                              f"{_fix_line(name, path)}") from err


def check_torch_archive(path, name=None, what="checkpoint"):
    """CheckpointError unless path is a complete zip archive, the container torch.save has written since 1.6.

    A truncated download, an HTML error page or random bytes fail here with one clear message, before torch
    or a library's loader reports them as something else (torch calls zero bytes a 'legacy .tar format').
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}\n{_fix_line(name, path, missing=True)}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{what} {path} is not a readable PyTorch checkpoint: it is not a complete zip archive "
                              f"({path.stat().st_size:,} bytes; truncated, damaged or not a checkpoint at all).\n"
                              f"{_fix_line(name, path)}")


def _one_line(err):
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return f"{type(err).__name__}: {text[:200]}"


def state_dict_problems(expected, state):
    """Lines naming missing, unexpected and mis-shaped keys of state against expected ([] when it fits).

    expected: a model's state_dict() (or name -> tensor/shape); at most 5 keys are named per kind.
    """
    import torch
    shape = lambda v: tuple(v.shape) if hasattr(v, "shape") else tuple(v)   # noqa: E731
    missing = [k for k in expected if k not in state]
    unexpected = [str(k) for k in state if k not in expected]
    misshaped = [f"{k} {tuple(state[k].shape) if torch.is_tensor(state[k]) else type(state[k]).__name__} "
                 f"(expected {shape(v)})"
                 for k, v in expected.items()
                 if k in state and (not torch.is_tensor(state[k]) or tuple(state[k].shape) != shape(v))]
    problems = []
    for kind, keys in [("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)]:
        if keys:
            problems.append(f"{len(keys)} {kind} key(s): {_first(keys)}")
    return problems


# buffers that transformers computes itself: old checkpoints hold them, new ones do not
DERIVED_BUFFERS = ("position_ids", "token_type_ids")


def read_pretrained(from_pretrained, folder, what, name=None, **kwargs):
    """from_pretrained(folder, **kwargs) of a config, tokenizer or model, with a CheckpointError for a damaged
    file: transformers and safetensors raise OSError, ValueError (bad JSON), RuntimeError or SafetensorError
    (a cut or garbage .safetensors) with messages that do not say which checkpoint to fetch again."""
    from safetensors import SafetensorError
    try:
        return from_pretrained(folder, **kwargs)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        raise CheckpointError(f"{what} in {folder} cannot be loaded ({_one_line(err)}): a file of it is damaged or "
                              f"cut short.\n{_fix_line(name, folder)}") from err


def load_pretrained_strictly(cls, folder, what, name=None, **kwargs):
    """cls.from_pretrained(folder, **kwargs), refusing a checkpoint that does not fit the config.

    transformers and diffusers both fill weights missing from a checkpoint with random values and only log
    it; here every missing, unexpected or mis-shaped key (other than DERIVED_BUFFERS) is a CheckpointError
    that names the first few. Weights are read from safetensors only: a .bin next to them is a pickle.
    """
    model, info = read_pretrained(cls.from_pretrained, folder, what, name, output_loading_info=True,
                                  use_safetensors=True, **kwargs)
    problems = []
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = [k if isinstance(k, str) else str(k[0]) for k in (info.get(kind) or [])]
        keys = sorted(k for k in keys if not k.endswith(DERIVED_BUFFERS))
        if keys:
            problems.append(f"{len(keys)} {kind.replace('_keys', '')} key(s): {_first(keys)}")
    if problems:
        raise CheckpointError(f"{what} in {folder} does not fit its config.json: " + "; ".join(problems)
                              + f"\n{_fix_line(name, folder)}")
    return model


def check_tokenizer(tokenizer, name, vocab_size=None, where=None):
    """Raise CheckpointError when a byte-level BPE tokenizer from checkpoint `name` is silently empty.

    With transformers 5 offline, RobertaTokenizer.from_pretrained on a folder without vocab.json/merges.txt
    returns a tokenizer of 5 special tokens instead of failing: every text then encodes to the same ids and
    the model runs on nonsense without an error. A byte-level BPE tokenizer has at least 257 entries (one per
    byte, plus specials), fits its text encoder's embedding table (vocab_size), and tells texts apart.
    """
    ckpt = _entry(name)
    size = len(tokenizer)
    problems = []
    if size < 256 + 1:
        problems.append(f"it has only {size} entries (a byte-level BPE tokenizer has at least 257)")
    if vocab_size is not None and not 0.9 * vocab_size <= size <= vocab_size:
        problems.append(f"it has {size} entries but the text encoder embeds {vocab_size} token ids")
    ids_a, ids_b = tokenizer("a dog barks").input_ids, tokenizer("").input_ids
    if ids_a == ids_b:
        problems.append(f"'a dog barks' and '' both encode to {ids_a}")
    if problems:
        raise CheckpointError(
            f"{where or 'the tokenizer of ' + ckpt.hf_repo} is empty or broken: " + "; ".join(problems) + ".\n"
            f"  The tokenizer files (vocab.json, merges.txt) are missing from the local copy of {ckpt.hf_repo}.\n"
            f"  Fix, on a machine with internet: {FETCH_HINT.format(name=name)}"
            f"   (or: huggingface-cli download {ckpt.hf_repo})")
    return tokenizer


# -----------------------------------------------------------------------------
# verification: open a checkpoint and check it against the architecture that reads it

# each entry's check lives next to the model that uses it (and is what that model's loader runs)
VERIFIERS = {
    "clip": "util:verify_clip_file",
    "sam2": "mask:verify_sam2_file",
    "yolo": "model.detect:verify_yolo_file",
    "ssv2a": "model.pipeline:verify_ssv2a_file",
    "audioldm": "model.aldm:verify_audioldm_folder",
    "clap": "scorers:verify_clap_file",
    "roberta": "scorers:verify_roberta_folder",
    "ast": "scorers:verify_ast_folder",
    "vggish": "metrics:verify_vggish_file",
    "panns_cnn14_16k": "metrics:verify_cnn14_16k_file",
    "panns_cnn14": "metrics:verify_cnn14_file",
    "resnet18": "model.ciap:verify_resnet18_file",
}

# a Drive entry's published config against ours: (our config's path, ['key: ours x, published y', ...])
CONFIG_COMPARERS = {
    "ssv2a": "model.pipeline:config_differences",
}


def _verifier(name):
    module, func = VERIFIERS[name].split(":")
    return getattr(importlib.import_module(module), func)


def verify(name, path=None):
    """Open checkpoint `name` (at path, default the registry's) and check it; a one-line summary or CheckpointError.

    More than 'the file is there': the file is read as its loader reads it (weights-only) and its keys and
    shapes are compared with the architecture, so a garbage or wrong-format file is reported here and not
    minutes into a run. Nothing is downloaded.
    """
    ckpt = _entry(name)
    if path is None:   # the registry's file: its size and, where published, its SHA-256 are checked here
        path = hf_model_dir(name, download=False) if ckpt.hf_repo else checkpoint_path(name, download=False)
    elif (ckpt.sha256 or ckpt.sha256_prefix) and not _sha256(path).startswith(ckpt.sha256 or ckpt.sha256_prefix):
        raise CheckpointError(_fix_message(ckpt, Path(path), "corrupt (SHA-256 does not match the published hash)"))
    return _verifier(name)(path)


def status(name):
    """One line: 'ok       <what was checked>' or '<problem> <path>' (verify, no download)."""
    ckpt = _entry(name)
    try:
        return f"ok       {verify(name)}"
    except Exception as err:   # a CheckpointError, or a library's own error on a damaged file: one line each
        if not isinstance(err, CheckpointError):
            err = CheckpointError(f"{ckpt.what} cannot be read ({_one_line(err)}): damaged or not the "
                                  f"publisher's file.\n{_fix_line(name)}")
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        where = ckpt.hf_repo if ckpt.hf_repo else CHECKPOINT_DIR / ckpt.filename
        absent = lines[0].startswith(f"Checkpoint '{ckpt.filename}'") and "is missing" in lines[0]
        kind = "missing" if absent or "not in the local cache" in lines[0] else "bad"
        if kind == "missing":   # what is missing and how to get it; the full message is `python -m model.checkpoints`'s
            lines = lines[:1] + [line for line in lines if line.startswith("Fix")][:1]
        text = " | ".join(lines)
        return f"{kind:8s} {where}: {text[:700] + (' ...' if len(text) > 700 else '')}"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    check_only = "--check" in argv
    options = [a for a in argv if a.startswith("-") and a != "--check"]
    unknown = [a for a in argv if not a.startswith("-") and a not in CHECKPOINTS]
    if options or unknown:
        print("\n".join([f"unknown option {a!r}" for a in options] + [f"unknown checkpoint {a!r}" for a in unknown])
              + f"\nusage: python -m model.checkpoints [--check] [{' '.join(CHECKPOINTS)}]\n"
              "  (no names = all; --check opens the files that are there and checks them, downloading nothing)",
              file=sys.stderr)
        return 2
    names = [a for a in argv if a != "--check"] or list(CHECKPOINTS)
    failed = []
    for n in names:
        ckpt = CHECKPOINTS[n]
        print(f"[{n}] {ckpt.what}")
        if check_only:
            line = status(n)
            print("  " + line)
            if not line.startswith("ok"):
                failed.append(n)
            continue
        try:
            where = hf_model_dir(n) if ckpt.hf_repo else checkpoint_path(n)
            print(f"  ok: {where}")
        except CheckpointError as err:
            failed.append(n)
            print("  " + str(err).replace("\n", "\n  "))
    if failed:
        print(f"\nNot available or not usable: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    # run as `python -m model.checkpoints`, this file is the module __main__, a second copy next to the
    # model.checkpoints that the loaders import: its CheckpointError is a different class from theirs and would
    # catch none of their errors. The imported module's main() uses the one class everything raises.
    from model.checkpoints import main as _main
    sys.exit(_main())
