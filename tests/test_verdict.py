"""verdict.py: paired statistics over seeds and the verdict's statuses, on hand-made score tables."""
import json

import numpy as np
import pytest
from scipy.stats import entropy

import verdict

LABELS = ["a dog barking", "a cat meowing", "a duck quacking"]
DOG, CAT, DUCK = LABELS


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


# -----------------------------------------------------------------------------
# paired statistics over seeds, and the verdict on hand-made tables

def test_paired_stats_match_scipy_t_interval():
    from scipy import stats
    deltas = [0.10, 0.25, 0.18, 0.05]
    s = verdict.paired_stats(deltas, "up", min_effect=0.0)
    ci = stats.ttest_1samp(deltas, 0.0).confidence_interval(0.95)
    assert s["mean"] == pytest.approx(np.mean(deltas)) and s["std"] == pytest.approx(np.std(deltas, ddof=1))
    assert s["ci95"] == pytest.approx([ci.low, ci.high])
    assert s["status"] == "PASS" and s["fraction_holds"] == 1.0 and s["n"] == 4
    assert ci.low < 0.01 and verdict.paired_stats(deltas, "up", min_effect=0.01)["status"] == "weak"   # below the floor
    with pytest.raises(ValueError, match="expect"):
        verdict.paired_stats([1.0], "sideways")


# each case is built so that one wrong rule flips its status: the interval bound nearest to zero (not the
# far one, not the mean), the floor applied to that bound, holds counted beyond the floor, one seed never PASS
@pytest.mark.parametrize("deltas, expect, status, holds", [
    ([0.10, 0.12, 0.11], "up", "PASS", 1.0),
    ([0.03, 0.002, 0.04], "up", "weak", 2 / 3),          # CI [-0.02, 0.07]: low bound below 0, mean above
    ([0.012, 0.020, 0.016], "up", "weak", 1.0),          # CI [0.006, 0.026]: above 0, low bound below the floor
    ([0.3, -0.1, 0.2], "up", "weak", 2 / 3),             # CI straddles 0
    ([-0.05, -0.07, -0.06], "up", "FAIL", 0.0),
    ([-0.10, -0.12, -0.11], "down", "PASS", 1.0),
    ([-0.03, -0.002, -0.04], "down", "weak", 2 / 3),     # high bound above 0: a rule reading ci[0] says PASS
    ([0.05, 0.07, 0.06], "down", "FAIL", 0.0),
    ([1e-6, 2e-6, 1.5e-6], "up", "no effect", 0.0),      # float noise, however consistent: the interval is > 0
    ([-1e-6, -2e-6, -1.5e-6], "down", "no effect", 0.0),
    ([0.0, 0.0, 0.0], "up", "no effect", 0.0),
    ([0.005, 0.009, 0.02], "up", "weak", 1 / 3),         # 2 of 3 seeds are below the floor: holds 1/3
    ([0.4], "up", "weak", 1.0),                          # one seed: no interval, never PASS
    ([0.01, -0.02, 0.015], "same", "PASS", 1.0),
    ([0.04, -0.03, 0.045], "same", "weak", 1.0),         # CI leaves +-0.05, mean inside
    ([0.05, 0.06, 0.07], "same", "FAIL", 1 / 3),
])
def test_status_rules_bound_floor_and_holds(deltas, expect, status, holds):
    s = verdict.paired_stats(deltas, expect, tolerance=0.05, min_effect=0.01)
    assert s["status"] == status, (s["ci95"], s["mean"])
    assert s["fraction_holds"] == pytest.approx(holds)


def test_a_floor_of_zero_keeps_small_consistent_effects():
    assert verdict.paired_stats([1e-6, 2e-6, 1.5e-6], "up", min_effect=0.0)["status"] == "PASS"
    assert verdict.paired_stats([0.0, 0.0], "up", min_effect=0.0)["status"] == "no effect"
    with pytest.raises(ValueError, match="min_effect"):
        verdict.paired_stats([0.1], "up", min_effect=1.5)


ROLES = {"removed": "cat", "added": "duck", "kept": ["dog"]}
E_ORIG, E_EDIT = unit(np.eye(512)[0]), unit(np.eye(512)[1])
ORIG, EDIT, MANIP = 0, 1, 2


