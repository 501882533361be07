"""AudioLDM as SSV2A uses it: a CLAP embedding [B, 512] in, 16 kHz audio out (plan step 8.4).

SSV2A conditions AudioLDM-S-full-v2 directly on a CLAP embedding instead of a text prompt. Here that is
diffusers' AudioLDMPipeline with the embedding passed as `prompt_embeds`. Facts taken from the original
(wguo86/SSV2A ssv2a/model/aldm.py, on top of haoheliu/AudioLDM):

- defaults: 10 s, 200 DDIM steps, guidance 2.5, DDIM eta 1.0 (stochastic DDIM), 16 kHz, seed 42;
- the negative (unconditional) embedding is the L2-normalised CLAP text embedding of the empty string;
- the embedding goes to the UNet's FiLM/class slot as given; SSV2A's remixer L2-normalises it before. We
  normalise here because diffusers does not normalise user-given prompt_embeds, and CLAP text embeddings
  (what AudioLDM was trained on) are unit vectors;
- the original's "10 s" canvas is 1024 mel frames (10.24 s); we generate on the same canvas (rounded up to
  what the UNet can halve cleanly) and cut the waveform to exactly duration * 16000 samples.

Not reproduced: the original draws 3 candidates per embedding and keeps the one whose CLAP audio embedding
is closest to the text of its batch, which for emb_to_audio is the empty string ''; that needs a CLAP audio
encoder inside the generator and ranks against a meaningless target, so we return one sample per embedding.

    pipe = load_audioldm()                                   # once per process
    audio = emb_to_audio(pipe, claps)                        # float32 [B, 160000]
    save_wav("out/dog.wav", audio[0])
"""
import contextlib
import functools
import math
import weakref
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model import checkpoints
from model.checkpoints import CheckpointError, hf_model_dir
from util import get_device, new_file

AUDIOLDM_REPO = "cvssp/audioldm-s-full-v2"
SAMPLE_RATE = 16000      # AudioLDM's vocoder rate; emb_to_audio returns audio at pipe.vocoder.config.sampling_rate
CLAP_DIM = 512
ORIGINAL_TOKEN_LENGTH = 77   # the original pads CLAP text to 77 tokens (attention-masked, so only cosmetic)


# -----------------------------------------------------------------------------
# loaders

def check_tokenizer(tokenizer, text_encoder=None, where="the AudioLDM tokenizer"):
    """CheckpointError when AudioLDM's tokenizer is silently empty (see model.checkpoints.check_tokenizer)."""
    vocab_size = text_encoder.config.vocab_size if text_encoder is not None else None
    return checkpoints.check_tokenizer(tokenizer, "audioldm", vocab_size, where=where)


AUDIOLDM_COMPONENTS = ("scheduler", "text_encoder", "tokenizer", "unet", "vae", "vocoder")


def _read_index(folder):
    import json
    try:
        index = json.loads((Path(folder) / "model_index.json").read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{folder}/model_index.json is missing or not JSON ({err}); "
                              f"python -m model.checkpoints audioldm") from err
    if index.get("_class_name") != "AudioLDMPipeline" or any(c not in index for c in AUDIOLDM_COMPONENTS):
        raise CheckpointError(f"{folder} is not an AudioLDM pipeline: model_index.json names "
                              f"{index.get('_class_name')!r} with components {sorted(k for k in index if k[0] != '_')}")
    return index


