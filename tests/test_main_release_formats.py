"""The real path a user takes (python main.py, no --smoke) on checkpoints in each publisher's release format.

A temporary checkpoints folder and Hugging Face cache hold tiny random-weight models in the publishers' own
containers (tests/release_formats.py); the registry is told only their sizes and CLIP's hash. Then the real
loaders, `python -m model.checkpoints --check` and the real main.py run end to end, offline, on the CPU.
"""
import contextlib
import dataclasses
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import release_formats as rf
import soundfile as sf
import torch

import errors
import loader
import main
import mask
import metrics
import runs
import scorers
import util
from model import aldm, ciap, detect, pipeline
from model import checkpoints as ck

ROOT = Path(__file__).resolve().parent.parent
LOADER_CACHES = [util._load_clip, mask._load_sam2, detect._load_yolo, pipeline._load_ssv2a, aldm._load_audioldm,
                 scorers._load_clap, scorers._load_ast]


def _clear_loaders():
    for cache in LOADER_CACHES:
        cache.cache_clear()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """Every checkpoint of a real run, in its release format, and the registry pointed at them."""
    import huggingface_hub.constants as hf_constants
    from transformers import RobertaConfig
    root = tmp_path_factory.mktemp("release")
    ckpts, hub, marker = root / "checkpoints", root / "hf" / "hub", root / "pickle_code_ran"
    ckpts.mkdir()
    models = {"clip": util.tiny_clip(seed=11), "sam2": mask._tiny_sam2.__wrapped__(12, "cpu"),
              "yolo": detect.tiny_yolo(seed=13, class_bias=0.0), "ssv2a": pipeline.tiny_ssv2a(seed=14),
              "aldm": aldm.tiny_audioldm(seed=15), "ast": scorers.tiny_ast.__wrapped__(seed=16)}
    rf.clip_torchscript(models["clip"][0], ckpts / "ViT-L-14.pt")
    rf.sam2_release(models["sam2"].predictor.model, ckpts / "sam2.1_hiera_large.pt")
    models["yolo"].save(ckpts / "yolov8x-oiv7.pt")
    config_path = root / "ssv2a_tiny.json"
    config_path.write_text(json.dumps(pipeline.TINY_SSV2A_CONFIG))
    rf.ssv2a_release(models["ssv2a"], ckpts / "ssv2a.pth", optimizer=rf.training_optimizer(
        list(models["ssv2a"].state_dict().values())), epoch=np.int64(37))
    tokenizer = aldm._tiny_tokenizer()
    roberta = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                            intermediate_size=37, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                            bos_token_id=0, eos_token_id=2)
    clap = scorers.build_clap_model(roberta)   # HTSAT-tiny at its real size, a tiny RoBERTa text branch
    torch.save(rf.clap_training_checkpoint(clap.state_dict()), ckpts / "630k-audioset-best.pt")
    models["clap"] = clap
    # the .bin copies the hub also holds are pickles that would run code: nothing may ever read them
    rf.audioldm_snapshot(hub, models["aldm"], bin_payload=rf.RunsCode(marker))
    rf.roberta_snapshot(hub, tokenizer, roberta)
    rf.ast_snapshot(hub, models["ast"], bin_payload=rf.RunsCode(marker))
    # the set-level metrics' networks: torchvggish's plain state dict, PANNs' {'model': ..., 'iteration': ...}
    vggish = metrics.tiny_vggish(seed=17).model
    torch.save(vggish.state_dict(), ckpts / "vggish-10086976.pth")
    for seed, variant in ((18, "32k"), (19, "16k")):   # PANNs' two releases, their own front ends
        cnn14 = metrics.tiny_cnn14(seed=seed, variant=variant).model
        path = ckpts / metrics.CNN14_VARIANTS[variant]["weights"]
        torch.save({"model": cnn14.state_dict(), "iteration": 600000}, path)
    # CIAP's ResNet18 backbone (train_ciap.py): torchvision's plain state dict
    torch.save(ciap.tiny_resnet18(seed=19).state_dict(), ckpts / "resnet18-f37072fd.pth")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ck, "CHECKPOINT_DIR", ckpts)
        sha = hashlib.sha256((ckpts / "ViT-L-14.pt").read_bytes()).hexdigest()
        mp.setitem(ck.CHECKPOINTS, "clip", dataclasses.replace(ck.CHECKPOINTS["clip"], sha256=sha, min_bytes=0))
        clap_sha = hashlib.sha256((ckpts / "630k-audioset-best.pt").read_bytes()).hexdigest()
        mp.setitem(ck.CHECKPOINTS, "clap", dataclasses.replace(ck.CHECKPOINTS["clap"], sha256=clap_sha, min_bytes=0))
        for name in ("sam2", "yolo", "ssv2a", "vggish", "panns_cnn14", "panns_cnn14_16k"):
            mp.setitem(ck.CHECKPOINTS, name, dataclasses.replace(ck.CHECKPOINTS[name], min_bytes=0))
        resnet_sha = hashlib.sha256((ckpts / "resnet18-f37072fd.pth").read_bytes()).hexdigest()
        mp.setitem(ck.CHECKPOINTS, "resnet18", dataclasses.replace(ck.CHECKPOINTS["resnet18"], min_bytes=0,
                                                                    sha256_prefix=resnet_sha[:8]))
        mp.setattr(ciap, "build_resnet18", ciap.tiny_resnet18)   # the tiny file's architecture
        mp.setattr(metrics, "build_vggish", lambda: metrics.tiny_vggish().model)   # the tiny files' architectures
        mp.setattr(metrics, "build_cnn14", lambda variant="16k": metrics.tiny_cnn14(variant=variant).model)
        mp.setattr(mask, "SAM2_CONFIG", mask.TINY_CONFIG)           # the tiny file's architecture
        mp.setattr(mask, "SAM2_OVERRIDES", mask.TINY_OVERRIDES)
        mp.setattr(pipeline, "DEFAULT_CONFIG_PATH", config_path)   # the tiny file's SSV2A config
        mp.setenv("HF_HUB_CACHE", str(hub))
        mp.setattr(hf_constants, "HF_HUB_CACHE", str(hub))
        _clear_loaders()
        yield {"root": root, "ckpts": ckpts, "hub": hub, "marker": marker, "config": config_path, "models": models}
        _clear_loaders()   # tiny models loaded from tmp files must not outlive these tests


