"""AudioLDM from CLAP embeddings (model/aldm.py), on a tiny random-weight AudioLDMPipeline.

The tiny pipeline is the real diffusers class with small random components, so every test below runs the
real denoising loop, VAE decoder and HiFi-GAN vocoder; only durations and step counts are kept short.
"""

import numpy as np
import pytest
import soundfile as sf
import torch

from model import aldm
from model.checkpoints import CheckpointError

FAST = dict(duration=0.25, steps=3)   # 4000 samples, 3 DDIM steps: a fraction of a second on a CPU
N_FAST = 4000

# Batch-dependent numerics: float32 conv/matmul kernels block a batch of 3 differently from a batch of 1, so
# the same row can differ in the last bits, and 3 DDIM steps plus the vocoder grow that to ~3e-6 here.
# Different embeddings change the audio by > 1e-2, so 1e-4 is far above noise and far below a real effect.
BATCH_ATOL = 1e-4
MIN_EFFECT = 1e-3


@pytest.fixture(scope="module")
def pipe():
    return aldm.tiny_audioldm(seed=0)


@pytest.fixture(scope="module")
def claps():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(3, aldm.CLAP_DIM, generator=gen)


@pytest.fixture(scope="module")
def audio_3(pipe, claps):
    """The three embeddings in one batch, default seed: the reference most tests compare against."""
    return aldm.emb_to_audio(pipe, claps, **FAST)


def max_diff(a, b):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


# -----------------------------------------------------------------------------
# the tiny pipeline

def test_tiny_pipeline_is_a_real_audioldm_with_the_real_interface(pipe):
    from diffusers import AudioLDMPipeline, DDIMScheduler

    assert isinstance(pipe, AudioLDMPipeline) and isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.text_encoder.config.projection_dim == 512
    assert pipe.unet.config.projection_class_embeddings_input_dim == 512
    assert pipe.vocoder.config.sampling_rate == 16000
    assert np.prod(pipe.vocoder.config.upsample_rates) == 160          # 100 mel frames per second
    # modules built from a config start in training mode; dropout would make the text encoder random
    for name in ("unet", "vae", "text_encoder", "vocoder"):
        assert not getattr(pipe, name).training, name


def test_tiny_pipeline_is_reproducible_from_its_seed(claps):
    a = aldm.tiny_audioldm(seed=0)
    b = aldm.tiny_audioldm(seed=0)
    c = aldm.tiny_audioldm(seed=1)
    assert torch.equal(aldm.empty_text_embedding(a), aldm.empty_text_embedding(b))
    assert not torch.equal(aldm.empty_text_embedding(a), aldm.empty_text_embedding(c))
    np.testing.assert_array_equal(aldm.emb_to_audio(a, claps[0], **FAST), aldm.emb_to_audio(b, claps[0], **FAST))


# -----------------------------------------------------------------------------
# emb_to_audio

def test_batch_output_is_float32_numpy_of_exact_length(audio_3):
    assert isinstance(audio_3, np.ndarray) and audio_3.dtype == np.float32
    assert audio_3.shape == (3, N_FAST)
    assert np.isfinite(audio_3).all()
    assert (audio_3.std(axis=1) > 1e-3).all(), "silent output: the vocoder produced nothing"


@pytest.mark.parametrize("duration, n_samples", [(0.123, 1968), (0.5, 8000), (1.01, 16160)])
def test_length_is_duration_times_16k_for_any_duration(pipe, claps, duration, n_samples):
    audio = aldm.emb_to_audio(pipe, claps[0], duration=duration, steps=1)
    assert audio.shape == (1, n_samples) and np.isfinite(audio).all()


def test_ten_seconds_gives_exactly_160000_samples(pipe, claps):
    # the canvas is rounded up to whole mel frames the UNet can halve; the waveform is cut back to 10 s
    assert int(aldm._canvas_seconds(pipe, 10.0) / 0.01) == 1000         # tiny UNet halves once: 1000 frames
    audio = aldm.emb_to_audio(pipe, claps[:1], duration=10.0, steps=1)
    assert audio.shape == (1, 160000) and np.isfinite(audio).all()
    assert audio[0, -1600:].std() > 1e-3, "the last 0.1 s is silent: the canvas was too short"


