"""The SSV2A entry points end to end with tiny random-weight models of every real architecture."""
import numpy as np
import pytest
import torch
from PIL import Image

import util
from model.aldm import tiny_audioldm
from model.detect import tiny_yolo
from model.pipeline import image_to_audio, manipulated_image_to_audio, slots_to_audio, tiny_ssv2a

ORIGINAL, EDITED = "images/original.jpg", "images/edited.jpg"
FAST = dict(its=1, samples=3, var_samples=2, duration=0.5, steps=2, guidance=2.5, seed=7)


@pytest.fixture(scope="module")
def models():
    clip_model, preprocess = util.tiny_clip()
    return dict(model=tiny_ssv2a(), aldm=tiny_audioldm(), yolo=tiny_yolo(class_bias=0.0), clip_model=clip_model,
                preprocess=preprocess)


@pytest.fixture(scope="module")
def baselines(models):
    return image_to_audio([ORIGINAL, EDITED], **models, **FAST)


def test_image_to_audio_shapes_and_slots(baselines, models):
    assert baselines["audio"].shape == (2, 8000) and baselines["audio"].dtype == np.float32
    assert np.isfinite(baselines["audio"]).all()
    assert baselines["claps"].shape == (2, 512)
    assert torch.allclose(baselines["claps"].norm(dim=-1), torch.ones(2), atol=1e-5)
    slots = baselines["slots"]
    assert slots.shape == (2, 64, 768)
    own = util.clip_image_embeddings([ORIGINAL, EDITED], model=models["clip_model"], preprocess=models["preprocess"])
    assert torch.allclose(slots[:, 0], own, atol=1e-6)         # slot 0 = each image's own CLIP
    for b, dets in enumerate(baselines["detections"]):
        assert len(dets) > 0                                    # the biased tiny detector finds boxes
        assert (slots[b, 1:1 + len(dets)].norm(dim=-1) > 0.99).all()
        assert (slots[b, 1 + len(dets):] == 0).all()


def test_a_row_does_not_depend_on_its_batch_mates(baselines, models):
    alone = image_to_audio([EDITED], **models, **FAST)
    assert torch.allclose(alone["claps"][0], baselines["claps"][1], atol=1e-5)
    # float32 kernels split a batch of 2 and a batch of 1 differently: ~3e-6 apart (tests/test_model_aldm.py)
    np.testing.assert_allclose(alone["audio"][0], baselines["audio"][1], atol=1e-4)


def test_manipulated_with_the_plain_embedding_reproduces_the_baseline(baselines, models):
    # injecting I_1's own CLIP embedding must give exactly SSV2A's audio of I_1: the injection is the only change
    plain = baselines["slots"][1, 0]
    same = manipulated_image_to_audio(EDITED, plain, **models, **FAST)
    assert torch.equal(same["slots"][0], baselines["slots"][1])
    np.testing.assert_allclose(same["audio"][0], baselines["audio"][1], atol=1e-4)

    other = torch.nn.functional.normalize(torch.randn(768, generator=torch.Generator().manual_seed(0)), dim=0)
    changed = manipulated_image_to_audio(EDITED, other, **models, **FAST)
    assert torch.equal(changed["slots"][0, 0], other)
    assert torch.equal(changed["slots"][0, 1:], baselines["slots"][1, 1:])   # crops kept
    assert not torch.allclose(changed["claps"][0], baselines["claps"][1], atol=1e-4)
    # both batches of one, so equal inputs would give bit-equal audio; the tiny random SSV2A moves its CLAP
    # little with slot 0 (~7e-5 in the audio), which is still far from 0
    assert not np.array_equal(changed["audio"][0], same["audio"][0])
    assert np.abs(changed["audio"][0] - same["audio"][0]).max() > 1e-5


def test_zero_detections_run_on_the_global_slot_alone(models):
    # ultralytics' class prior keeps a random detector quiet on a plain image: nothing above conf 0.25
    silent = dict(models, yolo=tiny_yolo())
    out = image_to_audio([Image.new("RGB", (320, 240), (128, 128, 128))], **silent, **FAST)
    assert out["detections"] == [[]]
    assert (out["slots"][0, 1:] == 0).all()
    assert np.isfinite(out["audio"]).all() and out["audio"].shape == (1, 8000)


def test_same_seed_same_audio_other_seed_other_audio(baselines, models):
    slots = baselines["slots"][:1]
    kw = {k: v for k, v in FAST.items() if k != "seed"}
    a, _ = slots_to_audio(slots, models["model"], models["aldm"], seed=3, **kw)
    b, _ = slots_to_audio(slots, models["model"], models["aldm"], seed=3, **kw)
    c, _ = slots_to_audio(slots, models["model"], models["aldm"], seed=4, **kw)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-4


def test_manipulated_rejects_a_batch_or_a_wrong_shape(models):
    with pytest.raises(ValueError, match="one CLIP embedding"):
        manipulated_image_to_audio(EDITED, torch.zeros(2, 768), **models, **FAST)
    with pytest.raises(ValueError, match="one image"):
        manipulated_image_to_audio([EDITED, EDITED], torch.zeros(768), **models, **FAST)
