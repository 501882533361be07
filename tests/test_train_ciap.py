"""train_ciap.py end to end on a synthetic paired set, with the tiny random-weight twins of CLIP, ResNet18 and CLAP.

The oracle of a training loop is that it learns what is learnable and nothing else: images whose colour sets the
pitch of the tone they are paired with are retrieved far above chance on held-out pairs, and the same files with
the audio shuffled against the images are retrieved at chance (which also catches validation pairs leaking into
training). A run stopped and resumed ends with the weights of a run never stopped. Bad pairs files are refused
before any model loads.
"""
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import ROOT, free_port

import scorers
import train_ciap
import util
from model import ciap

N_PAIRS, N_VAL = 64, 16          # make_synthetic_pairs: every 4th pair is validation
CHANCE_R1 = 1 / N_VAL


@pytest.fixture(scope="module")
def threads():
    """One torch thread for the module's runs: tiny models run several times faster so on a shared CPU, and float
    sums do not depend on the thread count (the resume test compares weights bit for bit)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return train_ciap.make_synthetic_pairs(tmp_path_factory.mktemp("synthetic"), N_PAIRS)


def train(out, *args, **kwargs):
    """(exit code, the run folder it made or None) of train_ciap.main(['--smoke', *args]) writing into out."""
    before = set(Path(out).iterdir()) if Path(out).exists() else set()
    code = train_ciap.main(["--smoke", f"--OUTPUT_DIR={out}", *args], **kwargs)
    made = [p for p in Path(out).iterdir() if p not in before] if Path(out).exists() else []
    assert len(made) <= 1, made
    return code, (made[0] if made else None)


@pytest.fixture(scope="module")
def trained(synthetic, tmp_path_factory, threads):
    code, run_dir = train(tmp_path_factory.mktemp("out"), "--pairs", str(synthetic))
    assert code == 0
    return run_dir


def results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def safetensors_of(path):
    from safetensors.torch import load_file
    return load_file(str(path))


def test_the_loop_learns_a_learnable_pairing(trained, synthetic):
    record = json.loads((trained / "run.json").read_text())
    assert record["status"] == "finished" and record["pairs"] == {"file": str(synthetic.resolve()), "train": 48,
                                                                  "val": 16}
    r = results(trained)["retrieval"]
    assert r["chance"]["R@1"] == pytest.approx(CHANCE_R1) and r["chance"]["median_rank"] == 8.5
    for direction in ("image_to_audio", "audio_to_image"):
        assert r[direction]["R@1"] >= 8 * CHANCE_R1, r            # chance is 1/16: at least half are exact hits
        assert r[direction]["median_rank"] <= 1.5, r
    assert len(record["history"]) == train_ciap.SMOKE_SETTINGS["EPOCHS"]
    assert record["history"][0]["train_loss"] > 1.5 * record["history"][-1]["train_loss"]
    every = train_ciap.SMOKE_SETTINGS["CHECKPOINT_EVERY"]
    assert sorted(p.name for p in trained.glob("checkpoint_e*")) == [
        f"checkpoint_e{e:04d}.safetensors" for e in range(every, train_ciap.SMOKE_SETTINGS["EPOCHS"] + 1, every)]
    assert (trained / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"features.safetensors", "pairs.csv", "ciap.safetensors"} <= {p.name for p in trained.iterdir()}


def test_the_saved_model_gives_the_reported_figures(trained, synthetic):
    """ciap.safetensors, loaded as the back end loads it, on features computed here from the files: the retrieval
    figures of results.json (the figures are those of the weights saved, not of others)."""
    clap = scorers.tiny_clap()
    model = ciap.load_ciap(trained / "ciap.safetensors", "cpu", clip_model=ciap.tiny_clip_name(),
                           clap_model=clap.name)
    rows = list(csv.DictReader(open(synthetic)))
    val = [r for r in rows if r["split"] == "val"]
    clip_model, preprocess = util.tiny_clip()
    images = util.clip_image_embeddings([synthetic.parent / r["image"] for r in val], model=clip_model,
                                        preprocess=preprocess)
    waves = [sf.read(synthetic.parent / r["audio"])[0] for r in val]
    audio = clap.audio_embeddings(waves, 16000)
    with torch.no_grad():
        embedded = model(images)
    assert embedded.shape == (16, 512) and torch.allclose(embedded.norm(dim=1), torch.ones(16), atol=1e-5)
    assert ciap.retrieval_metrics(embedded, audio) == results(trained)["retrieval"]
    # the loss too, which moves with every weight (recall saturates): these are the final epoch's weights
    scale = ciap.read_ciap(trained / "ciap.safetensors")[0]["logit_scale"].exp()
    assert float(ciap.info_nce(embedded, audio, scale)) == pytest.approx(results(trained)["val_loss"], abs=1e-4)


def shuffled_csv(csv_path, folder, seed=1):
    """The same files with the audio column permuted against the images (the split column kept)."""
    rows = list(csv.DictReader(open(csv_path)))
    audio = [r["audio"] for r in rows]
    order = np.random.default_rng(seed).permutation(len(rows))
    path = Path(folder) / "shuffled.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "audio", "split"])
        writer.writerows([str(csv_path.parent / r["image"]), str(csv_path.parent / audio[j]), r["split"]]
                         for r, j in zip(rows, order))
    return path


def test_shuffled_pairs_are_retrieved_at_chance(trained, synthetic, tmp_path, threads, capsys):
    pairs = shuffled_csv(synthetic, tmp_path)
    code, run_dir = train(tmp_path / "out", "--pairs", str(pairs),
                          f"--REUSE_FEATURES={trained / 'features.safetensors'}")
    assert code == 0
    assert "64 of 64 features reused" in capsys.readouterr().out   # the same files: nothing encoded again
    r = results(run_dir)["retrieval"]
    for direction in ("image_to_audio", "audio_to_image"):
        # 16 candidates: a random ranker hits R@1 = 1/16 on average, and 4 hits or more 1.8% of the time
        assert r[direction]["R@1"] <= 3 / 16, r
        # the mean of 16 uniform ranks 1..16 is 8.5 with a standard deviation of 1.2
        assert abs(r[direction]["mean_rank"] - 8.5) <= 3.5, r
    assert results(trained)["train_loss"] < 0.7 * results(run_dir)["train_loss"]   # nothing to learn, little learned


def test_a_stopped_run_resumed_ends_with_the_weights_of_an_unstopped_one(trained, synthetic, tmp_path, threads):
    def stop_at_40(epoch, entry):
        if epoch == 40:
            raise KeyboardInterrupt

    out = tmp_path / "out"
    code, stopped = train(out, "--pairs", str(synthetic), f"--REUSE_FEATURES={trained / 'features.safetensors'}",
                          progress=stop_at_40)
    assert code == 130
    record = json.loads((stopped / "run.json").read_text())
    assert record["status"] == "interrupted" and record["epochs_done"] == 40
    assert not (stopped / "ciap.safetensors").exists() and (stopped / "checkpoint_e0040.safetensors").exists()

    code, resumed = train(out, "--resume", str(stopped))
    assert code == 0 and resumed.name.endswith("ciap-clip-head_resumed_smoke")
    record = json.loads((resumed / "run.json").read_text())
    assert record["resumed_from"] == {"checkpoint": str((stopped / "checkpoint_e0040.safetensors").resolve()),
                                      "epoch": 40}
    final, reference = safetensors_of(resumed / "ciap.safetensors"), safetensors_of(trained / "ciap.safetensors")
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[k], reference[k]) for k in final), "resumed weights differ from an unstopped run's"
    same = ("train_loss", "val_loss", "temperature", "image_to_audio", "audio_to_image")
    assert [{k: h[k] for k in same} for h in record["history"]] == \
        [{k: h[k] for k in same} for h in json.loads((trained / "run.json").read_text())["history"]]


def test_resume_refuses_what_it_cannot_continue(trained, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [(["--resume", str(empty)], "no checkpoint_e*.safetensors in it"),
             (["--resume", str(trained / "ciap.safetensors")], "holds no training state"),
             (["--resume", str(trained), "--HIDDEN_DIM=8"], "only EPOCHS, DEVICE, OUTPUT_DIR, RUN_NAME, "
                                                            "CHECKPOINT_EVERY may change. Got HIDDEN_DIM"),
             (["--resume", str(trained)], "nothing is left to train; give --EPOCHS=<more>")]
    for args, says in cases:
        assert train_ciap.main([f"--OUTPUT_DIR={tmp_path / 'out'}", *args]) == 2
        assert says in capsys.readouterr().err, args
    assert not (tmp_path / "out").exists()


# -----------------------------------------------------------------------------
# bad input: one line per problem, before any model loads, no run folder


@pytest.fixture
def no_models(monkeypatch):
    """A tripwire: loading the frozen encoders fails the test (the checks must come first)."""
    def load(self):
        raise AssertionError("a model was loaded before the pairs were checked")
    monkeypatch.setattr(train_ciap.Encoders, "load", load)


def write_csv(folder, lines, name="pairs.csv", encoding="utf-8"):
    path = Path(folder) / name
    path.write_bytes("\n".join(lines).encode(encoding) + b"\n")
    return path


@pytest.fixture
def good_files(synthetic, tmp_path):
    """A copy of part of the synthetic set in tmp_path, with a few damaged files beside it."""
    for sub in ("images", "audio"):
        shutil.copytree(synthetic.parent / sub, tmp_path / sub)
    (tmp_path / "images" / "text.png").write_text("not an image")
    png = (tmp_path / "images" / "0001.png").read_bytes()
    (tmp_path / "images" / "cut.png").write_bytes(png[:len(png) // 2])
    (tmp_path / "audio" / "text.wav").write_text("not audio")
    sf.write(tmp_path / "audio" / "nan.wav", np.array([0.1, np.nan, 0.2] * 1000), 16000, subtype="FLOAT")
    sf.write(tmp_path / "audio" / "empty.wav", np.zeros(0), 16000)
    return tmp_path


GOOD_ROWS = [f"images/{i:04d}.png,audio/{i:04d}.wav,{'val' if i % 4 == 2 else 'train'}" for i in range(8)]


@pytest.mark.parametrize("bad_row, says", [
    ("images/nope.png,audio/0001.wav,train", "line 10: image 'images/nope.png' not found (looked at {root}/images/nope.png"),
    ("images/0001.png,audio/nope.wav,val", "line 10: audio 'audio/nope.wav' not found"),
    ("images/text.png,audio/0001.wav,train", "line 10: cannot read image {root}/images/text.png"),
    ("images/cut.png,audio/0001.wav,train", "line 10: cannot read image {root}/images/cut.png"),
    ("images/0001.png,audio/text.wav,train", "line 10: audio {root}/audio/text.wav cannot be read"),
    ("images/0001.png,audio/nan.wav,train", "line 10: audio {root}/audio/nan.wav contains NaN or infinite samples"),
    ("images/0001.png,audio/empty.wav,train", "line 10: audio {root}/audio/empty.wav holds no samples"),
    ("images/0001.png,,train", "line 10: the audio cell is empty"),
    ("images/0001.png,audio/0001.wav,tset", "line 10: split 'tset' is neither train nor val"),
])
def test_a_broken_row_is_refused_before_any_model_loads(good_files, bad_row, says, no_models, capsys):
    pairs = write_csv(good_files, ["image,audio,split", *GOOD_ROWS, bad_row])
    assert train_ciap.main(["--smoke", "--pairs", str(pairs), f"--OUTPUT_DIR={good_files / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert f"pairs file {pairs}: 1 of 9 rows cannot be used" in err
    assert says.format(root=good_files) in err, err
    assert not (good_files / "out").exists()   # no run folder


def test_every_broken_row_is_named_and_long_lists_are_cut(good_files, no_models, capsys):
    bad = [f"images/missing{i}.png,audio/0001.wav,train" for i in range(25)]
    pairs = write_csv(good_files, ["image,audio,split", *GOOD_ROWS, *bad])
    assert train_ciap.main(["--smoke", "--pairs", str(pairs), f"--OUTPUT_DIR={good_files / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert "25 of 33 rows cannot be used" in err and "line 29:" in err and "... and 5 more" in err
    assert "line 30:" not in err and len(err.splitlines()) < 30


@pytest.mark.parametrize("lines, encoding, says", [
    (["image,sound", "images/0001.png,audio/0001.wav"], "utf-8", "lacks the column(s) audio in its header row"),
    (["image,audio"], "utf-8", "has a header but no pairs"),
    (["image,audio", "images/0001.png,audio/caf\u00e9.wav"], "latin-1", "is not UTF-8 text: byte 0xe9 on line 2"),
    (["image,audio,split", *GOOD_ROWS[:2], "images/0003.png,audio/0003.wav,train"], "utf-8",
     "gives 3 training and 0 validation pairs: each needs at least 2"),
])
def test_a_bad_pairs_file_is_refused_before_any_model_loads(good_files, lines, encoding, says, no_models, capsys):
    pairs = write_csv(good_files, lines, encoding=encoding)
    assert train_ciap.main(["--smoke", "--pairs", str(pairs), f"--OUTPUT_DIR={good_files / 'out'}"]) == 2
    assert says in capsys.readouterr().err
    assert not (good_files / "out").exists()


def test_bad_settings_and_a_missing_pairs_file_are_refused_first(tmp_path, no_models, capsys):
    cases = [(["--pairs", str(tmp_path / "nope.csv")], f"pairs file not found: {tmp_path / 'nope.csv'}"),
             (["--ENCODER=vit"], "ENCODER='vit' is not an image encoder: use one of clip-head, resnet18"),
             (["--BATCH_SIZE=1", "--TARGET=text"], "2 settings cannot work"),
             (["--EPOCHS=2.5"], "EPOCHS=2.5: EPOCHS takes a int"),
             (["--pairs"], "--pairs needs a CSV file")]
    for args, says in cases:
        assert train_ciap.main(["--smoke", f"--OUTPUT_DIR={tmp_path / 'out'}", *args]) == 2
        assert says in capsys.readouterr().err, args
    assert train_ciap.main([f"--OUTPUT_DIR={tmp_path / 'out'}"]) == 2   # a real run needs pairs
    assert "no pairs file: python train_ciap.py --pairs pairs.csv" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_split_is_drawn_when_the_file_has_none(good_files, no_models):
    pairs = write_csv(good_files, ["image,audio", *[",".join(r.split(",")[:2]) for r in GOOD_ROWS * 3]])
    cfg = {**train_ciap.default_config(), "VAL_FRACTION": 0.25, "SEED": 3}
    first, again = train_ciap.read_pairs(pairs, cfg), train_ciap.read_pairs(pairs, cfg)
    assert first.split == again.split and first.split.count("val") == 6
    assert train_ciap.read_pairs(pairs, {**cfg, "SEED": 4}).split != first.split
    # the same 8 pairs three times over: validation pairs are not held out, and the output says so
    assert any("repeats line 2" in n for n in first.notes)
    assert any("share an image or audio file with a training pair" in n for n in first.notes)


# -----------------------------------------------------------------------------
# the other image encoder and target, and many processes


def test_resnet18_learns_and_is_refused_where_a_clip_head_is_needed(trained, synthetic, tmp_path, threads):
    code, run_dir = train(tmp_path / "out", "--pairs", str(synthetic), "--ENCODER=resnet18",
                          f"--REUSE_FEATURES={trained / 'features.safetensors'}")   # the CLAP side is reused
    assert code == 0 and run_dir.name.endswith("ciap-resnet18_smoke")
    r = results(run_dir)["retrieval"]
    assert r["image_to_audio"]["R@1"] >= 6 * CHANCE_R1, r
    with pytest.raises(ciap.CheckpointError, match="is a ResNet18 CIAP checkpoint: it reads pixels through ResNet18, "
                                                   "not CLIP embeddings. E_final is a CLIP ViT-L/14 embedding"):
        ciap.load_ciap(run_dir / "ciap.safetensors", "cpu")
    model = ciap.load_ciap(run_dir / "ciap.safetensors", "cpu", encoder="resnet18", backbone=ciap.tiny_resnet18())
    x = torch.stack([ciap.resnet_preprocess()(util.load_image_rgb(synthetic.parent / "images" / "0002.png"))])
    features = safetensors_of(run_dir / "features.safetensors")["image"][2:3]
    head = ciap.read_ciap(run_dir / "ciap.safetensors")
    assert head[1]["image_model"] == ciap.tiny_resnet_name()
    with torch.no_grad():
        torch.testing.assert_close(model.backbone(x), features, atol=1e-5, rtol=0)
        assert model(x).shape == (1, 512)


def test_an_audio_encoder_from_scratch_learns_but_is_no_back_end(trained, synthetic, tmp_path, threads):
    code, run_dir = train(tmp_path / "out", "--pairs", str(synthetic), "--TARGET=scratch",
                          f"--REUSE_FEATURES={trained / 'features.safetensors'}")   # the CLIP side is reused
    assert code == 0
    assert results(run_dir)["audio_model"].startswith("log-mel statistics")
    assert results(run_dir)["retrieval"]["image_to_audio"]["R@1"] >= 6 * CHANCE_R1
    with pytest.raises(ciap.CheckpointError, match="its 512-d space is not CLAP's, and AudioLDM, which was trained on "
                                                   "CLAP's space, has never seen it"):
        ciap.load_ciap(run_dir / "ciap.safetensors", "cpu")


def test_two_processes_under_accelerate_share_the_features_and_learn(trained, synthetic, tmp_path):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), str(ROOT / "train_ciap.py"), "--smoke", "--pairs", str(synthetic),
           f"--OUTPUT_DIR={tmp_path}"]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()   # one run folder: the main process's
    record = json.loads((run_dir / "run.json").read_text())
    assert record["processes"] == 2 and record["status"] == "finished"
    # each process encoded half of the files; gathered, they are the one-process features
    two, one = safetensors_of(run_dir / "features.safetensors"), safetensors_of(trained / "features.safetensors")
    for side in ("image", "audio"):
        torch.testing.assert_close(two[side], one[side], atol=1e-5, rtol=0)
    r = results(run_dir)["retrieval"]
    assert r["image_to_audio"]["R@1"] >= 6 * CHANCE_R1 and r["audio_to_image"]["R@1"] >= 6 * CHANCE_R1, r
    assert "8 steps" not in proc.stdout and "1 steps of 16 x 2 process(es)" in proc.stdout
