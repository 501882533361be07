"""Edit a sound you already have: invert a recording into AudioLDM's latent space, regenerate it under new CLAPs.

The training-free half of DeltaV2A (../shared/spec/related/deltav2a.md): given A_0 and the CLAP embeddings of
I_0 (c_src) and of the edited I_1 (c_tgt), re-run the last EDIT_STRENGTH of AudioLDM's schedule from A_0's
own latent so that timing and energy stay and the sound follows the edit. Three methods:

- 'ddpm-inversion': edit-friendly DDPM inversion (Huberman-Spiegelglas et al., CVPR 2024; the audio editor
  ZETA, Manor & Michaeli, ICML 2024). Each noisy latent x_t = sqrt(a_t) z_0 + sqrt(1 - a_t) e_t is drawn with
  its own independent e_t (so the x_t of different levels are not one trajectory: that is what makes the noise
  maps carry A_0's structure); the noise maps z_t = (x_{t-1} - mu_t(x_t, c_src)) / sigma_t are stored, under
  c_src with the source guidance; regenerating with them under c_src and that guidance gives z_0 back exactly
  (to float rounding), so every change comes from c_tgt (and the target guidance).
  The last noise map (the step to level 0) is not noise: sigma_t is small there and z_t is A_0's residual,
  z_0 - mu(x_1, c_src), over sigma_t. It is what makes the reconstruction exact, and under c_tgt it adds that
  same residual (the fine detail of A_0 the last denoising step did not predict under c_src) to every edit.
  ZETA's published code sets it to zero (its last step is the plain mean); we keep it, so that `reconstructed`
  is exactly A_0 through the VAE and vocoder.
- 'ddim-inversion': deterministic DDIM run backwards (diffusers' DDIMInverseScheduler) under c_src, then DDIM
  (eta 0) forwards. Only approximately invertible: exact in the limit of many steps for a smooth noise
  predictor. Run unguided by default (guidance 1): guided DDIM inversion drifts, because the guided prediction
  is not the one the forward pass will reproduce (the reason null-text inversion exists).
- 'sdedit': noise z_0 to the strength's level with the seed's noise and denoise under c_tgt (AudioLDM's own
  "style transfer"); keeps less of A_0 at the same strength.

Guidance differs by direction (ZETA's defaults: 3 under c_src, 12 under c_tgt): `invert` takes the source
guidance and keeps it in the Inversion; `regenerate` uses it unless given a target guidance. `edit_audio`
returns the `reconstructed` row (regenerated under c_src with the source guidance and the same noise) before
the edits: what an edit is judged against, since it holds everything but the edit (the VAE and vocoder round
trip, and for the approximate methods their own error).

The front end is AudioLDM's published one (audioldm/audio/stft.py and tools.py, the configs' preprocessing
block, and diffusers' conversion script): the waveform centred and peak-normalised to 0.5 as AudioLDM's data
loader does, STFT 1024 / hop 160 / window 1024 (periodic Hann, reflect-padded), 64 Slaney mel bands 0-8 kHz on
the magnitude, natural log clamped at 1e-5, 1024 frames for 10.24 s. The tiny test pipeline reads as many
mel bands as its vocoder takes (8).

    z0 = encode_audio(pipe, wave, duration=10.0)                 # A_0 -> VAE latent [1, 8, 256, 16]
    inv = invert(pipe, z0, c_src, strength=0.6, steps=200, guidance=3.0, seed=42)
    reconstructed = latents_to_audio(pipe, regenerate(pipe, inv, c_src), duration=10.0)
    edited = latents_to_audio(pipe, regenerate(pipe, inv, c_tgt, guidance=12.0), duration=10.0)
"""
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from model.aldm import _as_unit_embeddings, _canvas_seconds, _generators, _vocoder_rows, empty_text_embedding
from model.aldm import use_sampler, VOCODER_ONE_ROW_AT_A_TIME

EDIT_METHODS = ("ddpm-inversion", "ddim-inversion", "sdedit")
# AudioLDM's STFT and mel (audioldm-s-full's preprocessing config: filter_length, hop_length, win_length,
# n_mel_channels, mel_fmin, mel_fmax) and its dynamic-range compression log(clamp(x, 1e-5))
STFT_N_FFT = 1024
STFT_HOP = 160
STFT_WIN = 1024
MEL_FMIN = 0.0
MEL_FMAX = 8000.0
LOG_CLAMP = 1e-5
PEAK = 0.5          # AudioLDM's loader scales every waveform to a peak of 0.5


