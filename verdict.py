"""The verdict: did the manipulated audio move the way the edit did? Paired statistics over seeds, statuses.

The three audios (baseline_original from I_0, baseline_edited from I_1, manipulated from E_final) are made for
several seeds and scored by scorers.score_run. The verdict answers two questions, each paired per seed and by
each scorer on its own (no number ever mixes the two):

1. Method's own effect (the headline): manipulated - baseline_edited. Both rows draw the same noise and differ
   only by E_final in place of plain CLIP of I_1 (SSV2A: slot 0, next to the same YOLO crops of I_1; the CIAP
   back end: the head's input), so this is what the SVD manipulation did beyond what plain I_1 does. With the
   method switched off it must read 'no effect'.
2. Edit followed (the plan's step 9): manipulated - baseline_original. Plain I_1 passes most of this by
   itself, since it already shows the added object and lacks the removed one.

Checks of each question, reported as mean ± std, a t-based 95% confidence interval and the fraction of
seeds where the check holds:

    removed_decreased            score(removed) goes down (by more than the effect floor)
    added_increased              score(added) goes up (by more than the effect floor)
    kept_within_tolerance:<s>    |change of score(s)| <= tolerance, for each kept source
    contrast                     (change of added) - (change of removed) > 0: the sweep ranks by this

Each figure has a unit and its own floor: the classifier's scores are probabilities (EVAL_MIN_EFFECT,
EVAL_TOLERANCE), CLAP's are cosines of the audio with the source's own label, and its embedding distances
cosine distances (EVAL_MIN_EFFECT_CLAP, EVAL_TOLERANCE_CLAP), the label-distribution KL is in nats
(EVAL_MIN_EFFECT_KL). Statuses are symmetric: each needs its own evidence from the 95% interval.

    PASS          the whole interval beyond the floor on the expected side (inside +-tolerance: kept source)
    FAIL          the whole interval beyond the floor on the wrong side (outside +-tolerance: kept source)
    no effect     the whole interval within +-floor (an up/down change smaller than the floor), or every
                  paired difference exactly 0 (the method switched off)
    inconclusive  the evidence of none of these: the interval crosses a floor (or a tolerance) boundary;
                  one seed has no interval and is always this (unless nothing changed at all)

They are the same words in the printout, run.json, results.json, sweep.csv, pairs.csv and summary.json. A
failing check is a research result, not an error. CLAP also reports whether the manipulated audio lies nearer
to baseline_edited than to baseline_original (embedding cosine distance, label-distribution KL).
"""
import math

import numpy as np

from metrics import cosine_distance, kl_divergence

# -----------------------------------------------------------------------------
# the verdict: two questions, paired differences over seeds

EXPECT = {"up": "> 0", "down": "< 0", "same": "within the tolerance"}
STATUSES = ("PASS", "inconclusive", "FAIL", "no effect")
ALPHA = 0.05                  # 95% intervals: a status needs its side of the interval, i.e. a one-sided test at 0.025

# the two questions each verdict answers; the first is the headline
QUESTIONS = {
    "method_effect": dict(title="Method's own effect", base="baseline_edited", short="effect",
                          about="manipulated vs baseline_edited: same noise, only E_final in place of plain CLIP(I_1) "
                                "differs, so this is what the SVD manipulation did beyond plain I_1"),
    "edit_followed": dict(title="Edit followed", base="baseline_original", short="edit",
                          about="manipulated vs baseline_original: the plan's step 9 (plain I_1 passes most of "
                                "it by itself: I_1 already shows the edit)"),
}
SCORERS = {"classifier": "audioset", "clap": "clap"}   # view key -> the short name used in table columns
# each view's score and its unit; the KL of the CLAP distances is in nats
SCORES = {"classifier": ("P_audioset", "probability"), "clap": ("cos_clap", "CLAP cosine")}
KL_UNIT = "nats"
STATUS_COLOURS = {"PASS": "tab:green", "inconclusive": "tab:olive", "FAIL": "tab:red", "no effect": "0.45"}
# the floors and tolerances main.py starts from (EVAL_MIN_EFFECT, EVAL_TOLERANCE, EVAL_MIN_EFFECT_CLAP,
# EVAL_TOLERANCE_CLAP, EVAL_MIN_EFFECT_KL); floors_of(cfg) reads a run's own
DEFAULT_FLOORS = dict(min_effect=0.01, tolerance=0.05, clap_min_effect=0.003, clap_tolerance=0.015,
                      kl_min_effect=0.0002)


