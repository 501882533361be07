"""Benchmark: every stage of a default run at real size, on any device, without checkpoints.

Each model is built at its real architecture with random weights (tests/real_size.py: ViT-L/14, SAM2.1-L,
YOLOv8x-601, SSV2A, AudioLDM-S, HTSAT-tiny + RoBERTa-base CLAP, the AudioSet AST) and run through the real
pipeline functions on the example pair, with the dtypes a real run uses (CUDA: CLIP and AudioLDM fp16, SAM2
under bfloat16 autocast; CPU: fp32). Per stage: seconds (min and median of --repeats), share of the total,
peak memory (RSS on the CPU, torch.cuda.max_memory_allocated on CUDA). AudioLDM is timed at --steps and
2 x --steps denoising steps and extrapolated to the default 200 (the U-Net's cost is linear in steps), for one
seed (3 audios) and for EVAL_SEEDS = 3 (9 audios).

    python tests/bench_real_size.py                     # CPU, 4/8 AudioLDM steps, 1 repeat (a few minutes on 2 cores)
    python tests/bench_real_size.py --device cuda --steps 20 --repeats 3
"""
import argparse
import os
import statistics
import time
from pathlib import Path

import real_size
import torch  # noqa: E402

import inputs
import loader
import main  # noqa: E402
import settings
import util  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IMAGES = [ROOT / "images" / "original.jpg", ROOT / "images" / "edited.jpg"]


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    elif os.path.exists("/proc/self/clear_refs"):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")   # resets the peak resident set size (VmHWM) of this process


def peak_mb(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn, repeats, device):
    times, peak, out = [], 0.0, None
    for _ in range(repeats):
        reset_peak(device)
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        peak = max(peak, peak_mb(device))
    return out, min(times), statistics.median(times), peak


class RealSizeModels(loader.Models):
    """loader.Models with real-size random-weight models in place of the checkpoints (same attributes)."""

    def __init__(self, device):
        self.smoke, self.device, self.load_seconds = False, torch.device(device), {}
        cuda = self.device.type == "cuda"
        start = time.perf_counter()
        model, preprocess = real_size.clip_vit_l14()
        if cuda:
            from clip.model import convert_weights
            convert_weights(model)                          # openai-clip keeps ViT-L/14 in fp16 on CUDA
        self.__dict__["clip"] = (model.to(self.device).eval(), preprocess)
        self.__dict__["sam2"] = real_size.sam2_hiera_l(str(self.device))
        self.__dict__["yolo"] = real_size.yolov8x_oiv7().to(self.device)
        self.__dict__["ssv2a"] = real_size.ssv2a_release().to(self.device)
        self.__dict__["aldm"] = real_size.audioldm_s(torch.float16 if cuda else torch.float32).to(self.device)
        clap = real_size.clap_htsat_tiny()
        clap.model.to(self.device)
        clap.device = self.device
        self.__dict__["clap"] = clap
        ast = real_size.ast_audioset()
        ast.model.to(self.device)
        ast.device = self.device
        self.__dict__["ast"] = ast
        self.build_seconds = time.perf_counter() - start


