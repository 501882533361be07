"""Benchmark: the verdict of a run at real size, method on and method off, without checkpoints.

Every model at its real architecture with random weights (tests/real_size.py), the real pipeline
(main.main_pipeline, steps 1-7 and the evaluation) on the example pair, twice: the default mixing weights,
and the method switched off (MIX_DIRECT=1, the others 0, so E_final is the plain CLIP embedding of I_1).
Prints both verdicts and what changed. Random weights make the audio meaningless: this shows what the
verdict says about it (the method's own effect must read 'no effect' with the method off), not the method's
quality. Short audio and few steps keep it to minutes on a CPU.

    python tests/bench_verdict.py                        # CPU, 2.5 s audio, 10 DDIM steps, 3 seeds
    python tests/bench_verdict.py --device cuda --duration 10 --steps 200
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import torch  # noqa: E402
from bench_real_size import IMAGES, RealSizeModels  # first: puts the repository on the path, offline

import inputs
import main  # noqa: E402
import runs
import settings
import verdict

METHOD_OFF = dict(MIX_DIRECT=1.0, MIX_BETA=0.0, MIX_ALPHA=0.0, MIX_GAMMA=0.0)


def run(models, cfg, out, name):
    prompts = inputs.parse_prompts(cfg["SAM2_PROMPTS"])
    run_dir = runs.new_run_dir(out, name)
    start = time.perf_counter()
    with runs.recorded_run(run_dir, runs.run_record(cfg, models, "run", IMAGES, prompts)) as record:
        results = main.main_pipeline(cfg, models, run_dir, IMAGES, prompts, record)
    return results, time.perf_counter() - start, run_dir


def main_bench():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--duration", type=float, default=2.5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=None, help="folder for the two run folders (default: a temporary one)")
    args = parser.parse_args()
    cfg = settings.default_config(main)
    cfg.update(DEVICE=args.device, DURATION=args.duration, DDIM_STEPS=args.steps, EVAL_SEEDS=args.seeds,
               _STEPS_GIVEN=True)
    settings.check_settings(cfg)
    print(f"Building real-size random-weight models on {args.device} ...")
    models = RealSizeModels(args.device)
    torch.set_grad_enabled(False)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_verdict_"))
    texts = {}
    for label, change in [("method on (default weights)", {}), ("method off (MIX_DIRECT=1, others 0)", METHOD_OFF)]:
        results, seconds, run_dir = run(models, {**cfg, **change}, out, "off" if change else "on")
        texts[label] = (verdict.format_verdict(results), seconds, run_dir, results)
    print("\n" + "=" * 100)
    for label, (text, seconds, run_dir, results) in texts.items():
        reach = json.loads((run_dir / "run.json").read_text())["e_final_reach"]
        print(f"\n##### {label}: {seconds:.0f} s, E_final's reach to baseline_edited "
              f"{reach['mean_to_baseline_edited']:.2e} (mean over {args.seeds} seeds), folder {run_dir}\n{text}")


if __name__ == "__main__":
    main_bench()
