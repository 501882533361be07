"""ssv2a.pth from the SSV2A authors' Google Drive folder (issue #27), offline.

The one network call, model.checkpoints._drive_fetch (gdown: the folder's listing, then the file), is replaced by
a local folder that delivers the files in the release format (release_formats.drive_folder), or by calls that
fail the ways Drive and gdown fail. Everything after it is the registry's real code: the temporary name, the
checks as the loader reads the file (weights-only, every key and shape against the architecture, here the tiny
config's), the final name, the printed size and SHA-256, the comparison of the folder's ssv2a.json with ours.
"""
import dataclasses
import hashlib
import json
import textwrap

import numpy as np
import pytest
import release_formats as rf
import requests

from model import checkpoints as ck
from model import pipeline

FOLDER = "https://drive.google.com/drive/folders/17SAuZ2sZrTYf21BiNKhRsEfdj-fbeQQN"   # the authors' README's link


@pytest.fixture
def drive(tmp_path, monkeypatch):
    """An empty checkpoints folder, SSV2A's architecture from a tiny config (ours), and the authors' Drive
    folder on local disk: ssv2a.pth in the release format (with a training run's extra entries) and their
    ssv2a.json, which names no detector file (ours points into checkpoints/)."""
    ckpts, folder = tmp_path / "checkpoints", tmp_path / "drive"
    folder.mkdir()
    ours = tmp_path / "ours.json"
    ours.write_text(json.dumps(pipeline.TINY_SSV2A_CONFIG))
    published = json.loads(json.dumps(pipeline.TINY_SSV2A_CONFIG))
    published["detector"]["detection_model"] = ""
    (folder / "ssv2a.json").write_text(json.dumps(published, indent=2))
    model = pipeline.tiny_ssv2a(seed=14)
    rf.ssv2a_release(model, folder / "ssv2a.pth", optimizer=rf.training_optimizer(list(model.state_dict().values())),
                     epoch=np.int64(37))
    data = (folder / "ssv2a.pth").read_bytes()
    monkeypatch.setattr(ck, "CHECKPOINT_DIR", ckpts)
    monkeypatch.setattr(pipeline, "DEFAULT_CONFIG_PATH", ours)
    # the release's size rule, at the tiny file's size: anything shorter is cut short
    monkeypatch.setitem(ck.CHECKPOINTS, "ssv2a", dataclasses.replace(ck.CHECKPOINTS["ssv2a"], min_bytes=len(data)))
    calls = []
    files = {"ssv2a.pth": folder / "ssv2a.pth", "ssv2a.json": folder / "ssv2a.json"}
    monkeypatch.setattr(ck, "_drive_fetch", rf.drive_folder(files, calls))
    return {"ckpts": ckpts, "folder": folder, "files": files, "calls": calls, "data": data,
            "sha": hashlib.sha256(data).hexdigest(), "ours": ours}


def test_the_registry_fetches_ssv2a_from_the_published_drive_folder():
    entry = ck.CHECKPOINTS["ssv2a"]
    assert entry.drive_folder == FOLDER and entry.filename == "ssv2a.pth" and entry.drive_config == "ssv2a.json"


def test_first_use_fetches_checks_and_names_the_file_and_prints_its_size_and_hash(drive, capsys):
    path = ck.checkpoint_path("ssv2a")
    assert path == drive["ckpts"] / "ssv2a.pth" and path.read_bytes() == drive["data"]
    assert [p.name for p in drive["ckpts"].iterdir()] == ["ssv2a.pth"]     # no temporary file left
    assert drive["calls"] == [(FOLDER, "ssv2a.pth"), (FOLDER, "ssv2a.json")]
    out = capsys.readouterr().out
    assert f"ssv2a.pth: {len(drive['data']):,} bytes, SHA-256 {drive['sha']}" in out
    assert f"sha256sum {path}" in out                                     # how to compare with a colleague's copy
    assert f"{path}: " in out and "tensors fit" in out and "ignored entries: epoch, optimizer" in out
    assert f"the Drive folder's ssv2a.json is the same as ours ({drive['ours']})" in out
    assert ck.checkpoint_path("ssv2a", download=False) == path and len(drive["calls"]) == 2   # there now: no fetch