def test_different_embeddings_give_different_audio(audio_3):
    # all rows share the seed (same initial noise), so any difference comes from the embedding
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        assert max_diff(audio_3[i], audio_3[j]) > MIN_EFFECT, (i, j)


def test_same_seed_gives_identical_audio_and_another_seed_does_not(pipe, claps, audio_3):
    np.testing.assert_array_equal(aldm.emb_to_audio(pipe, claps, **FAST), audio_3)
    np.testing.assert_array_equal(aldm.emb_to_audio(pipe, claps, seed=[42, 42, 42], **FAST), audio_3)
    other = aldm.emb_to_audio(pipe, claps, seed=7, **FAST)
    assert all(max_diff(other[i], audio_3[i]) > MIN_EFFECT for i in range(3))


def test_generation_does_not_touch_the_global_torch_rng(pipe, claps):
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    aldm.emb_to_audio(pipe, claps[0], **FAST)
    assert torch.equal(torch.rand(4), expected)


def test_row_does_not_depend_on_its_batch_mates(pipe, claps, audio_3):
    alone = aldm.emb_to_audio(pipe, claps[1], **FAST)
    np.testing.assert_allclose(alone[0], audio_3[1], rtol=0, atol=BATCH_ATOL)
    # a per-row seed list: row 2 with seed 5 matches embedding 2 alone with seed 5
    mixed = aldm.emb_to_audio(pipe, claps, seed=[1, 3, 5], **FAST)
    alone = aldm.emb_to_audio(pipe, claps[2], seed=5, **FAST)
    np.testing.assert_allclose(mixed[2], alone[0], rtol=0, atol=BATCH_ATOL)


def test_embeddings_are_l2_normalised(pipe, claps):
    base = aldm.emb_to_audio(pipe, claps[0], **FAST)
    scaled = aldm.emb_to_audio(pipe, 3 * claps[0], **FAST)
    # without normalisation the class embedding would be 3x larger and the audio change by > MIN_EFFECT
    np.testing.assert_allclose(scaled, base, rtol=0, atol=1e-5)
    # numpy float64 input and a [1, 512] batch mean the same thing as a torch [512] vector
    as_numpy = aldm.emb_to_audio(pipe, 0.5 * claps[:1].double().numpy(), **FAST)
    np.testing.assert_allclose(as_numpy, base, rtol=0, atol=1e-5)


def test_negative_embedding_is_the_empty_text_by_default_and_matters(pipe, claps, audio_3):
    explicit = aldm.emb_to_audio(pipe, claps, negative_embs=aldm.empty_text_embedding(pipe), **FAST)
    np.testing.assert_allclose(explicit, audio_3, rtol=0, atol=1e-5)
    other = aldm.emb_to_audio(pipe, claps, negative_embs=claps[[1, 2, 0]], **FAST)
    assert all(max_diff(other[i], audio_3[i]) > MIN_EFFECT for i in range(3))


def _with_row(claps, row, value):
    out = claps.clone()
    out[1] = value
    return out