def _load_components(folder, dtype):
    """AudioLDM's four networks from their safetensors, each checked key by key against its config."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import ClapTextModelWithProjection, SpeechT5HifiGan
    strict = checkpoints.load_pretrained_strictly
    return {
        "vae": strict(AutoencoderKL, folder, "AudioLDM's VAE", "audioldm", subfolder="vae", torch_dtype=dtype),
        "unet": strict(UNet2DConditionModel, folder, "AudioLDM's UNet", "audioldm", subfolder="unet", torch_dtype=dtype),
        "text_encoder": strict(ClapTextModelWithProjection, folder, "AudioLDM's CLAP text encoder", "audioldm",
                               subfolder="text_encoder", dtype=dtype),
        "vocoder": strict(SpeechT5HifiGan, folder, "AudioLDM's HiFi-GAN vocoder", "audioldm", subfolder="vocoder",
                          dtype=dtype),
    }


def verify_audioldm_folder(folder):
    """Check a local AudioLDM snapshot by loading it as load_audioldm does (on the CPU): model_index.json,
    every network's weights against its config (no key missing, none extra, every shape right), and the
    tokenizer (not silently empty)."""
    from transformers import AutoTokenizer
    _read_index(folder)
    components = _load_components(folder, torch.float32)
    check_tokenizer(AutoTokenizer.from_pretrained(Path(folder) / "tokenizer"), components["text_encoder"],
                    where=f"the tokenizer in {folder}")
    n = sum(len(m.state_dict()) for m in components.values())
    return f"{folder}: AudioLDMPipeline, {n} tensors in 4 safetensors files fit their configs, tokenizer ok"


@functools.lru_cache(maxsize=None)
def _load_audioldm(device_str):
    from diffusers import AudioLDMPipeline

    folder = hf_model_dir("audioldm")
    device = torch.device(device_str)
    # fp16 halves memory and time on a GPU; CPUs have no fast fp16 kernels
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    print(f"Loading AudioLDM {AUDIOLDM_REPO} from {folder} on {device_str} ({str(dtype).replace('torch.', '')})")
    _read_index(folder)
    try:
        # the networks loaded strictly by us; the pipeline reads the tokenizer and the scheduler itself
        pipe = AudioLDMPipeline.from_pretrained(folder, **_load_components(folder, dtype))
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"cannot load {AUDIOLDM_REPO} from {folder}: {str(err).splitlines()[0] if str(err) else err}\n"
            f"  The local copy looks incomplete. Fix, on a machine with internet: python -m model.checkpoints audioldm"
        ) from err
    check_tokenizer(pipe.tokenizer, pipe.text_encoder, where=f"the tokenizer in {folder}")
    # the original samples with DDIM; from_config of the repo's scheduler config keeps its betas and offset
    use_sampler(pipe, "ddim")
    pipe.set_progress_bar_config(desc="AudioLDM", leave=False)
    return pipe.to(device)


def load_audioldm(device=None):
    """The real AudioLDM-S-full-v2 pipeline, loaded once per process and device (fp16 on CUDA)."""
    return _load_audioldm(str(get_device(device)))


def _tiny_tokenizer():
    """A byte-level BPE RobertaTokenizer built in memory: 256 byte tokens and a few merges.

    Every byte has its own token, so different texts always encode differently; the merges make it a real
    BPE (a handful of sound words become single tokens), not a character lookup.
    """
    from tokenizers import pre_tokenizers
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}   # RoBERTa's ids for its special tokens
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    merges = []
    for word in ["dog", "cat", "duck", "bark", "quack", "meow", "the", "and"]:
        piece = "\u0120" + word[0]   # byte-level BPE marks a leading space with U+0120
        merges.append(("\u0120", word[0]))
        vocab.setdefault(piece, len(vocab))
        for ch in word[1:]:
            merges.append((piece, ch))
            piece += ch
            vocab.setdefault(piece, len(vocab))
    merges = list(dict.fromkeys(merges))
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=ORIGINAL_TOKEN_LENGTH)


def tiny_audioldm(seed=0, clap_dim=CLAP_DIM):
    """A real AudioLDMPipeline from tiny random-weight components, built offline, fp32 on the CPU.

    Same classes as AudioLDM-S-full-v2 (UNet with the CLAP embedding as a concatenated class embedding,
    KL-VAE over a mel spectrogram, CLAP text encoder, HiFi-GAN vocoder, DDIM), the same interface (CLAP
    width clap_dim, 16 kHz, 100 mel frames per second), and internals small enough that 3 x 10 s at 20
    steps takes a few seconds on a CPU.
    """
    from diffusers import AudioLDMPipeline, AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

    tokenizer = _tiny_tokenizer()
    # fork_rng: building the tiny model must not move the caller's global torch RNG
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=32, in_channels=8, out_channels=8,
            block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, attention_head_dim=8,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=(16, 32),
            class_embed_type="simple_projection",            # the CLAP embedding enters here, as in AudioLDM
            projection_class_embeddings_input_dim=clap_dim,
            class_embeddings_concat=True,
        )
        # 3 blocks = 4x compression of the mel spectrogram into 8 latent channels, as AudioLDM's VAE
        vae = AutoencoderKL(
            in_channels=1, out_channels=1, latent_channels=8,
            block_out_channels=(16, 32, 32), norm_num_groups=8,
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
        )
        text_encoder = ClapTextModelWithProjection(ClapTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4,
            num_hidden_layers=2, projection_dim=clap_dim, layer_norm_eps=1e-5,
            bos_token_id=0, pad_token_id=1, eos_token_id=2,
        ))
        # hop 160 samples at 16 kHz (5*4*4*2) as the real vocoder; 8 mel bins instead of 64
        vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
            model_in_dim=8, sampling_rate=SAMPLE_RATE, upsample_initial_channel=16,
            upsample_rates=[5, 4, 4, 2], upsample_kernel_sizes=[10, 8, 8, 4],
            resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]], normalize_before=False,
            initializer_range=0.3,   # the default 0.01 gives ~1e-10 audio through these few channels
        ))
    # AudioLDM's own noise schedule (linear_start 0.0015, linear_end 0.0195, 1000 steps)
    scheduler = DDIMScheduler(beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    # modules built from a config start in training mode; the CLAP text encoder's dropout would then make
    # the empty-text embedding random (from_pretrained, as in load_audioldm, returns them in eval mode)
    for module in (unet, vae, text_encoder, vocoder):
        module.eval()
    pipe = AudioLDMPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                            scheduler=scheduler, vocoder=vocoder)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to("cpu")


# -----------------------------------------------------------------------------
# samplers: diffusers schedulers built from the pipeline's own scheduler config (its betas, its offset)

# name -> (diffusers scheduler class, its options, default steps, what it is). On the real-size U-Net's
# probability flow (tests/bench_sampler.py), DPM-Solver++ 2M at 25 steps lands 3.8x closer to 999-step DDIM
# than DDIM at 200 steps does, at an eighth of the U-Net calls.
SAMPLERS = {
    "ddim": ("DDIMScheduler", {}, 200, "DDIM with eta 1.0 (stochastic), the original's sampler"),
    "dpmpp-2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, 25,
                 "DPM-Solver++ 2M, deterministic"),
    "dpmpp-2m-sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}, 50,
                     "DPM-Solver++ 2M SDE, stochastic like DDIM with eta 1"),
}
# HiFi-GAN on several clips at once: on the CPU a batch of 3 x 10 s took 1.25-1.37x the time of the same clips
# one at a time (2 cores, real-size vocoder; the convolutions' working set outgrows the cache), so the CPU
# vocodes row by row. GPUs are not measured here and keep the batch.
VOCODER_ONE_ROW_AT_A_TIME = {"cpu": True}
_base_scheduler_configs = weakref.WeakKeyDictionary()   # pipe -> the scheduler config it was loaded with
_schedulers = weakref.WeakKeyDictionary()               # pipe -> {sampler name: scheduler}


def check_sampler(name):
    if name not in SAMPLERS:
        raise ValueError(f"sampler {name!r} is not one of {', '.join(SAMPLERS)}")
    return name


def default_steps(sampler):
    """The number of denoising steps a sampler needs by default (DDIM: the original's 200)."""
    return SAMPLERS[check_sampler(sampler)][2]


def use_sampler(pipe, name):
    """Put the scheduler of sampler `name` into pipe (from_config of the pipeline's first scheduler config)."""
    import diffusers
    check_sampler(name)
    if pipe not in _base_scheduler_configs:
        _base_scheduler_configs[pipe] = dict(pipe.scheduler.config)
        _schedulers[pipe] = {}
    cache = _schedulers[pipe]
    if name not in cache:
        cls, options, _, _ = SAMPLERS[name]
        cache[name] = getattr(diffusers, cls).from_config({**_base_scheduler_configs[pipe], **options})
    pipe.scheduler = cache[name]
    return pipe.scheduler


# -----------------------------------------------------------------------------
# CLAP embedding -> audio

_empty_text_embeddings = weakref.WeakKeyDictionary()   # pipe -> float32 [clap_dim] on the CPU


@torch.no_grad()
def empty_text_embedding(pipe):
    """The L2-normalised CLAP text embedding of '' (the original's unconditional embedding), cached per pipe."""
    if pipe not in _empty_text_embeddings:
        tokens = pipe.tokenizer([""], padding="max_length", max_length=ORIGINAL_TOKEN_LENGTH,
                                truncation=True, return_tensors="pt")
        device = pipe.text_encoder.device
        out = pipe.text_encoder(tokens.input_ids.to(device), attention_mask=tokens.attention_mask.to(device))
        _empty_text_embeddings[pipe] = F.normalize(out.text_embeds.float(), dim=-1)[0].cpu()
    return _empty_text_embeddings[pipe]


def _as_unit_embeddings(embs, clap_dim, name):
    """float32 [B, clap_dim] CPU tensor of unit vectors, or a ValueError saying what is wrong."""
    if isinstance(embs, np.ndarray):
        embs = torch.from_numpy(embs)
    if not isinstance(embs, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape [B, {clap_dim}], "
                        f"got {type(embs).__name__}")
    embs = embs.detach().to("cpu", torch.float64)   # normalise in float64: e and 3*e give the same bits
    if embs.ndim == 1:
        embs = embs[None]
    if embs.ndim != 2 or embs.shape[1] != clap_dim or embs.shape[0] == 0:
        raise ValueError(f"{name} must have shape [B, {clap_dim}] or [{clap_dim}] (CLAP embeddings of this "
                         f"AudioLDM), got {tuple(embs.shape)}")
    bad = (~torch.isfinite(embs)).any(dim=1).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"{name} rows {bad} contain NaN or inf; check the embedding that produced them")
    norms = embs.norm(dim=1)
    zero = (norms == 0).nonzero().flatten().tolist()
    if zero:
        raise ValueError(f"{name} rows {zero} are all zeros: a zero CLAP embedding has no direction to condition on")
    return (embs / norms[:, None]).float()


