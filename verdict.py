"""The verdict: did the manipulated audio move the way the edit did? Paired statistics over seeds, statuses.

The three audios (baseline_original from I_0, baseline_edited from I_1, manipulated from E_final) are made for
several seeds and scored by scorers.score_run. The verdict answers two questions, each paired per seed and by
each scorer on its own (no number ever mixes the two):

1. Method's own effect (the headline): manipulated - baseline_edited. Both rows carry I_1's YOLO crops and
   draw the same noise; only slot 0 differs (E_final vs plain CLIP of I_1), so this is what the SVD
   manipulation did beyond what plain I_1 does. With the method switched off it must read 'no effect'.
2. Edit followed (the plan's step 9): manipulated - baseline_original. Plain I_1 passes most of this by
   itself, since its crops already hold the added object and lack the removed one.

Checks of each question, reported as mean ± std, a t-based 95% confidence interval and the fraction of
seeds where the check holds:

    removed_decreased            score(removed) goes down (by more than the effect floor)
    added_increased              score(added) goes up (by more than the effect floor)
    kept_within_tolerance:<s>    |change of score(s)| <= tolerance, for each kept source
    contrast                     (change of added) - (change of removed) > 0: the sweep ranks by this

Statuses, the same in the printout, run.json, results.json, sweep.csv and pairs.csv: PASS (the whole
interval on the expected side and beyond the floor EVAL_MIN_EFFECT; inside the tolerance for a kept
source), weak (only the mean is), FAIL (the mean is on the wrong side), no effect (an up/down mean below
the floor: float noise is not a result). One seed has no interval, so it is never PASS. A failing check
is a research result, not an error. CLAP also reports whether the manipulated audio lies nearer to
baseline_edited than to baseline_original (embedding cosine distance, label-distribution KL).
"""
import math

import numpy as np

from metrics import cosine_distance, kl_divergence

# -----------------------------------------------------------------------------
# the verdict: two questions, paired differences over seeds

EXPECT = {"up": "> 0", "down": "< 0", "same": "within the tolerance"}
STATUSES = ("PASS", "weak", "FAIL", "no effect")
# PASS: the whole 95% interval is on the expected side and beyond the effect floor (inside +-tolerance for a
# kept source); weak: only the mean is; FAIL: the mean is on the wrong side (outside the tolerance);
# no effect: an up/down change whose mean is below the floor (float noise is not a result)

# the two questions each verdict answers; the first is the headline
QUESTIONS = {
    "method_effect": dict(title="Method's own effect", base="baseline_edited", short="effect",
                          about="manipulated vs baseline_edited: same crops and noise, only slot 0 differs, so "
                                "this is what the SVD manipulation did beyond plain I_1"),
    "edit_followed": dict(title="Edit followed", base="baseline_original", short="edit",
                          about="manipulated vs baseline_original: the plan's step 9 (plain I_1 passes most of "
                                "it by itself: its crops already changed)"),
}
SCORERS = {"classifier": "audioset", "clap": "clap"}
STATUS_COLOURS = {"PASS": "tab:green", "weak": "tab:olive", "FAIL": "tab:red", "no effect": "0.45"}   # view key -> the short name used in table columns


