"""model/ciap.py: the loss, the retrieval figures and their chance levels, checkpoints and their checks, ResNet18."""
import hashlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from release_formats import RunsCode

import scorers
from model import checkpoints as ck
from model import ciap


def unit(rows):
    return F.normalize(torch.as_tensor(rows, dtype=torch.float32), dim=-1)


# -----------------------------------------------------------------------------
# the loss


def test_info_nce_is_the_mean_of_both_cross_entropies_written_out():
    g = torch.Generator().manual_seed(0)
    a, b = unit(torch.randn(6, 512, generator=g)), unit(torch.randn(6, 512, generator=g))
    scale = 14.3
    sim = (a @ b.T).double() * scale
    # -log softmax of each row's own pair, image->audio over the row, audio->image over the column
    i2a = [-(sim[i, i] - torch.logsumexp(sim[i], 0)) for i in range(6)]
    a2i = [-(sim[i, i] - torch.logsumexp(sim[:, i], 0)) for i in range(6)]
    expected = (sum(i2a) / 6 + sum(a2i) / 6) / 2
    assert float(ciap.info_nce(a, b, torch.tensor(scale))) == pytest.approx(float(expected), rel=1e-5)
    # not symmetric in its arguments' roles unless the similarity matrix is: both directions really enter
    assert float(ciap.info_nce(a, b, torch.tensor(scale))) != pytest.approx(
        float(sum(i2a) / 6), rel=1e-3)


def test_info_nce_is_low_for_matched_pairs_and_ln_n_for_no_information():
    e = torch.eye(8)
    assert float(ciap.info_nce(e, e, torch.tensor(100.0))) < 1e-10
    same = unit(torch.ones(8, 4))   # every embedding the same: no pair can be told apart
    assert float(ciap.info_nce(same, same, torch.tensor(100.0))) == pytest.approx(math.log(8), rel=1e-6)


def test_the_model_gives_unit_vectors_and_learns_its_temperature():
    model = ciap.CIAP("clip-head", "clap", hidden_dim=32, temperature=0.07)
    x, y = torch.randn(5, 768), unit(torch.randn(5, 512))
    image, audio, scale = model(x, y * 3.0)
    assert image.shape == (5, 512) and torch.allclose(image.norm(dim=1), torch.ones(5), atol=1e-6)
    assert torch.allclose(audio, y, atol=1e-6)            # CLAP targets: only normalised, nothing trained on them
    assert float(scale.detach()) == pytest.approx(1 / 0.07, rel=1e-6)
    ciap.info_nce(image, audio, scale).backward()
    assert model.logit_scale.grad is not None and model.logit_scale.grad != 0
    assert model.audio_head is None and sum(p.numel() for p in model.parameters()) == (
        2 * 768 + 768 * 32 + 32 + 32 * 512 + 512 + 1)
    scratch = ciap.CIAP("clip-head", "scratch", hidden_dim=32)
    assert scratch(x, torch.randn(5, ciap.SCRATCH_AUDIO_DIM))[1].shape == (5, 512)
    model.logit_scale.data.fill_(10.0)                    # exp(10) = 22026: capped at CLIP's 100
    assert float(model.scale().detach()) == ciap.MAX_LOGIT_SCALE


def test_constants_match_the_models_they_describe():
    assert ciap.CLAP_DIM == scorers.CLAP_DIM
    import util
    model, _ = util.tiny_clip()
    assert model.visual.proj.shape[1] == ciap.CLIP_DIM   # tiny_clip keeps ViT-L/14's embedding width
    assert ciap.tiny_resnet18().fc.in_features == ciap.build_resnet18().fc.in_features == ciap.RESNET_DIM


# -----------------------------------------------------------------------------
# retrieval figures