def test_the_command_line_fetches_it_too(drive, capsys):
    assert ck.main(["ssv2a"]) == 0
    out = capsys.readouterr().out
    assert f"ok: {drive['ckpts'] / 'ssv2a.pth'}" in out and drive["sha"] in out
    assert (drive["ckpts"] / "ssv2a.pth").read_bytes() == drive["data"]


def test_it_lands_where_asked(drive, tmp_path):
    """main.py's CHECKPOINT_PATH: the file goes there, through a temporary name in that folder."""
    elsewhere = tmp_path / "elsewhere" / "weights.pth"
    assert ck.checkpoint_path("ssv2a", path=elsewhere) == elsewhere and elsewhere.read_bytes() == drive["data"]
    assert [p.name for p in elsewhere.parent.iterdir()] == ["weights.pth"]
    assert not drive["ckpts"].exists()


@pytest.mark.parametrize("published, says", [
    ("other_setting", 'NOTE: the Drive folder\'s ssv2a.json differs from ours ({ours}) in 2 setting(s): '
                      'remixer.cfg: ours 0.2, published 0.5, remixer.steps: ours (absent), published 100. '
                      'ssv2a.pth was checked against ours and fits it'),
    ("absent", "the Drive folder holds no ssv2a.json: nothing to compare with ours"),
    ("not_json", "NOTE: the Drive folder's ssv2a.json is not a readable config (ValueError: SSV2A config"),
    ("refused", "ssv2a.json not compared with ours: fetching it failed (FileURLRetrievalError: Failed to retrieve file url: Too many users"),
])
def test_the_folder_s_ssv2a_json_is_compared_with_ours(drive, monkeypatch, capsys, published, says):
    config = drive["folder"] / "ssv2a.json"
    if published == "other_setting":
        data = json.loads(config.read_text())
        data["remixer"].update(cfg=0.5, steps=100)
        config.write_text(json.dumps(data))
    elif published == "absent":
        del drive["files"]["ssv2a.json"]
    elif published == "not_json":
        config.write_text("<!DOCTYPE html><html><title>Google Drive</title></html>")
    else:
        serve = ck._drive_fetch

        def refuse_the_config(folder_url, filename, dest):
            if filename == "ssv2a.json":
                raise _quota_error()
            return serve(folder_url, filename, dest)
        monkeypatch.setattr(ck, "_drive_fetch", refuse_the_config)
    path = ck.checkpoint_path("ssv2a")   # never fatal: the checkpoint was checked against our config
    assert path.read_bytes() == drive["data"] and [p.name for p in drive["ckpts"].iterdir()] == ["ssv2a.pth"]
    assert says.format(ours=drive["ours"]) in capsys.readouterr().out


def _quota_error():
    """What gdown raises when Drive's download page says the file's quota is spent."""
    import gdown
    said = ("Too many users have viewed or downloaded this file recently. Please try accessing the file again "
            "later. If the file you are trying to access is particularly large or is shared with many people, it "
            "may take up to 24 hours to be able to view or download the file. If you still can't access a file "
            "after 24 hours, contact your domain administrator.")
    return gdown.FileURLRetrievalError(
        "Failed to retrieve file url:\n\n" + textwrap.indent("\n".join(textwrap.wrap(said)), "\t")
        + "\n\nYou may still be able to access the file from the browser:\n\n\t"
        "https://drive.google.com/uc?id=1AbCdEfGhIjKlMnOpQrStUvWxYz012345\n\n"
        "but Gdown can't. Please check connections and permissions.")