def test_release_files_are_in_the_publishers_containers(release):
    ckpts = release["ckpts"]
    # CLIP is a TorchScript archive: weights_only refuses it, openai-clip's loader opens it (after our hash check)
    with pytest.raises(Exception):
        torch.load(ckpts / "ViT-L-14.pt", weights_only=True)
    assert set(torch.load(ckpts / "sam2.1_hiera_large.pt", weights_only=True)) == {"model"}
    ssv2a = torch.load(ckpts / "ssv2a.pth", weights_only=False)
    assert set(ssv2a) == {"timestamp", "manifold_state", "generator_state", "remixer_state", "optimizer", "epoch"}
    with pytest.raises(Exception, match="numpy"):   # the numpy scalars plain weights_only refuses
        torch.load(ckpts / "630k-audioset-best.pt", weights_only=True)
    clap = torch.load(ckpts / "630k-audioset-best.pt", weights_only=False)
    assert set(clap) == {"epoch", "name", "state_dict", "optimizer"}
    assert all(k.startswith("module.") for k in clap["state_dict"])
    assert isinstance(clap["optimizer"]["param_groups"][0]["lr"], np.float64)
    audioldm = release["hub"] / "models--cvssp--audioldm-s-full-v2"
    assert (audioldm / "refs" / "main").read_text() == rf.COMMIT
    index = json.loads((audioldm / "snapshots" / rf.COMMIT / "model_index.json").read_text())
    assert index["_diffusers_version"] == "0.15.0.dev0" and index["tokenizer"] == ["transformers", "RobertaTokenizerFast"]


