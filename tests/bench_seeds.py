"""Benchmark: what EVAL_SEEDS costs. A smoke run with EVAL_SEEDS=3 against EVAL_SEEDS=1 (same everything else).

Masks, tokens, SVD and detection are done once; cycle mix, AudioLDM and both scorers once per seed, so the
ratio grows towards 3 as AudioLDM's share grows (on real models it is almost all of a run).

    python tests/bench_seeds.py
"""
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import main  # noqa: E402


def timed_run(seeds):
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        assert main.main(["--smoke", f"--OUTPUT_DIR={out}", f"--EVAL_SEEDS={seeds}"]) == 0
        return time.perf_counter() - start


def bench():
    timed_run(1)   # warm-up: imports and the tiny models' construction
    one = min(timed_run(1) for _ in range(2))
    three = min(timed_run(3) for _ in range(2))
    print(f"smoke run, EVAL_SEEDS=1: {one:.1f} s; EVAL_SEEDS=3: {three:.1f} s; ratio {three / one:.2f}x")


if __name__ == "__main__":
    bench()
