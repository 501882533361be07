"""app.py, the lab bench: the page in a real browser (Debian's chromium driven by playwright) and its named API
endpoints (gradio_client, and plain HTTP where a client library would upload a local file itself), on the smoke
models; a page run against the CLI run of its reproduce command.

One `python app.py --smoke` serves the whole module (started once, on a free port, outputs and gradio's upload
folder in a temporary folder, uploads limited to 2 MB). The last test stops it with SIGTERM during a run.
Screenshots of each page state are kept in a temporary folder whose path the test prints.
"""
import hashlib
import html
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
import wave
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import free_port

import app
import audio_io
import errors
import evaluation
import main
import settings

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
INSTALL = "apt-get install -y chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
CAT = (448, 330)   # main.py's default point on the cat in images/original.jpg (file pixels)
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "YOLO_OFFLINE": "1", "MPLBACKEND": "Agg",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
QUICK = dict(EVAL_SEEDS=1, DURATION=0.5, CYCLE_ITS=1)   # an API run cut to what a test looks at
MAX_UPLOAD_MB = 2


# -----------------------------------------------------------------------------
# without a server


def test_reproduce_command_reads_back_as_the_same_config():
    base = settings.default_config(main)
    settings.parse_args(["--smoke", "--OUTPUT_DIR=/tmp/a b"], base)
    values = {"SAM2_PROMPTS": "{'cat': {'x': [448], 'y': [330]}, \"it's\": {'union': True}}", "SVD_K": 7.0,
              "SVD_ALPHA": 0.30000000000000004, "RUN_NAME": "42", "KEPT_SOURCES": ["rocket", "dog"],
              "SAMPLER": "dpmpp-2m"}
    argv, command = app.reproduce_command(base, values)
    assert command.startswith("python main.py --smoke ")
    assert not any(a.startswith("--SVD_ALPHA") for a in argv)   # a slider's 0.30000000000000004 is the default 0.3
    cli = settings.default_config(main)
    settings.parse_args(shlex.split(command)[2:], cli)   # what a shell hands main.py
    assert cli == app.run_config(argv)[0]
    assert cli["SVD_K"] == 7 and cli["RUN_NAME"] == "42" and cli["OUTPUT_DIR"] == "/tmp/a b"
    assert cli["SAM2_PROMPTS"] == {"cat": {"x": [448], "y": [330]}, "it's": {"union": True}}
    assert cli["_STEPS_GIVEN"] is True   # smoke's DDIM_STEPS, as `python main.py --smoke` has it
    with pytest.raises(errors.UserError, match="SAM2_PROMPTS takes a dict"):
        app.reproduce_command(base, {"SAM2_PROMPTS": "[1, 2]"})
    # a sweep: the grid as --sweep NAME=v1,v2, read back by the CLI's own parser
    argv, command = app.reproduce_command(base, {}, {"SVD_K": "1,5", "SVD_ALPHA": "0.1,0.3"})
    cfg, mode = app.run_config(shlex.split(command)[2:])
    assert mode == "sweep" and cfg["SWEEP"] == {"SVD_K": [1, 5], "SVD_ALPHA": [0.1, 0.3]}


def test_every_ranged_setting_has_a_slider_and_a_value_is_read_as_the_command_line_reads_it():
    assert set(app.SLIDERS) == {n for n, rule in settings.RULES.items() if rule.step is not None}
    assert app.METHOD_SLIDERS[:7] == ["SVD_K", "SVD_ALPHA", "SVD_BETA", "MIX_DIRECT", "MIX_BETA", "MIX_ALPHA",
                                      "MIX_GAMMA"]
    base = settings.default_config(main)
    assert app.setting_value(base, "MASK_THRESHOLD", 0.30000000000000004) == 0.3
    assert app.setting_value(base, "SVD_K", 7.0) == 7 and app.setting_value(base, "SVD_K", "7") == 7
    for raw, message in (("abc", "MASK_THRESHOLD=abc: MASK_THRESHOLD takes a float"),
                         (None, "MASK_THRESHOLD=None: MASK_THRESHOLD takes a float"),
                         (1.5, "MASK_THRESHOLD=1.5 is out of range: it must be a fraction in (0, 1]")):
        with pytest.raises(errors.UserError) as refused:
            app.setting_value(base, "MASK_THRESHOLD", raw)
        assert str(refused.value).startswith(message) and "\n" not in str(refused.value)


def square_mask(size, x0, y0, x1, y1):
    m = np.zeros((size[1], size[0]), np.float32)
    m[y0:y1, x0:x1] = 1
    return m