@pytest.mark.parametrize("make, kwargs, error, match", [
    (lambda c: c[:, :511], {}, ValueError, r"shape \[B, 512\].*\(3, 511\)"),
    (lambda c: c[None], {}, ValueError, r"\(1, 3, 512\)"),
    (lambda c: c[:0], {}, ValueError, r"\(0, 512\)"),
    (lambda c: _with_row(c, 1, float("nan")), {}, ValueError, r"rows \[1\] contain NaN"),
    (lambda c: _with_row(c, 1, float("inf")), {}, ValueError, r"rows \[1\] contain NaN or inf"),
    (lambda c: _with_row(c, 1, 0.0), {}, ValueError, r"rows \[1\] are all zeros"),
    (lambda c: c.tolist(), {}, TypeError, r"torch.Tensor or numpy array"),
    (lambda c: c, dict(steps=0), ValueError, r"steps must be a positive integer, got 0"),
    (lambda c: c, dict(steps=2.5), ValueError, r"steps must be a positive integer, got 2.5"),
    (lambda c: c, dict(duration=0), ValueError, r"duration must be a positive.*got 0"),
    (lambda c: c, dict(duration=-1.0), ValueError, r"duration must be a positive"),
    (lambda c: c, dict(duration=float("nan")), ValueError, r"duration must be a positive"),
    (lambda c: c, dict(duration=float("inf")), ValueError, r"duration must be a positive.*finite"),
    (lambda c: c, dict(seed=[1, 2]), ValueError, r"one int per embedding \(3\), got 2 seeds"),
    (lambda c: c, dict(negative_embs=torch.ones(2, 512)), ValueError, r"negative_embs has 2 rows.*3"),
    (lambda c: c, dict(negative_embs=torch.zeros(512)), ValueError, r"negative_embs rows \[0\] are all zeros"),
])
def test_bad_inputs_raise_clear_errors(pipe, claps, make, kwargs, error, match):
    with pytest.raises(error, match=match):
        aldm.emb_to_audio(pipe, make(claps), **{**FAST, **kwargs})


# -----------------------------------------------------------------------------
# empty-text embedding and tokenizer check

