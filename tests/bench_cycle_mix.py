"""Benchmark: SSV2A cycle mix, the original's serial algorithm vs our batched one (goal: >= 20x on CPU).

Real config (ssv2a.json, 82 M parameters) with random weights, one image: a global slot + 5 crops + padding.
The serial side is test_model_ssv2a.serial_cycle_mix(literal=True): one styler call per remix and every
Gaussian averaged over var_samples draws, as the original does.

    python tests/bench_cycle_mix.py                       # its=64, samples=64, var_samples=64
    python tests/bench_cycle_mix.py --threads 1 --repeats 3
"""
import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import torch  # noqa: E402
from test_model_ssv2a import make_slots, serial_cycle_mix  # noqa: E402

from model.pipeline import SSV2A  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--its", type=int, default=64)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--var-samples", type=int, default=64)
    parser.add_argument("--images", type=int, default=1, help="batch size B")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3, help="batched runs (the best is reported)")
    parser.add_argument("--skip-serial", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = SSV2A.from_config(HERE / "reference" / "ssv2a" / "ssv2a.json")
    slots = make_slots([6] * args.images)
    kw = dict(its=args.its, samples=args.samples, var_samples=args.var_samples)
    print(f"SSV2A cycle mix, real config ({sum(p.numel() for p in model.parameters()):,} parameters, random "
          f"weights), B={args.images}, {kw}")
    print(f"CPU: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f} (other processes share the cores: timings are noisy)")

    model.cycle_mix(slots, its=0, samples=2, var_samples=2)  # warm-up: first-call allocations
    batched = []
    for r in range(args.repeats):
        start = time.perf_counter()
        model.cycle_mix(slots, generator=torch.Generator().manual_seed(r), **kw)
        batched.append(time.perf_counter() - start)
    print(f"batched: best {min(batched):.2f} s of {args.repeats} ({', '.join(f'{t:.2f}' for t in batched)})")
    if args.skip_serial:
        return

    start = time.perf_counter()
    serial_cycle_mix(model, slots, generator=torch.Generator().manual_seed(0),
                     shuffle_generator=torch.Generator().manual_seed(1), literal=True, **kw)
    serial = time.perf_counter() - start
    print(f"serial (the original's algorithm): {serial:.2f} s")
    print(f"speed-up serial / batched: {serial / min(batched):.1f}x  (goal >= 20x)  "
          f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