def test_what_clip_sees_is_step_3s_patch_arithmetic_drawn_in_the_crop_square(tmp_path):
    """The drawn patches are util.mask_to_patch_weights's at the threshold, in CLIP's centre square of the image,
    and a region that CLIP cannot see, or that no patch holds enough of, is said before Run."""
    import torch
    from PIL import Image
    from util import mask_to_patch_weights
    path = tmp_path / "wide.png"
    Image.fromarray(np.full((300, 600, 3), 90, np.uint8)).save(path)   # 600 x 300: CLIP sees x in [150, 450)
    picture = app.Picture(path)
    assert picture.box == (150, 0, 450, 300) and picture.scale == 1.0
    m = square_mask(picture.size, 200, 40, 290, 130)
    counts = {}
    for t in (0.2, 0.5, 0.9):
        weights, n, notes = app.clip_view(m, t)
        util_w = mask_to_patch_weights(torch.from_numpy(m), threshold=t)[0].numpy()
        assert n == int((util_w > 0).sum()) and np.array_equal(weights > 0, util_w > 0) and notes == []
        counts[t] = n
        drawn, plain = app.draw(picture, m, weights=weights), app.draw(picture, m)
        cell = 300 / 16   # each selected patch's centre is filled, every other one is as without patches
        for j in range(256):
            r, c = divmod(j, 16)
            at = (int((r + 0.5) * cell), int(150 + (c + 0.5) * cell))
            filled = not np.array_equal(drawn[at], plain[at])
            assert filled == bool(weights[j] > 0), (t, j, drawn[at], plain[at])
        assert tuple(drawn[150, 150]) == (255, 230, 0) and tuple(drawn[150, 100]) != (255, 230, 0)   # the square
    assert counts[0.2] > counts[0.5] > counts[0.9] > 0   # the threshold moves the count
    _, n, notes = app.clip_view(square_mask(picture.size, 10, 10, 120, 120), 0.5)   # left of CLIP's square
    assert n == 0 and "outside the centre" in notes[0]
    _, n, notes = app.clip_view(square_mask(picture.size, 300, 100, 303, 103), 0.5)   # a speck
    assert n >= 1 and "keeping its" in notes[0]


def test_the_verdict_table_shows_every_field_the_verdict_gives():
    row = {"question": "method_effect", "scorer": "audioset", "check": "contrast", "status": "PASS", "mean": 0.25,
           "std": 0.01, "ci_low": 0.2, "ci_high": 0.3, "fraction_holds": 1.0, "n": 3, "description": "d",
           "effect_size": 2.5}   # a field the verdict gains later (issue 23) appears as a column
    table = app.verdict_table([row])
    assert list(table.columns) == ["question", "scorer", "check", "status", "mean", "std", "95% CI",
                                   "seeds that hold", "n", "what", "effect_size"]
    assert table.iloc[0].tolist() == ["method_effect", "audioset", "contrast", "PASS", "+0.2500", "+0.0100",
                                      "[+0.2000, +0.3000]", "100%", "3", "d", "+2.5000"]


def test_the_settings_two_runs_differ_in_are_highlighted():
    a = {"SVD_K": 5, "SVD_ALPHA": 0.3, "SAM2_PROMPTS": {"cat": {}}, "AUDIO_INPUT": ""}
    b = {"SVD_K": 8, "SVD_ALPHA": 0.3, "SAM2_PROMPTS": {"cat": {}}, "AUDIO_INPUT": "rec.wav"}
    text = app.settings_diff(a, b)
    differ = re.findall(r"<tr class='differs'><td><code>(\w+)</code>", text)
    assert differ == ["SVD_K", "AUDIO_INPUT"] and "2 setting(s) differ" in text
    assert "<tr class=''><td><code>SVD_ALPHA</code>" in text.split("<details>")[1]


def test_only_files_the_bench_gave_out_can_be_named_and_only_gradios_copies_are_deleted(tmp_path, monkeypatch):
    files = app.Allowed()
    real = tmp_path / "real.png"
    real.write_bytes(b"x")
    handle = files.add("upload 0123: real.png", real)
    assert files.path(handle, "ORIGINAL", app.IMAGE_HOW) == str(real)
    messages = []
    for client_value in (str(real), str(tmp_path / "missing.png"), "../../etc/passwd", None, 3):
        with pytest.raises(errors.UserError) as refused:
            files.path(client_value, "ORIGINAL", app.IMAGE_HOW)
        messages.append(re.sub(r"^ORIGINAL=.*? is not a file", "ORIGINAL=X is not a file", str(refused.value)))
    assert len(set(messages)) == 1 and "never opens a path a client sends" in messages[0]   # no existence oracle
    upload_folder = tmp_path / "gradio"
    (upload_folder / "abc").mkdir(parents=True)
    copy = upload_folder / "abc" / "x.png"
    copy.write_bytes(b"x")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(upload_folder))
    app.Bench.discard_upload(str(real))   # not gradio's: kept
    app.Bench.discard_upload(str(upload_folder / "abc" / ".." / ".." / "real.png"))
    assert real.exists()
    app.Bench.discard_upload(str(copy))
    assert not copy.exists() and not (upload_folder / "abc").exists() and upload_folder.exists()