def test_check_opens_every_release_file_and_reports_ok(release, capsys):
    assert ck.main(["--check"]) == 0
    out = capsys.readouterr().out
    lines = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert len(lines) == len(ck.CHECKPOINTS) and all(line.startswith("ok") for line in lines), out
    assert "SHA-256 matches" in out and "fits" in out and "AudioLDMPipeline" in out and "527 AudioSet classes" in out
    assert "ignored entries: epoch, optimizer" in out                         # the SSV2A file's extras
    assert "ignored entries: epoch, name, optimizer" in out                   # CLAP's training state
    assert not release["marker"].exists()


class _Tee(io.StringIO):
    """Keeps what is printed and passes it on (to pytest's capture)."""

    def __init__(self, stream):
        super().__init__()
        self.stream = stream

    def write(self, text):
        self.stream.write(text)
        return super().write(text)


@pytest.fixture(scope="module")
def real_run(release, tmp_path_factory):
    """The first `python main.py` on a machine where ssv2a.pth is not there yet: it comes from the authors' Drive
    folder, here the release file delivered in place of the one network call (model.checkpoints._drive_fetch)."""
    out = tmp_path_factory.mktemp("real_outputs")
    fetched = tmp_path_factory.mktemp("fetched") / "ssv2a.pth"
    args = [f"--OUTPUT_DIR={out}", f"--CONFIG_PATH={release['config']}",
            f"--CHECKPOINT_PATH={fetched}", "--DEVICE=cpu", "--CYCLE_ITS=2",
            "--CYCLE_SAMPLES=4", "--VAR_SAMPLES=4", "--DURATION=2.0", "--DDIM_STEPS=3", "--EVAL_SEEDS=2"]
    calls = []
    drive = rf.drive_folder({"ssv2a.pth": release["ckpts"] / "ssv2a.pth", "ssv2a.json": release["config"]}, calls)
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(_Tee(__import__("sys").stdout)) as printed:
        mp.setattr(ck, "_drive_fetch", drive)
        code = main.main(args)
    (run_dir,) = out.iterdir()
    return code, run_dir, {"fetched": fetched, "calls": calls, "printed": printed.getvalue()}


def test_the_real_main_path_runs_end_to_end_on_release_files(release, real_run, capsys):
    code, run_dir, _ = real_run
    assert code == 0
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and record["smoke"] is False and not run_dir.name.endswith("_smoke")
    assert set(record["model_load_s"]) == set(loader.Models.NAMES)
    assert {"results.json", "scores.png", "manipulated.wav", "manipulated_seed43.wav"} <= set(record["outputs"])
    assert not release["marker"].exists(), "a pickle in the snapshot was unpickled"


