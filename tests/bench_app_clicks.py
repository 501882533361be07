"""Click-to-mask latency of the bench (app.py): SAM2 encodes an image once, then each click runs only the prompt
decoder. Times the encoding and N clicks (a growing list of points, as a user adds them) on the example image.

    python tests/bench_app_clicks.py               # smoke SAM2 (tiny random weights)
    python tests/bench_app_clicks.py --real-size   # SAM2.1 Hiera-L, random weights (needs ~4 GB free), CPU

Prints seconds per click (median, max) for the decoder alone and for the page's whole click handler
(decoder + the overlay drawn for the browser). Target: under 0.5 s per click at real size.
"""
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

IMAGE = str(ROOT / "images" / "original.jpg")
CLICKS = [(448, 330), (520, 200), (400, 500), (600, 420), (300, 300, 0), (470, 600), (560, 120), (350, 420)]


def main(argv):
    import torch
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    import app
    import mask
    real = "--real-size" in argv
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if real:
        import real_size
        model = real_size.sam2_hiera_l().predictor.model
        what = "SAM2.1 Hiera-L (real size, random weights)"
    else:
        model = mask.tiny_sam2_predictor().predictor.model
        what = "tiny SAM2 (smoke)"
    seg = mask.PointSegmenter(SAM2ImagePredictor(model))
    start = time.perf_counter()
    seg.set_image(IMAGE)
    encode = time.perf_counter() - start
    decoder, handler = [], []
    points, labels = [], []
    for click in CLICKS:
        points.append(list(click[:2]))
        labels.append(click[2] if len(click) > 2 else 1)
        start = time.perf_counter()
        masks, _ = seg.predict(points, labels)
        decoder.append(time.perf_counter() - start)
        app.preview(IMAGE, masks[0], points, labels)
        handler.append(time.perf_counter() - start)
    print(f"{what} on {torch.get_num_threads()} CPU thread(s), {Path(IMAGE).name}:")
    print(f"  encode once: {encode:.2f} s")
    print(f"  click -> mask (decoder only), {len(CLICKS)} clicks: median {statistics.median(decoder):.3f} s, "
          f"max {max(decoder):.3f} s")
    print(f"  click -> overlay (decoder + drawing, the page's handler): median {statistics.median(handler):.3f} s, "
          f"max {max(handler):.3f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