# -----------------------------------------------------------------------------
# the served app


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python app.py --smoke` on a free port, outputs and gradio's uploads in a temporary folder."""
    out = tmp_path_factory.mktemp("bench_outputs")
    uploads = tmp_path_factory.mktemp("gradio_uploads")
    log_path = out.parent / "app.log"
    port = free_port()
    env = {**os.environ, **OFFLINE, "GRADIO_TEMP_DIR": str(uploads)}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "app.py", "--smoke", "--port", str(port), f"--OUTPUT_DIR={out}",
                                 "--max-upload-mb", str(MAX_UPLOAD_MB)],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.time() + 300
    while True:
        try:
            opener.open(url, timeout=5).read()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"app.py --smoke did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
    os.environ.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    yield SimpleNamespace(url=url, out=out, log=log_path, proc=proc, uploads=uploads, opener=opener)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, headless. Missing: an error in CI (CI=true installs it), a skip elsewhere."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI runs the browser tests, but {CHROMIUM} is missing: {INSTALL}")
        pytest.skip(f"the browser tests need Debian's chromium at {CHROMIUM}: {INSTALL}")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("app_screenshots")
    print(f"\nscreenshots of the bench: {folder}")
    return folder


def image_box(page, selector):
    """(left, top, scale, natural size) of the picture shown in `selector` (object-fit: contain)."""
    img = page.locator(f"{selector} img").first
    img.scroll_into_view_if_needed()
    box = img.bounding_box()
    nw, nh = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    s = min(box["width"] / nw, box["height"] / nh)
    return box["x"] + (box["width"] - nw * s) / 2, box["y"] + (box["height"] - nh * s) / 2, s, (nw, nh), box


def click_file_pixel(page, selector, x, y, file_size):
    """Click the image shown in `selector` at pixel (x, y) of the image file, whatever size it is shown at."""
    left, top, s, (nw, nh), _ = image_box(page, selector)
    page.mouse.click(left + (x + 0.5) * nw / file_size[0] * s, top + (y + 0.5) * nh / file_size[1] * s)


def run_folder(status_text):
    return Path(re.search(r"(/\S+_smoke)", status_text).group(1))


def set_slider(page, elem_id, value, tries=10):
    """Type a value into a slider's number box until the slider holds it: a freshly opened accordion may still
    be rendering its controls and drop the first input; the click that follows sends what the slider holds."""
    from playwright.sync_api import expect
    box, slider = (page.locator(f"#{elem_id} input[type={kind}]") for kind in ("number", "range"))
    for _ in range(tries):
        box.fill(value)
        box.press("Enter")
        try:
            expect(slider).to_have_value(value, timeout=2000)
        except AssertionError:
            continue
        page.wait_for_timeout(300)
        if slider.input_value() == value:
            return
    raise AssertionError(f"the slider {elem_id} did not take {value} in {tries} tries")


def patch_count(page, i):
    from playwright.sync_api import expect
    symbol = app.SYMBOLS[i]
    expect(page.locator(f"#view{i} #{symbol}")).to_contain_text(f"{symbol} = ", timeout=30000)
    return int(page.locator(f"#view{i} #{symbol}").inner_text().split("=")[1])


def played(page, elem_id):
    """The SHA-256 of what the audio player `elem_id` plays (fetched from the page's own link to its file)."""
    from playwright.sync_api import expect
    link = page.locator(f"#{elem_id} a[data-testid=download-link]")
    expect(link).to_have_attribute("href", re.compile(r"\.wav"), timeout=30000)
    href = link.get_attribute("href")
    return sha(page.request.get(href if href.startswith("http") else page.url.rstrip("/") + href).body())


def sha(data):
    """A file's or bytes' SHA-256: compared instead of the bytes, so a failing test says which file at once."""
    return hashlib.sha256(data if isinstance(data, bytes) else Path(data).read_bytes()).hexdigest()


def tone_wav(path, seconds=1.0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2 * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


def test_page_sees_clicks_runs_compares_edits_sweeps_and_the_cli_makes_the_same_wavs(server, browser, shots,
                                                                                       tmp_path):
    from playwright.sync_api import expect
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    outside = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(("http://127.0.0.1", "data:", "blob:"))
            else None)
    page.goto(server.url)
    page.wait_for_selector("#run")
    expect(page.locator("#path0 textarea, #path0 input").first).to_have_value("example original original.jpg")
    patch_count(page, 0)
    page.screenshot(path=shots / "1_opened.png", full_page=True)

    # a bad upload: main.py's message next to the image; the image stays
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with page.expect_file_chooser() as chooser:
        page.click("#upload0")
    chooser.value.set_files(bad)
    expect(page.locator("#message0")).to_contain_text("cannot read image notes.png", timeout=30000)
    expect(page.locator("#message0")).to_contain_text("use a JPEG or PNG file")
    expect(page.locator("#path0 textarea, #path0 input").first).to_have_value("example original original.jpg")
    page.locator("#message0").scroll_into_view_if_needed()
    page.screenshot(path=shots / "2_bad_upload.png")

    # the method's knobs lead, open; every slider offers what settings.RULES allows; an out-of-range number: the
    # command line's own message, and no run folder
    for name in app.METHOD_SLIDERS:
        assert page.locator(f"#{name.lower()} input[type=range]").is_visible(), name
    page.get_by_text("More settings").click()
    for name in app.METHOD_SLIDERS + app.MORE_SLIDERS:
        rule = settings.RULES[name]
        slider = page.locator(f"#{name.lower()} input[type=range]")
        assert (float(slider.get_attribute("min")), float(slider.get_attribute("max"))) == rule.page, name
        assert float(slider.get_attribute("step")) == rule.step, name
    seed = page.locator("#seed input")
    seed.fill("-1")
    seed.press("Tab")
    page.click("#run")
    cfg = settings.default_config(main)
    settings.parse_args(["--smoke", "--SEED=-1"], cfg)
    with pytest.raises(errors.UserError) as refused:
        settings.check_settings(cfg)
    expect(page.locator("#status")).to_contain_text(str(refused.value), timeout=30000)
    assert not [p for p in server.out.iterdir() if p.name != "uploads"]
    page.screenshot(path=shots / "3_out_of_range.png")
    seed.fill("42")
    seed.press("Tab")

    # the removed object: clear main.py's default point, click the cat; the mask overlay, CLIP's square and the
    # patches step 3 keeps appear. A click beside the picture is no point.
    page.click("#clear0")
    expect(page.locator("#message0")).to_contain_text("no points", timeout=30000)
    before = page.locator("#image0 img").first.get_attribute("src")
    click_file_pixel(page, "#image0", *CAT, file_size=(672, 672))
    expect(page.locator("#message0")).to_contain_text("mask:", timeout=30000)
    assert page.locator("#image0 img").first.get_attribute("src") != before   # the overlay was redrawn
    prompts = page.locator("#prompts textarea")
    expect(prompts).to_have_value(re.compile(r"'cat': \{'x': \[\d+\], 'y': \[\d+\]"), timeout=10000)
    x, y = map(int, re.search(r"'cat': \{'x': \[(\d+)\], 'y': \[(\d+)\]", prompts.input_value()).groups())
    assert abs(x - CAT[0]) <= 2 and abs(y - CAT[1]) <= 2, (x, y)   # the page maps screen to file pixels
    left, top, s, (nw, nh), box = image_box(page, "#image0")
    if left - box["x"] > 4:   # the picture is letterboxed: its margin lies outside the image
        page.mouse.click(box["x"] + 2, top + 100)
        expect(page.locator("#message0")).to_contain_text("outside the image", timeout=30000)
        assert re.search(r"'cat': \{'x': \[\d+\], 'y'", prompts.input_value())   # still the one point
        assert prompts.input_value().count("'x': [") == 2 and f"[{x}]" in prompts.input_value()

    # MASK_THRESHOLD moves the patches step 3 keeps of that mask, as util computes them (no model call)
    import torch
    from sam2.sam2_image_predictor import SAM2ImagePredictor
    import mask as masks
    from util import mask_to_patch_weights
    seg = masks.PointSegmenter(SAM2ImagePredictor(masks.tiny_sam2_predictor().predictor.model))
    seg.set_image(str(ROOT / "images" / "original.jpg"))
    with app.click_threads():
        cat_mask = seg.predict([[x, y]], [1])[0][0]
    expected = {t: int((mask_to_patch_weights(torch.from_numpy(cat_mask), threshold=t) > 0).sum())
                for t in (0.1, 0.5, 0.95)}
    assert len(set(expected.values())) == 3, expected   # the three thresholds keep different patches
    assert patch_count(page, 0) == expected[0.5]
    for t in (0.1, 0.95):
        set_slider(page, "mask_threshold", str(t))
        expect(page.locator("#view0")).to_contain_text(f"MASK_THRESHOLD {t:g}", timeout=30000)
        assert patch_count(page, 0) == expected[t], (t, expected)
        page.locator("#image0").scroll_into_view_if_needed()
        page.screenshot(path=shots / f"4_clip_view_threshold_{t:g}.png")
    set_slider(page, "mask_threshold", "0.5")
    expect(page.locator("#view0")).to_contain_text("MASK_THRESHOLD 0.5", timeout=30000)

    # the added object found by name: proposals with CLIP's scores, its patches; the run finds it the same way
    page.click("#find1")
    expect(page.locator("#message1")).to_contain_text("SAM2 proposals", timeout=60000)
    expect(prompts).to_have_value(re.compile(r"'astronaut': \{\}"), timeout=10000)
    patch_count(page, 1)
    page.screenshot(path=shots / "5_objects.png", full_page=True)

    # run: audio players get their sources, then the verdict table; the zip downloads
    start = time.perf_counter()
    page.click("#run")
    wav_link = "#{} a[data-testid=download-link][href*='.wav']"
    page.wait_for_selector(wav_link.format("baseline_original"), state="attached", timeout=180000)
    first_audio = time.perf_counter() - start
    for name in audio_io.AUDIO_NAMES:
        page.wait_for_selector(wav_link.format(name), state="attached", timeout=30000)
    expect(page.locator("#verdict")).to_contain_text("added_increased", timeout=180000)
    expect(page.locator("#status")).to_contain_text("Finished", timeout=30000)
    results_shown = time.perf_counter() - start
    page.screenshot(path=shots / "6_results.png", full_page=True)
    with page.expect_download() as download:
        page.click("#download")
    zipped = tmp_path / "run.zip"
    download.value.save_as(zipped)
    folder_a = run_folder(page.locator("#status").inner_text())
    with zipfile.ZipFile(zipped) as z:
        names = {Path(n).name for n in z.namelist()}
        record = json.loads(z.read(f"{folder_a.name}/run.json"))
    assert {"run.json", "results.json", "scores.png", "baseline_original.wav", "manipulated_seed44.wav"} <= names
    assert record["status"] == "finished" and record["config"]["SAM2_PROMPTS"]["astronaut"] == {}
    command = page.locator("#reproduce textarea").input_value()
    assert record["command"] == command and command.startswith("python main.py --smoke ")

    # a second run: another SVD_K and a recording to edit (step 8); the recording, its reconstruction, the edits
    # and their figures appear
    set_slider(page, "svd_k", "9")
    page.get_by_text("Step 8 (optional)").click()
    with page.expect_file_chooser() as chooser:
        page.click("#upload_recording")
    chooser.value.set_files(tone_wav(tmp_path / "a0.wav"))
    expect(page.locator("#recording_note")).to_contain_text("padded with silence", timeout=30000)
    expect(page.locator("#audio_input textarea, #audio_input input").first).to_have_value(
        re.compile(r"^recording [0-9a-f]{12}: a0\.wav$"))
    page.click("#run")
    expect(page.locator("#status")).to_contain_text("Finished", timeout=240000)
    folder_b = run_folder(page.locator("#status").inner_text())
    expect(page.locator("#preservation textarea")).to_have_value(re.compile(r"reconstructed"), timeout=30000)
    for elem, name in (("edit_audio_input", "audio_input.wav"), ("edit_reconstructed", "reconstructed.wav"),
                       ("edit_edited", "edited.wav"), ("edit_edited_plain", "edited_plain.wav")):
        assert played(page, elem) == sha(folder_b / name), elem
    shown = page.locator("#preservation textarea").input_value()
    # both preservation tables (against the reconstruction first, A_0 as recorded second), each edit judged both ways
    assert "log_mel_l1_db" in shown and \
        shown.index(evaluation.EDIT_PRESERVATION_TITLES["reconstructed"]) < \
        shown.index(evaluation.EDIT_PRESERVATION_TITLES["audio_input"])
    assert all(f"{name} vs {base} (" in shown for name in ("edited", "edited_plain")
               for base in ("reconstructed", "A_0"))
    record_b = json.loads((folder_b / "run.json").read_text())
    assert record_b["config"]["SVD_K"] == 9 and record_b["config"]["AUDIO_INPUT"].endswith("_a0.wav")
    assert Path(record_b["config"]["AUDIO_INPUT"]).parent == server.out / "uploads"
    page.locator("#edit_spectrograms").scroll_into_view_if_needed()
    page.screenshot(path=shots / "7_step8_edit.png", full_page=True)

    # compare the two runs: the same seed's six audios side by side, both verdicts, the settings that differ
    page.get_by_role("tab", name="Compare runs").click()
    for elem, folder in (("compare_a", folder_a), ("compare_b", folder_b)):
        page.click(f"#{elem} input")
        page.get_by_role("option", name=re.compile(re.escape(folder.name))).click()
    expect(page.locator("#compare_seed")).to_contain_text("43", timeout=30000)
    page.locator("#compare_seed").get_by_text("43").click()
    expect(page.locator("#settings_diff")).to_contain_text("differ", timeout=30000)
    for side, folder in (("a", folder_a), ("b", folder_b)):
        for name in audio_io.AUDIO_NAMES:
            expect(page.locator(f"#{side}_{name} a[data-testid=download-link]")).to_have_attribute(
                "href", re.compile(rf"{name}_seed43\.wav"), timeout=30000)
            assert played(page, f"{side}_{name}") == sha(folder / f"{name}_seed43.wav"), (side, name)
    assert sha(folder_a / "manipulated_seed43.wav") != sha(folder_b / "manipulated_seed43.wav")
    differ = page.locator("#settings_diff tr.differs td:first-child").all_inner_texts()
    assert set(differ) == {"SVD_K", "AUDIO_INPUT"}, differ
    expect(page.locator("#verdict_a_text textarea")).to_have_value(re.compile("HEADLINE"))
    expect(page.locator("#verdict_b_text textarea")).to_have_value(re.compile("HEADLINE"))
    page.screenshot(path=shots / "8_compare.png", full_page=True)

    # a small sweep: the ranked table and the audio of each setting
    page.get_by_role("tab", name="Sweep").click()
    page.click("#drop_recording")   # the sweep without step 8
    expect(page.locator("#audio_input textarea, #audio_input input").first).to_have_value("")
    page.locator("#sweep_values1 textarea").fill("0.1,0.9")
    page.click("#run_sweep")
    expect(page.locator("#sweep_status")).to_contain_text("Finished", timeout=240000)
    sweep_status = page.locator("#sweep_status").inner_text()
    sweep_dir = Path(re.search(r"Finished: (/\S+)", sweep_status).group(1))
    # the winner's interval comes from the seeds that chose it: the page says what fresh seeds made of it
    confirmation = json.loads((sweep_dir / "run.json").read_text())["confirmation"]
    assert confirmation["text"].splitlines()[0] in sweep_status and confirmation["confirmed_on"]
    expect(page.locator("#sweep_table")).to_contain_text("SVD_ALPHA", timeout=30000)
    table_text = page.locator("#sweep_table").inner_text()
    assert "0.1" in table_text and "0.9" in table_text
    first = page.locator("#sweep_pick input").input_value()
    assert played(page, "sweep_manipulated") == sha(sweep_dir / f"manipulated_{first}.wav")
    assert played(page, "sweep_baseline_edited") == sha(sweep_dir / "baseline_edited.wav")
    page.screenshot(path=shots / "9_sweep.png", full_page=True)
    assert outside == [], f"the page reached outside the machine: {outside[:5]}"

    # the CLI run of the first run's reproduce command: a new folder, byte-identical wavs
    start = time.perf_counter()
    cli = subprocess.run([sys.executable, "main.py", *shlex.split(command)[2:]], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, **OFFLINE}, timeout=600)
    cli_wall = time.perf_counter() - start
    assert cli.returncode == 0, cli.stderr[-2000:]
    cli_folder = Path(re.search(r"Run folder: (\S+)", cli.stdout).group(1))
    cli_run = float(re.search(r"Done in ([\d.]+) s", cli.stdout).group(1))
    assert cli_folder != folder_a
    wavs = sorted(p.name for p in folder_a.glob("*.wav"))
    assert len(wavs) == 9 and wavs == sorted(p.name for p in cli_folder.glob("*.wav"))
    for wav in wavs:
        assert sha(folder_a / wav) == sha(cli_folder / wav), wav
    print(f"\nRun to first audio {first_audio:.1f} s, to results {results_shown:.1f} s; the CLI's run of the same "
          f"settings {cli_run:.1f} s (process {cli_wall:.1f} s with model loading): app / CLI run = "
          f"{results_shown / cli_run:.2f}")
    page.close()


def call_http(server, api_name, data):
    """A named endpoint called over plain HTTP (gradio's /call route), as any client can: (kind, payload)."""
    request = urllib.request.Request(f"{server.url}/gradio_api/call/{api_name}", json.dumps({"data": data}).encode(),
                                     {"Content-Type": "application/json"})
    event_id = json.loads(server.opener.open(request, timeout=30).read())["event_id"]
    text = server.opener.open(f"{server.url}/gradio_api/call/{api_name}/{event_id}", timeout=120).read().decode()
    kind = re.findall(r"event: (\w+)", text)[-1]
    return kind, text


def queue_call(server, session, fn_index, data, event_data):
    """One event through gradio's queue as the browser sends it (with its event data, e.g. a click's position), for
    one browser session: the messages the queue streams back, as text."""
    import httpx
    body = {"data": data, "event_data": event_data, "fn_index": fn_index, "session_hash": session, "trigger_id": None}
    assert httpx.post(f"{server.url}/gradio_api/queue/join", json=body, trust_env=False, timeout=30).status_code == 200
    text = ""
    with httpx.stream("GET", f"{server.url}/gradio_api/queue/data", params={"session_hash": session},
                      trust_env=False, timeout=120) as stream:
        for line in stream.iter_lines():
            text += line + "\n"
            if "process_completed" in line:
                break
    return text


def test_named_api_endpoints(server, tmp_path):
    from gradio_client import Client, handle_file
    client = Client(server.url, verbose=False)
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/run", "/check_settings", "/cancel", "/upload_original", "/upload_edited", "/find_removed",
            "/find_added", "/click_removed", "/clear_removed", "/undo_added", "/redraw_patches", "/compare",
            "/sweep", "/upload_recording"} <= set(api)
    assert [p["parameter_name"] for p in api["/run"]["parameters"]][:6] == [
        "SAM2_PROMPTS", "KEPT_SOURCES", "ORIGINAL", "EDITED", "SVD_K", "SVD_ALPHA"]
    assert not any(name.startswith("/lambda") for name in api)
    sliders = {c["props"].get("elem_id"): c["props"] for c in client.config["components"]
               if c.get("type") == "slider"}
    for name in app.SLIDERS:   # every slider's range and step is its settings.RULES entry
        rule = settings.RULES[name]
        props = sliders[name.lower()]
        assert (props["minimum"], props["maximum"], props["step"]) == (*rule.page, rule.step), name

    # settings: main.py's messages, word for word; a number the page's slider does not reach is the rules' call
    status, command = client.predict(api_name="/check_settings", SEED=-1, MIX_DIRECT=0, MIX_BETA=0, MIX_ALPHA=0,
                                     MIX_GAMMA=0)
    cfg = settings.default_config(main)
    settings.parse_args(["--smoke", "--SEED=-1", "--MIX_DIRECT=0.0", "--MIX_BETA=0.0", "--MIX_ALPHA=0.0",
                         "--MIX_GAMMA=0.0"], cfg)
    with pytest.raises(errors.UserError) as refused:
        settings.check_settings(cfg)
    assert html.escape(str(refused.value)).replace("\n", "<br>") in status and command == ""
    status, command = client.predict(api_name="/check_settings", SVD_K=8, SVD_ALPHA=1.5)
    assert "pass main.py" in status
    assert command == f"python main.py --smoke --OUTPUT_DIR={server.out} --SVD_K=8 --SVD_ALPHA=1.5"
    status, _ = client.predict(api_name="/check_settings", SAM2_PROMPTS="{'cat': {'x': [5000], 'y': [1]}, 'b': {}}")
    assert "outside" in status   # main.py's point check on the image
    # a value that is not a number, sent to a number: the command line's one line, no gradio error
    status, _ = client.predict(api_name="/check_settings", SVD_K="many")
    assert status.count("⚠") == 1 and "SVD_K=many: SVD_K takes a int" in html.unescape(status)
    *_, message = client.predict("example original original.jpg", "0.5x", api_name="/clear_removed")
    assert "MASK_THRESHOLD=0.5x: MASK_THRESHOLD takes a float" in html.unescape(message)
    status = client.predict(api_name="/run", SEED="seven")[0]
    assert "SEED=seven: SEED takes a int" in html.unescape(status)

    # a server path at every endpoint that takes an image or a recording: one line, whether or not it exists,
    # and nothing of the file comes back
    secret = tmp_path / "server_side.png"
    from PIL import Image
    Image.fromarray(np.full((96, 128, 3), 200, np.uint8)).save(secret)
    taking = {name: ep["parameters"] for name, ep in api.items()
              if {"ORIGINAL", "EDITED", "image", "AUDIO_INPUT"} & {p["parameter_name"] for p in ep["parameters"]}}
    assert {"/run", "/check_settings", "/sweep", "/click_removed", "/undo_removed", "/clear_added", "/find_added",
            "/pick_removed", "/redraw_patches"} <= set(taking)
    for endpoint, params in taking.items():
        required = {p["parameter_name"]: "#0" for p in params if not p["parameter_has_default"]}
        for param in {"ORIGINAL", "EDITED", "image", "AUDIO_INPUT"} & {p["parameter_name"] for p in params}:
            answers = []
            for path in (str(secret), str(tmp_path / "missing.png"), "images/original.jpg", "../README.md"):
                out = client.predict(api_name=endpoint, **{**required, param: path})
                out = out if isinstance(out, (list, tuple)) else [out]
                text = html.unescape(" ".join(str(o) for o in out))
                assert "never opens a path a client sends" in text, (endpoint, param, text[:300])
                assert not any(isinstance(o, str) and o.endswith((".png", ".jpeg", ".jpg", ".zip", ".wav"))
                               for o in out), (endpoint, param, out)
                answers.append(re.sub(r"=\S.*? is not a file", "=PATH is not a file", text))
            assert len(set(answers)) == 1, (endpoint, param)   # no file-existence oracle
    for endpoint in ("upload_original", "upload_edited", "upload_recording"):   # gradio's own check of a file
        kind, text = call_http(server, endpoint, [{"path": str(secret), "meta": {"_type": "gradio.FileData"}}, 0.5])
        assert kind == "error", (endpoint, text)
    assert not (server.out / "uploads").exists() or not any("server_side" in p.name
                                                             for p in (server.out / "uploads").iterdir())

    # uploads: a damaged file is refused with main.py's message and deleted; a good one is kept under
    # OUTPUT_DIR/uploads; a file over --max-upload-mb is refused while it arrives, and nothing of it stays
    def gradio_copies(data):
        return [p for p in server.uploads.rglob("*") if p.is_file() and p.read_bytes() == data]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff" + os.urandom(100_000))
    handle, _, _, message = client.predict(handle_file(str(bad)), 0.5, api_name="/upload_original")
    assert "cannot read image broken.jpg" in html.unescape(message) and gradio_copies(bad.read_bytes()) == []
    good = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(good)
    handle, _, _, message = client.predict(handle_file(str(good)), 0.5, api_name="/upload_original")
    kept = next((server.out / "uploads").glob("*_noise.png"))
    assert handle.startswith("upload ") and handle.endswith(": noise.png") and sha(kept) == sha(good)
    assert "encoded" in message and gradio_copies(good.read_bytes()) == []
    big = os.urandom(MAX_UPLOAD_MB * 1024 * 1024 + 1000)
    import httpx
    answer = httpx.post(f"{server.url}/gradio_api/upload", files={"files": ("big.png", big, "image/png")},
                        trust_env=False, timeout=60)
    assert answer.status_code == 413 and gradio_copies(big) == []
    silent = tmp_path / "silent.wav"
    with wave.open(str(silent), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * 16000)
    recording, _, note = client.predict(handle_file(str(silent)), 2.0, api_name="/upload_recording")
    assert "AUDIO_INPUT silent.wav is silent" in html.unescape(note)

    # a click off the picture (gradio's select event with its position) is no point: the page's state keeps
    # only the points on the image
    fn_index = next(d["id"] for d in client.config["dependencies"] if d.get("api_name") == "click_removed")
    for index, expect_text in (([700, 10], "outside the image"), (None, "outside the image"),
                               ([300, 200], "2 point(s)")):
        text = queue_call(server, "clicker", fn_index, [None, "example original original.jpg", app.ON_OBJECT, 0.5],
                          {"index": index, "value": None, "selected": True})
        assert expect_text in text, (index, text[-500:])

    # the name search on an image the bench gave out
    outputs = client.predict("example edited edited.jpg", "astronaut", "cat", 0.5, api_name="/find_added")
    assert any("SAM2 proposals" in str(o) for o in outputs), outputs

    # several clients, one device: B waits behind A with its place shown, and B's cancel withdraws it before it
    # starts (no folder); A cancelled after its masks stops there, run.json 'cancelled'; then a run finishes
    other = Client(server.url, verbose=False)
    before = set(server.out.iterdir())
    job_a = client.submit(api_name="/run", EVAL_SEEDS=3)
    wait_for(lambda: any("Running into" in str(o[0]) for o in job_a.outputs()), 120)
    job_b = other.submit(api_name="/run", **QUICK)
    wait_for(lambda: any("place 2 in the queue" in str(o[0]) for o in job_b.outputs()), 60)
    assert "withdrawn" in other.predict(api_name="/cancel")
    assert "Cancelled before it started" in job_b.result(timeout=120)[0]
    folder_a = run_folder(next(str(o[0]) for o in job_a.outputs() if "Running into" in str(o[0])))
    wait_for(lambda: (folder_a / "mask_remove_cat.png").exists(), 120)
    client.predict(api_name="/cancel")
    outputs = job_a.result(timeout=300)
    assert "Cancelled: cancelled from the browser" in outputs[0], outputs[0]
    assert set(server.out.iterdir()) - before == {folder_a}   # B never made a folder
    record = json.loads((folder_a / "run.json").read_text())
    assert record["status"] == "cancelled" and "RunCancelled" in record["error"]
    assert "Nothing to cancel" in client.predict(api_name="/cancel")   # a later cancel meets no run
    outputs = client.predict(api_name="/run", SEED=7, **QUICK)
    assert "Finished" in outputs[0], outputs[0]
    folder = run_folder(outputs[0])
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "finished" and record["seeds"] == [7]
    assert {"baseline_original.wav", "baseline_edited.wav", "manipulated.wav"} <= {p.name for p in folder.iterdir()}
    assert record["command"].startswith("python main.py --smoke") and "--SEED=7" in record["command"]

    # comparing runs names them as the page lists them, never by path
    listed = app_list(client)
    assert folder.name in listed and folder_a.name not in listed   # finished single runs only
    note = client.predict(str(folder), folder.name, None, api_name="/compare")[1]
    assert "is not a run of this bench" in html.unescape(note)


def app_list(client):
    choices = client.predict(api_name="/list_runs")[0]["choices"]
    return [value for _, value in choices]


def wait_for(condition, seconds):
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def test_sigterm_to_the_server_during_a_run_records_it_as_interrupted(server):
    """Last in this module: it stops the server. SIGTERM ends the run in progress as the CLI's ends
    (run.json 'interrupted', what was made listed), and the server exits 143."""
    from gradio_client import Client
    client = Client(server.url, verbose=False)
    job = client.submit(api_name="/run", EVAL_SEEDS=3)
    wait_for(lambda: any("Running into" in str(o[0]) for o in job.outputs()), 120)
    folder = run_folder(next(str(o[0]) for o in job.outputs() if "Running into" in str(o[0])))
    wait_for(lambda: (folder / "mask_remove_cat.png").exists(), 120)
    logged = len(server.log.read_text())   # what the earlier tests' refused requests logged is theirs
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(120) == 128 + signal.SIGTERM
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "interrupted" and record["error"] == "SIGTERM (the process was told to stop)"
    assert "mask_remove_cat.png" in record["outputs"] and "results.json" not in record["outputs"]
    log = server.log.read_text()[logged:]
    assert "Stopping the bench: SIGTERM" in log and "terminate called" not in log and "Traceback" not in log
