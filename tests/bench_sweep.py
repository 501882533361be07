"""Benchmark: an N-setting sweep against N separate runs (smoke models, CPU).

A sweep computes SAM2 masks, CLIP tokens, YOLO detections and the crops' CLIP embeddings once and the two
baselines once; only steps 3-6 (milliseconds), cycle mix and AudioLDM run per setting. N separate runs repeat
all of it. With the smoke models every part is tiny, so this shows the structure of the saving, not the size
it has with the real models (where SAM2/CLIP/YOLO are seconds and the baselines are two extra AudioLDM rows).

    python tests/bench_sweep.py            # N = 4 settings of SVD_K
    python tests/bench_sweep.py --n 8
"""
import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")

import main  # noqa: E402


def timed(argv):
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main.main(argv)
    assert code == 0, argv
    return time.perf_counter() - start


def bench():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4, help="settings (SVD_K = 1 .. n)")
    args = parser.parse_args()
    ks = list(range(1, args.n + 1))
    with tempfile.TemporaryDirectory() as out:
        smoke = ["--smoke", f"--OUTPUT_DIR={out}"]
        timed(smoke + ["--SVD_K=1"])   # warm-up: builds and caches the tiny models
        separate = [timed(smoke + [f"--SVD_K={k}"]) for k in ks]
        sweep = timed(smoke + ["--sweep", "SVD_K=" + ",".join(map(str, ks))])
    one = min(separate)
    print(f"{args.n} separate runs: {sum(separate):.1f} s ({one:.1f}-{max(separate):.1f} s each)")
    print(f"one sweep of {args.n} settings: {sweep:.1f} s")
    print(f"speed-up separate / sweep: {sum(separate) / sweep:.2f}x; sweep cost per setting {sweep / args.n:.2f} s "
          f"against {one:.2f} s for a whole run (a single run also draws its mask, bar and spectrogram figures)")


if __name__ == "__main__":
    bench()