def crafted_scores(n_seeds=3, cls=None, clap=None, embs=None):
    """A score_run-like table: 3 seeds x [baseline_original, baseline_edited, manipulated]. The manipulated audio
    moves further than baseline_edited (removed down, added up, kept put), by both scorers, unless overridden."""
    jitter = np.array([0.0, 0.01, -0.01])[:n_seeds, None]
    classifier = {"cat": np.array([0.8, 0.3, 0.1]) + jitter, "duck": np.array([0.1, 0.6, 0.9]) + jitter,
                  "dog": np.array([0.5, 0.5, 0.51]) + jitter}
    classifier.update(cls or {})
    probs = np.array([[0.40, 0.50, 0.10], [0.42, 0.20, 0.38], [0.40, 0.05, 0.55]])   # dog, cat, duck per audio
    probs = np.repeat(probs[None], n_seeds, axis=0) if clap is None else clap
    e = np.stack([E_ORIG, unit(0.2 * E_ORIG + 0.8 * E_EDIT), unit(0.3 * E_ORIG + 0.7 * E_EDIT)]) if embs is None else embs
    return {"classifier": {k: np.broadcast_to(v, (n_seeds, 3)).copy() for k, v in classifier.items()},
            "classes": {"cat": ["Cat"], "duck": ["Duck"], "dog": ["Dog"]}, "classifier_name": "crafted",
            "clap_probs": probs, "clap_labels": [DOG, CAT, DUCK], "clap_source_index": {"dog": 0, "cat": 1, "duck": 2},
            "clap_embs": np.repeat(e[None], n_seeds, axis=0), "clap_name": "crafted CLAP", "logit_scale": 14.3,
            "notes": []}


def test_both_questions_with_numbers():
    r = verdict.build_verdict(crafted_scores(), ROLES, tolerance=0.05, min_effect=0.01)
    effect, edit = r["method_effect"]["classifier"]["checks"], r["edit_followed"]["classifier"]["checks"]
    assert set(effect) == set(edit) == {"added_increased", "removed_decreased", "kept_within_tolerance:dog"}
    # the headline compares with baseline_edited, step 9 with baseline_original
    assert effect["added_increased"]["deltas"] == pytest.approx([0.3] * 3)
    assert effect["removed_decreased"]["mean"] == pytest.approx(-0.2)
    assert edit["added_increased"]["mean"] == pytest.approx(0.8) and edit["removed_decreased"]["mean"] == pytest.approx(-0.7)
    assert effect["kept_within_tolerance:dog"]["mean"] == pytest.approx(0.01)
    assert r["method_effect"]["classifier"]["contrast"]["mean"] == pytest.approx(0.5)
    assert r["headline"] == {"question": "method_effect", "view": "classifier", "scorer": "crafted", "status": "PASS"}
    clap_effect = r["method_effect"]["clap"]["checks"]
    assert clap_effect["added_increased"]["mean"] == pytest.approx(0.17)
    assert clap_effect["removed_decreased"]["mean"] == pytest.approx(-0.15)
    assert r["method_effect"]["clap"]["scorer"] == "crafted CLAP" and r["edit_followed"]["clap"]["status"] == "PASS"
    P = np.array([[0.40, 0.50, 0.10], [0.42, 0.20, 0.38], [0.40, 0.05, 0.55]])
    kl = r["clap_distances"]["closer_to_edited_kl"]
    assert kl["kl_original"][0] == pytest.approx(entropy(P[0], P[2])) and kl["kl_edited"][0] == pytest.approx(entropy(P[1], P[2]))
    json.dumps(r)   # plain numbers only: it goes into results.json as is
    text = verdict.format_verdict(r)
    assert text.startswith("HEADLINE: method's own effect (AudioSet classifier): PASS")
    assert text.index("Method's own effect") < text.index("Edit followed") and "FAIL" not in text


def test_method_off_is_no_effect_whatever_step_9_says():
    scores = crafted_scores()
    for v in scores["classifier"].values():
        v[:, MANIP] = v[:, EDIT]
    scores["clap_probs"][:, MANIP] = scores["clap_probs"][:, EDIT]
    scores["clap_embs"][:, MANIP] = scores["clap_embs"][:, EDIT]
    r = verdict.build_verdict(scores, ROLES)
    assert r["method_effect"]["classifier"]["status"] == r["method_effect"]["clap"]["status"] == "no effect"
    assert r["headline"]["status"] == "no effect"
    assert r["edit_followed"]["classifier"]["status"] == "PASS"     # plain I_1 follows the edit by itself
    assert r["clap_distances"]["closer_to_edited_clap"]["status"] == "PASS"
    assert "HEADLINE: method's own effect (AudioSet classifier): no effect" in verdict.format_verdict(r)


@pytest.mark.parametrize("check, cls", [
    ("added_increased", {"duck": np.array([0.1, 0.6, 0.55])}),          # P(duck) fell below baseline_edited
    ("removed_decreased", {"cat": np.array([0.8, 0.3, 0.5])}),           # P(cat) went up from baseline_edited
    ("kept_within_tolerance:dog", {"dog": np.array([0.5, 0.5, 0.6])}),   # P(dog) moved 0.10 > 0.05
])
def test_each_check_fails_in_its_crafted_case(check, cls):
    r = verdict.build_verdict(crafted_scores(cls=cls), ROLES, tolerance=0.05)
    assert r["method_effect"]["classifier"]["checks"][check]["status"] == "FAIL"
    assert r["method_effect"]["classifier"]["status"] == r["headline"]["status"] == "FAIL"
    assert "FAIL      " + check in verdict.format_verdict(r)