def test_empty_text_embedding_is_a_cached_unit_vector(pipe):
    emb = aldm.empty_text_embedding(pipe)
    assert emb.shape == (512,) and emb.dtype == torch.float32 and emb.device.type == "cpu"
    assert abs(float(emb.norm()) - 1.0) < 1e-5
    assert aldm.empty_text_embedding(pipe) is emb        # computed once per pipe
    # and it is the text encoder's embedding of '', not something else of unit length
    tokens = pipe.tokenizer([""], padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        direct = pipe.text_encoder(tokens.input_ids, attention_mask=tokens.attention_mask).text_embeds[0]
    torch.testing.assert_close(emb, direct / direct.norm())


def test_check_tokenizer_accepts_the_tiny_byte_level_bpe(pipe):
    assert aldm.check_tokenizer(pipe.tokenizer, pipe.text_encoder) is pipe.tokenizer
    assert len(pipe.tokenizer) >= 257


def test_check_tokenizer_rejects_a_tokenizer_of_special_tokens_only():
    from transformers import RobertaTokenizer

    # what transformers 5 builds offline from a folder without vocab.json / merges.txt: no error, 5 tokens
    broken = RobertaTokenizer(vocab={"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}, merges=[])
    with pytest.raises(CheckpointError) as err:
        aldm.check_tokenizer(broken)
    msg = str(err.value)
    assert "only 5 entries" in msg and "both encode to" in msg
    assert "cvssp/audioldm-s-full-v2" in msg and "python -m model.checkpoints audioldm" in msg


def test_check_tokenizer_rejects_a_tokenizer_that_does_not_fit_the_text_encoder(pipe):
    from transformers import ClapTextConfig, ClapTextModelWithProjection

    big = ClapTextModelWithProjection(ClapTextConfig(
        vocab_size=1000, hidden_size=8, intermediate_size=8, num_attention_heads=2, num_hidden_layers=1,
        projection_dim=512))
    with pytest.raises(CheckpointError, match=r"text encoder embeds 1000 token ids"):
        aldm.check_tokenizer(pipe.tokenizer, big)


# -----------------------------------------------------------------------------
# load_audioldm (offline, against a Hugging Face cache in tmp_path)

@pytest.fixture
def hf_cache(tmp_path, monkeypatch, net_attempts):
    """An empty Hugging Face cache in tmp_path, a fresh loader cache, and a record of network attempts.

    huggingface_hub reads HF_HUB_CACHE into huggingface_hub.constants at import, so the environment
    alone would not move it once transformers/diffusers are imported; the constant is patched too.
    """
    import huggingface_hub.constants as hf_constants

    hub = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hub))

    aldm._load_audioldm.cache_clear()
    yield hub, net_attempts
    aldm._load_audioldm.cache_clear()   # a pipe loaded from tmp_path must not outlive the test


def test_load_audioldm_without_a_local_copy_names_repo_and_fix(hf_cache):
    hub, attempts = hf_cache
    with pytest.raises(CheckpointError) as err:
        aldm.load_audioldm("cpu")
    msg = str(err.value)
    assert "cvssp/audioldm-s-full-v2" in msg
    assert "python -m model.checkpoints audioldm" in msg
    assert str(hub) in msg, "the message must say where it looked"
    assert attempts == [], f"load_audioldm tried the network offline: {attempts}"


def _fake_snapshot(hub, pipe):
    """Write pipe into the cache layout snapshot_download finds offline: refs/main -> snapshots/<commit>."""
    commit = "0" * 40
    repo = hub / "models--cvssp--audioldm-s-full-v2"
    pipe.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


def test_load_audioldm_from_a_local_copy_loads_once_and_checks_the_tokenizer(hf_cache, pipe, claps):
    from diffusers import DDIMScheduler

    hub, attempts = hf_cache
    folder = _fake_snapshot(hub, pipe)
    loaded = aldm.load_audioldm("cpu")
    assert aldm.load_audioldm("cpu") is loaded                    # cached per process and device
    assert isinstance(loaded.scheduler, DDIMScheduler) and loaded.unet.dtype == torch.float32
    # the same weights and scheduler give the same audio as the pipeline they were saved from
    np.testing.assert_array_equal(aldm.emb_to_audio(loaded, claps[0], **FAST),
                                  aldm.emb_to_audio(pipe, claps[0], **FAST))

    # a local copy without tokenizer files must fail loudly instead of running on 5 special tokens
    for f in (folder / "tokenizer").iterdir():
        if f.name in ("vocab.json", "merges.txt", "tokenizer.json"):
            f.unlink()
    aldm._load_audioldm.cache_clear()
    with pytest.raises(CheckpointError, match=r"lacks tokenizer/tokenizer.json"):
        aldm.load_audioldm("cpu")
    assert attempts == []


# -----------------------------------------------------------------------------
# save_wav

def test_save_wav_writes_16_bit_pcm_at_16k(tmp_path, audio_3):
    path = aldm.save_wav(tmp_path / "sub" / "a.wav", audio_3[0])
    assert path == tmp_path / "sub" / "a.wav"
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, N_FAST, "PCM_16")
    back, rate = sf.read(str(path), dtype="float32")
    assert rate == 16000 and back.shape == (N_FAST,)
    assert max_diff(back, audio_3[0]) <= 1.0 / 32767     # one 16-bit step
    # a [1, n] row is accepted as mono
    aldm.save_wav(tmp_path / "b.wav", audio_3[:1])
    assert sf.info(str(tmp_path / "b.wav")).frames == N_FAST


def test_save_wav_clips_instead_of_wrapping(tmp_path):
    path = aldm.save_wav(tmp_path / "loud.wav", np.array([1.5, -1.5, 0.5], np.float32))
    back, _ = sf.read(str(path), dtype="int16")
    assert back.tolist() == [32767, -32768, 16384]


def test_save_wav_never_overwrites(tmp_path):
    path = tmp_path / "a.wav"
    aldm.save_wav(path, np.zeros(100, np.float32))
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match=r"a\.wav already exists"):
        aldm.save_wav(path, np.ones(200, np.float32) * 0.5)
    assert path.read_bytes() == before
    aldm.save_wav(path, np.ones(200, np.float32) * 0.5, overwrite=True)
    assert sf.info(str(path)).frames == 200