def _generators(seed, batch):
    """One CPU generator per row, so a row's noise depends only on its seed, never on its batch mates."""
    seeds = [seed] * batch if isinstance(seed, (int, np.integer)) else list(seed)
    if len(seeds) != batch:
        raise ValueError(f"seed must be an int or one int per embedding ({batch}), got {len(seeds)} seeds")
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def _canvas_seconds(pipe, duration):
    """Length to ask the pipeline for: duration in whole mel frames, rounded up so the UNet halves it cleanly.

    For AudioLDM-S at 10 s this is 1024 mel frames (256 latent frames), the original's 10.24 s canvas.
    """
    hop_s = float(np.prod(pipe.vocoder.config.upsample_rates)) / pipe.vocoder.config.sampling_rate
    frames = math.ceil(round(duration / hop_s, 6))
    multiple = pipe.vae_scale_factor * 2 ** (len(pipe.unet.config.down_block_types) - 1)
    frames = math.ceil(frames / multiple) * multiple
    # half a frame extra so the pipeline's int(seconds / hop) lands on `frames`, not one below
    return (frames + 0.5) * hop_s


@torch.no_grad()
def emb_to_audio(pipe, clap_embs, duration=10.0, steps=200, guidance=2.5, seed=42, negative_embs=None, eta=1.0,
                 sampler="ddim", output="audio"):
    """Generate audio from CLAP embeddings in one batch; float32 numpy [B, round(duration * 16000)].

    clap_embs: [B, 512] or [512], torch or numpy; L2-normalised here.
    seed: int (every row gets the noise of that seed, so rows differ only by their embedding and a row's
          audio does not depend on the others in the batch) or one int per row.
    negative_embs: None = the CLAP embedding of '' (as the original); else [B, 512] or [512].
    eta: DDIM eta; 1.0 is the original's (stochastic DDIM), 0.0 is deterministic DDIM (other samplers ignore it).
    sampler: a key of SAMPLERS ('ddim' is the original's). output='latent' returns the final latents
    (float32 torch [B, C, frames, bins], before the VAE) instead of audio: what sampler comparisons measure.
    """
    clap_dim = pipe.text_encoder.config.projection_dim
    embs = _as_unit_embeddings(clap_embs, clap_dim, "clap_embs")
    batch = embs.shape[0]
    if negative_embs is None:
        negative = empty_text_embedding(pipe)[None].expand(batch, -1)
    else:
        negative = _as_unit_embeddings(negative_embs, clap_dim, "negative_embs")
        if negative.shape[0] == 1:
            negative = negative.expand(batch, -1)
        elif negative.shape[0] != batch:
            raise ValueError(f"negative_embs has {negative.shape[0]} rows but clap_embs has {batch}")
    if not (duration > 0 and math.isfinite(duration)):
        raise ValueError(f"duration must be a positive, finite number of seconds, got {duration}")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    generators = _generators(seed, batch)
    use_sampler(pipe, sampler)

    device, dtype = pipe.unet.device, pipe.unet.dtype
    final = {}
    with _vocoder_rows(pipe, VOCODER_ONE_ROW_AT_A_TIME.get(device.type, False)):
        out = pipe(
            prompt_embeds=embs.to(device, dtype),
            negative_prompt_embeds=negative.to(device, dtype),
            audio_length_in_s=_canvas_seconds(pipe, duration),
            num_inference_steps=int(steps),
            guidance_scale=float(guidance),
            eta=float(eta),
            generator=generators,
            output_type="np",
            # AudioLDMPipeline has no latent output; its step callback sees the latents after every step
            callback=(lambda i, t, latents: final.__setitem__("latents", latents.float().cpu()))
            if output == "latent" else None,
            callback_steps=1,
        )
    if output == "latent":
        return final["latents"]
    n_samples = int(round(duration * pipe.vocoder.config.sampling_rate))
    audio = np.asarray(out.audios, dtype=np.float32)[:, :n_samples]
    if audio.shape[1] < n_samples:   # cannot happen with _canvas_seconds; guards a changed pipeline
        raise RuntimeError(f"AudioLDM returned {audio.shape[1]} samples, expected {n_samples}")
    return audio


