"""Editing a recording with AudioLDM (model/edit.py), on the tiny random-weight AudioLDMPipeline.

The front end is checked against an independent computation written here (librosa's mel filters and
torch.stft with AudioLDM's published parameters); edit-friendly DDPM inversion must give z_0 back when it
regenerates under the source conditioning and guidance, and its x_t must be independent draws (a copy of the
module that draws one noise for all levels must fail that check); DDIM inversion must converge where the
noise predictor is exact; each row's noise must be its own seed's.
"""
import math
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_main_wiring import mutant

from model import aldm, edit

SR = 16000
STEPS = 8
GUIDANCE = 2.5


@pytest.fixture(scope="module")
def pipe():
    return aldm.tiny_audioldm(seed=0)


@pytest.fixture(scope="module")
def pipe64():
    return aldm.tiny_audioldm(seed=0).to(dtype=torch.float64)


def tone(seconds=0.5, sr=SR, seed=0):
    """A decaying tone burst with noise: a sound with onsets and a spectrum."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    return 0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-6 * (t % 0.25)) + 0.02 * rng.standard_normal(len(t)) + 0.1


def unit_latents(batch, pipe, seconds=0.5, seed=0):
    """Latents of unit variance, as the real VAE's scaled latents are (the tiny VAE's are ~0.04)."""
    frames = edit.canvas_frames(pipe, seconds)
    shape = (batch, pipe.vae.config.latent_channels, frames // pipe.vae_scale_factor,
             pipe.vocoder.config.model_in_dim // pipe.vae_scale_factor)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def clap(n, seed):
    return torch.randn(n, aldm.CLAP_DIM, generator=torch.Generator().manual_seed(seed))


# -----------------------------------------------------------------------------
# the front end

def reference_waveform(wave, n):
    """AudioLDM's data loader (audioldm/audio/tools.py read_wav_file), written out."""
    w = np.asarray(wave, dtype=np.float64)
    w = w - w.mean()
    w = 0.5 * w / (np.abs(w).max() + 1e-8)
    w = np.concatenate([w, np.zeros(max(0, n - len(w)))])[:n]
    return 0.5 * w / np.abs(w).max()


def reference_log_mel(wave, n_mels=64, frames=None):
    import librosa
    basis = torch.from_numpy(librosa.filters.mel(sr=SR, n_fft=1024, n_mels=n_mels, fmin=0.0, fmax=8000.0))
    spec = torch.stft(torch.from_numpy(np.clip(wave, -1, 1)), n_fft=1024, hop_length=160, win_length=1024,
                      window=torch.hann_window(1024, periodic=True, dtype=torch.float64), center=True,
                      pad_mode="reflect", return_complex=True).abs()
    mel = torch.log(torch.clamp(basis.double() @ spec, min=1e-5)).T.numpy()
    return mel if frames is None else mel[:frames]


def test_filterbank_is_librosas():
    import librosa
    ours = edit.mel_filters(64, SR).T
    theirs = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=64, fmin=0.0, fmax=8000.0)
    assert ours.shape == theirs.shape == (64, 513)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-8)


def test_log_mel_is_audioldms_front_end():
    wave = reference_waveform(tone(1.0), 16000)
    ours = edit.audioldm_log_mel(wave, 64, SR, frames=100)
    ref = reference_log_mel(wave, 64, frames=100)
    assert ours.shape == (100, 64)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert ours.min() >= math.log(1e-5) - 1e-6   # the clamp
    # a different hop or window would not match
    assert np.abs(edit.audioldm_log_mel(wave[80:], 64, SR, frames=100) - ref).max() > 0.1


def test_waveform_normalised_as_audioldms_loader():
    w = tone(0.3) * 3.0
    out = edit.audioldm_waveform(w, 8000)
    np.testing.assert_allclose(out, reference_waveform(w, 8000), atol=1e-12)
    assert abs(np.abs(out).max() - 0.5) < 1e-12 and np.all(out[len(w):] == 0)
    with pytest.raises(ValueError, match="silent"):
        edit.audioldm_waveform(np.full(1000, 0.3), 1000)