def check_method(method):
    if method not in EDIT_METHODS:
        raise ValueError(f"edit method {method!r} is not one of {', '.join(EDIT_METHODS)}")
    return method


# -----------------------------------------------------------------------------
# the front end: waveform -> AudioLDM's log-mel -> VAE latent


def audioldm_waveform(wave, n_samples):
    """A waveform as AudioLDM's data loader hands it to the STFT: centred, peak 0.5, cut or zero-padded to
    n_samples, then peak 0.5 again (the loader normalises before and after padding). float64 numpy [n_samples].
    ValueError for an empty or silent wave (there is nothing to normalise)."""
    w = np.asarray(wave, dtype=np.float64).ravel()
    if w.size == 0 or not np.isfinite(w).all():
        raise ValueError(f"the waveform must be non-empty and finite, got {w.size} samples")
    w = w - w.mean()
    if np.abs(w).max() < 1e-12:   # float rounding of a constant wave minus its mean
        raise ValueError("the waveform is silent (all samples equal): AudioLDM's loader cannot normalise it")
    w = w / (np.abs(w).max() + 1e-8) * PEAK
    w = w[:n_samples] if len(w) >= n_samples else np.pad(w, (0, n_samples - len(w)))
    return w / np.abs(w).max() * PEAK


def mel_filters(n_mels, sample_rate):
    """AudioLDM's mel filterbank [n_fft // 2 + 1, n_mels]: Slaney mel scale, Slaney area normalisation, 0-8 kHz."""
    from transformers.audio_utils import mel_filter_bank
    return mel_filter_bank(num_frequency_bins=STFT_N_FFT // 2 + 1, num_mel_filters=n_mels, min_frequency=MEL_FMIN,
                           max_frequency=min(MEL_FMAX, sample_rate / 2), sampling_rate=sample_rate,
                           norm="slaney", mel_scale="slaney")


def audioldm_log_mel(wave, n_mels=64, sample_rate=16000, frames=None):
    """AudioLDM's log-mel of one already normalised waveform: float32 numpy [frames, n_mels] (time first, as
    AudioLDM's fbank). frames: cut or zero-pad to this many (AudioLDM's _pad_spec); None keeps them all."""
    from transformers.audio_utils import spectrogram, window_function
    w = np.clip(np.asarray(wave, dtype=np.float64).ravel(), -1.0, 1.0)   # the loader clips to [-1, 1]
    mag = spectrogram(w, window_function(STFT_WIN, "hann", periodic=True), frame_length=STFT_WIN,
                      hop_length=STFT_HOP, fft_length=STFT_N_FFT, power=1.0, center=True, pad_mode="reflect")
    mel = np.log(np.maximum(mel_filters(n_mels, sample_rate).T @ mag, LOG_CLAMP)).T.astype(np.float32)
    if frames is not None:
        mel = mel[:frames] if len(mel) >= frames else np.pad(mel, ((0, frames - len(mel)), (0, 0)))
    return mel


def canvas_frames(pipe, duration):
    """Mel frames of the generation canvas for duration seconds (1024 for AudioLDM-S at 10 s)."""
    hop_s = float(np.prod(pipe.vocoder.config.upsample_rates)) / pipe.vocoder.config.sampling_rate
    return int(_canvas_seconds(pipe, duration) / hop_s)


@torch.no_grad()
def encode_audio(pipe, waves, duration):
    """Waveforms at the vocoder's rate ([n] or [B, n]) -> z_0, the VAE's latent as the denoiser sees it
    (float32 [B, C, frames / 4, n_mels / 4] on the CPU). The posterior's mean, scaled by the VAE's factor."""
    waves = np.atleast_2d(np.asarray(waves, dtype=np.float64))
    frames = canvas_frames(pipe, duration)
    n_mels = pipe.vocoder.config.model_in_dim
    sr = pipe.vocoder.config.sampling_rate
    mels = np.stack([audioldm_log_mel(audioldm_waveform(w, frames * STFT_HOP), n_mels, sr, frames) for w in waves])
    vae = pipe.vae
    mel = torch.from_numpy(mels)[:, None].to(vae.device, vae.dtype)   # [B, 1, frames, n_mels] as diffusers
    z0 = vae.encode(mel).latent_dist.mode() * vae.config.scaling_factor
    return z0.float().cpu()