def test_the_real_run_used_the_weights_of_the_release_files(release, real_run):
    """Not just 'it ran': each step's output is what the tiny models written to the files give."""
    _, run_dir, _ = real_run
    e = torch.load(run_dir / "embeddings.pt", weights_only=True)
    images = [ROOT / "images" / "original.jpg", ROOT / "images" / "edited.jpg"]
    # CLIP: the TorchScript file's (fp16) weights
    clip_model, preprocess = release["models"]["clip"]
    from clip.model import convert_weights
    clip16 = util.tiny_clip(seed=11)[0]
    convert_weights(clip16)                     # OpenAI's fp16 rounding of the same weights
    clip16 = clip16.float()
    x = torch.stack([preprocess(util.load_image_rgb(p)) for p in images])
    with torch.no_grad():
        cls = torch.nn.functional.normalize(clip16.encode_image(x).float(), dim=-1)
    torch.testing.assert_close(e["cls_0"], cls[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(e["cls_1"], cls[1], atol=1e-5, rtol=0)
    # SAM2: the {"model": ...} file's weights give the saved mask
    seg = release["models"]["sam2"]
    seg.set_image(images[0])
    m, _ = seg.predict([[448, 330]], [1])
    assert torch.equal(e["M_neg"][0], torch.from_numpy(m[0] > 0.5))
    # the AST classifier: the safetensors weights score the saved audio as results.json says
    results = json.loads((run_dir / "results.json").read_text())
    audio, sr = sf.read(run_dir / "baseline_original.wav", dtype="float32")
    probs = release["models"]["ast"].class_probabilities([audio], sr)[0]
    labels = release["models"]["ast"].labels
    expected = max(probs[labels.index(c)] for c in main.AUDIO_CLASSES["cat"])
    assert results["scores"]["classifier"]["per_seed"]["cat"]["baseline_original"][0] == pytest.approx(expected, abs=2e-3)
    assert results["scores"]["clap"]["name"] == "laion-clap 630k-audioset-best.pt"


def test_the_first_run_fetched_ssv2a_from_drive_and_recorded_its_size_and_hash(release, real_run):
    code, run_dir, first = real_run
    data = (release["ckpts"] / "ssv2a.pth").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    assert code == 0 and first["fetched"].read_bytes() == data
    assert [p.name for p in first["fetched"].parent.iterdir()] == ["ssv2a.pth"]       # no temporary file left
    assert [name for _, name in first["calls"]] == ["ssv2a.pth", "ssv2a.json"]
    printed = first["printed"]
    assert f"ssv2a.pth: {len(data):,} bytes, SHA-256 {sha}" in printed
    assert printed.index("SHA-256") < printed.index("Loading every model")            # fetched before any work
    record = json.loads((run_dir / "run.json").read_text())
    assert record["ssv2a_checkpoint"] == {"path": str(first["fetched"].resolve()), "bytes": len(data), "sha256": sha}


def _quota(folder_url, filename, dest):
    import gdown
    raise gdown.FileURLRetrievalError(
        "Failed to retrieve file url:\n\n\tToo many users have viewed or downloaded this file recently. Please\n"
        "\ttry accessing the file again later.\n\nYou may still be able to access the file from the browser:\n\n"
        "\thttps://drive.google.com/uc?id=1AbCdEfGhIjKlMnOpQrStUvWxYz012345\n\nbut Gdown can't. Please check "
        "connections and permissions.")


def _web_page(folder_url, filename, dest):
    dest.write_text("<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>"
                    '<p class="uc-error-subcaption">Too many users have viewed or downloaded this file recently. '
                    "Please try accessing the file again later.</p></body></html>")
    return dest


@pytest.mark.parametrize("refusal", [_quota, _web_page])
def test_drive_refusing_ssv2a_stops_the_first_run_before_any_work(release, tmp_path, monkeypatch, capsys, refusal):
    monkeypatch.setattr(ck, "_drive_fetch", refusal)
    target, out = tmp_path / "ckpts" / "ssv2a.pth", tmp_path / "outputs"
    code = main.main([f"--OUTPUT_DIR={out}", f"--CONFIG_PATH={release['config']}", f"--CHECKPOINT_PATH={target}",
                      "--DEVICE=cpu"])
    captured = capsys.readouterr()
    assert code == 2 and "1 checkpoint(s) missing; nothing was run" in captured.err, captured.err[-3000:]
    assert "Too many users have viewed or downloaded this file recently" in captured.err      # what Drive said
    assert (f"{ck.CHECKPOINTS['ssv2a'].drive_folder}\n  download ssv2a.pth and save it as {target}"
            in captured.err)                                                                 # today's by-hand fix
    assert "Loading every model" not in captured.out and not out.exists()
    assert list(target.parent.iterdir()) == [], "nothing half-written"


def test_a_file_at_checkpoint_path_is_never_replaced_by_the_download(release, tmp_path, monkeypatch, capsys):
    """A smaller SSV2A file (another config's, under the release's size) at CHECKPOINT_PATH is the user's: it is
    loaded as it is, never fetched over. (The run stops where its folder would be made, every model loaded.)"""
    monkeypatch.setitem(ck.CHECKPOINTS, "ssv2a", dataclasses.replace(ck.CHECKPOINTS["ssv2a"], min_bytes=82_318_210 * 4))
    calls = []
    monkeypatch.setattr(ck, "_drive_fetch", rf.drive_folder({"ssv2a.pth": release["ckpts"] / "ssv2a.pth"}, calls))
    mine = tmp_path / "mine.pth"
    rf.ssv2a_release(pipeline.tiny_ssv2a(seed=5), mine)
    data = mine.read_bytes()
    out = tmp_path / "outputs"

    def stop(*args, **kwargs):
        raise errors.UserError("stopped where the run folder would be made")
    monkeypatch.setattr(runs, "new_run_dir", stop)
    code = main.main([f"--OUTPUT_DIR={out}", f"--CONFIG_PATH={release['config']}", f"--CHECKPOINT_PATH={mine}",
                      "--DEVICE=cpu"])
    captured = capsys.readouterr()
    assert code == 2 and "stopped where the run folder would be made" in captured.err, captured.err[-3000:]
    assert f"Loading SSV2A from {mine.resolve()}" in captured.out
    assert calls == [] and mine.read_bytes() == data and sorted(p.name for p in tmp_path.iterdir()) == ["mine.pth"]


@pytest.mark.parametrize("name, damage, says", [
    ("clip", "garbage", "SHA-256 does not match"),
    ("sam2", "garbage", "not a complete zip archive"),
    ("sam2", "bare_state_dict", "sam2 reads {'model': state_dict}"),
    ("sam2", "missing_keys", "missing key(s)"),
    ("yolo", "garbage", "not a complete zip archive"),
    ("yolo", "pickled_code", "unsupported global"),
    ("clap", "truncated", "SHA-256 does not match"),
    ("clap", "pickled_code", "SHA-256 does not match"),
    ("ssv2a", "missing_keys", "missing key(s)"),
])
def test_check_reports_a_damaged_or_wrong_format_file(release, tmp_path, monkeypatch, name, damage, says):
    """--check is not 'the file exists': each damage gets a one-line 'bad' naming what is wrong."""
    bad = tmp_path / "checkpoints"
    shutil.copytree(release["ckpts"], bad)
    monkeypatch.setattr(ck, "CHECKPOINT_DIR", bad)
    path = bad / ck.CHECKPOINTS[name].filename
    size = path.stat().st_size
    if damage == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(size))      # a full-size file of noise
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:size // 2])
    elif damage == "bare_state_dict":
        torch.save(torch.load(path, weights_only=True)["model"], path)
    elif damage == "missing_keys" and name == "sam2":
        state = torch.load(path, weights_only=True)
        state["model"] = {k: v for i, (k, v) in enumerate(state["model"].items()) if i % 3}
        torch.save(state, path)
    elif damage == "missing_keys":
        state = torch.load(path, weights_only=False)
        state["remixer_state"] = {k: v for k, v in state["remixer_state"].items() if "esa" not in k}
        torch.save(state, path)
    elif damage == "pickled_code" and name == "yolo":
        torch.save({"model": rf.RunsCode(tmp_path / "ran"), "train_args": {}}, path)
    elif damage == "pickled_code":
        state = torch.load(path, weights_only=False)
        state["optimizer"]["param_groups"][0]["lr"] = rf.RunsCode(tmp_path / "ran")
        torch.save(state, path)
    line = ck.status(name)
    assert line.startswith("bad") and says in line, line
    assert len(line) < 1000, f"the message must stay short ({len(line)} characters)"
    assert not (tmp_path / "ran").exists()


def test_a_damaged_checkpoint_stops_main_before_any_work_or_folder(release, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "checkpoints"
    shutil.copytree(release["ckpts"], bad)
    monkeypatch.setattr(ck, "CHECKPOINT_DIR", bad)
    (bad / "sam2.1_hiera_large.pt").write_bytes(b"\0" * 4096)   # a file Meta publishes no hash for
    _clear_loaders()
    out = tmp_path / "outputs"
    code = main.main([f"--OUTPUT_DIR={out}", f"--CONFIG_PATH={release['config']}",
                      f"--CHECKPOINT_PATH={release['ckpts'] / 'ssv2a.pth'}", "--DEVICE=cpu"])
    _clear_loaders()
    captured = capsys.readouterr()
    assert code == 2 and "SAM2 checkpoint" in captured.err and "not a readable PyTorch checkpoint" in captured.err
    assert "STEP 1" not in captured.out          # no SAM2 mask, no audio before the failure
    assert not out.exists()


@pytest.mark.parametrize("name, file, says", [
    ("ast", "model.safetensors", "the AST classifier in"),        # cut in half: a SafetensorError inside
    ("roberta", "config.json", "the roberta-base config in"),     # not JSON: an OSError inside transformers
])
def test_damaged_hugging_face_files_get_one_clean_message(release, tmp_path, monkeypatch, capsys, name, file, says):
    import huggingface_hub.constants as hf_constants
    hub = tmp_path / "hub"
    shutil.copytree(release["hub"], hub)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hub))
    path = Path(ck.hf_model_dir(name, download=False)) / file
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    _clear_loaders()
    line = ck.status(name)
    assert line.startswith("bad") and says in line and "cannot be loaded" in line and len(line) < 1000, line
    out = tmp_path / "outputs"
    code = main.main([f"--OUTPUT_DIR={out}", f"--CONFIG_PATH={release['config']}",
                      f"--CHECKPOINT_PATH={release['ckpts'] / 'ssv2a.pth'}", "--DEVICE=cpu"])
    _clear_loaders()
    captured = capsys.readouterr()
    # the message is the last word (a raw traceback would end in the library's SafetensorError / OSError line);
    # "Traceback" itself may appear in a logging handler's complaint about a stream an earlier test closed
    assert code == 2 and f"Error: {says}" in captured.err, captured.err[-3000:]
    assert captured.err.rstrip().endswith("bash checkpoints/download_ckpts.sh)"), captured.err[-3000:]
    assert not out.exists()