def test_ranks_of_a_known_arrangement():
    n = 12
    keys = torch.eye(n)
    assert ciap.retrieval_ranks(keys, keys).tolist() == [1.0] * n
    # query i leans towards key i + 1: its own key comes second
    second = unit(keys.roll(-1, dims=0) + 0.5 * keys)
    assert ciap.retrieval_ranks(second, keys).tolist() == [2.0] * n
    m = ciap.retrieval_metrics(second, keys)
    assert m["image_to_audio"]["R@1"] == 0 and m["image_to_audio"]["R@5"] == 1 and m["image_to_audio"]["median_rank"] == 2
    # halfway between key i and key i + 1: a tie for first place, which shares ranks 1 and 2
    assert ciap.retrieval_ranks(unit(keys + keys.roll(-1, dims=0)), keys).tolist() == [1.5] * n
    # ranks 1..n in a known order: query i is closest to keys in the order i, i-1, i-2, ... (cyclically)
    order = unit(sum(0.9 ** d * keys.roll(d, dims=0) for d in range(n)))
    order = order.roll(-3, dims=0)   # query i now lies at query i + 3's place: its own key ranks 4th
    assert ciap.retrieval_ranks(order, keys).tolist() == [4.0] * n


def test_a_collapsed_model_scores_chance_not_a_hit():
    """Every embedding the same: every key ties with every other; the mean rank of the tie is chance's median."""
    same = unit(torch.ones(20, 8))
    m = ciap.retrieval_metrics(same, same)
    for direction in ("image_to_audio", "audio_to_image"):
        assert m[direction]["R@1"] == 0 and m[direction]["median_rank"] == m["chance"]["median_rank"] == 10.5
        assert m[direction]["R@10"] == 0     # rank 10.5 for all: no hit at 10 either


