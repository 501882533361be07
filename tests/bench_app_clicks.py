"""Click-to-mask latency of the bench (app.py), end to end and by part: SAM2 encodes an image once, then each click
runs SAM2's prompt decoder, step 3's patch arithmetic and the drawing, gradio's JPEG encoding for the browser and
the round trip through the page's queue (and, with chromium, the browser's own click until the new picture is
shown).

    python tests/bench_app_clicks.py               # smoke SAM2 (tiny random weights)
    python tests/bench_app_clicks.py --real-size   # SAM2.1 Hiera-L, random weights (needs ~4 GB free), CPU

The bench is served in this process (app.build_ui over smoke models, SAM2 swapped for the real-size twin with
--real-size). Each part is timed on its own over the same growing list of points a user adds; the decoder both as
the page runs it (one intra-op thread, app.click_threads) and with torch's default threads. Prints medians and
maxima, the decoder's share of the whole, and the target: under 0.5 s a click at real size.
"""
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CLICKS = [(448, 330), (520, 200), (400, 500), (600, 420), (300, 300, 0), (470, 600), (560, 120), (350, 420)]
CHROMIUM = "/usr/bin/chromium"


def med(xs):
    return f"median {statistics.median(xs):.3f} s, max {max(xs):.3f} s"


def queue_click(url, fn_index, session, handle, index):
    """One click through the page's queue as the browser sends it: seconds until the queue says it is done."""
    import httpx
    from app import ON_OBJECT
    body = {"data": [None, handle, ON_OBJECT, 0.5], "fn_index": fn_index, "session_hash": session,
            "event_data": {"index": list(index), "value": None, "selected": True}, "trigger_id": None}
    start = time.perf_counter()
    httpx.post(f"{url}/gradio_api/queue/join", json=body, trust_env=False, timeout=120).raise_for_status()
    with httpx.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}, trust_env=False,
                      timeout=120) as stream:
        for line in stream.iter_lines():
            if "process_completed" in line:
                assert '"success":true' in line.replace(" ", ""), line[:300]
                break
    return time.perf_counter() - start


def browser_clicks(url, n):
    """Seconds from a mouse click on I_0 to the redrawn picture loaded in chromium, n clicks."""
    from playwright.sync_api import sync_playwright
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.wait_for_selector("#image0 img")
        img = page.locator("#image0 img").first
        img.scroll_into_view_if_needed()
        box = img.bounding_box()
        for k, click in enumerate(CLICKS[:n]):
            before = img.get_attribute("src")
            start = time.perf_counter()
            page.mouse.click(box["x"] + click[0] / 672 * box["width"], box["y"] + click[1] / 672 * box["height"])
            page.wait_for_function("([sel, old]) => { const i = document.querySelector(sel); "
                                   "return i && i.src !== old && i.complete && i.naturalWidth > 0; }",
                                   arg=["#image0 img", before], timeout=120000)
            times.append(time.perf_counter() - start)
        browser.close()
    return times


def main(argv):
    import numpy as np
    import torch
    import gradio as gr
    from conftest import free_port

    import app
    real = "--real-size" in argv
    out = Path(tempfile.mkdtemp(prefix="bench_clicks_"))
    bench = app.Bench(["--smoke", f"--OUTPUT_DIR={out}"])
    what = "tiny SAM2 (smoke)"
    if real:
        import real_size
        bench.models.sam2 = real_size.sam2_hiera_l()
        what = "SAM2.1 Hiera-L (real size, random weights)"
    handle = bench.example[0]
    path = bench.image_path(handle)
    start = time.perf_counter()
    seg = bench.segmenter(path)
    encode = time.perf_counter() - start
    picture = bench.picture(handle)

    decoder, decoder_default, drawing, jpeg = [], [], [], []
    image_component = gr.Image(type="numpy", format="jpeg")
    points, labels = [], []
    for click in CLICKS:
        points.append(list(click[:2]))
        labels.append(click[2] if len(click) > 2 else 1)
        start = time.perf_counter()
        m = seg.predict(points, labels)[0][0]
        decoder_default.append(time.perf_counter() - start)
        start = time.perf_counter()
        with app.click_threads():
            m = seg.predict(points, labels)[0][0]
        decoder.append(time.perf_counter() - start)
        start = time.perf_counter()
        with app.click_threads():
            weights, _, _ = app.clip_view(m, 0.5)
            shown = app.draw(picture, m, points, labels, weights)
        drawing.append(time.perf_counter() - start)
        start = time.perf_counter()
        image_component.postprocess(shown)
        jpeg.append(time.perf_counter() - start)

    demo = app.build_ui(bench)
    demo.queue(default_concurrency_limit=4)
    port = free_port()
    demo.launch(server_port=port, prevent_thread_lock=True, quiet=True, css=app.CSS,
                allowed_paths=[str(out), str(bench.tmp)])
    url = f"http://127.0.0.1:{port}"
    fn_index = next(d["id"] for d in demo.config["dependencies"] if d.get("api_name") == "click_removed")
    session = uuid.uuid4().hex[:10]
    round_trip = [queue_click(url, fn_index, session, handle, np.array(c[:2]) * picture.scale) for c in CLICKS]
    browser = browser_clicks(url, len(CLICKS)) if Path(CHROMIUM).exists() else []
    demo.close()

    parts = statistics.median(decoder) + statistics.median(drawing) + statistics.median(jpeg)
    print(f"{what} on {torch.get_num_threads()} CPU thread(s), {Path(path).name}, {len(CLICKS)} clicks (1-8 points):")
    print(f"  encode once (at upload):                         {encode:.2f} s")
    print(f"  SAM2 prompt decoder, as the page runs it (1 thread): {med(decoder)}")
    print(f"  SAM2 prompt decoder, torch's default threads:      {med(decoder_default)}")
    print(f"  CLIP view (step 3's patches) + overlay drawing:    {med(drawing)}  (1 thread, as the page)")
    print(f"  JPEG for the browser (gradio's Image):             {med(jpeg)}")
    print(f"  click -> result through the page's queue (HTTP):   {med(round_trip)}")
    if browser:
        print(f"  click in chromium -> redrawn picture shown:        {med(browser)}")
    whole = statistics.median(browser or round_trip)
    print(f"  decoder's share of the whole: {statistics.median(decoder) / whole:.0%} "
          f"({statistics.median(decoder):.3f} of {whole:.3f} s; decoder + drawing + JPEG = {parts:.3f} s, the rest is "
          f"gradio's queue, HTTP{' and the browser' if browser else ''}). Target at real size: under 0.5 s a click.")


if __name__ == "__main__":
    main(sys.argv[1:])
