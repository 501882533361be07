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
    assert ci.low < 0.01 and verdict.paired_stats(deltas, "up", min_effect=0.01)["status"] == "inconclusive"
    # the one-sided p-value of 'the mean is beyond the floor' is scipy's t-test against the floor
    p = verdict.paired_stats(deltas, "up", min_effect=0.01)["p"]["PASS"]
    assert p == pytest.approx(stats.ttest_1samp(deltas, 0.01, alternative="greater").pvalue)
    with pytest.raises(ValueError, match="expect"):
        verdict.paired_stats([1.0], "sideways")


# each case is built so that one wrong rule flips its status: PASS and FAIL each need the whole interval beyond
# the floor on their side, 'no effect' the whole interval within +-floor, and what has none of that evidence is
# inconclusive, whichever side its mean is on; one seed is evidence of nothing unless nothing changed at all
@pytest.mark.parametrize("deltas, expect, status, holds", [
    ([0.10, 0.12, 0.11], "up", "PASS", 1.0),
    ([0.03, 0.002, 0.04], "up", "inconclusive", 2 / 3),    # CI [-0.02, 0.07]: low bound below 0, mean above
    ([0.012, 0.020, 0.016], "up", "inconclusive", 1.0),    # CI [0.006, 0.026]: above 0, low bound below the floor
    ([0.3, -0.1, 0.2], "up", "inconclusive", 2 / 3),       # CI straddles 0
    ([-0.05, -0.07, -0.06], "up", "FAIL", 0.0),            # CI [-0.085, -0.035]: all of it on the wrong side
    ([-0.03, 0.002, -0.04], "up", "inconclusive", 0.0),    # mean on the wrong side, CI not: once FAIL, now fair
    ([-0.012, -0.020, -0.016], "up", "inconclusive", 0.0),  # the mirror of the third case
    ([-0.10, -0.12, -0.11], "down", "PASS", 1.0),
    ([-0.03, -0.002, -0.04], "down", "inconclusive", 2 / 3),  # high bound above 0: a rule reading ci[0] says PASS
    ([0.05, 0.07, 0.06], "down", "FAIL", 0.0),
    ([1e-6, 2e-6, 1.5e-6], "up", "no effect", 0.0),        # float noise, however consistent: the CI is inside +-floor
    ([-1e-6, -2e-6, -1.5e-6], "down", "no effect", 0.0),
    ([0.0, 0.0, 0.0], "up", "no effect", 0.0),
    ([0.002, -0.003, 0.001, 0.0, -0.001, 0.002], "up", "no effect", 0.0),   # CI [-0.002, 0.002]
    ([0.005, -0.02, 0.01], "up", "inconclusive", 0.0),     # |mean| below the floor, CI not inside it: once 'no effect'
    ([0.005, 0.009, 0.02], "up", "inconclusive", 1 / 3),   # 2 of 3 seeds are below the floor: holds 1/3
    ([0.4], "up", "inconclusive", 1.0),                    # one seed: no interval, no evidence
    ([0.0], "up", "no effect", 0.0),                       # ... unless nothing changed at all
    ([0.02, 0.02], "up", "PASS", 1.0),                     # no spread: the interval is the mean
    ([-0.02, -0.02], "up", "FAIL", 0.0),
    ([0.005, 0.005], "up", "no effect", 0.0),
    ([0.01, -0.02, 0.015], "same", "PASS", 1.0),
    ([0.04, -0.03, 0.045], "same", "inconclusive", 1.0),   # CI leaves +-0.05, mean inside
    ([0.05, 0.06, 0.07], "same", "inconclusive", 1 / 3),   # mean outside, CI [0.035, 0.085] not all of it: once FAIL
    ([0.08, 0.09, 0.10], "same", "FAIL", 0.0),             # CI [0.065, 0.115]: all of it outside
    ([-0.08, -0.09, -0.10], "same", "FAIL", 0.0),
    ([0.0], "same", "inconclusive", 1.0),
])
def test_status_rules_bound_floor_and_holds(deltas, expect, status, holds):
    s = verdict.paired_stats(deltas, expect, tolerance=0.05, min_effect=0.01)
    assert s["status"] == status, (s["ci95"], s["mean"])
    assert s["fraction_holds"] == pytest.approx(holds)