@torch.no_grad()
def latents_to_audio(pipe, latents, duration):
    """Latents [B, C, f, m] -> float32 numpy [B, round(duration * rate)] through the VAE decoder and vocoder."""
    device, dtype = pipe.unet.device, pipe.unet.dtype
    with _vocoder_rows(pipe, VOCODER_ONE_ROW_AT_A_TIME.get(device.type, False)):
        mel = pipe.decode_latents(latents.to(device, dtype))
        audio = pipe.mel_spectrogram_to_waveform(mel).float().cpu().numpy()
    return audio[:, :int(round(duration * pipe.vocoder.config.sampling_rate))]


# -----------------------------------------------------------------------------
# inversion and regeneration


@dataclass
class Inversion:
    """What regenerate needs: where to start and which steps to run, per row of the batch."""
    method: str
    timesteps: list                  # the forward (denoising) timesteps still to run, high to low
    x_start: torch.Tensor            # [B, C, f, m] the latent at timesteps[0]
    guidance: float                  # the source guidance: of the inversion, and of a regeneration under c_src
    steps: int                       # the full schedule's step count (timesteps are its last len(timesteps))
    noise_maps: list = field(default_factory=list)   # per step [B, C, f, m] (eta-1 methods), else []
    z0: torch.Tensor = None
    levels: list = field(default_factory=list)      # ddpm-inversion's x_t per timestep [B, C, f, m], else []


def _noise_pred(pipe, x, t, embs, negative, guidance):
    """AudioLDM's classifier-free guided noise prediction, as AudioLDMPipeline computes it."""
    unet = pipe.unet
    x = x.to(unet.device, unet.dtype)
    if guidance == 1.0:
        return unet(x, t, encoder_hidden_states=None, class_labels=embs.to(x)).sample.to(_dtype(pipe)).cpu()
    out = unet(torch.cat([x, x]), t, encoder_hidden_states=None,
               class_labels=torch.cat([negative, embs]).to(x)).sample.to(_dtype(pipe)).cpu()
    uncond, cond = out.chunk(2)
    return uncond + guidance * (cond - uncond)


def _dtype(pipe):
    """The dtype the latents are kept in between steps: float32, or float64 for a float64 pipeline (tests)."""
    return torch.float64 if pipe.unet.dtype == torch.float64 else torch.float32


def _embeddings(pipe, embs, batch, name):
    clap_dim = pipe.text_encoder.config.projection_dim
    embs = _as_unit_embeddings(embs, clap_dim, name)
    if embs.shape[0] != batch:
        raise ValueError(f"{name} has {embs.shape[0]} rows for {batch} latents")
    return embs


def _schedule(pipe, strength, steps):
    """DDIM (set to the pipeline's config) with `steps` steps, and the last round(strength * steps) of them."""
    if not (0 < strength <= 1):
        raise ValueError(f"strength is the fraction of the schedule re-run, in (0, 1], got {strength!r}")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    scheduler = use_sampler(pipe, "ddim")
    scheduler.set_timesteps(int(steps))
    k = max(1, min(int(steps), int(round(strength * steps))))
    return scheduler, [int(t) for t in scheduler.timesteps[len(scheduler.timesteps) - k:]]


def _ddim_sigma(scheduler, t):
    """sigma_t of a DDIM step from t with eta 1 (the DDPM posterior's standard deviation for the skip), computed
    exactly as DDIMScheduler.step computes it, so that dividing by it here and multiplying in step cancel."""
    prev = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    return 1.0 * scheduler._get_variance(t, prev) ** 0.5