def test_a_real_manifest_scores_its_sets_with_the_release_files(release, tmp_path):
    """The non-smoke manifest path: FAD / FD / KL come from the registry's VGGish and PANNs files."""
    images = ROOT / "images"
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("original,edited,remove,remove_x,remove_y,add,add_x,add_y,kept\n"
                        f"{images / 'original.jpg'},{images / 'edited.jpg'},cat,448,330,astronaut,410,130,rocket\n")
    out = tmp_path / "out"
    assert main.main([f"--OUTPUT_DIR={out}", f"--CONFIG_PATH={release['config']}",
                      f"--CHECKPOINT_PATH={release['ckpts'] / 'ssv2a.pth'}", "--DEVICE=cpu", "--CYCLE_ITS=1",
                      "--CYCLE_SAMPLES=2", "--VAR_SAMPLES=2", "--DURATION=2.0", "--DDIM_STEPS=2", "--EVAL_SEEDS=2",
                      "--manifest", str(manifest)]) == 0
    (run_dir,) = out.iterdir()
    sets = json.loads((run_dir / "summary.json").read_text())["set_metrics"]
    assert sets["embedding"] == metrics.VGGISH_NAME and sets["weights"] == str(release["ckpts"] / "vggish-10086976.pth")
    assert sets["panns"]["model"] == metrics.cnn14_name("16k") and sets["panns"]["variant"] == "16k"
    assert sets["panns"]["weights"] == str(release["ckpts"] / "Cnn14_16k_mAP=0.438.pth")   # 16 kHz audio: the 16 kHz CNN14
    # the figures are those of the files' weights (the tiny twins they were written from)
    fads = metrics.manifest_fads(run_dir, metrics.tiny_vggish(seed=17))["fad"]
    assert {k: v["fad"] for k, v in fads.items()} == {k: v["fad"] for k, v in sets["fad"].items()}
    panns = metrics.manifest_panns(run_dir, metrics.tiny_cnn14(seed=19, variant="16k"))
    assert panns["kl"] == sets["panns"]["kl"] and panns["kl"]["KL(baseline_edited || manipulated)"]["n"] == 2
    assert metrics.manifest_panns(run_dir, metrics.tiny_cnn14(seed=18, variant="16k"))["kl"] != sets["panns"]["kl"]
    assert metrics.manifest_fads(run_dir, metrics.tiny_vggish(seed=99))["fad"] != sets["fad"]   # weights matter