MIRROR = {"PASS": "FAIL", "FAIL": "PASS", "no effect": "no effect", "inconclusive": "inconclusive"}


def random_deltas(rng, count=400):
    """Paired differences around the floor's scale: means and spreads from 0 to 5x the floor of 0.01."""
    for _ in range(count):
        n = int(rng.integers(1, 9))
        yield rng.normal(rng.uniform(-0.05, 0.05), rng.choice([0.0, 0.002, 0.01, 0.03]), n).round(4)


def test_statuses_are_symmetric():
    """FAIL needs exactly the evidence PASS needs, on the other side: the differences negated swap them."""
    rng = np.random.default_rng(0)
    seen = set()
    for d in random_deltas(rng):
        up = verdict.paired_stats(d, "up", tolerance=0.05, min_effect=0.01)["status"]
        assert verdict.paired_stats(-d, "up", tolerance=0.05, min_effect=0.01)["status"] == MIRROR[up], d
        assert verdict.paired_stats(-d, "down", tolerance=0.05, min_effect=0.01)["status"] == up, d
        same = verdict.paired_stats(d, "same", tolerance=0.02)["status"]
        assert verdict.paired_stats(-d, "same", tolerance=0.02)["status"] == same, d
        seen |= {up, same}
    assert seen == set(verdict.STATUSES)   # every status was reached, so the symmetry was tested on each


def test_the_p_values_give_the_intervals_statuses():
    """Each up/down status is its one-sided test at 0.025 (what a correction for many pairs adjusts)."""
    rng = np.random.default_rng(1)
    for d in random_deltas(rng):
        for expect in ("up", "down"):
            s = verdict.paired_stats(d, expect, min_effect=0.01)
            assert verdict.status_from_p(s["p"]) == s["status"], (d, expect, s["p"], s["ci95"])
            assert all(0 <= v <= 1 for v in s["p"].values())


def test_a_floor_of_zero_keeps_small_consistent_effects():
    assert verdict.paired_stats([1e-6, 2e-6, 1.5e-6], "up", min_effect=0.0)["status"] == "PASS"
    assert verdict.paired_stats([0.0, 0.0], "up", min_effect=0.0)["status"] == "no effect"
    with pytest.raises(ValueError, match="min_effect"):
        verdict.paired_stats([0.1], "up", min_effect=1.5)


# -----------------------------------------------------------------------------
# many pairs: each pair's status adjusted for the number of pairs

def test_benjamini_hochberg_is_scipys():
    from scipy.stats import false_discovery_control
    rng = np.random.default_rng(2)
    for m in (1, 2, 5, 40):
        p = rng.uniform(0, 0.2, m) ** 2
        np.testing.assert_allclose(verdict.adjust_p(p, "bh"), false_discovery_control(p, method="bh"), rtol=1e-12)


def test_holm_rejects_what_its_step_down_rejects():
    """Holm's definition: sort the p-values; reject the i-th smallest while every one up to it is <= alpha / (m - i)."""
    rng = np.random.default_rng(3)
    for m in (1, 3, 8, 25):
        p = rng.uniform(0, 0.1, m) ** 2
        adjusted = np.array(verdict.adjust_p(p, "holm"))
        for alpha in (0.001, 0.01, 0.025, 0.05):
            order, rejected = np.argsort(p), set()
            for i, j in enumerate(order):
                if p[j] > alpha / (m - i):
                    break
                rejected.add(int(j))
            assert set(np.flatnonzero(adjusted <= alpha).tolist()) == rejected, (m, alpha)
        assert (adjusted >= p).all()
    with pytest.raises(ValueError, match="method"):
        verdict.adjust_p([0.1], "bonferroni")


