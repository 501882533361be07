"""Every pretrained checkpoint the project uses, in one place.

For each: where it comes from, how big it is (or its SHA-256 where the publisher gives one), and how it
is fetched. Files live in ``checkpoints/`` next to this repo; Hugging Face models live in the usual
Hugging Face cache (``HF_HOME``), because laion-clap and diffusers look there themselves.

    path = checkpoint_path("sam2")        # downloads on first use when online, verifies, returns the path
    repo = hf_model_dir("audioldm")       # same for a Hugging Face repo: returns the local snapshot folder

Offline and missing, both raise CheckpointError naming the file, the folder looked in, and the command or
URL that fixes it. From the shell: ``python -m model.checkpoints`` (all) or ``... sam2 yolo`` (some),
``--check`` to only report what is there.
"""
import hashlib
import os
import shutil
import sys
import tempfile
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
    sha256: str = ""       # full SHA-256 when the publisher gives one
    min_bytes: int = 0     # a smaller file is certainly truncated
    hf_repo: str = ""      # Hugging Face repo id, for models fetched with huggingface_hub
    hf_files: tuple = ()   # allow_patterns for the snapshot (keeps unused framework weights out)
    manual: str = ""       # instructions when there is no direct URL


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
        name="ssv2a", what="SSV2A release (manifold, generator, remixer; 82,318,210 float32 parameters)",
        filename="ssv2a.pth",
        min_bytes=82_318_210 * 4,
        manual="The SSV2A authors publish ssv2a.pth on Google Drive only (no direct URL): open\n"
               "  https://drive.google.com/drive/folders/17SAuZ2sZrTYf21BiNKhRsEfdj-fbeQQN\n"
               "  download ssv2a.pth and save it as {path}\n"
               "  (with gdown installed: gdown --folder <that URL> -O checkpoints/ssv2a_release, then move ssv2a.pth)",
    ),
    Checkpoint(
        name="audioldm", what="AudioLDM-S-full-v2 (diffusers format: VAE, UNet, CLAP text encoder, HiFi-GAN); ~1.1 GiB",
        hf_repo="cvssp/audioldm-s-full-v2",
    ),
    Checkpoint(
        name="clap", what="LAION-CLAP 630k+AudioSet, HTSAT-tiny, non-fusion (evaluation scores)",
        filename="630k-audioset-best.pt",
        url="https://huggingface.co/lukewys/laion_clap/resolve/main/630k-audioset-best.pt",
        min_bytes=500_000_000,
    ),
    Checkpoint(
        name="roberta", what="roberta-base tokenizer and config, which laion-clap builds its text branch from; ~2 MiB",
        hf_repo="roberta-base",
        # config and tokenizer only: the text branch's weights come from the CLAP checkpoint itself
        hf_files=("config.json", "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"),
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


def _problem(ckpt, path, check_hash):
    """Why the file at path is not usable ('' when it is)."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size < ckpt.min_bytes:
        return f"truncated ({size:,} bytes, expected at least {ckpt.min_bytes:,})"
    if check_hash and ckpt.sha256 and _sha256(path) != ckpt.sha256:
        return "corrupt (SHA-256 does not match the published hash)"
    return ""


def _fix_message(ckpt, path, problem, cause=None):
    lines = [f"Checkpoint '{ckpt.filename}' ({ckpt.what}) is {problem}.", f"  Looked in: {path}"]
    if ckpt.manual:
        lines.append("  " + ckpt.manual.format(path=path))
    else:
        lines.append(f"  Fix, on a machine with internet: {FETCH_HINT.format(name=ckpt.name)}")
        lines.append(f"  or download {ckpt.url}\n  by hand and save it as {path}")
    if cause is not None:
        lines.append(f"  (automatic download failed: {type(cause).__name__}: {cause})")
    return "\n".join(lines)


def _download(ckpt, path):
    import torch.hub  # torch's downloader: progress bar, temp file, atomic move
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"Downloading {ckpt.filename} from {ckpt.url}")
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        part = Path(tmp) / ckpt.filename
        torch.hub.download_url_to_file(ckpt.url, str(part), hash_prefix=ckpt.sha256 or None, progress=True)
        shutil.move(str(part), path)


def checkpoint_path(name, download=True, check_hash=True):
    """Local path of a file checkpoint, downloading it first if needed and allowed.

    check_hash: verify the SHA-256 where one is published (costs a read of the file).
    """
    ckpt = _entry(name)
    if ckpt.hf_repo:
        raise ValueError(f"{name!r} is a Hugging Face repo; use hf_model_dir({name!r})")
    path = CHECKPOINT_DIR / ckpt.filename
    problem = _problem(ckpt, path, check_hash)
    if not problem:
        return path
    if ckpt.manual or not download:
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
    """Local snapshot folder of a Hugging Face checkpoint, downloading it first if needed and allowed."""
    from huggingface_hub import snapshot_download
    ckpt = _entry(name)
    if not ckpt.hf_repo:
        raise ValueError(f"{name!r} is a file checkpoint; use checkpoint_path({name!r})")
    patterns = list(ckpt.hf_files) or None
    try:
        return snapshot_download(ckpt.hf_repo, allow_patterns=patterns, local_files_only=True)
    except Exception as err:
        if not download:
            raise CheckpointError(_hf_message(ckpt, err)) from err
    try:
        return snapshot_download(ckpt.hf_repo, allow_patterns=patterns)
    except Exception as err:
        raise CheckpointError(_hf_message(ckpt, err)) from err


def _hf_message(ckpt, cause):
    from huggingface_hub.constants import HF_HUB_CACHE
    return "\n".join([
        f"Hugging Face model '{ckpt.hf_repo}' ({ckpt.what}) is not in the local cache.",
        f"  Looked in: {HF_HUB_CACHE}",
        f"  Fix, on a machine with internet: {FETCH_HINT.format(name=ckpt.name)}",
        f"  or: huggingface-cli download {ckpt.hf_repo}"
        + (" (HF_HUB_OFFLINE=1 is set: unset it to allow the download)" if os.environ.get("HF_HUB_OFFLINE") else ""),
        f"  ({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''})",
    ])


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


def status(name):
    """One line saying whether a checkpoint is present, without downloading or hashing."""
    ckpt = _entry(name)
    if ckpt.hf_repo:
        try:
            return f"ok       {ckpt.hf_repo} -> {hf_model_dir(name, download=False)}"
        except CheckpointError:
            return f"missing  {ckpt.hf_repo} (Hugging Face cache)"
    path = CHECKPOINT_DIR / ckpt.filename
    problem = _problem(ckpt, path, check_hash=False)
    return f"{problem or 'ok':8s} {path}"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    check_only = "--check" in argv
    names = [a for a in argv if a != "--check"] or list(CHECKPOINTS)
    for n in names:
        _entry(n)
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
        print(f"\nNot available: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
