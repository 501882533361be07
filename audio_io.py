"""The audio files of a run: the names of its rows and seeds, resampling, and reading a recording to edit.

    wav_name("manipulated", 43, 42)     # 'manipulated_seed43.wav': the first seed keeps the plain name
    wave, warnings = read_audio_input("rec.wav", duration=10.0)   # A_0 for step 8, checked; UserError if unusable
"""
import math
import os
from pathlib import Path

from errors import MISSING, UserError, path_problem, shown

# the three audio rows of every seed, in this order everywhere (step 7's rows, the wav names, results.json)
AUDIO_NAMES = ("baseline_original", "baseline_edited", "manipulated")
# rows of the edit's evaluation: A_0, A_0 regenerated under c_src (what an edit is judged against), c_tgt, plain I_1
EDIT_AUDIO_NAMES = ("audio_input", "reconstructed", "edited", "edited_plain")
EDIT_TARGETS = ("edited", "edited_plain")   # the rows that are edits
AUDIO_INPUT_MIN_S = 0.5          # shorter recordings are refused: too little sound to keep the structure of
AUDIO_INPUT_SILENCE = 1e-4       # peak (after removing DC) below -80 dBFS: nothing to edit, nothing to normalise


def wav_name(name, seed, first_seed):
    """The first seed's audio keeps the plain name; other seeds' get _seed<N>."""
    return f"{name}.wav" if seed == first_seed else f"{name}_seed{seed}.wav"


def resample(wave, rate, target):
    """A polyphase resampling of a 1-D wave from rate to target Hz (the same wave when they are equal)."""
    if int(rate) == int(target):
        return wave
    from scipy.signal import resample_poly
    g = math.gcd(int(rate), int(target))
    return resample_poly(wave, int(target) // g, int(rate) // g)


def read_audio_input(path, duration, sample_rate=16000):
    """A_0 as the edit reads it: (float64 [<= duration * sample_rate] at sample_rate, warnings); UserError when it
    cannot be used, saying why and what to do. Only the header and the first `duration` seconds are read, so a
    10-hour file costs what a 10-second one does. Fallbacks, each warned: several channels are mixed to mono
    (their mean); longer recordings are cut to DURATION, shorter ones are padded with silence after AudioLDM's
    normalisation (model.edit.audioldm_waveform, as AudioLDM's loader pads); 8-bit samples are used
    as they are; any rate is resampled (scipy's polyphase filter, resample above)."""
    import numpy as np
    import soundfile as sf
    what = f"AUDIO_INPUT {shown(path)}"
    p = Path(path)
    problem = path_problem(p)   # a folder, a FIFO or /dev/zero is said as what it is, and never opened
    if problem:
        said = f": no such file (looked at {shown(os.path.abspath(p))})" if problem == MISSING else f" {problem}"
        raise UserError(f"{what}{said}. Give a wav, flac or ogg recording, or --AUDIO_INPUT='' to switch the edit "
                        "off")
    try:
        info = sf.info(str(p))
    except Exception as err:   # libsndfile says 'Format not recognised', 'unknown format', ... in its own words
        raise UserError(f"{what}: cannot read it as audio ({str(err).strip() or type(err).__name__}). soundfile "
                        "reads WAV, FLAC and OGG; convert it first, e.g. ffmpeg -i in.m4a -ac 1 -ar 16000 out.wav") \
            from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise UserError(f"{what}: the file holds no audio ({info.frames} samples); record or export it again")
    seconds = info.frames / info.samplerate
    if seconds < AUDIO_INPUT_MIN_S:
        raise UserError(f"{what} is {seconds:.3g} s long: too short to edit (at least {AUDIO_INPUT_MIN_S} s; "
                        f"{duration:g} s is used, DURATION)")
    warns = []
    if seconds > duration:
        length = f"{seconds / 3600:.1f} hours" if seconds >= 3600 else f"{seconds:.2f} s"
        warns.append(f"{what} is {length} long: only its first {duration:g} s are edited (DURATION); cut the part "
                     "you want first to edit another")
    elif seconds < duration - 1e-9:
        warns.append(f"{what} is {seconds:.2f} s long: padded with silence to DURATION={duration:g} s")
    if info.channels > 1:
        warns.append(f"{what} has {info.channels} channels: mixed down to mono (the mean of the channels)")
    if info.subtype in ("PCM_U8", "PCM_S8"):
        warns.append(f"{what} has 8-bit samples ({info.subtype}): its quantisation noise (about -48 dB) is part of "
                     "A_0 and the edit may keep it")
    needed = min(info.frames, math.ceil(duration * info.samplerate) + 64)   # + the resampler's filter reach
    try:
        wave, rate = sf.read(str(p), frames=needed, dtype="float64", always_2d=True)
    except Exception as err:
        raise UserError(f"{what}: reading its samples failed ({err}); the file may be damaged") from None
    bad = ~np.isfinite(wave)
    if bad.any():
        first = int(np.argwhere(bad)[0][0])
        raise UserError(f"{what} contains {int(bad.sum())} NaN or infinite samples (the first at "
                        f"{first / rate:.3f} s): repair or re-export the recording")
    wave = resample(wave.mean(axis=1), rate, sample_rate)
    n = int(round(duration * sample_rate))
    wave = wave[:n]
    peak = float(np.abs(wave - wave.mean()).max()) if wave.size else 0.0   # before padding: a DC offset is silence
    if peak < AUDIO_INPUT_SILENCE:
        raise UserError(f"{what} is silent in its first {min(seconds, duration):.2f} s (peak "
                        f"{20 * math.log10(peak) if peak > 0 else float('-inf'):.0f} dBFS after removing DC): "
                        "there is no sound to edit")
    return wave, warns