@pytest.mark.parametrize("audio, match", [
    (np.array([0.0, np.nan, 0.1], np.float32), "NaN or inf"),
    (np.array([0.0, np.inf], np.float32), "NaN or inf"),
    (np.zeros((2, 100), np.float32), r"mono waveform.*\(2, 100\)"),
    (np.zeros((1, 2, 100), np.float32), r"\(1, 2, 100\)"),
    (np.zeros(0, np.float32), r"\(0,\)"),
])
def test_save_wav_rejects_bad_audio_without_writing(tmp_path, audio, match):
    with pytest.raises(ValueError, match=match):
        aldm.save_wav(tmp_path / "bad.wav", audio)
    assert not (tmp_path / "bad.wav").exists()


# -----------------------------------------------------------------------------
# samplers and the vocoder

@pytest.mark.parametrize("sampler", list(aldm.SAMPLERS))
def test_every_sampler_is_seeded_row_independent_and_keeps_the_repos_schedule(pipe, claps, sampler):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
    a = aldm.emb_to_audio(pipe, claps, sampler=sampler, seed=[1, 2, 3], **FAST)
    assert a.shape == (3, N_FAST) and np.isfinite(a).all()
    assert max_diff(a, aldm.emb_to_audio(pipe, claps, sampler=sampler, seed=[1, 2, 3], **FAST)) == 0
    alone = aldm.emb_to_audio(pipe, claps[1:2], sampler=sampler, seed=[2], **FAST)
    assert max_diff(alone[0], a[1]) <= BATCH_ATOL
    cls, options, steps, _ = aldm.SAMPLERS[sampler]
    assert type(pipe.scheduler) is {"DDIMScheduler": DDIMScheduler,
                                     "DPMSolverMultistepScheduler": DPMSolverMultistepScheduler}[cls]
    config = pipe.scheduler.config   # from_config of the pipeline's own schedule: its betas and offset
    assert (config.beta_start, config.beta_end, config.beta_schedule, config.steps_offset) == \
        (0.0015, 0.0195, "scaled_linear", 1)
    assert all(config[k] == v for k, v in options.items()) and aldm.default_steps(sampler) == steps
    aldm.use_sampler(pipe, "ddim")


def test_samplers_differ_and_an_unknown_one_is_refused(pipe, claps):
    ddim = aldm.emb_to_audio(pipe, claps[:1], sampler="ddim", eta=0.0, **FAST)
    dpm = aldm.emb_to_audio(pipe, claps[:1], sampler="dpmpp-2m", **FAST)
    assert max_diff(ddim, dpm) > MIN_EFFECT
    with pytest.raises(ValueError, match="not one of ddim, dpmpp-2m, dpmpp-2m-sde"):
        aldm.emb_to_audio(pipe, claps[:1], sampler="euler", **FAST)


def test_latent_output_is_the_final_latent_before_the_vae(pipe, claps):
    latent = aldm.emb_to_audio(pipe, claps[:2], output="latent", seed=[5, 6], **FAST)
    assert latent.dtype == torch.float32 and latent.shape[:2] == (2, pipe.unet.config.in_channels)
    with torch.no_grad():
        audio = pipe.mel_spectrogram_to_waveform(pipe.decode_latents(latent)).numpy()[:, :N_FAST]
    assert max_diff(audio, aldm.emb_to_audio(pipe, claps[:2], seed=[5, 6], **FAST)) <= BATCH_ATOL


def test_the_vocoder_one_row_at_a_time_gives_the_batched_audio(pipe, claps, monkeypatch):
    monkeypatch.setitem(aldm.VOCODER_ONE_ROW_AT_A_TIME, "cpu", False)
    batched = aldm.emb_to_audio(pipe, claps, **FAST)
    monkeypatch.setitem(aldm.VOCODER_ONE_ROW_AT_A_TIME, "cpu", True)
    rows = aldm.emb_to_audio(pipe, claps, **FAST)
    assert max_diff(batched, rows) <= BATCH_ATOL
    assert "mel_spectrogram_to_waveform" not in vars(pipe)    # the pipeline is left as it was