def test_adjusted_statuses_need_more_evidence_the_more_pairs():
    # each pair alone is a PASS (p just under 0.025); four at once are not all claims Holm allows
    pair = verdict.paired_stats([0.025, 0.010, 0.020, 0.014, 0.023], "up", min_effect=0.01)
    assert pair["status"] == "PASS" and 0.005 < pair["p"]["PASS"] < 0.025
    assert verdict.adjusted_statuses([pair], "holm") == ["PASS"]
    four = verdict.adjusted_statuses([pair] * 4, "holm")
    assert four == ["inconclusive"] * 4
    strong = verdict.paired_stats([0.10, 0.11, 0.12, 0.10, 0.11], "up", min_effect=0.01)
    assert verdict.adjusted_statuses([strong, pair, pair, pair], "holm")[0] == "PASS"
    # an adjusted claim is never one the pair alone did not make
    rng = np.random.default_rng(4)
    checks = [verdict.paired_stats(d, "up", min_effect=0.01) for d in random_deltas(rng, 60)]
    for method in verdict.ADJUSTMENTS:
        for c, status in zip(checks, verdict.adjusted_statuses(checks, method)):
            assert status in (c["status"], "inconclusive")


ROLES = {"removed": "cat", "added": "duck", "kept": ["dog"]}
E_ORIG, E_EDIT = unit(np.eye(512)[0]), unit(np.eye(512)[1])
ORIG, EDIT, MANIP = 0, 1, 2


def judged(classes, layer="AUDIO_CLASSES", why="set in AUDIO_CLASSES"):
    return {"classes": classes, "layer": layer, "why": why, "detail": why}


def crafted_scores(n_seeds=3, cls=None, clap=None, embs=None, cos=None):
    """A score_run-like table: 3 seeds x [baseline_original, baseline_edited, manipulated]. The manipulated audio
    moves further than baseline_edited (removed down, added up, kept put), by both scorers, unless overridden."""
    jitter = np.array([0.0, 0.01, -0.01])[:n_seeds, None]
    classifier = {"cat": np.array([0.8, 0.3, 0.1]) + jitter, "duck": np.array([0.1, 0.6, 0.9]) + jitter,
                  "dog": np.array([0.5, 0.5, 0.51]) + jitter}
    classifier.update(cls or {})
    cosines = {"cat": np.array([0.30, 0.15, 0.08]), "duck": np.array([0.05, 0.20, 0.28]),
               "dog": np.array([0.20, 0.20, 0.205])}
    cosines.update(cos or {})
    probs = np.array([[0.40, 0.50, 0.10], [0.42, 0.20, 0.38], [0.40, 0.05, 0.55]])   # dog, cat, duck per audio
    probs = np.repeat(probs[None], n_seeds, axis=0) if clap is None else clap
    e = np.stack([E_ORIG, unit(0.2 * E_ORIG + 0.8 * E_EDIT), unit(0.3 * E_ORIG + 0.7 * E_EDIT)]) if embs is None else embs
    return {"classifier": {k: np.broadcast_to(v, (n_seeds, 3)).copy() for k, v in classifier.items()},
            "classes": {"cat": ["Cat"], "duck": ["Duck"], "dog": ["Dog"]}, "classifier_name": "crafted",
            "judged_by": {"cat": judged(["Cat"]), "duck": judged(["Duck"], "name match", "name match"),
                          "dog": judged(["Dog"])},
            "clap": {k: (np.broadcast_to(v, (n_seeds, 3)) + jitter).copy() for k, v in cosines.items()},
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
    clap_effect = r["method_effect"]["clap"]["checks"]   # cosines with each source's own label
    assert clap_effect["added_increased"]["mean"] == pytest.approx(0.08)
    assert clap_effect["removed_decreased"]["mean"] == pytest.approx(-0.07)
    assert clap_effect["kept_within_tolerance:dog"]["mean"] == pytest.approx(0.005)
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
    for v in scores["clap"].values():
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
    ("kept_within_tolerance:dog", {"dog": np.array([0.5, 0.5, 0.6])}),   # P(dog) moved 0.10 > 0.05 in every seed
])
def test_each_check_fails_in_its_crafted_case(check, cls):
    r = verdict.build_verdict(crafted_scores(cls=cls), ROLES, tolerance=0.05)
    assert r["method_effect"]["classifier"]["checks"][check]["status"] == "FAIL"
    assert r["method_effect"]["classifier"]["status"] == r["headline"]["status"] == "FAIL"
    assert "FAIL         " + check in verdict.format_verdict(r)