def test_chance_levels_are_what_a_random_ranker_scores():
    """The chance figures printed beside the results, against 4000 random rankings of 20 candidates."""
    n, trials = 20, 4000
    g = torch.Generator().manual_seed(0)
    hits = {1: 0, 5: 0, 10: 0}
    for _ in range(trials // n):   # each draw: n random queries against n random keys, n ranks
        ranks = ciap.retrieval_ranks(unit(torch.randn(n, 16, generator=g)), unit(torch.randn(n, 16, generator=g)))
        for k in hits:
            hits[k] += int((ranks <= k).sum())
    chance = ciap.retrieval_metrics(unit(torch.randn(n, 4)), unit(torch.randn(n, 4)))["chance"]
    for k in hits:
        p = chance[f"R@{k}"]
        assert p == k / n
        assert abs(hits[k] / trials - p) < 4 * math.sqrt(p * (1 - p) / trials), (k, hits[k] / trials)
    assert chance["median_rank"] == chance["mean_rank"] == 10.5
    assert ciap.retrieval_metrics(unit(torch.randn(4, 4)), unit(torch.randn(4, 4)))["chance"]["R@5"] == 1.0


def test_retrieval_needs_paired_rows():
    with pytest.raises(ValueError, match="n >= 2 paired rows"):
        ciap.retrieval_metrics(unit(torch.randn(1, 4)), unit(torch.randn(1, 4)))
    with pytest.raises(ValueError, match="3 images and 4 audios"):
        ciap.retrieval_metrics(unit(torch.randn(3, 4)), unit(torch.randn(4, 4)))


def test_the_printout_puts_chance_beside_each_figure():
    m = ciap.retrieval_metrics(torch.eye(16), torch.eye(16))
    text = ciap.format_retrieval(m)
    assert "image -> audio: R@1 1.000 [0.062]  R@5 1.000 [0.312]  R@10 1.000 [0.625]  median rank 1 [8.5]" in text


# -----------------------------------------------------------------------------
# checkpoints


def meta_of(model, **changes):
    return {"encoder": model.encoder, "target": model.target, "hidden_dim": model.image_head.fc1.out_features,
            "image_dim": ciap.IMAGE_DIMS[model.encoder], "embed_dim": 512, "image_model": ciap.tiny_clip_name(),
            "audio_model": "tiny random CLAP (seed 0)", "epoch": 3, **changes}


@pytest.fixture
def head():
    torch.manual_seed(0)
    return ciap.CIAP("clip-head", "clap", hidden_dim=16)


def test_a_saved_head_loads_as_the_back_end_and_maps_clip_embeddings(head, tmp_path):
    path = ciap.save_ciap(tmp_path / "ciap.safetensors", head, meta_of(head))
    with open(path, "rb") as f:
        assert f.read(8) != b"PK\x03\x04\x00\x00\x08\x00"   # safetensors, not a torch (zip/pickle) archive
    back_end = ciap.load_ciap(path, "cpu", clip_model=ciap.tiny_clip_name(), clap_model="tiny random CLAP (seed 0)")
    e = unit(torch.randn(3, 768))
    with torch.no_grad():
        assert torch.equal(back_end(e), head.image_head(e))
        assert torch.equal(back_end(e[0]), head.image_head(e[:1]))   # one E_final [768] -> [1, 512]
    assert back_end.info["encoder"] == "clip-head" and back_end.info["audio_model"] == "tiny random CLAP (seed 0)"
    with pytest.raises(ValueError, match=r"CLIP ViT-L/14 embeddings \[N, 768\], got shape \(3, 512\)"):
        back_end(torch.randn(3, 512))
    with pytest.raises(FileExistsError):   # a checkpoint is never overwritten
        ciap.save_ciap(path, head, meta_of(head))


def test_a_training_checkpoint_loads_and_its_training_state_is_ignored(head, tmp_path):
    extra = {"optimizer.0.exp_avg": torch.zeros(3), "rng.shuffle": torch.zeros(5, dtype=torch.uint8)}
    path = ciap.save_ciap(tmp_path / "checkpoint_e0003.safetensors", head, meta_of(head), extra)
    tensors, _ = ciap.read_ciap(path)
    assert not any(k.startswith(("optimizer.", "rng.")) for k in tensors)
    assert set(ciap.read_ciap(path, training_state=True)[0]) >= set(extra)
    ciap.load_ciap(path, "cpu")


@pytest.mark.parametrize("changes, kwargs, says", [
    ({"encoder": "resnet18", "image_dim": 512}, {}, "is a ResNet18 CIAP checkpoint: it reads pixels through ResNet18, "
                                                    "not CLIP embeddings. E_final is a CLIP ViT-L/14 embedding"),
    ({"target": "scratch"}, {}, "trained against its own audio encoder, trained from scratch"),
    ({}, {"clap_model": "laion-clap 630k-audioset-best.pt"}, "was trained on the features of CLAP 'tiny random CLAP "
                                                             "\\(seed 0\\)', but 'laion-clap 630k-audioset-best.pt'"),
    ({}, {"clip_model": ciap.REAL_CLIP_NAME}, "a smoke checkpoint fits only the tiny random models"),
    ({"image_dim": 512}, {}, "maps 768-d features to 512-d, but its metadata says 512 -> 512"),
    ({"hidden_dim": 17}, {}, "mis-shaped key"),
])
def test_a_checkpoint_that_does_not_fit_is_refused_with_the_reason(head, tmp_path, changes, kwargs, says):
    path = ciap.save_ciap(tmp_path / "ciap.safetensors", head, meta_of(head, **changes))
    with pytest.raises(ck.CheckpointError, match=says):
        ciap.load_ciap(path, "cpu", **kwargs)


def test_damaged_and_foreign_files_are_refused(head, tmp_path):
    path = ciap.save_ciap(tmp_path / "ciap.safetensors", head, meta_of(head))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    with pytest.raises(ck.CheckpointError, match="is not a readable safetensors file"):
        ciap.load_ciap(cut, "cpu")
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ck.CheckpointError, match="is a safetensors file but not a CIAP checkpoint"):
        ciap.load_ciap(tmp_path / "other.safetensors", "cpu")
    torch.save(head.state_dict(), tmp_path / "pickle.pt")
    with pytest.raises(ck.CheckpointError, match="is not a readable safetensors file"):
        ciap.load_ciap(tmp_path / "pickle.pt", "cpu")
    with pytest.raises(ck.CheckpointError, match="CIAP checkpoint not found"):
        ciap.load_ciap(tmp_path / "nope.safetensors", "cpu")


# -----------------------------------------------------------------------------
# ResNet18: the registry entry and its checks