def main_bench():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=4, help="AudioLDM steps timed (and twice as many)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sampler", default="ddim")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = settings.default_config(main)
    cfg.update(DEVICE=args.device, SAMPLER=args.sampler, EVAL_SEEDS=1, _STEPS_GIVEN=True)
    print(f"Building real-size random-weight models on {device} ...")
    models = RealSizeModels(device)
    print(f"  built in {models.build_seconds:.0f} s: CLIP {real_size.n_params(models.clip[0]) / 1e6:.0f} M, "
          f"SAM2 {real_size.n_params(models.sam2.predictor.model) / 1e6:.0f} M, "
          f"YOLO {real_size.n_params(models.yolo.model) / 1e6:.0f} M, SSV2A {real_size.n_params(models.ssv2a) / 1e6:.0f} M, "
          f"AudioLDM UNet {real_size.n_params(models.aldm.unet) / 1e6:.0f} M, "
          f"CLAP {real_size.n_params(models.clap.model) / 1e6:.0f} M, AST {real_size.n_params(models.ast.model) / 1e6:.0f} M")
    prompts = inputs.parse_prompts(cfg["SAM2_PROMPTS"])
    torch.set_grad_enabled(False)
    rows = {}

    def stage(name, fn):
        out, best, median, peak = timed(fn, args.repeats, device)
        rows[name] = (best, median, peak)
        print(f"  {name:38s} {best:8.2f} s (median {median:.2f})   peak {peak:8.0f} MB")
        return out

    print("Stages (one run, one seed):")
    masks, _ = stage("1 SAM2 masks (2 images)", lambda: main.step1_masks(IMAGES, prompts, models, None, cfg))
    tok = stage("2 CLIP tokens (2 images)", lambda: main.step2_clip_tokens(IMAGES, models))

    def steps_3_to_6():
        m_neg, m_pos = main.step3_patch_weights(*masks, cfg["MASK_THRESHOLD"])
        bg = main.step4_background(tok["patches_1"], m_neg, m_pos)
        sup, boo, _ = main.step5_svd(tok, m_neg, m_pos, cfg)
        return main.step6_mix(tok["cls_1"], boo, sup, bg, cfg)
    emb_final = stage("3-6 patch grid, SVD, mix", steps_3_to_6)
    sources = stage("7a YOLO + crops' CLIP (2 images)", lambda: main.detect_sources(IMAGES, tok, models))
    found = sum(len(d) for d in sources[1])
    # random-weight YOLO finds (almost) nothing, so 7a timed few crops; a real run fills up to 63 slots per
    # image: CLIP on that many crops (whole-image-sized, as SSV2A resizes each crop back to the image size)
    from PIL import Image
    crops = [Image.open(IMAGES[i % 2]).convert("RGB") for i in range(2 * (models.ssv2a.slot - 1))]
    model, preprocess = models.clip
    stage(f"7a' crops' CLIP at the full slot count ({len(crops)} crops)",
          lambda: util.clip_image_embeddings(crops, model=model, preprocess=preprocess))
    print(f"  (7a found {found} objects with random YOLO weights; 7a' is what a full slot table adds)")
    slots = torch.cat([sources[0], sources[0][1:2].clone()])
    slots[2, 0] = emb_final.to(slots)
    claps = stage("7b cycle_mix (3 rows, 64/64/64)", lambda: torch.cat([
        models.ssv2a.cycle_mix(slots[r:r + 1], its=cfg["CYCLE_ITS"], samples=cfg["CYCLE_SAMPLES"],
                               var_samples=cfg["VAR_SAMPLES"], generator=torch.Generator().manual_seed(42))
        for r in range(3)]))
    from model.aldm import emb_to_audio
    audio = {}
    for steps in (args.steps, 2 * args.steps):
        audio[steps] = stage(f"7c AudioLDM 3 x 10 s, {steps} {args.sampler} steps",
                             lambda s=steps: emb_to_audio(models.aldm, claps, duration=cfg["DURATION"], steps=s,
                                                          guidance=cfg["GUIDANCE"], seed=42, sampler=args.sampler))
    wave = audio[args.steps]
    stage("9a AudioSet classifier (3 audios)", lambda: models.ast.class_probabilities(list(wave), 16000))
    stage("9b CLAP audio embeddings (3 audios)", lambda: models.clap.audio_embeddings(list(wave), 16000))

    t1 = rows[f"7c AudioLDM 3 x 10 s, {args.steps} {args.sampler} steps"][0]
    t2 = rows[f"7c AudioLDM 3 x 10 s, {2 * args.steps} {args.sampler} steps"][0]
    per_step = (t2 - t1) / args.steps
    fixed = max(t1 - per_step * args.steps, 0.0)
    default_steps = settings.audio_steps({**cfg, "_STEPS_GIVEN": False})
    aldm_full = fixed + per_step * default_steps
    # masks, tokens, steps 3-6 and detection are done once; cycle_mix, AudioLDM and scoring once per seed
    shared = sum(v[0] for k, v in rows.items() if k[0] in "123" or k.startswith("7a"))   # 7a' included: an upper bound
    per_seed = rows["7b cycle_mix (3 rows, 64/64/64)"][0] + aldm_full + sum(v[0] for k, v in rows.items()
                                                                              if k.startswith("9"))
    print(f"\nAudioLDM: {per_step:.2f} s per denoising step for 3 clips (with guidance), {fixed:.1f} s fixed "
          f"(text encoder, VAE, vocoder)")
    for seeds in (1, 3):
        total = shared + seeds * per_seed
        print(f"Extrapolated default run ({default_steps} {args.sampler} steps, EVAL_SEEDS={seeds}, {3 * seeds} audios): "
              f"{total:.0f} s = {total / 60:.1f} min on {device}; AudioLDM {aldm_full * seeds / total:.0%} of it")
    total1 = shared + per_seed
    print("Share of the one-seed extrapolated total per stage:")
    for name, (best, _, _) in rows.items():
        if not name.startswith("7c"):
            print(f"  {name:38s} {best / total1:6.1%}")
    print(f"  {'7c AudioLDM at ' + str(default_steps) + ' steps':38s} {aldm_full / total1:6.1%}")


if __name__ == "__main__":
    main_bench()