def test_a_question_status_is_inconclusive_when_one_check_is():
    noisy = crafted_scores()
    noisy["classifier"]["duck"][:, MANIP] = [1.0, 0.55, 0.95]     # manipulated - edited: +0.4, -0.06, +0.36
    r = verdict.build_verdict(noisy, ROLES)
    c = r["method_effect"]["classifier"]["checks"]["added_increased"]
    assert c["status"] == "inconclusive" and c["fraction_holds"] == pytest.approx(2 / 3) and c["ci95"][0] < 0 < c["ci95"][1]
    assert r["method_effect"]["classifier"]["status"] == "inconclusive"
    assert "inconclusive added_increased" in verdict.format_verdict(r)


def test_no_effect_needs_every_up_down_check_to_show_it():
    """'no effect' is a claim with evidence: one check within its floor and another undecided is undecided."""
    def check(status, expect="up"):
        return {"status": status, "expect": expect}
    same = check("PASS", "same")
    status = lambda *c: verdict.overall_status(dict(enumerate(c)))   # noqa: E731
    assert status(check("no effect"), check("no effect", "down"), same) == "no effect"
    assert status(check("no effect"), check("inconclusive", "down"), same) == "inconclusive"
    assert status(check("PASS"), check("PASS", "down"), same) == "PASS"
    assert status(check("PASS"), check("no effect", "down"), same) == "inconclusive"
    assert status(check("PASS"), check("FAIL", "down"), check("inconclusive", "same")) == "FAIL"


def test_a_source_without_audioset_class_is_left_to_clap_never_mixed():
    scores = crafted_scores()
    del scores["classifier"]["dog"]
    scores["classes"]["dog"] = []
    scores["judged_by"]["dog"] = judged([], "CLAP alone", "CLAP alone: no name match")
    r = verdict.build_verdict(scores, ROLES)
    assert "kept_within_tolerance:dog" not in r["method_effect"]["classifier"]["checks"]
    assert r["method_effect"]["classifier"]["not_judged"] == ["dog"]
    assert r["method_effect"]["clap"]["checks"]["kept_within_tolerance:dog"]["mean"] == pytest.approx(0.005)
    assert "judged by CLAP only: dog" in verdict.format_verdict(r)
    # no column of the flat table holds a CLAP number under the classifier's name
    cols = verdict.verdict_columns(r)
    assert "effect audioset kept_within_tolerance:dog mean" not in cols
    assert cols["effect clap kept_within_tolerance:dog mean"] == pytest.approx(0.005)


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
    for k in scores["clap"]:
        scores["clap"][k] = np.concatenate([scores["clap"][k], scores["clap"][k][:, 1:2]], axis=1)
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
    assert cols["effect audioset status"] == r["method_effect"]["classifier"]["status"] == "inconclusive"
    assert all(v in verdict.STATUSES + ("no checks",) for k, v in cols.items() if k.endswith("status"))
    assert verdict.headline_record(r)["method_effect"] == {"audioset": "inconclusive", "clap": "PASS"}




# -----------------------------------------------------------------------------
# each unit its own floor, printed next to its figure

def test_each_unit_has_its_own_floor():
    scores = crafted_scores(cos={"duck": np.array([0.05, 0.20, 0.205])})   # CLAP: the added source up by 0.005
    base = verdict.build_verdict(scores, ROLES)
    clap = base["method_effect"]["clap"]["checks"]["added_increased"]
    assert clap["status"] == "PASS" and clap["min_effect"] == 0.003 and clap["unit"] == "CLAP cosine"
    # the probability floor moves the classifier's statuses only; CLAP's floor CLAP's only; the KL floor the KL only
    strict_p = verdict.build_verdict(scores, ROLES, min_effect=0.5)
    assert strict_p["method_effect"]["classifier"]["checks"]["added_increased"]["status"] == "no effect"
    assert strict_p["method_effect"]["clap"]["checks"]["added_increased"]["status"] == "PASS"
    assert strict_p["clap_distances"] == base["clap_distances"]
    strict_clap = verdict.build_verdict(scores, ROLES, clap_min_effect=0.01)
    assert strict_clap["method_effect"]["clap"]["checks"]["added_increased"]["status"] == "no effect"
    assert strict_clap["method_effect"]["classifier"] == base["method_effect"]["classifier"]
    assert strict_clap["clap_distances"]["closer_to_edited_kl"] == base["clap_distances"]["closer_to_edited_kl"]
    assert strict_clap["clap_distances"]["closer_to_edited_clap"]["min_effect"] == 0.01   # cosines both
    kl = base["clap_distances"]["closer_to_edited_kl"]
    assert kl["unit"] == "nats" and kl["min_effect"] == 0.0002 and kl["status"] == "PASS"
    loose_kl = verdict.build_verdict(scores, ROLES, kl_min_effect=0.9)["clap_distances"]["closer_to_edited_kl"]
    assert kl["mean"] < 0.9 and loose_kl["status"] == "no effect"
    tol = verdict.build_verdict(scores, ROLES, clap_tolerance=0.001)   # dog's cosine moved 0.005
    assert tol["method_effect"]["clap"]["checks"]["kept_within_tolerance:dog"]["status"] == "FAIL"
    assert tol["method_effect"]["classifier"]["checks"]["kept_within_tolerance:dog"]["status"] == "PASS"


