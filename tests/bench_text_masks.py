"""Benchmark: the added time of finding an object by name (SAM2 proposals + CLIP) against SAM2 points.

Per image, the point path is SAM2's encoding and one prompt; the text path is the same encoding (shared) plus
SAM2's automatic proposals and a CLIP pass over every proposal's crop. Smoke models by default (tiny random
weights, tiny proposal grid: the plumbing's cost); --real-size builds SAM2.1-L and ViT-L/14 with random
weights and the real 16 x 16 point grid, with SAM2's quality filters off (random weights pass none), so every
grid mask goes through NMS and up to MAX_PROPOSALS crops through CLIP: an upper bound of the real cost.

    python tests/bench_text_masks.py
    python tests/bench_text_masks.py --real-size --repeats 1
"""
import argparse
import statistics
import time
from pathlib import Path

import real_size
import torch  # noqa: E402

import mask  # noqa: E402
import util  # noqa: E402

IMAGES = [Path(__file__).resolve().parent.parent / "images" / n for n in ("original.jpg", "edited.jpg")]
POINTS = {"original.jpg": ([[448, 330]], [1]), "edited.jpg": ([[410, 130], [370, 460]], [1, 1])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-size", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.real_size:
        seg, (clip_model, preprocess) = real_size.sam2_hiera_l(), real_size.clip_vit_l14()
        options = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)
    else:
        seg, (clip_model, preprocess), options = mask.tiny_sam2_predictor(), util.tiny_clip(), mask.TINY_PROPOSAL_OPTIONS
    point_times, text_times, n_props = [], [], []
    for _ in range(args.repeats):
        for image, name, other in zip(IMAGES, ("cat", "astronaut"), ("astronaut", "cat")):
            points, labels = POINTS[image.name]
            seg.image_key = None                       # a fresh encoding for each repeat
            start = time.perf_counter()
            seg.set_image(image)
            with torch.no_grad():
                seg.predict(points, labels)
            point_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            _, info = mask.segment_by_text(image, name, other_names=[other], predictor=seg, clip_model=clip_model,
                                           preprocess=preprocess, min_score=0.0, **options)
            text_times.append(time.perf_counter() - start)   # the encoding above is reused, not redone
            n_props.append(len(info["candidates"]))
    p, t = statistics.median(point_times), statistics.median(text_times)
    kind = "real-size random-weight" if args.real_size else "smoke (tiny random-weight)"
    print(f"{kind} models, {torch.get_num_threads()} CPU thread(s), median over {len(point_times)} images:")
    print(f"  points: {p:.2f} s per image (SAM2 encoding + one prompt)")
    print(f"  name:   +{t:.2f} s per image on top (SAM2 proposals + CLIP on {statistics.median(n_props):.0f} crops), "
          f"{(p + t) / p:.1f}x the point path")


if __name__ == "__main__":
    main()