def test_train_ciap_reads_the_release_files(release, tmp_path):
    """train_ciap.py without --smoke: CLIP from OpenAI's TorchScript file, CLAP from LAION's training checkpoint and
    ResNet18 from torchvision's file, each through the registry; the features are those of the files' weights, the
    checkpoints name the models, and the back end's loader takes the CLIP head on the real models' names."""
    import train_ciap
    pairs = train_ciap.make_synthetic_pairs(tmp_path / "pairs", 8)   # 6 training pairs, 2 held out
    out = tmp_path / "out"
    args = ["--pairs", str(pairs), f"--OUTPUT_DIR={out}", "--DEVICE=cpu", "--EPOCHS=2", "--BATCH_SIZE=3",
            "--HIDDEN_DIM=32"]
    assert train_ciap.main(args) == 0
    (clip_run,) = out.iterdir()
    assert train_ciap.main(args + ["--ENCODER=resnet18", f"--REUSE_FEATURES={clip_run / 'features.safetensors'}"]) == 0
    (resnet_run,) = [p for p in out.iterdir() if p != clip_run]
    assert not clip_run.name.endswith("_smoke")
    from safetensors.torch import load_file
    images = [pairs.parent / "images" / f"{i:04d}.png" for i in range(8)]
    waves = [sf.read(pairs.parent / "audio" / f"{i:04d}.wav")[0] for i in range(8)]
    features = load_file(str(clip_run / "features.safetensors"))
    clip16 = util.tiny_clip(seed=11)[0]
    from clip.model import convert_weights
    convert_weights(clip16)                     # OpenAI's fp16 rounding of the same weights
    expected = util.clip_image_embeddings(images, model=clip16.float(), preprocess=release["models"]["clip"][1])
    torch.testing.assert_close(features["image"], expected, atol=1e-5, rtol=0)
    scorer = scorers.ClapScorer(release["models"]["clap"].eval(), None, "cpu", "the file's weights")
    torch.testing.assert_close(features["audio"], scorer.audio_embeddings(waves, 16000), atol=1e-5, rtol=0)
    resnet = ciap.ResNetFeatures(ciap.tiny_resnet18(seed=19))
    x = torch.stack([ciap.resnet_preprocess()(util.load_image_rgb(p)) for p in images])
    with torch.no_grad():
        torch.testing.assert_close(load_file(str(resnet_run / "features.safetensors"))["image"], resnet(x),
                                   atol=1e-5, rtol=0)
    clap_name = "laion-clap 630k-audioset-best.pt"
    back_end = ciap.load_ciap(clip_run / "ciap.safetensors", "cpu", clip_model=ciap.REAL_CLIP_NAME,
                              clap_model=clap_name)
    assert back_end(expected).shape == (8, 512)
    assert ciap.read_ciap(resnet_run / "ciap.safetensors")[1]["image_model"] == ciap.REAL_RESNET_NAME
    assert ciap.load_ciap(resnet_run / "ciap.safetensors", "cpu", encoder="resnet18")(x).shape == (8, 512)

    # the real main.py path on the CIAP back end, with the head trained on the release files' CLIP and CLAP: no
    # ssv2a.pth and no YOLO file needed, and AudioLDM conditioned on the head's output for CLIP(I_0), CLIP(I_1), E_final
    real_out = tmp_path / "real"
    base = [f"--OUTPUT_DIR={real_out}", f"--CONFIG_PATH={release['config']}", "--DEVICE=cpu", "--DURATION=2.0",
            "--DDIM_STEPS=3", "--EVAL_SEEDS=2", f"--CHECKPOINT_PATH={tmp_path / 'no-ssv2a.pth'}"]
    assert main.main(base + ["--CIAP_CHECKPOINT=" + str(resnet_run / "ciap.safetensors")]) == 2   # pixels, not CLIP
    assert not real_out.exists()
    assert main.main(base + ["--CIAP_CHECKPOINT=" + str(clip_run / "ciap.safetensors")]) == 0
    (run_dir,) = real_out.iterdir()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and record["smoke"] is False and record["back_end"] == "ciap"
    assert set(record["model_load_s"]) == set(loader.Models.CIAP_NAMES)
    e = torch.load(run_dir / "embeddings.pt", weights_only=True)
    rows = torch.stack([e["cls_0"], e["cls_1"], e["emb_final"].reshape(-1)])
    with torch.no_grad():
        heads = back_end(rows)
    for seed in range(e["claps"].shape[0]):
        torch.testing.assert_close(e["claps"][seed], heads, atol=1e-5, rtol=0)
    assert not release["marker"].exists()
