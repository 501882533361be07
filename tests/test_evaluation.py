"""evaluation.py: one run's scores, figures and results.json (the scorers and the verdict have their own tests)."""
import json

import numpy as np
import pytest
from test_scorers import CAT, DOG, DUCK, SR, noise, tone
from test_verdict import crafted_scores

import evaluation as ev
import verdict

# -----------------------------------------------------------------------------
# scoring a run, figures and the run folder

ROLES = {"removed": "cat", "added": "duck", "kept": ["dog"]}


def three_audios(n_seeds=3, seconds=1.0):
    return np.stack([[tone(440 + 100 * s, seconds), noise(s, seconds), tone(660 + 50 * s, seconds)]
                     for s in range(n_seeds)])



def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_figures_are_written(tmp_path):
    scores = crafted_scores()
    ev.plot_scores(scores, ["cat", "duck", "dog"], tmp_path / "scores.png", result=verdict.build_verdict(scores, ROLES))
    assert_png(tmp_path / "scores.png")
    audios = {"baseline_original": tone(440, 2.0), "baseline_edited": noise(0, 2.0), "manipulated": tone(3000, 0.5)}
    ev.plot_spectrograms(audios, SR, tmp_path / "spec.png")
    assert_png(tmp_path / "spec.png")
    with pytest.raises(FileExistsError):
        ev.plot_spectrograms(audios, SR, tmp_path / "spec.png")


def test_log_mel_puts_a_tone_in_the_right_band():
    low, high = ev.analysis_log_mel(tone(300, 1.0), SR), ev.analysis_log_mel(tone(5000, 1.0), SR)
    assert low.shape == (64, 101) and np.isfinite(low).all()
    assert low.mean(axis=1).argmax() < high.mean(axis=1).argmax()
    # equal-area filters: white noise has about the same level in every band
    flat = ev.analysis_log_mel(noise(0, 2.0), SR).mean(axis=1)
    assert flat[2:].max() - flat[2:].min() < 3.0
    assert ev.analysis_log_mel(tone(300, 0.01), SR).shape[0] == 64     # shorter than a window


def test_evaluate_run_writes_results_and_never_overwrites(tmp_path, ast_model, clap, capsys):
    run_dir = tmp_path / "run"
    seeds = [7, 8, 9]
    res = ev.evaluate_run(three_audios(), seeds, ROLES, run_dir, ast_model, clap, class_map={"cat": ["Cat", "Meow"]},
                          clap_labels={"cat": CAT, "duck": DUCK, "dog": DOG}, sample_rate=SR, tolerance=0.05,
                          extra={"e_final_reach": {"mean_to_baseline_edited": 0.1}})
    out = capsys.readouterr().out
    assert "HEADLINE: method's own effect" in out and "CLAP (second view)" in out and "results.json" in out
    assert out.index("Method's own effect:") < out.index("Edit followed:")
    for name in ["results.json", "scores.png", "spectrograms.png"]:
        assert (run_dir / name).is_file()
    assert_png(run_dir / "scores.png")
    text = (run_dir / "results.json").read_text()
    saved = json.loads(text)
    assert saved["seeds"] == seeds and saved["sources"] == ["cat", "duck", "dog"]
    assert len(saved["method_effect"]["classifier"]["checks"]) == 3 and len(saved["edit_followed"]["clap"]["checks"]) == 3
    per_seed = saved["scores"]["classifier"]["per_seed"]
    assert set(per_seed) == {"cat", "duck", "dog"} and all(len(v) == 3 for v in per_seed["cat"].values())
    assert saved["scores"]["classifier"]["classes"]["cat"] == ["Cat", "Meow"]
    assert set(saved["scores"]["clap"]["per_seed"]) == {"cat", "duck", "dog"}
    assert saved["scores"]["clap"]["score"] == "cosine of the audio with the source's own label"
    for q, base in [("method_effect", "baseline_edited"), ("edit_followed", "baseline_original")]:
        check = saved[q]["classifier"]["checks"]["added_increased"]
        assert check["deltas"] == pytest.approx(np.subtract(per_seed["duck"]["manipulated"], per_seed["duck"][base]))
    assert saved["floors"] == {"probability": {"floor": 0.01, "tolerance": 0.05},
                               "CLAP cosine": {"floor": 0.003, "tolerance": 0.015}, "nats": {"floor": 0.0002}}
    assert saved["headline"]["question"] == "method_effect"
    judged = saved["scores"]["classifier"]["judged_by"]
    assert judged["cat"]["why"] == "set in AUDIO_CLASSES" and judged["dog"]["layer"] == "name match"
    assert judged["duck"]["layer"] == "name match" and saved["judged_by"]["kept"]["dog"] == judged["dog"]
    assert "kept 'dog': Dog <- name match" in out
    assert saved["e_final_reach"] == {"mean_to_baseline_edited": 0.1}
    assert "tiny" in saved["scores"]["clap"]["name"] and saved["sample_rate"] == SR
    assert "clap_embs" not in text and len(text) < 60_000   # no embeddings in the JSON
    assert res["method_effect"] == saved["method_effect"]
    with pytest.raises(FileExistsError, match="results.json"):
        ev.evaluate_run(three_audios(), seeds, ROLES, run_dir, ast_model, clap)
    assert (run_dir / "results.json").read_text() == text


def test_evaluate_run_checks_its_inputs_before_any_work(tmp_path, ast_model, clap):
    with pytest.raises(ValueError, match="must differ"):
        ev.evaluate_run(three_audios(), [1, 2, 3], {"removed": "cat", "added": "cat", "kept": []}, tmp_path / "run",
                        ast_model, clap)
    with pytest.raises(ValueError, match="3 audios"):
        ev.evaluate_run(three_audios()[:, :2], [1, 2, 3], ROLES, tmp_path / "run", ast_model, clap)
    with pytest.raises(ValueError, match="Meows"):
        ev.evaluate_run(three_audios(), [1, 2, 3], ROLES, tmp_path / "run", ast_model, clap, class_map={"cat": ["Meows"]})
    assert not (tmp_path / "run").exists()