def test_a_question_status_is_weak_when_one_check_is():
    noisy = crafted_scores()
    noisy["classifier"]["duck"][:, MANIP] = [1.0, 0.55, 0.95]     # manipulated - edited: +0.4, -0.06, +0.36
    r = verdict.build_verdict(noisy, ROLES)
    c = r["method_effect"]["classifier"]["checks"]["added_increased"]
    assert c["status"] == "weak" and c["fraction_holds"] == pytest.approx(2 / 3) and c["ci95"][0] < 0 < c["ci95"][1]
    assert r["method_effect"]["classifier"]["status"] == "weak"
    assert "weak      added_increased" in verdict.format_verdict(r)


def test_a_source_without_audioset_class_is_left_to_clap_never_mixed():
    scores = crafted_scores()
    del scores["classifier"]["dog"]
    scores["classes"]["dog"] = []
    r = verdict.build_verdict(scores, ROLES)
    assert "kept_within_tolerance:dog" not in r["method_effect"]["classifier"]["checks"]
    assert r["method_effect"]["classifier"]["not_judged"] == ["dog"]
    assert r["method_effect"]["clap"]["checks"]["kept_within_tolerance:dog"]["mean"] == pytest.approx(-0.02)
    assert "judged by CLAP only: dog" in verdict.format_verdict(r)
    # no column of the flat table holds a CLAP number under the classifier's name
    cols = verdict.verdict_columns(r)
    assert "effect audioset kept_within_tolerance:dog mean" not in cols
    assert cols["effect clap kept_within_tolerance:dog mean"] == pytest.approx(-0.02)


def test_headline_falls_back_to_clap_when_the_classifier_judges_neither_source():
    scores = crafted_scores()
    for s in ("cat", "duck"):
        del scores["classifier"][s]
    r = verdict.build_verdict(scores, ROLES)
    assert r["headline"]["view"] == "clap" and r["method_effect"]["classifier"]["contrast"] is None
    assert verdict.verdict_columns(r)["headline scorer"] == "clap"


@pytest.mark.parametrize("roles, match", [
    ({"removed": "cat", "added": "cat", "kept": []}, "must differ"),
    ({"removed": "cat", "added": "duck", "kept": ["cat"]}, "must differ"),
    ({"removed": None, "added": "duck", "kept": []}, "removed"),
])
def test_verdict_rejects_bad_roles(roles, match):
    with pytest.raises(ValueError, match=match):
        verdict.build_verdict(crafted_scores(), roles)


def test_the_verdict_reads_the_rows_it_is_told():
    # a sweep scores [baseline_original, baseline_edited, setting 1, setting 2]: rows=(0, 1, 3) judges setting 2
    scores = crafted_scores()
    for k in scores["classifier"]:
        scores["classifier"][k] = np.concatenate([scores["classifier"][k], scores["classifier"][k][:, 1:2]], axis=1)
    for k in ("clap_probs", "clap_embs"):
        scores[k] = np.concatenate([scores[k], scores[k][:, 1:2]], axis=1)
    assert verdict.build_verdict(scores, ROLES, rows=(0, 1, 2))["headline"]["status"] == "PASS"
    setting_2 = verdict.build_verdict(scores, ROLES, rows=(0, 1, 3))
    assert setting_2["method_effect"]["classifier"]["checks"]["added_increased"]["mean"] == 0
    assert setting_2["headline"]["status"] == "no effect"


def test_flat_rows_and_columns_carry_the_printed_statuses():
    r = verdict.build_verdict(crafted_scores(cls={"duck": np.array([0.1, 0.6, 0.605])}), ROLES)   # below the floor
    rows = verdict.verdict_rows(r)
    assert [x["question"] for x in rows[:4]] == ["method_effect"] * 4     # the headline question first
    assert {x["scorer"] for x in rows} == {"audioset", "clap"}
    duck = next(x for x in rows if x["question"] == "method_effect" and x["scorer"] == "audioset"
                and x["check"] == "added_increased")
    assert duck["status"] == "no effect" and duck["status"] in verdict.format_verdict(r)
    cols = verdict.verdict_columns(r)
    assert cols["effect audioset added_increased status"] == "no effect"
    assert cols["effect audioset status"] == r["method_effect"]["classifier"]["status"] == "weak"
    assert all(v in verdict.STATUSES + ("no checks",) for k, v in cols.items() if k.endswith("status"))
    assert verdict.headline_record(r)["method_effect"] == {"audioset": "weak", "clap": "PASS"}


