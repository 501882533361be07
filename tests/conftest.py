"""Test-wide setup: everything runs offline, on the CPU, with tiny random-weight models.

The environment variables must be set before transformers/diffusers/ultralytics are imported,
which is why they sit at module level here (pytest imports conftest before any test module).
"""
import contextlib
import os
import socket
import sys
import tempfile
import threading
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["YOLO_OFFLINE"] = "1"
os.environ["MPLBACKEND"] = "Agg"
# ultralytics writes a settings file on import; keep it out of the user's home during tests
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo_cfg_"))

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
QUICK = ["--EVAL_SEEDS=1", "--DURATION=0.5", "--CYCLE_ITS=1"]   # a smoke run cut to what a test looks at


def refused(args, tmp_path, capsys, smoke=True):
    """main.main([--smoke] ... args) must exit 2 with one clear message, before any model and any run folder."""
    import main
    out = tmp_path / "outputs"
    code = main.main(["--smoke"] * smoke + [f"--OUTPUT_DIR={out}", *args])
    captured = capsys.readouterr()
    assert code == 2, captured.out + captured.err
    assert "Traceback" not in captured.err and "Loading every model" not in captured.out
    assert not out.exists()
    return captured.err


@contextlib.contextmanager
def fifo(path, timeout=60):
    """A FIFO (named pipe) at path for the duration. Opening one for reading waits for a writer forever: code that
    wrongly opens it would hang the suite, so after `timeout` seconds a writer comes (again each second), writes
    nothing and leaves, and the reader sees an empty file: the test then fails instead of hanging."""
    os.mkfifo(path)
    done = threading.Event()

    def release():
        done.wait(timeout)
        while not done.is_set():
            with contextlib.suppress(OSError):   # ENXIO: nobody is reading, nothing to release
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            done.wait(1)
    threading.Thread(target=release, daemon=True).start()
    try:
        yield Path(path)
    finally:
        done.set()
        os.unlink(path)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now (for servers the tests start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """One default smoke run (python main.py --smoke), shared by the tests that read its folder."""
    import main
    out = tmp_path_factory.mktemp("outputs")
    assert main.main(["--smoke", f"--OUTPUT_DIR={out}"]) == 0
    (run_dir,) = out.iterdir()
    return run_dir


@pytest.fixture(scope="session")
def clap():
    """The tiny random-weight LAION-CLAP scorer (scorers.tiny_clap)."""
    import scorers
    return scorers.tiny_clap()


@pytest.fixture(scope="session")
def ast_model():
    """The tiny random-weight AudioSet classifier (scorers.tiny_ast)."""
    import scorers
    return scorers.tiny_ast()


@pytest.fixture
def one_thread():
    """torch on one thread for the test: tiny models run faster so, and CPU float sums then do not depend on
    how many threads a process got (byte-equality between process counts needs that)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class NetworkAccessError(ConnectionError):
    """An OSError, as on an offline machine, so code under test takes its offline path."""


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address):
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0] if isinstance(address, tuple) and address else ""
    return host in ("127.0.0.1", "::1", "localhost", "")


def _guarded_connect(self, address):
    if not _is_local(address):
        raise NetworkAccessError(f"a test tried to reach the network: {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_local(address):
        raise NetworkAccessError(f"a test tried to reach the network: {address!r}")
    return _real_connect_ex(self, address)


# CI has no network; a test that silently depends on a download must fail here too.
socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex


@pytest.fixture
def net_attempts(monkeypatch):
    """Records (and refuses) every non-local connect and DNS lookup, including ones a library would swallow.

    The guard above turns a download into an error, but loaders catch that error and report a missing file;
    this list shows whether they tried the network at all.
    """
    attempts = []
    real_getaddrinfo = socket.getaddrinfo

    def connect(self, address):
        attempts.append(address)
        raise NetworkAccessError(f"network access in a test: {address!r}")

    def getaddrinfo(host, *args, **kwargs):
        if host not in ("localhost", "127.0.0.1", "::1", None):
            attempts.append(host)
            raise socket.gaierror(f"DNS lookup in a test: {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts
