"""Step 8 of main.py: editing a recording the user gives (AUDIO_INPUT), with the tiny random-weight models.

Bad recordings are refused (or warned about) before any model loads; the resampler agrees with a second
library (soxr); step 8 conditions on the right rows, seeds and guidances, judges the edits against the
reconstruction (and the raw recording second), and each miswiring below is caught.
"""
import csv
import functools
import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_main_wiring import mutant

import audio_io
import errors
import evaluation
import inputs
import loader
import main
import manifest
import settings
from model import aldm, edit

ROOT = Path(__file__).resolve().parent.parent
SR = 16000


def tone(seconds, sr=SR, freqs=(440.0, 3000.0, 6500.0)):
    t = np.arange(int(round(seconds * sr))) / sr
    return 0.2 * sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs) * (1 + np.sin(2 * np.pi * 3 * t))


def write(path, data, sr=SR, subtype=None):
    sf.write(str(path), data, sr, subtype=subtype)
    return path


def ten_hour_wav(path):
    """A WAV whose header says 10 hours of 16-bit mono at 16 kHz; the data past 1 s is a sparse hole of zeros,
    so the file costs nothing on disk, but decoding all of it would take 1.15 GB and minutes."""
    frames = 10 * 3600 * SR
    data = (tone(1.0) * 32767).astype("<i2").tobytes()
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 36 + 2 * frames) + b"WAVE")
        f.write(b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, SR, 2 * SR, 2, 16))
        f.write(b"data" + struct.pack("<I", 2 * frames) + data)
        f.truncate(44 + 2 * frames)
    return path


# -----------------------------------------------------------------------------
# bad recordings: a clear message before any model runs, or a warned fallback