def test_the_registry_entry_is_torchvisions_published_file():
    from torchvision.models import ResNet18_Weights
    entry, published = ck.CHECKPOINTS["resnet18"], ResNet18_Weights.IMAGENET1K_V1
    assert entry.url == published.url and entry.filename == published.url.rsplit("/", 1)[1]
    assert entry.filename == f"resnet18-{entry.sha256_prefix}.pth"   # torch.hub: the name holds the hash's start
    assert entry.min_bytes == published.meta["num_params"] * 4
    assert ck.VERIFIERS["resnet18"] == "model.ciap:verify_resnet18_file"


def test_a_file_whose_hash_does_not_start_with_the_published_prefix_is_corrupt(tmp_path, monkeypatch):
    import dataclasses
    payload = b"weights" * 100
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    monkeypatch.setattr(ck, "CHECKPOINT_DIR", tmp_path)
    (tmp_path / "resnet18-f37072fd.pth").write_bytes(payload)
    entry = dataclasses.replace(ck.CHECKPOINTS["resnet18"], min_bytes=0)
    monkeypatch.setitem(ck.CHECKPOINTS, "resnet18", entry)
    with pytest.raises(ck.CheckpointError, match="corrupt \\(SHA-256 does not start with the published f37072fd\\)"):
        ck.checkpoint_path("resnet18", download=False)
    monkeypatch.setitem(ck.CHECKPOINTS, "resnet18", dataclasses.replace(entry, sha256_prefix=prefix))
    assert ck.checkpoint_path("resnet18", download=False) == tmp_path / "resnet18-f37072fd.pth"


def test_verify_reads_the_file_weights_only_and_checks_every_key(tmp_path):
    real = tmp_path / "real.pth"
    torch.save(ciap.build_resnet18().state_dict(), real)
    # 62 parameters and 3 buffers in each of the 20 BatchNorms
    assert "122 tensors fit torchvision's ResNet18" in ciap.verify_resnet18_file(real)
    tiny = tmp_path / "tiny.pth"
    torch.save(ciap.tiny_resnet18().state_dict(), tiny)
    with pytest.raises(ck.CheckpointError, match="does not fit torchvision's ResNet18: .*missing key"):
        ciap.verify_resnet18_file(tiny)
    marker = tmp_path / "ran"
    torch.save({"conv1.weight": RunsCode(marker)}, tmp_path / "code.pth")   # a pickle that runs a command
    with pytest.raises(ck.CheckpointError, match="unsupported global"):
        ciap.verify_resnet18_file(tmp_path / "code.pth")
    assert not marker.exists()


def test_the_resnet_encoder_reads_pixels_through_the_backbone(tmp_path):
    backbone = ciap.tiny_resnet18(seed=1)
    torch.manual_seed(0)
    model = ciap.CIAP("resnet18", "clap", hidden_dim=16)
    path = ciap.save_ciap(tmp_path / "r.safetensors", model, meta_of(model, image_model=ciap.tiny_resnet_name(1)))
    with pytest.raises(ck.CheckpointError, match="pass that backbone"):   # a tiny twin's head on ImageNet weights
        ciap.load_ciap(path, "cpu", encoder="resnet18")
    loaded = ciap.load_ciap(path, "cpu", encoder="resnet18", backbone=ciap.tiny_resnet18(seed=1))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        backbone.fc = torch.nn.Identity()
        torch.testing.assert_close(loaded(x), model.image_head(backbone(x)), atol=1e-6, rtol=0)


def test_mel_statistics_tell_pitches_apart():
    t = np.arange(16000) / 16000
    low, high = (ciap.mel_statistics(np.sin(2 * np.pi * f * t), 16000) for f in (300, 3000))
    assert low.shape == (ciap.SCRATCH_AUDIO_DIM,)
    assert int(low[:ciap.MEL_BANDS].argmax()) < int(high[:ciap.MEL_BANDS].argmax())   # the loudest band moves up
    again = ciap.mel_statistics(np.sin(2 * np.pi * 300 * np.arange(48000) / 48000), 48000)
    torch.testing.assert_close(again, low, atol=0.02, rtol=0)                  # any rate is resampled to 16 kHz
