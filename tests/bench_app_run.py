"""The bench's overhead over the CLI: the same smoke run through `python app.py --smoke` (its /run endpoint, as
the page calls it) and through `python main.py` with the page's reproduce command.

    python tests/bench_app_run.py [--runs 3]

Prints, per run: the app's time from Run to the first audio (the page gets the wavs before the evaluation) and
to the results, and the CLI's `Done in` time (the run after its models are loaded) and process wall time; then
the ratio app / CLI of the medians. Nothing is written outside a temporary folder.
"""
import json
import os
import re
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "YOLO_OFFLINE": "1", "MPLBACKEND": "Agg",
       "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def main(argv):
    from gradio_client import Client
    runs = int(argv[argv.index("--runs") + 1]) if "--runs" in argv else 3
    out = Path(tempfile.mkdtemp(prefix="bench_app_run_"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(out / "app.log", "w")
    app = subprocess.Popen([sys.executable, "app.py", "--smoke", "--port", str(port), f"--OUTPUT_DIR={out}"],
                           cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=ENV)
    url = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    start = time.perf_counter()
    while True:
        try:
            opener.open(url, timeout=5).read()
            break
        except OSError:
            if app.poll() is not None:
                sys.exit(f"app.py did not start; see {out / 'app.log'}")
            time.sleep(0.5)
    print(f"app.py --smoke serving after {time.perf_counter() - start:.1f} s (models loaded, example pair encoded)")
    os.environ.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    client = Client(url, verbose=False)
    try:
        client.predict(api_name="/run")   # warm-up: first-call costs of every library, as a first CLI run has
        first, done, inside, command = [], [], [], None
        for _ in range(runs):
            start = time.perf_counter()
            job = client.submit(api_name="/run")
            seen = None
            while not job.done():
                outs = job.outputs()
                if seen is None and outs and any(isinstance(o, dict) and str(o.get("path", o)).endswith(".wav")
                                                 or str(o).endswith(".wav") for o in outs[-1][3:6]):
                    seen = time.perf_counter() - start
                time.sleep(0.02)
            result = job.result()
            done.append(time.perf_counter() - start)
            first.append(seen if seen is not None else done[-1])
            folder = re.search(r"(/\S+_smoke)", result[0]).group(1)
            record = json.loads((Path(folder) / "run.json").read_text())
            command = record["command"]
            inside.append(sum(record["timings_s"].values()))   # main_pipeline's own steps, timed by main.py
        cli_done, cli_wall = [], []
        for _ in range(runs):
            start = time.perf_counter()
            cli = subprocess.run([sys.executable, "main.py", *shlex.split(command)[2:]], cwd=ROOT, env=ENV,
                                 capture_output=True, text=True, check=True)
            cli_wall.append(time.perf_counter() - start)
            cli_done.append(float(re.search(r"Done in ([\d.]+) s", cli.stdout).group(1)))
    finally:
        app.terminate()
        app.wait(30)
    med = statistics.median
    print(f"{runs} runs each, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPU(s):")
    print(f"  app: Run -> first audio {med(first):.1f} s, Run -> results {med(done):.1f} s  "
          f"(each: {', '.join(f'{a:.1f}/{b:.1f}' for a, b in zip(first, done))})")
    print(f"  app: main_pipeline's steps inside it {med(inside):.1f} s: the page adds {med(done) - med(inside):.1f} s "
          f"per run ({med(done) / med(inside):.2f}x; checks, run folder, zip, figures per seed, transfers)")
    print(f"  CLI: run {med(cli_done):.1f} s, process with model loading {med(cli_wall):.1f} s  "
          f"(each: {', '.join(f'{a:.1f}/{b:.1f}' for a, b in zip(cli_done, cli_wall))})")
    print(f"  app / CLI: {med(done) / med(cli_done):.2f} (run only), {med(done) / med(cli_wall):.2f} (whole process)")


if __name__ == "__main__":
    main(sys.argv[1:])
