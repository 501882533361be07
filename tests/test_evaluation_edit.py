"""Step 8's evaluation in evaluation.py: preservation of A_0 and the paired comparison of two rows (compare_rows)."""
import numpy as np
import pytest

import evaluation
import verdict

SR = 16000


def bursts(seconds=2.0, offset=0.0, seed=0):
    t = np.arange(int(seconds * SR)) / SR
    env = np.exp(-10 * ((t - offset) % 0.5))
    return 0.3 * env * np.sin(2 * np.pi * 500 * t) + 0.001 * np.random.default_rng(seed).standard_normal(len(t))


def test_a_gain_of_two_is_6_db_on_both_spectral_distances():
    a = bursts()
    assert evaluation.log_mel_l1(a, a, SR) == 0 and evaluation.log_spectral_distance(a, a, SR) == 0
    assert evaluation.log_spectral_distance(a, 2 * a, SR) == pytest.approx(10 * np.log10(4), abs=1e-6)
    assert evaluation.log_mel_l1(a, 2 * a, SR) == pytest.approx(10 * np.log10(4), abs=1e-3)


def test_onset_correlation_follows_the_timing():
    a = bursts()
    assert evaluation.onset_correlation(a, a, SR) == pytest.approx(1.0)
    assert evaluation.onset_correlation(a, bursts(seed=1), SR) > 0.9          # same events, other noise
    assert evaluation.onset_correlation(a, bursts(offset=0.25), SR) < 0.5     # events moved by half a period
    assert evaluation.onset_correlation(a, np.zeros_like(a), SR) == 0.0


def test_preservation_of_every_row_against_the_base():
    a = bursts()
    audio = np.stack([[a, a, 2 * a], [a, bursts(offset=0.25), a]])   # [2 seeds, 3 rows, T]
    embs = np.zeros((2, 3, 4))
    embs[..., 0] = 1
    embs[1, 1] = [0, 1, 0, 0]
    out = evaluation.preservation(audio, SR, clap_embs=embs)
    assert set(out) == {1, 2} and set(out[1]) == set(evaluation.PRESERVATION_METRICS)
    assert out[1]["log_mel_l1_db"]["per_seed"][0] == 0 and out[1]["log_mel_l1_db"]["per_seed"][1] > 1
    assert out[1]["clap_cosine"]["per_seed"] == pytest.approx([1.0, 0.0])
    assert out[2]["log_spectral_distance_db"]["per_seed"] == pytest.approx([6.0206, 0.0], abs=1e-3)
    assert out[1]["onset_correlation"]["std"] is not None
    assert "edited" in evaluation.format_preservation({"edited": out[1]})


def scores(S=4):
    rng = np.random.default_rng(0)
    base = 0.3 + 0.01 * rng.standard_normal((S, 2))
    cls = {"duck": base.copy(), "cat": base.copy(), "rocket": base.copy()}
    cls["duck"][:, 1] += 0.2 + 0.01 * rng.standard_normal(S)     # added: clearly up
    cls["cat"][:, 1] += 0.001                                     # removed: does not move
    cls["rocket"][:, 1] += 0.3                                    # kept: moves far
    probs = np.stack([cls["duck"], cls["cat"], cls["rocket"]], -1)
    return {"classifier": {k: v for k, v in cls.items() if k != "rocket"}, "clap_probs": probs,
            "clap_source_index": {"duck": 0, "cat": 1, "rocket": 2}, "classifier_name": "crafted",
            "clap_name": "crafted CLAP"}


def test_compare_rows_statuses():
    roles = {"removed": "cat", "added": "duck", "kept": ["rocket"]}
    out = verdict.compare_rows(scores(), roles, base=0, test=1)
    checks = out["classifier"]["checks"]
    assert checks["added_increased"]["status"] == "PASS"
    assert checks["removed_decreased"]["status"] == "no effect"
    assert "kept_within_tolerance:rocket" not in checks        # no AudioSet class: only CLAP judges it
    assert out["classifier"]["not_judged"] == ["rocket"]
    assert out["clap"]["checks"]["kept_within_tolerance:rocket"]["status"] == "FAIL"
    assert out["classifier"]["counts"]["PASS"] == 1 and len(out["clap"]["checks"]) == 3
    # base and test swapped: the added source goes down
    assert verdict.compare_rows(scores(), roles, 1, 0)["classifier"]["checks"]["added_increased"]["status"] == "FAIL"


def test_step_8s_two_preservation_tables_come_in_the_order_the_edits_are_judged():
    """main.py prints, and the bench shows, the table against the reconstruction first and the one against A_0
    as recorded second, each with its own rows."""
    def kept(value):
        return {m: {"per_seed": [value], "mean": value, "std": None} for m in evaluation.PRESERVATION_METRICS}
    result = {"judged_against": "reconstructed", "preservation": {"edited": kept(1.5), "edited_plain": kept(2.5)},
              "raw": {"judged_against": "audio_input", "preservation": {"reconstructed": kept(7.25),
                                                                         "edited": kept(8.5)}}}
    text = evaluation.format_edit_preservation(result)
    first, second = text.split(evaluation.EDIT_PRESERVATION_TITLES["audio_input"])
    assert evaluation.EDIT_PRESERVATION_TITLES["reconstructed"] in first
    assert "1.5" in first and "2.5" in first and "7.25" not in first
    assert "reconstructed" in second and "7.25" in second and "8.5" in second and "1.5" not in second