@torch.no_grad()
def invert(pipe, z0, src_embs, strength, steps, guidance, seed, method="ddpm-inversion"):
    """Put z_0 [B, C, f, m] on the diffusion trajectory under c_src (src_embs [B, 512]): an Inversion.

    strength: the fraction of the `steps`-step DDIM schedule re-run (DeltaV2A's noise_level); guidance: the
    source guidance (1 = none: the conditional prediction alone); seed: int or one per row, drawing every noise
    of a row (edit-friendly x_t, SDEdit's noise) from that row's seed alone.
    """
    check_method(method)
    dt = _dtype(pipe)
    z0 = z0.to("cpu", dt)
    batch = z0.shape[0]
    src = _embeddings(pipe, src_embs, batch, "src_embs")
    negative = empty_text_embedding(pipe)[None].expand(batch, -1)
    scheduler, timesteps = _schedule(pipe, strength, steps)
    guidance = float(guidance)
    acp = scheduler.alphas_cumprod.double()
    generators = _generators(seed, batch)
    randn = lambda: torch.stack([torch.randn(z0.shape[1:], generator=g) for g in generators]).to(dt)  # noqa: E731

    if method == "ddim-inversion":
        from diffusers import DDIMInverseScheduler
        inverse = DDIMInverseScheduler.from_config(scheduler.config)
        inverse.set_timesteps(int(steps))
        x = z0.clone()
        # the inverse's ascending timesteps mirror the forward ones: step i goes up to forward level i
        for t in inverse.timesteps[:len(timesteps)]:
            eps = _noise_pred(pipe, x, int(t), src, negative, guidance)
            x = inverse.step(eps, int(t), x).prev_sample.to(dt)
        return Inversion(method, timesteps, x, guidance, int(steps), z0=z0)

    if method == "sdedit":
        a = float(acp[timesteps[0]])
        x_start = (math.sqrt(a) * z0.double() + math.sqrt(1 - a) * randn().double()).to(dt)
        noise = [randn() for _ in timesteps]
        return Inversion(method, timesteps, x_start, guidance, int(steps), noise, z0=z0)

    # edit-friendly DDPM inversion: x_t of each level with its own independent draw (one draw shared by all levels
    # would put every x_t on one straight line from z_0, and the noise maps would no longer be ~N(0, I))
    draws = [randn() for _ in timesteps]
    xs = [(math.sqrt(float(acp[t])) * z0.double() + math.sqrt(1 - float(acp[t])) * e.double()).to(dt)
          for t, e in zip(timesteps, draws)] + [z0]
    noise = []
    for i, t in enumerate(timesteps):
        eps = _noise_pred(pipe, xs[i], t, src, negative, guidance)
        mu = scheduler.step(eps, t, xs[i], eta=1.0, variance_noise=torch.zeros_like(xs[i])).prev_sample.to(dt)
        noise.append((xs[i + 1] - mu) / _ddim_sigma(scheduler, t))   # the last one: A_0's residual (docstring)
    return Inversion(method, timesteps, xs[0], guidance, int(steps), noise, z0=z0, levels=xs[:-1])


@torch.no_grad()
def regenerate(pipe, inversion, tgt_embs, guidance=None):
    """Run the inversion's remaining steps under tgt_embs [B, 512] with `guidance` (None: the inversion's own
    source guidance, which with c_src gives the reconstruction): latents float32 [B, C, f, m]."""
    x = inversion.x_start.clone()
    batch = x.shape[0]
    tgt = _embeddings(pipe, tgt_embs, batch, "tgt_embs")
    negative = empty_text_embedding(pipe)[None].expand(batch, -1)
    scheduler = use_sampler(pipe, "ddim")
    scheduler.set_timesteps(inversion.steps)
    guidance = inversion.guidance if guidance is None else float(guidance)
    for i, t in enumerate(inversion.timesteps):
        eps = _noise_pred(pipe, x, t, tgt, negative, guidance)
        if inversion.noise_maps:
            x = scheduler.step(eps, t, x, eta=1.0, variance_noise=inversion.noise_maps[i]).prev_sample.to(x.dtype)
        else:
            x = scheduler.step(eps, t, x, eta=0.0).prev_sample.to(x.dtype)
    return x


def edit_audio(pipe, waves, src_embs, tgt_embs_list, duration, strength, steps, guidance_src, guidance_tgt, seed,
               method="ddpm-inversion"):
    """A_0 -> its reconstruction and one edited audio per target: float32 numpy [1 + K, B, n] for K target
    embedding sets of [B, 512]; row 0 is `reconstructed` (regenerated under src_embs with guidance_src).

    waves: [B, n] (one A_0 per row; the same recording repeated per seed in main.py). The inversion runs once
    under src_embs with guidance_src; the reconstruction and every target regenerate from it with the same
    noise, so they differ only by their CLAP (and the targets by their guidance, guidance_tgt).
    """
    z0 = encode_audio(pipe, waves, duration)
    inv = invert(pipe, z0, src_embs, strength, steps, guidance_src, seed, method)
    rows = [regenerate(pipe, inv, src_embs)] + [regenerate(pipe, inv, tgt, guidance_tgt) for tgt in tgt_embs_list]
    return np.stack([latents_to_audio(pipe, x, duration) for x in rows])