QUOTA_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>Google Drive - Quota exceeded</title></head>
<body><div class="uc-main"><p class="uc-error-caption">Sorry, you can&#39;t view or download this file at this time.</p>
<p class="uc-error-subcaption">Too many users have viewed or downloaded this file recently. Please try accessing
the file again later.</p></div></body></html>
"""


def _refusal(kind, drive):
    """A stand-in for _drive_fetch that fails as Drive and gdown fail, writing what they would have written."""
    def fetch(folder_url, filename, dest):
        data = drive["data"]
        if kind == "quota":
            raise _quota_error()
        if kind == "permission":   # the folder's listing refused: gdown's DownloadError
            import gdown
            raise gdown.DownloadError(
                "Failed to retrieve folder contents for folder ID: 17SAuZ2sZrTYf21BiNKhRsEfdj-fbeQQN (status code "
                "404). You may need to change the permission to 'Anyone with the link', or have had many accesses.")
        if kind == "no_network":
            raise requests.exceptions.ConnectionError(
                "HTTPSConnectionPool(host='drive.google.com', port=443): Max retries exceeded with url: "
                "/embeddedfolderview?id=17SAuZ2sZrTYf21BiNKhRsEfdj-fbeQQN (Caused by NameResolutionError(\"Failed "
                "to resolve 'drive.google.com' ([Errno -3] Temporary failure in name resolution)\"))")
        if kind == "not_listed":
            return rf.drive_folder({"agg.pth": drive["files"]["ssv2a.pth"]})(folder_url, filename, dest)
        if kind == "web_page":     # a page saved under the file's name
            dest.write_text(QUOTA_PAGE)
        elif kind == "connection_lost":   # gdown keeps the bytes it got in a .part file next to dest, then raises
            (dest.parent / f"{dest.name}k3j9x0qa.part").write_bytes(data[:len(data) // 3])
            import gdown
            raise gdown.DownloadError(f"Download is incomplete: received {len(data) // 3} bytes but the server "
                                      f"announced {len(data)} bytes.")
        elif kind == "cut_short":  # no error, half a file
            dest.write_bytes(data[:len(data) // 2])
        elif kind == "interrupted":
            dest.write_bytes(data[:len(data) // 2])
            raise KeyboardInterrupt
        elif kind == "wrong_architecture":   # a full-size checkpoint whose remixer lacks keys
            state = pipeline.tiny_ssv2a(seed=1).checkpoint_state()
            state["remixer_state"] = {k: v for k, v in state["remixer_state"].items() if "esa" not in k}
            import torch
            state["padding"] = torch.zeros(len(data) // 4 + 1)
            torch.save(state, dest)
        else:
            dest.write_bytes(data)
        return dest
    return fetch


@pytest.mark.parametrize("kind, says", [
    ("quota", "FileURLRetrievalError: Failed to retrieve file url: Too many users have viewed or downloaded this "
              "file recently. Please try accessing the file again later."),
    ("permission", "DownloadError: Failed to retrieve folder contents for folder ID: "
                   "17SAuZ2sZrTYf21BiNKhRsEfdj-fbeQQN (status code 404). You may need to change the permission"),
    ("no_network", "ConnectionError: HTTPSConnectionPool(host='drive.google.com', port=443)"),
    ("not_listed", f"DriveFileMissing: the folder {FOLDER} lists no ssv2a.pth (it lists: agg.pth)"),
    ("web_page", "DriveRefused: Google Drive sent a web page instead of ssv2a.pth: Google Drive - Quota exceeded | "
                 "Too many users have viewed or downloaded this file recently. Please try accessing the file again "
                 "later."),
    ("connection_lost", "DownloadError: Download is incomplete: received"),
    ("cut_short", "DriveRefused: the file Google Drive sent is truncated ("),
    ("wrong_architecture", "CheckpointError: the file Google Drive sent does not verify: CheckpointMismatchError: "
                           "SSV2A checkpoint ssv2a.pth and config"),
    ("wrong_hash", "CheckpointError: the file Google Drive sent is corrupt: SHA-256"),
])
def test_a_refusal_is_todays_message_plus_what_drive_said_and_leaves_nothing(drive, monkeypatch, kind, says):
    monkeypatch.setattr(ck, "_drive_fetch", _refusal(kind, drive))
    if kind == "wrong_hash":   # once the published hash is known, a file that differs is refused
        monkeypatch.setitem(ck.CHECKPOINTS, "ssv2a", dataclasses.replace(ck.CHECKPOINTS["ssv2a"], sha256="0" * 64))
    with pytest.raises(ck.CheckpointError) as err:
        ck.checkpoint_path("ssv2a")
    path = drive["ckpts"] / "ssv2a.pth"
    lines = str(err.value).splitlines()
    assert lines[:2] == [f"Checkpoint 'ssv2a.pth' ({ck.CHECKPOINTS['ssv2a'].what}) is missing.", f"  Looked in: {path}"]
    assert "  Fix, on a machine with internet: python -m model.checkpoints ssv2a" in str(err.value)
    assert f"  {FOLDER}\n  download ssv2a.pth and save it as {path}" in str(err.value)     # by hand
    (said,) = [line for line in lines if line.startswith("  (automatic download from Google Drive failed: ")]
    assert says in said and said.endswith(")") and len(said) < 700, said
    assert list(drive["ckpts"].iterdir()) == [], "a refused or partial download must leave nothing"


def test_an_interrupted_download_leaves_nothing(drive, monkeypatch):
    monkeypatch.setattr(ck, "_drive_fetch", _refusal("interrupted", drive))
    with pytest.raises(KeyboardInterrupt):
        ck.checkpoint_path("ssv2a")
    assert list(drive["ckpts"].iterdir()) == []


def test_a_refusal_keeps_a_file_that_was_there(drive, monkeypatch):
    """A cut-short ssv2a.pth already in place is replaced only by a download that passed every check."""
    drive["ckpts"].mkdir()
    old = drive["ckpts"] / "ssv2a.pth"
    old.write_bytes(drive["data"][:1000])
    monkeypatch.setattr(ck, "_drive_fetch", _refusal("web_page", drive))
    with pytest.raises(ck.CheckpointError, match=r"is truncated \(1,000 bytes"):
        ck.checkpoint_path("ssv2a")
    assert old.read_bytes() == drive["data"][:1000] and [p.name for p in drive["ckpts"].iterdir()] == ["ssv2a.pth"]


def test_the_published_hash_once_known_is_checked(drive, monkeypatch, capsys):
    monkeypatch.setitem(ck.CHECKPOINTS, "ssv2a", dataclasses.replace(ck.CHECKPOINTS["ssv2a"], sha256=drive["sha"]))
    assert ck.checkpoint_path("ssv2a").read_bytes() == drive["data"]
    assert f"SHA-256 {drive['sha']} (the published hash)" in capsys.readouterr().out


def test_the_real_fetch_asks_drive_and_offline_is_a_clear_message(tmp_path, monkeypatch, net_attempts):
    """The unreplaced _drive_fetch: gdown asks drive.google.com for the folder's listing (refused here, as on a
    machine without network) and the error reaches the user as one line, nothing left behind."""
    monkeypatch.setattr(ck, "CHECKPOINT_DIR", tmp_path)
    with pytest.raises(ck.CheckpointError) as err:
        ck.checkpoint_path("ssv2a")
    assert "drive.google.com" in net_attempts
    said = [line for line in str(err.value).splitlines() if "automatic download from Google Drive failed" in line]
    assert len(said) == 1 and "ConnectionError" in said[0] and "drive.google.com" in said[0], str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_without_gdown_the_message_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(ck, "CHECKPOINT_DIR", tmp_path)
    monkeypatch.setitem(__import__("sys").modules, "gdown", None)   # import gdown raises ImportError
    with pytest.raises(ck.CheckpointError, match=r"ImportError: gdown is not installed .*pip install -r requirements"):
        ck.checkpoint_path("ssv2a")
    assert list(tmp_path.iterdir()) == []