def paired_stats(deltas, expect, tolerance=0.0, confidence=0.95, min_effect=0.0):
    """Statistics of paired differences (one per seed) for a check that expects them up, down or the same.

    Returns mean, std (ddof 1), a t-based confidence interval of the mean (None for one seed), the fraction
    of seeds where the check holds (beyond the floor min_effect for up/down, within +-tolerance for same)
    and the status (STATUSES). One seed has no interval, so it is never PASS.
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
    if expect == "same":
        holds = np.abs(d) <= tolerance
        status = ("PASS" if ci is not None and ci[0] >= -tolerance and ci[1] <= tolerance
                  else "weak" if abs(mean) <= tolerance else "FAIL")
    else:
        sign = 1.0 if expect == "up" else -1.0
        holds = sign * d > min_effect
        near = None if ci is None else (ci[0] if expect == "up" else -ci[1])   # the bound nearest to zero
        if mean == 0 or abs(mean) < min_effect:
            status = "no effect"
        elif sign * mean < 0:
            status = "FAIL"
        else:
            status = "PASS" if near is not None and near > min_effect else "weak"
    return {"deltas": [float(x) for x in d], "mean": mean, "std": std, "ci95": ci, "n": n,
            "fraction_holds": float(holds.mean()), "status": status, "expect": expect,
            "tolerance": float(tolerance) if expect == "same" else None,
            "min_effect": float(min_effect) if expect != "same" else None}


def overall_status(checks):
    """One status for a set of checks: FAIL if any fails, PASS if all pass, 'no effect' if every up/down
    check is no effect (kept sources staying put is then what nothing happening looks like), else weak."""
    statuses = [c["status"] for c in checks.values()]
    moving = [c["status"] for c in checks.values() if c["expect"] != "same"]
    if not statuses:
        return "no checks"
    if "FAIL" in statuses:
        return "FAIL"
    if moving and all(s == "no effect" for s in moving):
        return "no effect"
    return "PASS" if all(s == "PASS" for s in statuses) else "weak"


def _view(scorer, checks, contrast, extra=None):
    counts = {s: sum(c["status"] == s for c in checks.values()) for s in STATUSES}
    return {"scorer": scorer, "checks": checks, "status": overall_status(checks), "counts": counts,
            "contrast": contrast, **(extra or {})}


def compare_rows(scores, roles, base, test, tolerance=0.05, min_effect=0.01, names=("base", "test")):
    """Row `test` against row `base` of score_run's table, paired per seed, for each scorer on its own.

    Checks: added_increased (score(added) test - base > 0), removed_decreased (< 0), kept_within_tolerance:<s>
    (|change| <= tolerance); and the contrast (change of added) - (change of removed), expected > 0.
    The classifier view holds only sources with an AudioSet class (never a CLAP number); the CLAP view holds
    every source. names: what base and test are called in the descriptions.
    Returns {"base", "test", "classifier": view, "clap": view}; a view is {scorer, checks, status, counts, contrast}.
    """
    if not 0 <= tolerance <= 1:
        raise ValueError(f"tolerance is a probability difference in [0, 1], got {tolerance!r}")
    check_roles(roles)
    clap_index = scores["clap_source_index"]
    tables = {"classifier": ("P_audioset", {s: v[:, [base, test]] for s, v in scores["classifier"].items()}),
              "clap": ("P_clap", {s: scores["clap_probs"][:, [base, test], i] for s, i in clap_index.items()})}
    jobs = [("removed_decreased", roles["removed"], "down"), ("added_increased", roles["added"], "up")]
    jobs += [(f"kept_within_tolerance:{k}", k, "same") for k in roles["kept"]]
    out = {"base": names[0], "test": names[1]}
    for view, (what, table) in tables.items():
        checks = {}
        for check, source, expect in jobs:
            if source not in table:
                continue
            b, t = (np.asarray(table[source][:, i], dtype=np.float64) for i in (0, 1))
            checks[check] = {"source": source,
                             "description": f"{what}({source}): {names[1]} - {names[0]} {EXPECT[expect]}",
                             names[0]: b.tolist(), names[1]: t.tolist(),
                             **paired_stats(t - b, expect, tolerance, min_effect=min_effect)}
        contrast = None
        if roles["added"] in table and roles["removed"] in table:
            d = lambda s: np.diff(np.asarray(table[s], dtype=np.float64), axis=1)[:, 0]   # noqa: E731
            contrast = {"description": f"change of {what}({roles['added']}) - change of {what}({roles['removed']}) > 0",
                        **paired_stats(d(roles["added"]) - d(roles["removed"]), "up", min_effect=min_effect)}
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


def build_verdict(scores, roles, tolerance=0.05, rows=(0, 1, 2), min_effect=0.01):
    """The two questions, each by the classifier and by CLAP (a second view), paired per seed.

    scores: score_run's dict; roles: {'removed': name, 'added': name, 'kept': [names]}; rows: which rows of
    scores are (baseline_original, baseline_edited, manipulated). min_effect: the floor below which an up/down
    change is 'no effect' (the CLAP distance checks use the same floor, in their own units). The headline is the method's own effect by the classifier (CLAP when the classifier
    judges neither the added nor the removed source).
    """
    o, e, m = rows
    result = {q: compare_rows(scores, roles, {"method_effect": e, "edit_followed": o}[q], m, tolerance, min_effect,
                              names=(QUESTIONS[q]["base"], "manipulated")) for q in QUESTIONS}
    embs, clap_probs = scores["clap_embs"][:, [o, e, m]], scores["clap_probs"][:, [o, e, m]]
    d_orig = np.array([cosine_distance(x[2], x[0]) for x in embs])
    d_edit = np.array([cosine_distance(x[2], x[1]) for x in embs])
    kl_orig = np.array([kl_divergence(p[0], p[2]) for p in clap_probs])
    kl_edit = np.array([kl_divergence(p[1], p[2]) for p in clap_probs])
    result["clap_distances"] = {
        "closer_to_edited_clap": {
            "description": "CLAP audio cosine distance: d(manip, original) - d(manip, edited) > 0",
            "to_original": d_orig.tolist(), "to_edited": d_edit.tolist(),
            **paired_stats(d_orig - d_edit, "up", min_effect=min_effect)},
        "closer_to_edited_kl": {
            "description": "KL(P_original || P_manip) - KL(P_edited || P_manip) > 0, in nats",
            "kl_original": kl_orig.tolist(), "kl_edited": kl_edit.tolist(),
            **paired_stats(kl_orig - kl_edit, "up", min_effect=min_effect)}}
    view = result["method_effect"]["classifier"]
    judged = view["checks"].keys() & {"added_increased", "removed_decreased"}
    head_view = "classifier" if judged else "clap"
    result["headline"] = {"question": "method_effect", "view": head_view,
                          "scorer": result["method_effect"][head_view]["scorer"],
                          "status": result["method_effect"][head_view]["status"]}
    result.update(roles={"removed": roles["removed"], "added": roles["added"], "kept": list(roles["kept"])},
                  tolerance=float(tolerance), min_effect=float(min_effect), n_seeds=int(clap_probs.shape[0]),
                  scorers={"classifier": scores["classifier_name"], "clap": scores["clap_name"]})
    return result


def _num(x, signed=True):
    """4 decimals, or 2 significant digits for tiny non-zero values (random-weight runs move scores by 1e-5)."""
    if x != 0 and abs(x) < 1e-3:
        return f"{x:+.1e}" if signed else f"{x:.1e}"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _pm(stats):
    text = _num(stats["mean"])
    if stats["std"] is not None:
        text += f" ± {_num(stats['std'], signed=False)}"
    return text


def _stat_line(c):
    ci = f"95% CI [{_num(c['ci95'][0])}, {_num(c['ci95'][1])}]" if c["ci95"] else "no CI with one seed"
    return f"delta {_pm(c)}, {ci}, holds in {c['fraction_holds']:.0%} of seeds"


VIEW_TITLES = {"classifier": "AudioSet classifier", "clap": "CLAP (second view)"}


def format_verdict(result):
    """Both questions as a printable table, the method's own effect first (statuses, means ± stds, CIs)."""
    head = result["headline"]
    lines = [f"HEADLINE: method's own effect ({VIEW_TITLES[head['view']]}): {head['status']}   "
             f"[floor {result['min_effect']:g}, kept tolerance {result['tolerance']:g}, {result['n_seeds']} seed(s)]"]
    for q, info in QUESTIONS.items():
        lines.append(f"\n{info['title']}: {info['about']}")
        for view in ("classifier", "clap"):
            v = result[q][view]
            counts = ", ".join(f"{n} {s}" for s, n in v["counts"].items() if n)
            lines.append(f"  {VIEW_TITLES[view]} [{v['scorer']}]: {v['status']}  ({counts or 'no checks'})")
            items = list(v["checks"].items()) + ([("contrast", v["contrast"])] if v["contrast"] else [])
            for name, c in items:
                lines.append(f"    {c['status']:9s} {name:34s}{c['description']}")
                lines.append(f"    {'':9s} {'':34s}{_stat_line(c)}")
            if v.get("not_judged"):
                lines.append(f"    (no AudioSet class, judged by CLAP only: {', '.join(v['not_judged'])})")
    lines.append("\nCLAP embedding distances (manipulated nearer to baseline_edited than to baseline_original):")
    for name, c in result["clap_distances"].items():
        lines.append(f"    {c['status']:9s} {name:34s}{c['description']}")
        lines.append(f"    {'':9s} {'':34s}{_stat_line(c)}")
    return "\n".join(lines)


