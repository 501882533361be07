"""Benchmark: CIAP training throughput with the frozen encoders' features cached once (CACHE_FEATURES=True, the
default) against computed again for every batch of every epoch (CACHE_FEATURES=False).

Both runs are train_ciap.py itself (--smoke's settings, the default head width) on the synthetic colour -> pitch set,
on the CPU with one torch thread. Pairs per second count the training pairs stepped through per second of the
epochs' training loop (validation excluded); the cached run's one-off encoding is reported beside it.

    python tests/bench_ciap.py                 # tiny random twins of CLIP and CLAP: 128 pairs, 3 epochs each
    python tests/bench_ciap.py --real-size     # CLIP ViT-L/14 and HTSAT-tiny CLAP at their real size (random
                                               # weights, tests/real_size.py): 32 pairs, 1 epoch each
"""
import contextlib
import functools
import io
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import train_ciap  # noqa: E402


class RealSizeEncoders(train_ciap.Encoders):
    """The real architectures with random weights: the cost of the real frozen encoders, without their files."""
    image_name = "real-size random CLIP ViT-L/14"
    audio_name = "real-size random CLAP (HTSAT-tiny + RoBERTa)"

    @functools.cached_property
    def image(self):
        import real_size
        return real_size.clip_vit_l14()

    @functools.cached_property
    def clap(self):
        import real_size
        return real_size.clap_htsat_tiny()


def timed(pairs, out, cached, epochs, encoders_class=None):
    args = ["--smoke", "--pairs", str(pairs), f"--OUTPUT_DIR={out}", f"--EPOCHS={epochs}",
            f"--CACHE_FEATURES={cached}", "--CHECKPOINT_EVERY=1000", f"--HIDDEN_DIM={train_ciap.HIDDEN_DIM}"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert train_ciap.main(args, encoders_class=encoders_class) == 0
    run_dir = max(Path(out).glob("*_ciap-*"), key=lambda p: p.stat().st_mtime)
    results = json.loads((run_dir / "results.json").read_text())
    epoch_s = results["timings"]["epochs_s"] / epochs
    return results["timings"]["train_pairs_per_s"], results["timings"]["features_s"], epoch_s


def bench(real_size=False):
    torch.set_num_threads(1)
    n, epochs = (32, 1) if real_size else (128, 3)
    encoders = RealSizeEncoders if real_size else None
    with tempfile.TemporaryDirectory() as tmp:
        pairs = train_ciap.make_synthetic_pairs(Path(tmp) / "pairs", n)
        fast, features_s, fast_epoch = timed(pairs, Path(tmp) / "out", True, epochs, encoders)
        slow, _, slow_epoch = timed(pairs, Path(tmp) / "out", False, epochs, encoders)
    what = "real-size random CLIP ViT-L/14 + CLAP" if real_size else "tiny random twins of CLIP + CLAP"
    print(f"{what}, {n} synthetic pairs ({n * 3 // 4} training), CPU, 1 torch thread:")
    print(f"  features cached:            {fast:10,.0f} training pairs/s  ({fast_epoch:.3f} s an epoch, after "
          f"{features_s:.1f} s encoding {n} images and {n} clips once)")
    print(f"  features computed per batch:{slow:10,.1f} training pairs/s  ({slow_epoch:.1f} s an epoch)")
    print(f"  ratio {fast / slow:,.0f}x; 30 epochs: {features_s + 30 * fast_epoch:.1f} s cached against "
          f"{30 * slow_epoch:.0f} s (validation not counted)")


if __name__ == "__main__":
    bench(real_size="--real-size" in sys.argv[1:])