def floors_of(cfg):
    """The verdict's floors and tolerances of a run config, as build_verdict's keyword arguments."""
    return dict(min_effect=cfg["EVAL_MIN_EFFECT"], tolerance=cfg["EVAL_TOLERANCE"],
                clap_min_effect=cfg["EVAL_MIN_EFFECT_CLAP"], clap_tolerance=cfg["EVAL_TOLERANCE_CLAP"],
                kl_min_effect=cfg["EVAL_MIN_EFFECT_KL"])


def paired_stats(deltas, expect, tolerance=0.0, confidence=0.95, min_effect=0.0, unit="probability"):
    """Statistics of paired differences (one per seed) for a check that expects them up, down or the same.

    Returns mean, std (ddof 1), a t-based confidence interval of the mean (None for one seed), the fraction
    of seeds where the check holds (beyond the floor min_effect for up/down, within +-tolerance for same),
    the status (STATUSES; see the module docstring) and, for up/down, the one-sided p-values behind it:
    p['PASS'] (H0: the mean is at most the floor on the expected side), p['FAIL'] (H0: it is at least -floor)
    and p['no effect'] (two one-sided tests, H0: |mean| >= floor). With the default 95% interval a status
    holds exactly when its p-value is below 0.025 (status_from_p), which is what a correction for many
    pairs adjusts (adjust_p).
    """
    from scipy.stats import t as student_t
    if expect not in EXPECT:
        raise ValueError(f"expect must be one of {list(EXPECT)}, got {expect!r}")
    if not 0 <= min_effect < 1:
        raise ValueError(f"min_effect is a difference in [0, 1), got {min_effect!r}")
    d = np.asarray(deltas, dtype=np.float64).ravel()
    if d.size == 0 or not np.isfinite(d).all():
        raise ValueError(f"deltas must be finite numbers, got {deltas!r}")
    n, mean = len(d), float(d.mean())
    std = float(d.std(ddof=1)) if n > 1 else None
    ci = None
    if n > 1:
        half = float(student_t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
        ci = [mean - half, mean + half]
    out = {"deltas": [float(x) for x in d], "mean": mean, "std": std, "ci95": ci, "n": n, "expect": expect,
           "unit": unit}
    if expect == "same":
        holds = np.abs(d) <= tolerance
        if ci is None:
            status = "inconclusive"
        elif -tolerance <= ci[0] and ci[1] <= tolerance:
            status = "PASS"
        elif ci[0] > tolerance or ci[1] < -tolerance:
            status = "FAIL"
        else:
            status = "inconclusive"
        return {**out, "fraction_holds": float(holds.mean()), "status": status, "tolerance": float(tolerance),
                "min_effect": None}
    sign = 1.0 if expect == "up" else -1.0
    holds = sign * d > min_effect
    p = one_sided_p(sign * d, min_effect)
    if ci is None or std == 0:
        status = status_from_p(p)   # exact: no spread, or nothing changed at all
    else:
        low, high = sorted((sign * ci[0], sign * ci[1]))   # the interval on the expected side's axis
        status = ("PASS" if low > min_effect else "FAIL" if high < -min_effect
                  else "no effect" if -min_effect <= low and high <= min_effect else "inconclusive")
    return {**out, "fraction_holds": float(holds.mean()), "status": status, "tolerance": None,
            "min_effect": float(min_effect), "p": p}


def one_sided_p(d, floor):
    """p-values of the three one-sided t-tests behind an up/down status, for differences d already signed so
    that 'up' is the expected side. One value, or no spread: 0 or 1, by the rule the interval would give
    (all zero = 'no effect'; otherwise one seed is evidence of nothing)."""
    from scipy.stats import t as student_t
    n, mean = len(d), float(np.mean(d))
    if n < 2 or float(np.std(d, ddof=1)) == 0:
        exact = n > 1 or not d.any()
        return {"PASS": float(not (exact and mean > floor)), "FAIL": float(not (exact and mean < -floor)),
                "no effect": float(not (exact and -floor <= mean <= floor))}
    se = float(np.std(d, ddof=1)) / math.sqrt(n)
    cdf = lambda x: float(student_t.cdf(x, n - 1))   # noqa: E731
    return {"PASS": 1 - cdf((mean - floor) / se), "FAIL": cdf((mean + floor) / se),
            "no effect": max(1 - cdf((mean + floor) / se), cdf((mean - floor) / se))}


def status_from_p(p, alpha=ALPHA):
    """The status whose one-sided p-value (p: paired_stats' 'p', raw or adjusted) is below alpha / 2."""
    for status in ("PASS", "FAIL", "no effect"):
        if p[status] < alpha / 2:
            return status
    return "inconclusive"


ADJUSTMENTS = {"holm": "Holm", "bh": "Benjamini-Hochberg"}


def adjust_p(pvalues, method="holm"):
    """p-values adjusted for testing len(pvalues) hypotheses at once, in their order.

    holm: Holm's step-down (the family-wise error: any false claim among all of them, under any dependence);
    bh: Benjamini-Hochberg (the false-discovery rate: the expected share of false claims among the claims).
    Comparing an adjusted value with alpha is the method's test of that hypothesis at alpha.
    """
    if method not in ADJUSTMENTS:
        raise ValueError(f"method must be one of {list(ADJUSTMENTS)}, got {method!r}")
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method == "holm":
        adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * ranked))
    else:
        adjusted = np.minimum.accumulate((m / np.arange(1, m + 1) * ranked)[::-1])[::-1].clip(max=1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


def adjusted_statuses(checks, method="holm", alpha=ALPHA):
    """One up/down check per pair (paired_stats dicts) -> the statuses after adjusting each kind of claim
    (PASS, FAIL, no effect) for the number of pairs."""
    kinds = {k: adjust_p([c["p"][k] for c in checks], method) for k in ("PASS", "FAIL", "no effect")}
    return [status_from_p({k: kinds[k][i] for k in kinds}, alpha) for i in range(len(checks))]


def overall_status(checks):
    """One status for a set of checks: FAIL if any fails, PASS if all pass, 'no effect' if every up/down
    check is no effect (kept sources staying put is then what nothing happening looks like), else inconclusive."""
    statuses = [c["status"] for c in checks.values()]
    moving = [c["status"] for c in checks.values() if c["expect"] != "same"]
    if not statuses:
        return "no checks"
    if "FAIL" in statuses:
        return "FAIL"
    if moving and all(s == "no effect" for s in moving):
        return "no effect"
    return "PASS" if all(s == "PASS" for s in statuses) else "inconclusive"


def _view(scorer, checks, contrast, extra=None):
    counts = {s: sum(c["status"] == s for c in checks.values()) for s in STATUSES}
    return {"scorer": scorer, "checks": checks, "status": overall_status(checks), "counts": counts,
            "contrast": contrast, **(extra or {})}


def compare_rows(scores, roles, base, test, tolerance=0.05, min_effect=0.01, names=("base", "test"),
                 clap_tolerance=DEFAULT_FLOORS["clap_tolerance"], clap_min_effect=DEFAULT_FLOORS["clap_min_effect"]):
    """Row `test` against row `base` of score_run's table, paired per seed, for each scorer on its own.

    Checks: added_increased (score(added) test - base > 0), removed_decreased (< 0), kept_within_tolerance:<s>
    (|change| <= tolerance); and the contrast (change of added) - (change of removed), expected > 0.
    The classifier view holds only sources with an AudioSet class (never a CLAP number), in probabilities
    (floor min_effect, tolerance); the CLAP view holds every source, each scored by the cosine with its own
    label (floor clap_min_effect, clap_tolerance). names: what base and test are called in the descriptions.
    Returns {"base", "test", "classifier": view, "clap": view}; a view is {scorer, checks, status, counts, contrast}.
    """
    for name, value in (("tolerance", tolerance), ("clap_tolerance", clap_tolerance)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} is a difference in [0, 1], got {value!r}")
    check_roles(roles)
    tables = {"classifier": ({s: v[:, [base, test]] for s, v in scores["classifier"].items()}, tolerance, min_effect),
              "clap": ({s: v[:, [base, test]] for s, v in scores["clap"].items()}, clap_tolerance, clap_min_effect)}
    jobs = [("removed_decreased", roles["removed"], "down"), ("added_increased", roles["added"], "up")]
    jobs += [(f"kept_within_tolerance:{k}", k, "same") for k in roles["kept"]]
    out = {"base": names[0], "test": names[1]}
    for view, (table, tol, floor) in tables.items():
        what, unit = SCORES[view]
        checks = {}
        for check, source, expect in jobs:
            if source not in table:
                continue
            b, t = (np.asarray(table[source][:, i], dtype=np.float64) for i in (0, 1))
            checks[check] = {"source": source,
                             "description": f"{what}({source}): {names[1]} - {names[0]} {EXPECT[expect]}",
                             names[0]: b.tolist(), names[1]: t.tolist(),
                             **paired_stats(t - b, expect, tol, min_effect=floor, unit=unit)}
        contrast = None
        if roles["added"] in table and roles["removed"] in table:
            d = lambda s: np.diff(np.asarray(table[s], dtype=np.float64), axis=1)[:, 0]   # noqa: E731
            contrast = {"description": f"change of {what}({roles['added']}) - change of {what}({roles['removed']}) > 0",
                        **paired_stats(d(roles["added"]) - d(roles["removed"]), "up", min_effect=floor, unit=unit)}
        name = scores["classifier_name"] if view == "classifier" else scores["clap_name"]
        missing = [s for s in [roles["removed"], roles["added"], *roles["kept"]] if s not in table]
        out[view] = _view(name, checks, contrast, {"not_judged": missing} if missing else None)
    return out


def check_roles(roles):
    """ValueError unless roles names a removed and an added source and kept ones, all different."""
    for role in ("removed", "added"):
        if not isinstance(roles.get(role), str) or not roles[role]:
            raise ValueError(f"roles needs a {role!r} source name, got {roles!r}")
    if not isinstance(roles.get("kept", []), (list, tuple)):
        raise ValueError(f"roles['kept'] must be a list of source names, got {roles!r}")
    if roles["removed"] == roles["added"] or set(roles.get("kept", [])) & {roles["removed"], roles["added"]}:
        raise ValueError(f"the removed, added and kept sources must differ, got {roles!r}")
    return roles


def build_verdict(scores, roles, tolerance=0.05, rows=(0, 1, 2), min_effect=0.01,
                  clap_tolerance=DEFAULT_FLOORS["clap_tolerance"], clap_min_effect=DEFAULT_FLOORS["clap_min_effect"],
                  kl_min_effect=DEFAULT_FLOORS["kl_min_effect"]):
    """The two questions, each by the classifier and by CLAP (a second view), paired per seed.

    scores: score_run's dict; roles: {'removed': name, 'added': name, 'kept': [names]}; rows: which rows of
    scores are (baseline_original, baseline_edited, manipulated). Floors, each in its own unit: min_effect
    and tolerance (probability: the classifier), clap_min_effect and clap_tolerance (CLAP cosine: CLAP's
    per-source scores and its embedding distances), kl_min_effect (nats: the label-distribution KL);
    floors_of(cfg) gives a run's. The headline is the method's own effect by the classifier (CLAP when the
    classifier judges neither the added nor the removed source).
    """
    o, e, m = rows
    floors = dict(tolerance=tolerance, min_effect=min_effect, clap_tolerance=clap_tolerance,
                  clap_min_effect=clap_min_effect)
    result = {q: compare_rows(scores, roles, {"method_effect": e, "edit_followed": o}[q], m, names=(
        QUESTIONS[q]["base"], "manipulated"), **floors) for q in QUESTIONS}
    embs, clap_probs = scores["clap_embs"][:, [o, e, m]], scores["clap_probs"][:, [o, e, m]]
    d_orig = np.array([cosine_distance(x[2], x[0]) for x in embs])
    d_edit = np.array([cosine_distance(x[2], x[1]) for x in embs])
    kl_orig = np.array([kl_divergence(p[0], p[2]) for p in clap_probs])
    kl_edit = np.array([kl_divergence(p[1], p[2]) for p in clap_probs])
    result["clap_distances"] = {
        "closer_to_edited_clap": {
            "description": "CLAP audio cosine distance: d(manip, original) - d(manip, edited) > 0",
            "to_original": d_orig.tolist(), "to_edited": d_edit.tolist(),
            **paired_stats(d_orig - d_edit, "up", min_effect=clap_min_effect, unit=SCORES["clap"][1])},
        "closer_to_edited_kl": {
            "description": "KL(P_original || P_manip) - KL(P_edited || P_manip) > 0, P = CLAP's softmax over "
                           "the run's labels",
            "kl_original": kl_orig.tolist(), "kl_edited": kl_edit.tolist(),
            **paired_stats(kl_orig - kl_edit, "up", min_effect=kl_min_effect, unit=KL_UNIT)}}
    view = result["method_effect"]["classifier"]
    judged = view["checks"].keys() & {"added_increased", "removed_decreased"}
    head_view = "classifier" if judged else "clap"
    result["headline"] = {"question": "method_effect", "view": head_view,
                          "scorer": result["method_effect"][head_view]["scorer"],
                          "status": result["method_effect"][head_view]["status"]}
    sources = {"removed": [roles["removed"]], "added": [roles["added"]], "kept": list(roles["kept"])}
    result.update(roles={"removed": roles["removed"], "added": roles["added"], "kept": list(roles["kept"])},
                  floors={SCORES["classifier"][1]: {"floor": float(min_effect), "tolerance": float(tolerance)},
                          SCORES["clap"][1]: {"floor": float(clap_min_effect), "tolerance": float(clap_tolerance)},
                          KL_UNIT: {"floor": float(kl_min_effect)}},
                  n_seeds=int(clap_probs.shape[0]),
                  scorers={"classifier": scores["classifier_name"], "clap": scores["clap_name"]},
                  judged_by={role: {s: scores["judged_by"][s] for s in names} for role, names in sources.items()})
    return result


def number_text(x, signed=True):
    """4 decimals, or 2 significant digits for tiny non-zero values (random-weight runs move scores by 1e-5)."""
    if x != 0 and abs(x) < 1e-3:
        return f"{x:+.1e}" if signed else f"{x:.1e}"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _pm(stats):
    text = number_text(stats["mean"])
    if stats["std"] is not None:
        text += f" ± {number_text(stats['std'], signed=False)}"
    return text


def bound_text(c):
    """'floor 0.01 probability' or 'tolerance ±0.05 CLAP cosine': the bound a check's status is read against."""
    if c["expect"] == "same":
        return f"tolerance ±{c['tolerance']:g} {c['unit']}"
    return f"floor {c['min_effect']:g} {c['unit']}"


def _stat_line(c):
    ci = f"95% CI [{number_text(c['ci95'][0])}, {number_text(c['ci95'][1])}]" if c["ci95"] else "no CI with one seed"
    return f"delta {_pm(c)}, {ci}, {bound_text(c)}, holds in {c['fraction_holds']:.0%} of seeds"


VIEW_TITLES = {"classifier": "AudioSet classifier", "clap": "CLAP (second view)"}


def floors_text(floors):
    """'floors 0.01 probability, 0.003 CLAP cosine, 0.0002 nats; kept tolerance 0.05 probability, 0.015 CLAP cosine'."""
    return ("floors " + ", ".join(f"{f['floor']:g} {unit}" for unit, f in floors.items()) + "; kept tolerance "
            + ", ".join(f"{f['tolerance']:g} {unit}" for unit, f in floors.items() if "tolerance" in f))


def clap_alone_lines(result):
    """One loud line per source that no AudioSet class judges (the classifier's checks leave it out)."""
    return [f"JUDGED BY CLAP ALONE: the {role} source {source!r}: {entry['detail']}"
            for role, entries in result["judged_by"].items() for source, entry in entries.items()
            if not entry["classes"]]


def judged_line(role, source, entry):
    """"removed 'cat': Cat, Meow, Purr <- set in AUDIO_CLASSES ...": one source of the verdict's 'judged by'."""
    classes = ", ".join(entry["classes"]) or "no AudioSet class: CLAP ALONE"
    return f"{role} {source!r}: {classes} <- {entry['detail']}"


def judged_by_lines(result):
    """Which AudioSet classes judge each source, and why (the layer that decided)."""
    lines = ["Judged by (the classifier: the max over these AudioSet classes; CLAP: the source's own label):"]
    for role, entries in result["judged_by"].items():
        lines += [f"  {judged_line(role, source, entry)}" for source, entry in entries.items()]
    return lines


def format_verdict(result):
    """Both questions as a printable table, the method's own effect first (statuses, means ± stds, CIs)."""
    head = result["headline"]
    lines = [f"HEADLINE: method's own effect ({VIEW_TITLES[head['view']]}): {head['status']}   "
             f"[{result['n_seeds']} seed(s); {floors_text(result['floors'])}]"]
    lines += clap_alone_lines(result)
    lines += [""] + judged_by_lines(result)
    for q, info in QUESTIONS.items():
        lines.append(f"\n{info['title']}: {info['about']}")
        for view in ("classifier", "clap"):
            v = result[q][view]
            counts = ", ".join(f"{n} {s}" for s, n in v["counts"].items() if n)
            lines.append(f"  {VIEW_TITLES[view]} [{v['scorer']}]: {v['status']}  ({counts or 'no checks'})")
            items = list(v["checks"].items()) + ([("contrast", v["contrast"])] if v["contrast"] else [])
            for name, c in items:
                lines.append(f"    {c['status']:12s} {name:34s}{c['description']}")
                lines.append(f"    {'':12s} {'':34s}{_stat_line(c)}")
            if v.get("not_judged"):
                lines.append(f"    (no AudioSet class, judged by CLAP only: {', '.join(v['not_judged'])})")
    lines.append("\nCLAP embedding distances (manipulated nearer to baseline_edited than to baseline_original):")
    for name, c in result["clap_distances"].items():
        lines.append(f"    {c['status']:12s} {name:34s}{c['description']}")
        lines.append(f"    {'':12s} {'':34s}{_stat_line(c)}")
    return "\n".join(lines)


def _rows_of_view(question, view, v):
    items = list(v["checks"].items()) + ([("contrast", v["contrast"])] if v["contrast"] else [])
    for name, c in items:
        lo, hi = c["ci95"] if c["ci95"] else (None, None)
        yield {"question": question, "scorer": SCORERS.get(view, view), "check": name, "status": c["status"],
               "mean": c["mean"], "std": c["std"], "ci_low": lo, "ci_high": hi,
               "fraction_holds": c["fraction_holds"], "n": c["n"], "description": c["description"],
               "unit": c["unit"], "bound": bound_text(c)}


def verdict_rows(result):
    """The verdict as a flat list of dicts (question, scorer, check, status, mean, std, ci_low, ci_high,
    fraction_holds, n, description, unit, bound): the method's own effect first; for tables and the bench."""
    rows = []
    for q in QUESTIONS:
        for view in ("classifier", "clap"):
            rows += _rows_of_view(q, view, result[q][view])
    rows += _rows_of_view("clap_distances", "clap", {"checks": result["clap_distances"], "contrast": None})
    return rows


def judged_by_columns(judged_by):
    """'<role> classes' and '<role> judged by' per role (kept sources joined with ' | ', each 'name: ...')."""
    row = {}
    for role, entries in judged_by.items():
        named = role == "kept"
        row[f"{role} classes"] = " | ".join((f"{s}: " if named else "") + "; ".join(e["classes"] or ["-"])
                                            for s, e in entries.items())
        row[f"{role} judged by"] = " | ".join((f"{s}: " if named else "") + e["why"] for s, e in entries.items())
    return row


def significant(x, digits=6):
    """x to `digits` significant digits: a table keeps a 1e-7 change of a random-weight run (6 decimals read 0.0)."""
    return float(f"{x:.{digits}g}")


def verdict_columns(result):
    """One flat table row (sweep.csv, pairs.csv): '<effect|edit> <audioset|clap> <check> <field>' columns,
    so that no column ever mixes the two scorers; each question's status per scorer; the floors in their
    units; which classes judged each source and why."""
    row = {}
    for q, info in QUESTIONS.items():
        for view, short in SCORERS.items():
            v = result[q][view]
            prefix = f"{info['short']} {short}"
            row[f"{prefix} status"] = v["status"]
            items = list(v["checks"].items()) + ([("contrast", v["contrast"])] if v["contrast"] else [])
            for name, c in items:
                row[f"{prefix} {name} status"] = c["status"]
                row[f"{prefix} {name} mean"] = significant(c["mean"])
                if c["ci95"]:
                    row[f"{prefix} {name} ci_low"], row[f"{prefix} {name} ci_high"] = map(significant, c["ci95"])
                row[f"{prefix} {name} fraction_holds"] = round(c["fraction_holds"], 4)
    row["headline"] = result["headline"]["status"]
    row["headline scorer"] = SCORERS[result["headline"]["view"]]
    for unit, f in result["floors"].items():
        row[f"floor {unit}"] = f["floor"]
        if "tolerance" in f:
            row[f"tolerance {unit}"] = f["tolerance"]
    row.update(judged_by_columns(result["judged_by"]))
    return row


def headline_record(result):
    """What run.json keeps of a verdict: the headline, each question's status per scorer, the floors and
    which classes judged each source."""
    return {"headline": result["headline"], "floors": result["floors"],
            **{q: {SCORERS[v]: result[q][v]["status"] for v in SCORERS} for q in QUESTIONS},
            "judged_by": {role: {s: {"classes": e["classes"], "why": e["why"]} for s, e in entries.items()}
                          for role, entries in result["judged_by"].items()}}


def edit_target(comparison):
    """An edit's success in one number: the contrast (change of P(added)) - (change of P(removed)) against A_0,
    mean over seeds with its interval and status, by the classifier, or by CLAP when the classifier judges
    neither object (the scorer is named: the two are never mixed)."""
    view = "classifier" if comparison["classifier"]["contrast"] else "clap"
    c = comparison[view]["contrast"]
    return {"scorer": SCORERS[view], "mean": c["mean"], "ci95": c["ci95"], "status": c["status"]}