def test_z0_has_the_shape_of_the_pipelines_own_latents(pipe):
    """The mel canvas is the one generation uses (1024 frames at 10 s for AudioLDM-S; the tiny U-Net halves
    once, so its canvas rounds 1000 frames to a multiple of 8 instead of 32)."""
    assert edit.canvas_frames(pipe, 10.0) == 1000 and edit.canvas_frames(pipe, 0.5) == 56
    z0 = edit.encode_audio(pipe, tone(0.5), 0.5)
    generated = aldm.emb_to_audio(pipe, clap(1, 1), duration=0.5, steps=1, output="latent")
    assert z0.shape == generated.shape


def test_encode_is_the_vae_mean_of_the_log_mel(pipe):
    w = tone(0.5)
    z0 = edit.encode_audio(pipe, np.stack([w, w[::-1]]), 0.5)
    frames = edit.canvas_frames(pipe, 0.5)
    assert z0.shape == (2, 8, frames // 4, pipe.vocoder.config.model_in_dim // 4)
    mel = reference_log_mel(reference_waveform(w, frames * 160), pipe.vocoder.config.model_in_dim, frames)
    with torch.no_grad():
        posterior = pipe.vae.encode(torch.from_numpy(mel).float()[None, None]).latent_dist
        ref = posterior.mean * pipe.vae.config.scaling_factor
    torch.testing.assert_close(z0[0:1], ref, atol=1e-4, rtol=1e-4)
    assert (z0[0] - z0[1]).abs().max() > 1e-3


# -----------------------------------------------------------------------------
# inversion and regeneration

@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_ddpm_inversion_gives_z0_back_under_the_source(pipe, pipe64, strength):
    z0, c_src = unit_latents(2, pipe), clap(2, 1)
    inv = edit.invert(pipe64, z0[:1], c_src[:1], strength, STEPS // 2, GUIDANCE, 42)
    back = edit.regenerate(pipe64, inv, c_src[:1])
    assert (back - z0[:1].double()).abs().max() < 1e-10   # float64: rounding only
    assert len(inv.timesteps) == round(strength * STEPS // 2)
    inv32 = edit.invert(pipe, z0, c_src, strength, STEPS, GUIDANCE, [42, 43])
    assert (edit.regenerate(pipe, inv32, c_src) - z0).abs().max() < 1e-4   # float32 rounding through the U-Net
    # a different target moves it: the edit comes from the conditioning alone
    assert (edit.regenerate(pipe, inv32, clap(2, 2)) - z0).abs().max() > 1e-2
    # the source guidance is part of the inversion: c_src with another guidance is no longer the reconstruction
    assert inv32.guidance == GUIDANCE
    assert (edit.regenerate(pipe, inv32, c_src, guidance=12.0) - z0).abs().max() > 1e-2


# -----------------------------------------------------------------------------
# edit-friendly: the x_t of different levels are independent draws

def implied_noise_problems(module, pipe, seconds=2.0):
    """What edit-friendly DDPM inversion promises of its levels, as a list of problems ([] = it holds): the noise
    each x_t implies, e_t = (x_t - sqrt(a_t) z_0) / sqrt(1 - a_t), has unit variance at every level and is
    uncorrelated between levels (an exact reconstruction holds for any x_t, so it cannot tell)."""
    z0, c_src = unit_latents(1, pipe, seconds), clap(1, 1)
    inv = module.invert(pipe, z0, c_src, 1.0, STEPS, 1.0, 42)   # the levels do not depend on the guidance
    acp = pipe.scheduler.alphas_cumprod.double()
    noises = torch.stack([((x.double() - acp[t].sqrt() * z0.double()) / (1 - acp[t]).sqrt()).flatten()
                          for t, x in zip(inv.timesteps, inv.levels)])
    n = noises.shape[1]
    problems = []
    variances = noises.var(dim=1)
    if ((variances - 1).abs() > 6 * math.sqrt(2 / n)).any():   # 6 standard errors of a variance estimate
        problems.append(f"implied noise variances {variances.numpy().round(3)} are not 1")
    corr = torch.corrcoef(noises)
    off = (corr - torch.eye(len(corr))).abs().max()
    if off > 6 / math.sqrt(n):   # 6 standard errors of a correlation of independent draws
        problems.append(f"implied noises of different levels correlate up to {float(off):.3f} ({n} elements)")
    return problems


def test_ddpm_inversion_draws_each_level_independently(pipe):
    assert implied_noise_problems(edit, pipe) == []
    broken = mutant(("draws = [randn() for _ in timesteps]", "draws = [randn()] * len(timesteps)"), "model/edit.py")
    try:   # one draw for every level: still an exact reconstruction, no longer edit-friendly
        assert any("correlate" in p for p in implied_noise_problems(broken, pipe))
        z0, c_src = unit_latents(1, pipe), clap(1, 1)
        inv = broken.invert(pipe, z0, c_src, 1.0, STEPS, 1.0, 42)
        assert (broken.regenerate(pipe, inv, c_src) - z0).abs().max() < 1e-4
    finally:
        sys.modules.pop("edit_mutant", None)


# -----------------------------------------------------------------------------
# DDIM inversion where it must converge: the exact noise predictor of Gaussian data

class GaussianDataNoise(torch.nn.Module):
    """The exact noise prediction E[e | x_t] for data z_0 ~ N(mu, s^2 I): sqrt(1 - a) (x - sqrt(a) mu) /
    (a s^2 + 1 - a). Its probability-flow ODE is smooth, so DDIM inversion then DDIM regeneration must come back
    to z_0, with an error of first order in the step size. Called as AudioLDM's U-Net is (it ignores the CLAP)."""

    def __init__(self, alphas_cumprod, mu=0.3, s=0.5):
        super().__init__()
        self.acp, self.mu, self.s = alphas_cumprod.double(), mu, s
        self.anchor = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64), requires_grad=False)

    def forward(self, x, t, encoder_hidden_states=None, class_labels=None):
        a = float(self.acp[int(t)])
        return SimpleNamespace(sample=math.sqrt(1 - a) * (x - math.sqrt(a) * self.mu) / (a * self.s ** 2 + 1 - a))

    @property
    def device(self):
        return self.anchor.device

    @property
    def dtype(self):
        return self.anchor.dtype


class LevelOnlyNoise(GaussianDataNoise):
    """A noise prediction that depends on the level alone, not on x_t: a DDIM step is then an affine map of x_t
    that the inverse step undoes exactly, provided the inversion climbs exactly the levels regeneration walks down."""

    def forward(self, x, t, encoder_hidden_states=None, class_labels=None):
        return SimpleNamespace(sample=torch.full_like(x, 0.2) + int(t) / 1000.0)


def test_ddim_inversion_converges_where_the_noise_predictor_is_exact():
    gaussian = aldm.tiny_audioldm(seed=0).to(dtype=torch.float64)
    z0 = 0.3 + 0.5 * unit_latents(1, gaussian, seed=3).double()   # a draw of the data the predictor is exact for
    acp = gaussian.scheduler.alphas_cumprod
    c_src = clap(1, 1)

    def error(steps, predictor=GaussianDataNoise):
        gaussian.unet = predictor(acp)
        inv = edit.invert(gaussian, z0, c_src, 0.5, steps, 1.0, 42, "ddim-inversion")
        return float((edit.regenerate(gaussian, inv, c_src) - z0).norm() / z0.norm())

    assert error(10, LevelOnlyNoise) < 1e-12   # exact (float64), whatever the step count
    e50, e100, e200 = error(50), error(100), error(200)
    assert e200 < 0.015                        # the bound (measured 0.0097)
    assert 1.7 < e50 / e100 < 2.4 and 1.7 < e100 / e200 < 2.4   # first order: half the step, half the error


def test_each_row_has_its_own_seeds_noise(pipe):
    z0, c_src = unit_latents(2, pipe), clap(2, 1)
    both = edit.invert(pipe, z0, c_src, 1.0, STEPS, GUIDANCE, [42, 43])
    alone = edit.invert(pipe, z0[1:], c_src[1:], 1.0, STEPS, GUIDANCE, 43)
    torch.testing.assert_close(both.x_start[1:], alone.x_start, atol=1e-4, rtol=0)
    torch.testing.assert_close(both.noise_maps[-1][1:], alone.noise_maps[-1], atol=1e-3, rtol=0)
    assert (both.x_start[0] - both.x_start[1]).abs().max() > 0.1
    # the wrong seed's noise maps do not give z_0 back
    swapped = edit.Inversion(both.method, both.timesteps, both.x_start, both.guidance, both.steps,
                             [n.flip(0) for n in both.noise_maps])
    assert (edit.regenerate(pipe, swapped, c_src) - z0).abs().max() > 0.1


def test_ddim_inversion_runs_the_inverse_schedule(pipe):
    """DDIM inversion then DDIM (eta 0) under the same conditioning: deterministic, and on the tiny random U-Net
    its error is measured, not bounded (random weights make the probability flow stiff; see the benchmark)."""
    z0, c_src = unit_latents(1, pipe), clap(1, 1)
    inv = edit.invert(pipe, z0, c_src, 0.5, STEPS, GUIDANCE, 42, "ddim-inversion")
    assert inv.noise_maps == [] and len(inv.timesteps) == STEPS // 2
    # the inversion climbs exactly the noise levels that the regeneration then walks down
    from diffusers import DDIMInverseScheduler
    inverse = DDIMInverseScheduler.from_config(pipe.scheduler.config)
    inverse.set_timesteps(STEPS)
    assert [int(t) for t in inverse.timesteps[:STEPS // 2]][::-1] == inv.timesteps
    again = edit.invert(pipe, z0, c_src, 0.5, STEPS, GUIDANCE, 7, "ddim-inversion")
    assert torch.equal(inv.x_start, again.x_start)   # no noise: the seed does not matter
    assert torch.isfinite(edit.regenerate(pipe, inv, c_src)).all()


def test_sdedit_starts_from_the_seeds_noise_at_the_strengths_level(pipe):
    z0, c_src = unit_latents(1, pipe), clap(1, 1)
    inv = edit.invert(pipe, z0, c_src, 0.25, STEPS, GUIDANCE, 42, "sdedit")
    t = inv.timesteps[0]
    a = float(pipe.scheduler.alphas_cumprod[t])
    noise = torch.randn(z0.shape[1:], generator=torch.Generator().manual_seed(42))
    torch.testing.assert_close(inv.x_start[0], math.sqrt(a) * z0[0] + math.sqrt(1 - a) * noise, atol=1e-5, rtol=0)
    assert t == edit._schedule(pipe, 0.25, STEPS)[1][0] and len(inv.timesteps) == 2


@pytest.mark.parametrize("strength", [0.0, -0.1, 1.5, float("nan")])
def test_strength_outside_0_1_is_refused(pipe, strength):
    with pytest.raises(ValueError, match="strength"):
        edit.invert(pipe, unit_latents(1, pipe), clap(1, 1), strength, STEPS, GUIDANCE, 42)


def test_unknown_method_is_refused(pipe):
    with pytest.raises(ValueError, match="ddpm-inversion"):
        edit.invert(pipe, unit_latents(1, pipe), clap(1, 1), 0.5, STEPS, GUIDANCE, 42, "ddpm")


def test_edit_audio_end_to_end(pipe):
    w = tone(0.5)
    out = edit.edit_audio(pipe, np.stack([w, w]), clap(2, 1), [clap(2, 2), clap(2, 3)], 0.5, 0.5, STEPS,
                          3.0, 12.0, [42, 43])
    assert out.shape == (3, 2, 8000) and np.isfinite(out).all()
    assert np.abs(out[1] - out[2]).max() > 1e-4   # two targets, two audios
    # row 0 is the reconstruction: A_0 through the VAE and vocoder alone (DDPM inversion gives z_0 back)
    z0 = edit.encode_audio(pipe, np.stack([w, w]), 0.5)
    np.testing.assert_allclose(out[0], edit.latents_to_audio(pipe, z0, 0.5), atol=1e-4)
    assert np.abs(out[0] - out[1]).max() > 1e-4