def _rows_of_view(question, view, v):
    items = list(v["checks"].items()) + ([("contrast", v["contrast"])] if v["contrast"] else [])
    for name, c in items:
        lo, hi = c["ci95"] if c["ci95"] else (None, None)
        yield {"question": question, "scorer": SCORERS.get(view, view), "check": name, "status": c["status"],
               "mean": c["mean"], "std": c["std"], "ci_low": lo, "ci_high": hi,
               "fraction_holds": c["fraction_holds"], "n": c["n"], "description": c["description"]}


def verdict_rows(result):
    """The verdict as a flat list of dicts (question, scorer, check, status, mean, std, ci_low, ci_high,
    fraction_holds, n, description): the method's own effect first; for tables and the browser bench."""
    rows = []
    for q in QUESTIONS:
        for view in ("classifier", "clap"):
            rows += _rows_of_view(q, view, result[q][view])
    rows += _rows_of_view("clap_distances", "clap", {"checks": result["clap_distances"], "contrast": None})
    return rows


def verdict_columns(result):
    """One flat table row (sweep.csv, pairs.csv): '<effect|edit> <audioset|clap> <check> <field>' columns,
    so that no column ever mixes the two scorers; plus each question's status per scorer."""
    row = {}
    for q, info in QUESTIONS.items():
        for view, short in SCORERS.items():
            v = result[q][view]
            prefix = f"{info['short']} {short}"
            row[f"{prefix} status"] = v["status"]
            items = list(v["checks"].items()) + ([("contrast", v["contrast"])] if v["contrast"] else [])
            for name, c in items:
                row[f"{prefix} {name} status"] = c["status"]
                row[f"{prefix} {name} mean"] = round(c["mean"], 6)
                if c["ci95"]:
                    row[f"{prefix} {name} ci_low"], row[f"{prefix} {name} ci_high"] = (round(x, 6) for x in c["ci95"])
                row[f"{prefix} {name} fraction_holds"] = round(c["fraction_holds"], 4)
    row["headline"] = result["headline"]["status"]
    row["headline scorer"] = SCORERS[result["headline"]["view"]]
    return row


def headline_record(result):
    """What run.json keeps of a verdict: the headline and each question's status per scorer."""
    return {"headline": result["headline"], "min_effect": result["min_effect"], "tolerance": result["tolerance"],
            **{q: {SCORERS[v]: result[q][v]["status"] for v in SCORERS} for q in QUESTIONS}}




def edit_target(comparison):
    """An edit's success in one number: the contrast (change of P(added)) - (change of P(removed)) against A_0,
    mean over seeds with its interval and status, by the classifier, or by CLAP when the classifier judges
    neither object (the scorer is named: the two are never mixed)."""
    view = "classifier" if comparison["classifier"]["contrast"] else "clap"
    c = comparison[view]["contrast"]
    return {"scorer": SCORERS[view], "mean": c["mean"], "ci95": c["ci95"], "status": c["status"]}
