"""Benchmark: is a faster sampler a sound approximation of AudioLDM's DDIM? (figures for the README)

Without trained weights, "sound" is measured the way numerical ODE solvers are: the deterministic probability
flow of the real-size AudioLDM-S U-Net (random weights, real architecture) is integrated from the same initial
noise by DDIM (eta 0) with 999 steps (the reference; 1000 would ask for a noise level past the schedule's end), and by DDIM (eta 0) and DPM-Solver++ 2M with a few
steps. A sound fast sampler lands closer to the reference's final latent than DDIM does with as many steps.
Classifier-free guidance 2.5 and the pipeline's own code path (model.aldm.emb_to_audio, output='latent').

    python tests/bench_sampler.py                      # 2.56 s of audio, steps 10 20 25 50 (about 15 min on 2 CPU cores)
    python tests/bench_sampler.py --steps 10 25 --reference-steps 500 --device cuda
"""
import argparse
import json
import time
from pathlib import Path

import torch  # noqa: E402  (after real_size, which puts the repo root on sys.path)
from real_size import audioldm_s

from model.aldm import emb_to_audio  # noqa: E402


def final_latent(pipe, emb, sampler, steps, eta, duration, seed):
    start = time.perf_counter()
    latent = emb_to_audio(pipe, emb, duration=duration, steps=steps, guidance=2.5, seed=seed, sampler=sampler,
                          eta=eta, output="latent")
    return latent.double(), time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 25, 50])
    parser.add_argument("--reference-steps", type=int, default=999)
    parser.add_argument("--duration", type=float, default=2.56, help="seconds of audio (the latent's length)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="initial noises (and embeddings)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    parser.add_argument("--cache", default=None, help="folder to keep reference latents in (they take longest)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = audioldm_s(torch.float16 if args.device.startswith("cuda") else torch.float32).to(args.device)
    rows = []
    for seed in args.seeds:
        emb = torch.nn.functional.normalize(torch.randn(1, 512, generator=torch.Generator().manual_seed(seed)), dim=-1)
        cached = (Path(args.cache) / f"ref_{args.reference_steps}_{args.duration}_{seed}_{args.device}.pt"
                  if args.cache else None)
        if cached is not None and cached.is_file():
            ref, t_ref = torch.load(cached, weights_only=True)
        else:
            ref, t_ref = final_latent(pipe, emb, "ddim", args.reference_steps, 0.0, args.duration, seed)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                torch.save((ref, t_ref), cached)
        print(f"seed {seed}: reference DDIM(eta 0) x {args.reference_steps} steps in {t_ref:.0f} s, "
              f"latent {tuple(ref.shape)}, |x| = {ref.norm():.1f}")
        for steps in args.steps:
            for sampler, eta in (("ddim", 0.0), ("dpmpp-2m", None)):
                x, t = final_latent(pipe, emb, sampler, steps, eta if eta is not None else 0.0, args.duration, seed)
                rel = float((x - ref).norm() / ref.norm())
                rows.append({"seed": seed, "sampler": sampler + (" (eta 0)" if sampler == "ddim" else ""),
                             "steps": steps, "relative_error": rel, "seconds": round(t, 2)})
                print(f"  {rows[-1]['sampler']:14s} {steps:4d} steps: |x - x_ref| / |x_ref| = {rel:.4f}  ({t:.1f} s)")
    print("\nsteps  DDIM(eta 0) error  DPM-Solver++ 2M error  ratio   (mean over seeds)")
    for steps in args.steps:
        d = [r["relative_error"] for r in rows if r["steps"] == steps and r["sampler"].startswith("ddim")]
        p = [r["relative_error"] for r in rows if r["steps"] == steps and r["sampler"] == "dpmpp-2m"]
        print(f"{steps:5d}  {sum(d) / len(d):17.4f}  {sum(p) / len(p):21.4f}  {sum(d) / max(sum(p), 1e-12):5.1f}x")
    per_step = {s: [r["seconds"] / r["steps"] for r in rows if r["sampler"].startswith(s)] for s in ("ddim", "dpmpp")}
    print(f"seconds per step: DDIM {sum(per_step['ddim']) / len(per_step['ddim']):.2f}, "
          f"DPM-Solver++ {sum(per_step['dpmpp']) / len(per_step['dpmpp']):.2f} (the U-Net dominates both)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