REFUSED = {
    "missing": (lambda p: p / "nothing.wav", "no such file"),
    "unreadable": (lambda p: (p / "text.wav").write_text("not audio") and p / "text.wav", "cannot read it as audio"),
    "empty": (lambda p: write(p / "empty.wav", np.zeros(0)), "holds no audio"),
    "all-silent": (lambda p: write(p / "silent.wav", np.zeros(SR)), "is silent"),
    "constant (DC only)": (lambda p: write(p / "dc.wav", np.full(SR, 0.25)), "is silent"),
    "NaN": (lambda p: write(p / "nan.wav", np.where(np.arange(SR) == 8000, np.nan, tone(1.0)), subtype="FLOAT"),
            "NaN or infinite samples"),
    "0.1 s": (lambda p: write(p / "short.wav", tone(0.1)), "too short to edit"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_bad_recording_is_refused_with_its_name(case, tmp_path):
    make, message = REFUSED[case]
    path = make(tmp_path)
    with pytest.raises(errors.UserError, match=message) as err:
        audio_io.read_audio_input(str(path), 2.0)
    assert str(path) in str(err.value)


WARNED = {
    "8-bit": (lambda p: write(p / "u8.wav", tone(2.0), subtype="PCM_U8"), "8-bit samples"),
    "6-channel": (lambda p: write(p / "six.wav", np.stack([tone(2.0) * (k + 1) / 6 for k in range(6)], 1)),
                  "6 channels: mixed down"),
    "192 kHz": (lambda p: write(p / "hi.wav", tone(2.0, 192000), 192000), None),
    "10-hour": (lambda p: ten_hour_wav(p / "long.wav"), "10.0 hours long: only its first 2 s"),
    "1 s": (lambda p: write(p / "one.wav", tone(1.0)), "padded with silence"),
}


@pytest.mark.parametrize("case", list(WARNED))
def test_an_odd_recording_is_used_with_a_warning(case, tmp_path):
    make, message = WARNED[case]
    wave, warns = audio_io.read_audio_input(str(make(tmp_path)), 2.0)
    assert wave.shape == ((SR,) if case == "1 s" else (2 * SR,))   # cut to DURATION; padding comes later
    assert np.isfinite(wave).all() and np.abs(wave).max() > 0.01
    if message is None:
        assert warns == []
    else:
        assert any(message in w for w in warns), warns


def test_channels_are_mixed_to_their_mean(tmp_path):
    left, right = tone(2.0), tone(2.0, freqs=(1000.0,))
    wave, _ = audio_io.read_audio_input(str(write(tmp_path / "st.wav", np.stack([left, right], 1), subtype="FLOAT")), 2.0)
    np.testing.assert_allclose(wave, (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("rate", [44100, 192000, 8000])
def test_the_resampler_agrees_with_soxr(rate, tmp_path):
    import soxr
    x = tone(2.0, rate, freqs=(440.0, 3000.0) if rate == 8000 else (440.0, 3000.0, 6500.0))
    wave, _ = audio_io.read_audio_input(str(write(tmp_path / "r.wav", x, rate, subtype="FLOAT")), 2.0)
    ref = soxr.resample(x, rate, SR, quality="VHQ")
    n = min(len(ref), len(wave))
    # away from the ends, where the two filters pad differently
    assert np.abs(wave[200:n - 200] - ref[200:n - 200]).max() < 1e-3
    assert np.abs(wave[200:n - 200] - np.roll(ref, 3)[200:n - 200]).max() > 1e-2   # a 3-sample shift shows


def test_nothing_is_written_when_the_recording_is_bad(tmp_path, capsys):
    out = tmp_path / "out"
    assert main.main(["--smoke", f"--AUDIO_INPUT={tmp_path / 'none.wav'}", f"--OUTPUT_DIR={out}"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("value", ["0", "-0.2", "1.5", "nan"])
def test_edit_strength_outside_0_1_is_refused(value, tmp_path, capsys):
    assert main.main(["--smoke", f"--EDIT_STRENGTH={value}", f"--OUTPUT_DIR={tmp_path}"]) == 2
    assert "EDIT_STRENGTH" in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_settings_of_the_edit_are_checked(tmp_path, capsys):
    assert main.main(["--smoke", "--EDIT_METHOD=ddpm", f"--OUTPUT_DIR={tmp_path}"]) == 2
    assert "EDIT_METHOD='ddpm' is not an edit method" in capsys.readouterr().err
    assert main.main(["--smoke", "--sweep", "EDIT_STRENGTH=0.2,0.4", f"--OUTPUT_DIR={tmp_path}"]) == 2
    assert "--AUDIO_INPUT" in capsys.readouterr().err
    wav = write(tmp_path / "a.wav", tone(2.0))
    assert main.main(["--smoke", f"--AUDIO_INPUT={wav}", "--sweep", "EDIT_STRENGTH=0.5,1.5",
                      f"--OUTPUT_DIR={tmp_path / 'o'}"]) == 2
    assert "EDIT_STRENGTH=1.5 is out of range" in capsys.readouterr().err


# -----------------------------------------------------------------------------
# wiring: c_src = baseline_original's remix CLAP, c_tgt = the manipulated row's, plain = baseline_edited's, per seed

SEEDS = [42, 43]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    return write(tmp_path_factory.mktemp("rec") / "a0.wav", tone(2.0), subtype="FLOAT")


@pytest.fixture(scope="module")
def models():
    return loader.Models({**settings.default_config(main), **settings.SMOKE_SETTINGS, "SMOKE": True})


def edit_cfg(recording):
    return {**settings.default_config(main), **settings.SMOKE_SETTINGS, "SMOKE": True, "AUDIO_INPUT": str(recording),
            "EDIT_STRENGTH": 0.75, "DDIM_STEPS": 4, "DURATION": 1.0}


def run_step8(module, run_dir, recording, models):
    cfg = edit_cfg(recording)
    claps = torch.randn(len(SEEDS), 3, aldm.CLAP_DIM, generator=torch.Generator().manual_seed(5))
    run_dir.mkdir()
    module.step8_edit(cfg, models, run_dir, claps, SEEDS, inputs.parse_prompts(cfg["SAM2_PROMPTS"]))
    return cfg, claps


@functools.lru_cache(maxsize=2)
def expected_edits(pipe, a0_bytes, claps_bytes, duration, strength, steps, g_src, g_tgt, method):
    """Step 8's three rows per seed, computed here from the method's definition: A_0 inverted under row 0's
    CLAP with the source guidance, regenerated under row 0 (source guidance), row 2 and row 1 (target guidance).
    Cached: every mis-wired copy below is held against the same expectation."""
    a0 = np.frombuffer(a0_bytes, dtype=np.float64)
    claps = torch.from_numpy(np.frombuffer(claps_bytes, dtype=np.float32).reshape(len(SEEDS), 3, -1).copy())
    z0 = edit.encode_audio(pipe, a0, duration)
    out = {}
    for s, seed in enumerate(SEEDS):
        inv = edit.invert(pipe, z0, claps[s, 0], strength, steps, g_src, seed, method)
        for name, row, guidance in (("reconstructed", 0, g_src), ("edited", 2, g_tgt), ("edited_plain", 1, g_tgt)):
            out[(seed, name)] = edit.latents_to_audio(pipe, edit.regenerate(pipe, inv, claps[s, row], guidance),
                                                      duration)[0]
    return out


def check_edit_wiring(run_dir, cfg, claps, pipe):
    """Every way step 8's outputs can disagree with the method, as a list of problems ([] = wired right)."""
    problems = []
    a0 = tone(2.0)[:int(cfg["DURATION"] * SR)]   # cut to DURATION; the recording is already at 16 kHz
    a0 = 0.5 * (a0 - a0.mean()) / np.abs(a0 - a0.mean()).max()   # AudioLDM's loader
    saved, _ = sf.read(run_dir / "audio_input.wav", dtype="float64")
    if np.abs(saved - a0).max() > 2 / 32767:
        problems.append("audio_input.wav is not the normalised recording")
    g_src, g_tgt = cfg["EDIT_GUIDANCE_SRC"], cfg["EDIT_GUIDANCE_TGT"]   # ZETA's 3 and 12 (ddpm-inversion)
    expected = expected_edits(pipe, a0.tobytes(), claps.numpy().tobytes(), cfg["DURATION"], cfg["EDIT_STRENGTH"],
                              cfg["DDIM_STEPS"], g_src, g_tgt, cfg["EDIT_METHOD"])
    results = json.loads((run_dir / "edit_results.json").read_text())
    for s, seed in enumerate(SEEDS):
        wavs = {"audio_input": a0}
        for name, row, guidance in (("reconstructed", 0, g_src), ("edited", 2, g_tgt), ("edited_plain", 1, g_tgt)):
            want = expected[(seed, name)]
            got, _ = sf.read(run_dir / audio_io.wav_name(name, seed, SEEDS[0]), dtype="float32")
            wavs[name] = got
            if np.abs(got - np.clip(want, -1, 1)).max() > 5e-4:
                problems.append(f"{audio_io.wav_name(name, seed, SEEDS[0])} is not A_0 inverted under row 0 and "
                                f"regenerated under row {row} with guidance {guidance} and seed {seed}")
        # the edits are judged against the reconstruction first, against the recording as it was second
        for block, base in ((results, "reconstructed"), (results.get("raw", {}), "audio_input")):
            for name in ("edited", "edited_plain"):
                figure = block.get("preservation", {}).get(name, {}).get("log_mel_l1_db", {}).get("per_seed")
                want = evaluation.log_mel_l1(wavs[base], wavs[name], SR)
                if figure is None or abs(figure[s] - want) > 0.05:
                    problems.append(f"the preservation of {name} (seed {seed}) in edit_results.json is not against "
                                    f"{base}: {figure and figure[s]} vs {want:.4f} dB")
    if set(results["edit_success"]) != {"edited", "edited_plain"} or results["judged_against"] != "reconstructed" or \
            set(results["preservation"]["edited"]) != set(evaluation.PRESERVATION_METRICS) or \
            set(results["raw"]["preservation"]) != {"reconstructed", "edited", "edited_plain"}:
        problems.append("edit_results.json lacks the comparisons or the preservation metrics")
    return problems


def test_step8_is_wired_as_the_method(recording, models, tmp_path):
    cfg, claps = run_step8(main, tmp_path / "run", recording, models)
    problems = check_edit_wiring(tmp_path / "run", cfg, claps, models.aldm)
    assert problems == [], "\n".join(problems)


MUTANTS = {
    "c_src where c_tgt belongs": ("[claps[rows, manip_row], claps[rows, 1]]", "[claps[rows, 0], claps[rows, 1]]"),
    "baseline row in place of the manipulated one": ("[claps[rows, manip_row], claps[rows, 1]]",
                                                     "[claps[rows, 1], claps[rows, 1]]"),
    "source from baseline_edited": ("0), claps[rows, 0],", "0), claps[rows, 1],"),
    "the wrong seed's noise maps": ("g_src, g_tgt, seeds[rows],", "g_src, g_tgt, seeds[rows][::-1],"),
    "plain edit under the manipulated row": ("[claps[rows, manip_row], claps[rows, 1]]",
                                             "[claps[rows, manip_row], claps[rows, manip_row]]"),
    "source and target guidance swapped": ("g_src, g_tgt, seeds[rows],", "g_tgt, g_src, seeds[rows],"),
    "one guidance both ways (GUIDANCE)": ("g_src, g_tgt = edit_guidance(cfg)", "g_src = g_tgt = cfg['GUIDANCE']"),
    "edits judged against A_0, not the reconstruction": ('success, kept = judged_against("reconstructed")',
                                                         'success, kept = judged_against("audio_input")'),
    "the raw comparison against the reconstruction": ('raw_success, raw_kept = judged_against("audio_input")',
                                                      'raw_success, raw_kept = judged_against("reconstructed")'),
}


@pytest.mark.parametrize("name", list(MUTANTS))
def test_a_miswired_edit_is_caught(name, recording, models, tmp_path):
    module = mutant(MUTANTS[name])
    try:
        cfg, claps = run_step8(module, tmp_path / "run", recording, models)
    finally:
        sys.modules.pop("main_mutant", None)
    assert check_edit_wiring(tmp_path / "run", cfg, claps, models.aldm), f"the wiring check missed: {name}"


def test_each_direction_has_its_own_guidance():
    """ZETA's defaults (3 under c_src, 12 under c_tgt); DDIM inversion unguided unless asked."""
    cfg = settings.default_config(main)
    assert settings.edit_guidance(cfg) == (3.0, 12.0)
    assert settings.edit_guidance({**cfg, "EDIT_METHOD": "sdedit"}) == (3.0, 12.0)
    assert settings.edit_guidance({**cfg, "EDIT_METHOD": "ddim-inversion"}) == (1.0, 12.0)
    assert settings.edit_guidance({**cfg, "EDIT_METHOD": "ddim-inversion", "EDIT_DDIM_GUIDANCE_SRC": 2.0}) == (2.0, 12.0)


# -----------------------------------------------------------------------------
# the whole run: --sweep EDIT_STRENGTH gives the trade-off table and figure

def test_sweep_of_edit_strength_gives_the_tradeoff(recording, tmp_path):
    out = tmp_path / "out"
    assert main.main(["--smoke", "--EVAL_SEEDS=2", f"--AUDIO_INPUT={recording}", f"--OUTPUT_DIR={out}",
                      "--sweep", "EDIT_STRENGTH=0.25,0.75"]) == 0
    (run_dir,) = out.iterdir()
    with open(run_dir / "edit_sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["EDIT_STRENGTH"], r["audio"]) for r in rows] == [
        ("0.25", "edited"), ("0.25", "edited_plain"), ("0.75", "edited"), ("0.75", "edited_plain")]
    assert all(math.isfinite(float(r["log_mel_l1_db mean"])) for r in rows)
    assert (run_dir / "edit_tradeoff.png").stat().st_size > 10_000
    assert (run_dir / "audio_input.wav").exists() and (run_dir / "edited_EDIT_STRENGTH-0.25.wav").exists()
    assert (run_dir / "reconstructed_EDIT_STRENGTH-0.75.wav").exists()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    assert all(Path(p).resolve().parent == run_dir.resolve() for p in run_dir.iterdir())


def test_a_manifest_row_names_its_recording(tmp_path):
    cfg = settings.default_config(main)
    row = {"original": "a.jpg", "edited": "b.jpg", "remove": "cat", "remove_x": "1", "remove_y": "2", "add": "duck",
           "add_x": "3", "add_y": "4", "audio_input": "rec.wav"}
    write(tmp_path / "rec.wav", tone(1.0))
    assert manifest.pair_config(cfg, row, tmp_path)["AUDIO_INPUT"] == str(tmp_path / "rec.wav")
    other = manifest.pair_config({**cfg, "AUDIO_INPUT": "x.wav"}, {**row, "audio_input": ""}, tmp_path)
    assert other["AUDIO_INPUT"] == "x.wav"   # an empty cell: the run's recording
