"""The checkpoint registry: clear errors offline, verified downloads, no silent partial files."""
import hashlib
import http.server
import threading
from functools import partial

import pytest

from model import checkpoints as ck


@pytest.fixture
def empty_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(ck, "CHECKPOINT_DIR", tmp_path)
    return tmp_path


@pytest.fixture
def local_server(tmp_path_factory):
    """An HTTP server on localhost (the only kind of download a test may do)."""
    root = tmp_path_factory.mktemp("served")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_every_entry_says_where_it_comes_from():
    for name, c in ck.CHECKPOINTS.items():
        assert c.name == name
        assert bool(c.filename) != bool(c.hf_repo), name          # a file or a repo, never both
        if c.filename:
            assert c.url or c.manual, f"{name}: no way to fetch it"
    assert ck.CHECKPOINTS["clip"].sha256 in ck.CHECKPOINTS["clip"].url   # OpenAI's published hash
    assert ck.CHECKPOINTS["ssv2a"].min_bytes == 82_318_210 * 4            # float32 parameters of the release


def test_missing_file_offline_names_file_path_and_fix(empty_dir):
    with pytest.raises(ck.CheckpointError) as err:
        ck.checkpoint_path("sam2")
    msg = str(err.value)
    assert "sam2.1_hiera_large.pt" in msg
    assert str(empty_dir / "sam2.1_hiera_large.pt") in msg
    assert "python -m model.checkpoints sam2" in msg
    assert ck.CHECKPOINTS["sam2"].url in msg
    assert "automatic download failed" in msg
    assert not list(empty_dir.iterdir()), "a failed download must not leave partial files"


def test_no_download_when_not_allowed(empty_dir):
    with pytest.raises(ck.CheckpointError) as err:
        ck.checkpoint_path("yolo", download=False)
    assert "missing" in str(err.value) and "automatic download failed" not in str(err.value)


def test_truncated_file_is_reported(empty_dir):
    (empty_dir / "yolov8x-oiv7.pt").write_bytes(b"\0" * 1000)
    with pytest.raises(ck.CheckpointError, match=r"truncated \(1,000 bytes"):
        ck.checkpoint_path("yolo", download=False)


def test_drive_checkpoint_explains_both_ways_to_get_it(empty_dir):
    with pytest.raises(ck.CheckpointError) as err:
        ck.checkpoint_path("ssv2a", download=False)
    msg = str(err.value)
    assert "python -m model.checkpoints ssv2a" in msg                              # gdown, from the Drive folder
    assert "drive.google.com" in msg and str(empty_dir / "ssv2a.pth") in msg       # or by hand
    assert "automatic download" not in msg     # nothing was attempted


def test_hf_model_offline_names_repo_and_fix():
    with pytest.raises(ck.CheckpointError) as err:
        ck.hf_model_dir("audioldm")
    msg = str(err.value)
    assert "cvssp/audioldm-s-full-v2" in msg and "python -m model.checkpoints audioldm" in msg


def test_wrong_kind_and_unknown_name():
    with pytest.raises(ValueError):
        ck.checkpoint_path("audioldm")
    with pytest.raises(ValueError):
        ck.hf_model_dir("sam2")
    with pytest.raises(KeyError, match="known:"):
        ck.checkpoint_path("sam3")


def _entry(url, payload, **kw):
    return ck.Checkpoint(name="toy", what="toy file", filename="toy.bin", url=url, **kw)


def test_download_verifies_hash_and_lands_in_place(empty_dir, local_server, monkeypatch):
    served, base = local_server
    payload = b"weights" * 1000
    (served / "toy.bin").write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    monkeypatch.setitem(ck.CHECKPOINTS, "toy", _entry(f"{base}/toy.bin", payload, sha256=sha, min_bytes=100))
    path = ck.checkpoint_path("toy")
    assert path == empty_dir / "toy.bin" and path.read_bytes() == payload
    assert sorted(p.name for p in empty_dir.iterdir()) == ["toy.bin"]   # no temp files left
    assert ck.checkpoint_path("toy", download=False) == path           # second call: no download


def test_download_with_wrong_hash_is_refused_and_removed(empty_dir, local_server, monkeypatch):
    served, base = local_server
    (served / "toy.bin").write_bytes(b"tampered" * 100)
    monkeypatch.setitem(ck.CHECKPOINTS, "toy", _entry(f"{base}/toy.bin", None, sha256="0" * 64))
    with pytest.raises(ck.CheckpointError, match="automatic download failed"):
        ck.checkpoint_path("toy")
    assert not (empty_dir / "toy.bin").exists()


def test_corrupt_existing_file_is_detected_by_hash(empty_dir, local_server, monkeypatch):
    served, base = local_server
    good = b"good" * 100
    (served / "toy.bin").write_bytes(good)
    (empty_dir / "toy.bin").write_bytes(b"bad!" * 100)
    monkeypatch.setitem(ck.CHECKPOINTS, "toy",
                        _entry(f"{base}/toy.bin", None, sha256=hashlib.sha256(good).hexdigest()))
    with pytest.raises(ck.CheckpointError, match="corrupt"):
        ck.checkpoint_path("toy", download=False)
    assert ck.checkpoint_path("toy").read_bytes() == good    # re-downloaded and verified


def test_cli_check_reports_and_fails_when_missing(empty_dir, capsys):
    assert ck.main(["--check", "sam2", "ssv2a"]) == 1
    out = capsys.readouterr().out
    assert "missing" in out and "sam2.1_hiera_large.pt" in out and "ssv2a.pth" in out


def _module_cli(args, env):
    """`python -m model.checkpoints ...` as a user runs it: a fresh process, where the module is __main__."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    return subprocess.run([sys.executable, "-m", "model.checkpoints", *args], cwd=root, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1", **env})


def test_check_as_a_module_reports_full_size_damaged_files_in_one_line_each(tmp_path):
    # full-size files of zeros (sparse: no disk used): past the size check, into the loaders' own checks, whose
    # CheckpointError the __main__ copy of this module used to miss (a different class), ending in a traceback
    for name in ("sam2", "yolo"):
        with open(tmp_path / ck.CHECKPOINTS[name].filename, "wb") as f:
            f.truncate(ck.CHECKPOINTS[name].min_bytes + 1)
    done = _module_cli(["--check", "sam2", "yolo"], {"CHECKPOINT_DIR": str(tmp_path)})
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("  ")]
    assert len(lines) == 2 and all(line.split()[0] == "bad" and "not a complete zip archive" in line
                                   and len(line) < 1000 for line in lines), done.stdout
    assert "Not available or not usable: sam2, yolo" in done.stdout
    assert "CheckpointError" not in done.stdout   # the loaders' own message, not one wrapped as an unknown error


@pytest.mark.parametrize("args, says", [(["--check", "sam3"], "unknown checkpoint 'sam3'"),
                                        (["--chek"], "unknown option '--chek'")])
def test_unknown_names_and_options_are_a_message_not_a_key_error(args, says, capsys):
    assert ck.main(args) == 2
    err = capsys.readouterr().err
    assert says in err and "usage: python -m model.checkpoints [--check] [clip sam2 yolo" in err


def test_key_lists_stay_short_however_long_the_keys():
    keys = [f"{i}" + "k" * 5000 for i in range(12)]
    text = ck._first(keys)
    assert len(text) < 600 and "(5001 characters)" in text and "(12 in all)" in text
    problems = ck.state_dict_problems({"a": (1,)}, {k: None for k in keys})
    assert len("; ".join(problems)) < 700 and "12 unexpected key(s)" in problems[1]
