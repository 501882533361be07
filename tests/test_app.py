"""app.py, the lab bench: the page in a real browser (Debian's chromium driven by playwright) and its named API
endpoints (gradio_client), on the smoke models; a page run against the CLI run of its reproduce command.

One `python app.py --smoke` serves the whole module (started once, on a free port, outputs in a temporary
folder). Screenshots of each page state are kept in a temporary folder whose path the test prints.
"""
import html
import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import free_port

import app
import audio_io
import errors
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


# -----------------------------------------------------------------------------
# without a browser: the reproduce command reads back as the same config


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
    assert cli == app.run_config(argv)
    assert cli["SVD_K"] == 7 and cli["RUN_NAME"] == "42" and cli["OUTPUT_DIR"] == "/tmp/a b"
    assert cli["SAM2_PROMPTS"] == {"cat": {"x": [448], "y": [330]}, "it's": {"union": True}}
    assert cli["_STEPS_GIVEN"] is True   # smoke's DDIM_STEPS, as `python main.py --smoke` has it
    with pytest.raises(errors.UserError, match="SAM2_PROMPTS takes a dict"):
        app.reproduce_command(base, {"SAM2_PROMPTS": "[1, 2]"})


# -----------------------------------------------------------------------------
# the served app


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python app.py --smoke` on a free port, outputs in a temporary folder; stopped after the module."""
    out = tmp_path_factory.mktemp("bench_outputs")
    log_path = out.parent / "app.log"
    port = free_port()
    env = {**os.environ, **OFFLINE}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "app.py", "--smoke", "--port", str(port), f"--OUTPUT_DIR={out}"],
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
    yield SimpleNamespace(url=url, out=out, log=log_path)
    proc.terminate()
    try:
        proc.wait(20)
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


def click_file_pixel(page, selector, x, y, file_size):
    """Click the image shown in `selector` at pixel (x, y) of the image file, whatever size it is shown at."""
    img = page.locator(f"{selector} img").first
    img.scroll_into_view_if_needed()
    box = img.bounding_box()
    nw, nh = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    s = min(box["width"] / nw, box["height"] / nh)   # object-fit: contain
    left, top = box["x"] + (box["width"] - nw * s) / 2, box["y"] + (box["height"] - nh * s) / 2
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


def test_page_click_find_run_download_and_the_cli_makes_the_same_wavs(server, browser, shots, tmp_path):
    from playwright.sync_api import expect
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    outside = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(("http://127.0.0.1", "data:", "blob:"))
            else None)
    page.goto(server.url)
    page.wait_for_selector("#run")
    expect(page.locator("#path0 textarea, #path0 input").first).to_have_value("images/original.jpg")
    page.screenshot(path=shots / "1_opened.png", full_page=True)

    # a bad upload: main.py's message next to the image; the image stays
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with page.expect_file_chooser() as chooser:
        page.click("#upload0")
    chooser.value.set_files(bad)
    expect(page.locator("#message0")).to_contain_text("cannot read image", timeout=30000)
    expect(page.locator("#message0")).to_contain_text("use a JPEG or PNG file")
    expect(page.locator("#path0 textarea, #path0 input").first).to_have_value("images/original.jpg")
    page.locator("#message0").scroll_into_view_if_needed()
    page.screenshot(path=shots / "2_bad_upload.png")

    # sliders offer only what settings.RULES allows; an out-of-range number: the command line's own message, and
    # no run folder
    page.get_by_text("Settings: main.py's constants").click()
    for name in ("mask_threshold", "duration", "svd_alpha"):
        rule = settings.RULES[name.upper()]
        slider = page.locator(f"#{name} input[type=range]")
        assert (float(slider.get_attribute("min")), float(slider.get_attribute("max"))) == rule.page, name
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

    # the removed object: clear main.py's default point, click the cat; the mask overlay appears
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

    # the added object found by name: proposals with CLIP's scores; the run finds it the same way
    page.click("#find1")
    expect(page.locator("#message1")).to_contain_text("SAM2 proposals", timeout=60000)
    expect(prompts).to_have_value(re.compile(r"'astronaut': \{\}"), timeout=10000)
    page.screenshot(path=shots / "4_objects.png", full_page=True)

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
    page.screenshot(path=shots / "5_results.png", full_page=True)
    with page.expect_download() as download:
        page.click("#download")
    zipped = tmp_path / "run.zip"
    download.value.save_as(zipped)
    folder = run_folder(page.locator("#status").inner_text())
    with zipfile.ZipFile(zipped) as z:
        names = {Path(n).name for n in z.namelist()}
        record = json.loads(z.read(f"{folder.name}/run.json"))
    assert {"run.json", "results.json", "scores.png", "baseline_original.wav", "manipulated_seed44.wav"} <= names
    assert record["status"] == "finished" and record["config"]["SAM2_PROMPTS"]["astronaut"] == {}
    command = page.locator("#reproduce textarea").input_value()
    assert record["command"] == command and command.startswith("python main.py --smoke ")
    assert outside == [], f"the page reached outside the machine: {outside[:5]}"

    # the CLI run of the reproduce command: a new folder, byte-identical wavs
    start = time.perf_counter()
    cli = subprocess.run([sys.executable, "main.py", *shlex.split(command)[2:]], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, **OFFLINE}, timeout=600)
    cli_wall = time.perf_counter() - start
    assert cli.returncode == 0, cli.stderr[-2000:]
    cli_folder = Path(re.search(r"Run folder: (\S+)", cli.stdout).group(1))
    cli_run = float(re.search(r"Done in ([\d.]+) s", cli.stdout).group(1))
    assert cli_folder != folder
    wavs = sorted(p.name for p in folder.glob("*.wav"))
    assert len(wavs) == 9 and wavs == sorted(p.name for p in cli_folder.glob("*.wav"))
    for wav in wavs:
        assert (folder / wav).read_bytes() == (cli_folder / wav).read_bytes(), wav
    print(f"\nRun to first audio {first_audio:.1f} s, to results {results_shown:.1f} s; the CLI's run of the same "
          f"settings {cli_run:.1f} s (process {cli_wall:.1f} s with model loading): app / CLI run = "
          f"{results_shown / cli_run:.2f}")
    page.close()


def test_named_api_endpoints(server, tmp_path):
    from gradio_client import Client, handle_file
    client = Client(server.url, verbose=False)
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/run", "/check_settings", "/cancel", "/upload_original", "/upload_edited", "/find_removed",
            "/find_added"} <= set(api)
    assert [p["parameter_name"] for p in api["/run"]["parameters"]][:6] == [
        "SAM2_PROMPTS", "KEPT_SOURCES", "ORIGINAL", "EDITED", "SVD_K", "SVD_ALPHA"]

    # settings: main.py's messages, word for word
    status, command = client.predict(api_name="/check_settings", SEED=-1, MIX_DIRECT=0, MIX_BETA=0, MIX_ALPHA=0,
                                     MIX_GAMMA=0)
    cfg = settings.default_config(main)
    settings.parse_args(["--smoke", "--SEED=-1", "--MIX_DIRECT=0.0", "--MIX_BETA=0.0", "--MIX_ALPHA=0.0",
                         "--MIX_GAMMA=0.0"], cfg)
    with pytest.raises(errors.UserError) as refused:
        settings.check_settings(cfg)
    assert html.escape(str(refused.value)).replace("\n", "<br>") in status and command == ""
    status, command = client.predict(api_name="/check_settings", SVD_K=8)
    assert "pass main.py" in status and command == f"python main.py --smoke --OUTPUT_DIR={server.out} --SVD_K=8"
    status, _ = client.predict(api_name="/check_settings", SAM2_PROMPTS="{'cat': {'x': [5000], 'y': [1]}, 'b': {}}")
    assert "outside" in status   # main.py's point check on the image

    # uploads: a damaged file is refused with main.py's message; a good one is kept under OUTPUT_DIR/uploads
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff" + b"\0" * 100)
    path, _, message = client.predict(handle_file(str(bad)), api_name="/upload_original")
    assert "cannot read image" in message
    from PIL import Image
    good = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(good)
    path, _, message = client.predict(handle_file(str(good)), api_name="/upload_original")
    assert Path(path).parent == server.out / "uploads" and Path(path).read_bytes() == good.read_bytes()
    assert "encoded" in message

    # the name search
    outputs = client.predict("images/edited.jpg", "astronaut", "cat", api_name="/find_added")
    assert any("SAM2 proposals" in str(o) for o in outputs), outputs

    # cancel a run between steps: run.json says 'cancelled'; the next run finishes
    before = set(server.out.iterdir())
    job = client.submit(api_name="/run", EVAL_SEEDS=1)
    deadline = time.time() + 120
    while not (set(server.out.iterdir()) - before) and time.time() < deadline:
        time.sleep(0.05)
    client.predict(api_name="/cancel")
    outputs = job.result(timeout=300)
    assert "Cancelled" in outputs[0], outputs[0]
    (folder,) = set(server.out.iterdir()) - before
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "cancelled" and "RunCancelled" in record["error"]
    outputs = client.predict(api_name="/run", EVAL_SEEDS=1, SEED=7)
    assert "Finished" in outputs[0], outputs[0]
    folder = run_folder(outputs[0])
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "finished" and record["seeds"] == [7]
    assert {"baseline_original.wav", "baseline_edited.wav", "manipulated.wav"} <= {p.name for p in folder.iterdir()}
    assert record["command"].startswith("python main.py --smoke") and "--SEED=7" in record["command"]