def test_each_floor_is_printed_next_to_its_figure():
    r = verdict.build_verdict(crafted_scores(), ROLES, min_effect=0.02, clap_min_effect=0.004, kl_min_effect=0.0003,
                              tolerance=0.06, clap_tolerance=0.016)
    text = verdict.format_verdict(r)
    head = text.splitlines()[0]
    assert "floors 0.02 probability, 0.004 CLAP cosine, 0.0003 nats" in head
    assert "kept tolerance 0.06 probability, 0.016 CLAP cosine" in head
    lines = text.splitlines()
    for i, line in enumerate(lines):   # a check's description line, then its figures
        if "P_audioset(" in line and "within" not in line:
            assert "floor 0.02 probability" in lines[i + 1]
        elif "P_audioset(" in line:
            assert "tolerance ±0.06 probability" in lines[i + 1]
        elif "cos_clap(" in line and "within" not in line:
            assert "floor 0.004 CLAP cosine" in lines[i + 1]
        elif "cos_clap(" in line:
            assert "tolerance ±0.016 CLAP cosine" in lines[i + 1]
        elif line.strip().startswith(("PASS", "FAIL", "no effect", "inconclusive")) and "KL(" in line:
            assert "floor 0.0003 nats" in lines[i + 1]
    cols = verdict.verdict_columns(r)
    assert (cols["floor probability"], cols["floor CLAP cosine"], cols["floor nats"]) == (0.02, 0.004, 0.0003)
    assert verdict.headline_record(r)["floors"]["CLAP cosine"] == {"floor": 0.004, "tolerance": 0.016}
    assert {row["unit"] for row in verdict.verdict_rows(r)} == {"probability", "CLAP cosine", "nats"}


# -----------------------------------------------------------------------------
# which classes judged each source, everywhere the verdict goes

def test_the_verdict_says_which_classes_judged_each_source_and_why():
    scores = crafted_scores()
    scores["judged_by"]["cat"] = judged(["Cat"], "AUDIO_CLASSES", "set in AUDIO_CLASSES: a proxy")
    r = verdict.build_verdict(scores, ROLES)
    assert r["judged_by"]["added"] == {"duck": scores["judged_by"]["duck"]}
    text = verdict.format_verdict(r)
    assert "removed 'cat': Cat <- set in AUDIO_CLASSES: a proxy" in text and "added 'duck': Duck <- name match" in text
    assert "JUDGED BY CLAP ALONE" not in text
    cols = verdict.verdict_columns(r)
    assert (cols["removed classes"], cols["removed judged by"]) == ("Cat", "set in AUDIO_CLASSES: a proxy")
    assert (cols["added judged by"], cols["kept classes"], cols["kept judged by"]) == (
        "name match", "dog: Dog", "dog: set in AUDIO_CLASSES")
    assert verdict.headline_record(r)["judged_by"]["added"]["duck"] == {"classes": ["Duck"], "why": "name match"}


def test_a_source_judged_by_clap_alone_is_said_as_loudly_as_the_headline():
    scores = crafted_scores()
    del scores["classifier"]["duck"]
    scores["judged_by"]["duck"] = judged([], "CLAP alone", "CLAP alone: nearest class 0.31 < 0.5")
    text = verdict.format_verdict(verdict.build_verdict(scores, ROLES))
    first, second = text.splitlines()[:2]
    assert first.startswith("HEADLINE:")
    assert second.startswith("JUDGED BY CLAP ALONE: the added source 'duck'") and "0.31 < 0.5" in second
