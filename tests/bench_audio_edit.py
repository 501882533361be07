"""Benchmark: editing a recording with the real-size AudioLDM-S (random weights) on this machine (README figures).

Measures, on the real architecture (tests/real_size.py; weights random, so only numerics and cost mean anything):
1. edit-friendly DDPM inversion then regeneration under the same conditioning and guidance: max |z - z_0|
   (float32; exact up to rounding by construction);
2. DDIM inversion (eta 0) then DDIM under the same conditioning: relative error ||z - z_0|| / ||z_0|| against
   the number of steps;
3. the cost of an edit (VAE encode + inversion + regeneration + decode) against a plain generation with the
   same steps (model.aldm.emb_to_audio), as a ratio, at strengths 1.0 and 0.5.

    python tests/bench_audio_edit.py                               # 2.56 s, 10 steps, DDIM 5/10/25 (~5 min, 2 cores)
    python tests/bench_audio_edit.py --steps 20 --ddim-steps 5 10 25 50 --duration 5.12
"""
import argparse
import json
import time

import numpy as np  # noqa: E402  (after real_size, which puts the repo root on sys.path)
import torch  # noqa: E402
from real_size import audioldm_s

from model import edit  # noqa: E402
from model.aldm import emb_to_audio  # noqa: E402

GUIDANCE = 2.5


def recording(seconds, sr=16000):
    """A synthetic A_0: tone bursts on a noise floor (onsets, harmonics, silence between)."""
    t = np.arange(int(seconds * sr)) / sr
    bursts = np.exp(-8 * (t % 0.5)) * sum(np.sin(2 * np.pi * f * t) for f in (220, 440, 660, 1320))
    return 0.2 * bursts + 0.01 * np.random.default_rng(0).standard_normal(len(t))


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=2.56)
    parser.add_argument("--steps", type=int, default=10, help="steps of the reconstruction and cost runs")
    parser.add_argument("--ddim-steps", type=int, nargs="+", default=[5, 10, 25])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    pipe, build_s = timed(audioldm_s)
    print(f"real-size AudioLDM-S (random weights) built in {build_s:.1f} s; {torch.get_num_threads()} threads; "
          f"{args.duration} s of audio")
    gen = torch.Generator().manual_seed(0)
    c_src, c_tgt = torch.randn(1, 512, generator=gen), torch.randn(1, 512, generator=gen)
    z0, encode_s = timed(lambda: edit.encode_audio(pipe, recording(args.duration), args.duration))
    print(f"z_0 {tuple(z0.shape)}, std {float(z0.std()):.4f}, max |z_0| {float(z0.abs().max()):.4f} "
          f"(encode {encode_s:.2f} s)")
    figures = {"duration_s": args.duration, "threads": torch.get_num_threads(), "z0_shape": list(z0.shape)}

    # 1. edit-friendly DDPM inversion: exact reconstruction
    inv, invert_s = timed(lambda: edit.invert(pipe, z0, c_src, 1.0, args.steps, GUIDANCE, 42))
    back, regen_s = timed(lambda: edit.regenerate(pipe, inv, c_src))
    diff = float((back - z0).abs().max())
    moved = float((edit.regenerate(pipe, inv, c_tgt) - z0).abs().max())
    print(f"1. DDPM inversion, {args.steps} steps, guidance {GUIDANCE}: max |z - z_0| = {diff:.3e} under c_src "
          f"(float32); {moved:.3e} under another c_tgt (invert {invert_s:.1f} s, regenerate {regen_s:.1f} s)")
    figures["ddpm_reconstruction_max_abs"] = diff
    figures["ddpm_other_target_max_abs"] = moved

    # 2. DDIM inversion: relative error against steps
    figures["ddim_relative_error"] = {}
    for steps in args.ddim_steps:
        inv = edit.invert(pipe, z0, c_src, 1.0, steps, GUIDANCE, 42, "ddim-inversion")
        back = edit.regenerate(pipe, inv, c_src)
        rel = float((back - z0).norm() / z0.norm())
        figures["ddim_relative_error"][steps] = rel
        print(f"2. DDIM inversion + DDIM, {steps:3d} steps: ||z - z_0|| / ||z_0|| = {rel:.4f}", flush=True)

    # 3. cost: an edit against a plain generation with the same steps
    _, plain_s = timed(lambda: emb_to_audio(pipe, c_tgt, duration=args.duration, steps=args.steps,
                                            guidance=GUIDANCE, seed=42))
    figures["plain_generation_s"] = plain_s
    wave = recording(args.duration)
    for strength in (1.0, 0.5):
        _, edit_s = timed(lambda: edit.edit_audio(pipe, wave[None], c_src, [c_tgt], args.duration, strength,
                                                  args.steps, GUIDANCE, GUIDANCE, 42))   # + the reconstruction
        figures[f"edit_s_strength_{strength:g}"] = edit_s
        print(f"3. cost, {args.steps} steps: edit at strength {strength:g} {edit_s:.1f} s vs plain generation "
              f"{plain_s:.1f} s: ratio {edit_s / plain_s:.2f}", flush=True)
    if args.out:
        with open(args.out, "x") as f:
            json.dump(figures, f, indent=2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