@contextlib.contextmanager
def _vocoder_rows(pipe, one_at_a_time):
    """Make the pipeline's mel -> waveform step run the vocoder one row at a time (or leave it batched)."""
    if not one_at_a_time:
        yield
        return
    batched = type(pipe).mel_spectrogram_to_waveform
    pipe.mel_spectrogram_to_waveform = lambda mel: torch.cat([batched(pipe, mel[i:i + 1]) for i in range(len(mel))])
    try:
        yield
    finally:
        del pipe.mel_spectrogram_to_waveform


def save_wav(path, audio, sample_rate=SAMPLE_RATE, overwrite=False):
    """Write mono audio (float in [-1, 1]) as 16-bit PCM WAV; never replaces a file unless overwrite=True."""
    import soundfile as sf

    path = Path(path)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2 and audio.shape[0] == 1:
        audio = audio[0]
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"save_wav expects one mono waveform [n_samples], got shape {audio.shape} for {path}")
    if not np.isfinite(audio).all():
        raise ValueError(f"audio for {path} contains NaN or inf; not writing it")
    path.parent.mkdir(parents=True, exist_ok=True)
    # 'x' creates the file atomically or fails, so two runs can never write over each other's results
    try:
        with (open(path, "wb") if overwrite else new_file(path)) as f:   # new_file: complete or absent
            sf.write(f, audio, int(sample_rate), format="WAV", subtype="PCM_16")
    except FileExistsError:
        raise FileExistsError(f"{path} already exists; results are never overwritten "
                              f"(choose another output folder, or pass overwrite=True)") from None
    return path
