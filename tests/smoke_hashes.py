"""SHA-256 of what four smoke runs write: a run, a sweep, a two-pair manifest and a run with --AUDIO_INPUT.

    python tests/smoke_hashes.py [CHECKOUT] [--out hashes.json]

Runs `python main.py --smoke ...` in CHECKOUT (default: this one) on one torch thread (CPU float sums depend on
the thread count), then hashes every wav and every result table (results.json, edit_results*.json, sweep.csv,
edit_sweep.csv, pairs.csv, summary.json) with the fields that hold times, dates, process ids, hosts or the
run's own folder removed. Two checkouts that print the same hashes made the same bytes: this is how a move of
code between modules is shown to change nothing a user gets. Floats may differ between CPUs, so compare two
checkouts on one machine, not against hashes from another.
"""
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VOLATILE = ("time", "timing", "_s", "seconds", "started", "ended", "pid", "host", "folder", "path", "dir",
            "command", "at", "manifest", "source", "reference", "audio_input", "original", "edited", "error",
            "traceback", "peak_rss_mib", "peak_cuda_mib")


def volatile(key):
    key = str(key).lower()
    return key in VOLATILE or key.endswith(("_s", "timings_s", "_seconds")) or "time" in key


def scrub(value):
    """The value without the keys that differ between two identical runs (times, paths, process ids)."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if not volatile(k)}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def table_bytes(path):
    text = path.read_text()
    if path.suffix == ".json":
        return json.dumps(scrub(json.loads(text)), sort_keys=True).encode()
    rows = list(csv.DictReader(io.StringIO(text)))
    return json.dumps([scrub(r) for r in rows], sort_keys=True).encode()


def hashes(run_dir):
    out = {}
    for path in sorted(Path(run_dir).rglob("*")):
        rel = str(path.relative_to(run_dir))
        if path.suffix == ".wav":
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.name in ("results.json", "sweep.csv", "edit_sweep.csv", "pairs.csv", "summary.json") or \
                path.name.startswith("edit_results"):
            out[rel] = hashlib.sha256(table_bytes(path)).hexdigest()
    return out


def recording(path):
    import numpy as np
    import soundfile as sf
    t = np.arange(48000) / 16000
    wave = 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
    sf.write(path, wave.astype(np.float32), 16000)
    return path


def manifest(path):
    o, e = ROOT / "images" / "original.jpg", ROOT / "images" / "edited.jpg"
    path.write_text("original,edited,remove,remove_x,remove_y,add,add_x,add_y,kept\n"
                    f"{o},{e},cat,448,330,astronaut,410;370,130;460,rocket\n"
                    f"{e},{o},astronaut,410,130,cat,448,330,rocket\n")
    return path


def main(argv):
    checkout = Path(argv[0]).resolve() if argv and not argv[0].startswith("--") else ROOT
    out_file = argv[argv.index("--out") + 1] if "--out" in argv else None
    tmp = Path(tempfile.mkdtemp(prefix="smoke_hashes_"))
    fast = ["--smoke", "--EVAL_SEEDS=2"]
    cases = {
        "run": fast,
        "sweep": fast + ["--sweep", "SVD_K=1,5", "SVD_ALPHA=0.1,0.3"],
        "manifest": fast + ["--EVAL_SEEDS=1", "--manifest", str(manifest(tmp / "pairs.csv"))],
        "audio_input": fast + [f"--AUDIO_INPUT={recording(tmp / 'a0.wav')}"],
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "YOLO_OFFLINE": "1", "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"}
    result = {}
    for name, args in cases.items():
        out = tmp / name
        proc = subprocess.run([sys.executable, "main.py", *args, f"--OUTPUT_DIR={out}"], cwd=checkout, env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:])
            raise SystemExit(f"{name}: exit {proc.returncode}")
        (run_dir,) = out.iterdir()
        result[name] = hashes(run_dir)
        print(f"{name}: {len(result[name])} files hashed")
    for name, files in result.items():
        for rel, digest in files.items():
            print(f"{digest}  {name}/{rel}")
    if out_file:
        Path(out_file).write_text(json.dumps(result, indent=1, sort_keys=True))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
