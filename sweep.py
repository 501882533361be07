"""Sweeps: one edit pair under a grid of settings, ranked by the method's own effect.

    python main.py --sweep SVD_K=1,5,10 SVD_ALPHA=0.1,0.3

The grid's settings are checked like a single run's before any model loads (check_sweep). The work goes
through the plan's own steps (main.py): SAM2 masks, CLIP tokens and YOLO detections once; steps 3-6 per
setting (milliseconds); cycle mix and AudioLDM per setting and seed, every row of a seed in one call, the two
baselines once per seed (and per PIN_GLOBAL/SAMPLER value, since those change every audio). Output:
sweep.csv (one row per setting, ranked), sweep_heatmap.png, manipulated_<setting>[_seed<N>].wav; with a
recording (--AUDIO_INPUT), edit_sweep.csv and edit_tradeoff.png.

The ranking picks the best of many settings on the same seeds that score it, so the winner's interval is
optimistic (the winner's curse): the best setting and the default one run again on CONFIRM_SEEDS fresh seeds,
and both figures are reported ("chosen on seeds 42-44, confirmed on 45-54: +0.031 [+0.012, +0.050]").
"""
import itertools

from audio_io import AUDIO_NAMES, EDIT_TARGETS, wav_name
from errors import UserError
from inputs import roles_of, source_names
from runs import Timer, detection_record, recorded_warnings, run_file, save_tensors, write_csv
from settings import AUDIO_KEYS, SWEEPABLE, check_settings, confirm_seeds, eval_seeds


def sweep_settings(grid):
    bad = [k for k in grid if k not in SWEEPABLE]
    if bad:
        raise UserError(f"cannot sweep {', '.join(bad)}: only {', '.join(SWEEPABLE)} vary after the shared work. "
                        "Run separate runs for the others")
    if not grid or any(not isinstance(v, list) or not v for v in grid.values()):
        raise UserError(f"the sweep grid needs at least one setting with a list of values, got {grid!r}. "
                        "Example: python main.py --sweep SVD_K=1,5,10 SVD_ALPHA=0.1,0.3")
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*grid.values())]


def check_sweep(cfg):
    """Every setting of the grid checked like a single run's, before any model loads. Values that would name
    the same files are run once (cfg['SWEEP'] loses the repeats); returns a warning for each one dropped."""
    if "EDIT_STRENGTH" in cfg["SWEEP"] and not cfg["AUDIO_INPUT"]:
        raise UserError("--sweep EDIT_STRENGTH=... edits a recording: give it with --AUDIO_INPUT=recording.wav")
    cfg["SWEEP"], notes = dedupe_grid(cfg["SWEEP"])
    for setting in sweep_settings(cfg["SWEEP"]):
        check_settings({**cfg, **setting}, where=f"sweep setting {setting_name(setting)}")
    return notes


def dedupe_grid(grid):
    """(grid, warnings): a value of a setting that names the same files as an earlier one (SVD_K=1,1, or
    SVD_ALPHA=0.3,0.3000001, which file names print as 0.3) is dropped with a warning, not run twice into
    one file name."""
    clean, notes = {}, []
    for name, values in grid.items():
        if not isinstance(values, list):
            clean[name] = values   # sweep_settings says what is wrong with it
            continue
        kept = {}
        for value in values:
            part = setting_name({name: value}).casefold()
            if part in kept:
                same = "repeats" if kept[part] == value else "names the same files as"
                notes.append(f"sweep {name}={value!r} {same} {name}={kept[part]!r} ({setting_name({name: value})}): "
                             "run once")
            else:
                kept[part] = value
        clean[name] = list(kept.values())
    return clean, notes


def setting_name(setting):
    """'SVD_K-5_SVD_ALPHA-0.3': a setting as a file-name part (manipulated_<setting>.wav)."""
    from util import safe_name
    parts = [f"{k}-{v:g}" if isinstance(v, float) else f"{k}-{v}" for k, v in setting.items()]
    return safe_name("_".join(parts), limit=120)


def run_sweep(plan, cfg, models, run_dir, images, prompts, record, progress=None):
    """Every setting of cfg['SWEEP'] over every seed: sweep.csv, a heat map of the target score, the wavs.

    Through the plan's own steps (main.py): masks, tokens and detections once; steps 3-6
    (plan.manipulated_embedding) per setting; step 7 (plan.step7_audio) once per group of settings that share
    their baselines, all of the group's manipulated rows in its batches; step 8 per setting with a recording.
    Then the winner's curse: the best setting and the default one run again on CONFIRM_SEEDS fresh seeds that
    took no part in the choice (confirm_choice), and sweep.csv marks which seeds chose and which confirmed.
    """
    import torch
    from util import set_seed
    settings = sweep_settings(cfg["SWEEP"])
    timer, caught = Timer(), record.data.setdefault("warnings", [])
    seeds = eval_seeds(cfg)
    print(f"Sweep: {len(settings)} settings over {', '.join(cfg['SWEEP'])}, {len(seeds)} seed(s) each")
    set_seed(cfg["SEED"])
    edit_rows = []
    with recorded_warnings(caught):
        with timer("shared: masks, tokens, detection"):
            (M_neg, M_pos), _ = plan.step1_masks(images, prompts, models, run_dir, cfg)
            tok = plan.step2_clip_tokens(images, models)
            # the CIAP back end maps CLIP embeddings alone: no YOLO
            sources = None if cfg["CIAP_CHECKPOINT"] else plan.detect_sources(images, tok, models)
        shared = dict(plan=plan, cfg=cfg, models=models, run_dir=run_dir, images=images, prompts=prompts, tok=tok,
                      masks=(M_neg, M_pos), sources=sources, timer=timer, progress=progress)
        with timer("per setting: steps 3-6"):
            embs = [setting_embedding(shared, setting) for setting in settings]
        # the first group's baselines are the plain names; a later group's (another PIN_GLOBAL / SAMPLER) carry it
        suffixes = {}
        for i, setting in enumerate(settings):
            suffixes.setdefault(audio_group(cfg, setting), "" if not suffixes else "_" + setting_name(
                dict(audio_group(cfg, setting))))
        rows, all_claps, detections, edit_groups = judge_settings(shared, settings, embs, seeds, suffixes)
        if cfg["AUDIO_INPUT"]:   # step 8 per setting: its manipulated row steers the recording
            for claps, members in edit_groups:
                edit_rows += sweep_edits(plan, cfg, models, run_dir, claps, seeds, prompts, settings, members)
        rank_key = sweep_rank_key(rows)
        rows.sort(key=lambda r: -r[rank_key + " mean"])
        for rank, row in enumerate(rows, start=1):
            row["rank"] = rank
        confirmed, confirmation = confirm_choice(shared, rows, rank_key, settings, embs, suffixes)
        write_csv(run_file(run_dir, "sweep.csv"), rows + confirmed)
        plot_sweep_heatmap(rows, list(cfg["SWEEP"]), run_dir / "sweep_heatmap.png", key=rank_key + " mean")
        if edit_rows:
            write_csv(run_file(run_dir, "edit_sweep.csv"), edit_rows)
            plot_edit_tradeoff(edit_rows, run_file(run_dir, "edit_tradeoff.png"))
            print(f"Edit trade-off: {run_dir / 'edit_sweep.csv'}, {run_dir / 'edit_tradeoff.png'}")
    save_tensors({"settings": settings, "emb_final": torch.stack([e["emb_final"] for e in embs]), "claps": all_claps,
                  "seeds": seeds, "confirm_claps": confirmation.pop("_claps", {}),
                  "confirm_seeds": confirmation.get("confirmed_on", [])},
                 run_dir / "embeddings.pt")
    record.update(settings=settings, timings_s=timer.seconds, detections=detection_record(detections),
                  confirmation=confirmation)
    print(f"\nSettings ranked by the method's own effect ({rank_key}: change of the added source's score - change of "
          f"the removed one's, manipulated - baseline_edited, mean over seeds {seed_span(seeds)}; the intervals are "
          "unadjusted and come from the seeds that chose the rank):")
    for row in rows:
        print(f"  {row['rank']:3d}. {setting_name({k: row[k] for k in cfg['SWEEP']}):40s} {interval_text(row, rank_key)}")
    print(confirmation["text"])
    print(f"Sweep table: {run_dir / 'sweep.csv'}; heat map: {run_dir / 'sweep_heatmap.png'}")
    return rows


def audio_group(cfg, setting):
    """The settings that act on every audio row (slot pinning, sampler): settings that differ in them need
    their own baselines."""
    return tuple((k, setting.get(k, cfg[k])) for k in AUDIO_KEYS)


def setting_embedding(shared, setting):
    """Steps 3-6 for one setting (plan.manipulated_embedding): E_final and what step 5 did."""
    print(f"\n--- setting {setting_name(setting)} ---")
    emb = shared["plan"].manipulated_embedding(shared["tok"], *shared["masks"], {**shared["cfg"], **setting},
                                               shared["prompts"])
    return {"emb_final": emb["emb_final"], "svd": emb["svd"]}


def judge_settings(shared, settings, embs, seeds, suffixes, extra=None):
    """Step 7 for the settings over the seeds, one call per audio group (all of the group's manipulated rows in
    its batches), their wavs, both scorers and each setting's verdict on its own row.

    Returns (one table row per setting, in the order of settings; remix CLAPs per group; the detections;
    [(claps, member indexes)] per group for step 8). extra: more columns for every row."""
    import torch
    import evaluation
    import scorers
    import verdict
    from model.aldm import save_wav
    plan, cfg, models, run_dir, timer = (shared[k] for k in ("plan", "cfg", "models", "run_dir", "timer"))
    roles = roles_of(cfg, shared["prompts"])
    groups = {}
    for i, setting in enumerate(settings):
        groups.setdefault(audio_group(cfg, setting), []).append(i)
    sr = models.sample_rate
    rows, all_claps, edit_groups, detections = [None] * len(settings), {}, [], None
    for group, members in groups.items():
        g_cfg = {**cfg, **dict(group)}
        suffix = suffixes.get(group, "_" + setting_name(dict(group)))
        with timer("per setting: cycle_mix + AudioLDM"):
            audio, claps, _, detections = plan.step7_audio(shared["images"], shared["tok"], torch.stack(
                [embs[i]["emb_final"] for i in members]), models, g_cfg, shared["sources"], seeds=seeds,
                progress=shared["progress"])
        for s, seed in enumerate(seeds):
            for r, name in enumerate(AUDIO_NAMES[:2]):
                save_wav(run_file(run_dir, wav_name(name + suffix, seed, cfg["SEED"])), audio[s, r], sr)
            for j, i in enumerate(members):
                save_wav(run_file(run_dir, wav_name(f"manipulated_{setting_name(settings[i])}", seed, cfg["SEED"])),
                         audio[s, 2 + j], sr)
        with timer("evaluation"):
            scores = scorers.score_run(audio, source_names(cfg, shared["prompts"]), models.ast, models.clap,
                                       cfg["AUDIO_CLASSES"], cfg["EVAL_LABELS"], sr,
                                       class_min_similarity=cfg["EVAL_CLASS_MIN_SIMILARITY"])
        for j, i in enumerate(members):
            result = verdict.build_verdict(scores, roles, rows=(0, 1, 2 + j), **verdict.floors_of(cfg))
            reach = evaluation.e_final_reach(claps, row=2 + j)
            info = embs[i]["svd"]
            rows[i] = {**settings[i], "seeds": seed_span(seeds), "seed role": "chose", **(extra or {}),
                       **verdict.verdict_columns(result),
                       "reach_to_baseline_edited": verdict.significant(reach["mean_to_baseline_edited"]),
                       "k_effective_suppress": info["suppress"]["k_effective"],
                       "k_effective_boost": info["boost"]["k_effective"],
                       "no_op": info["suppress"]["no_op"] or info["boost"]["no_op"],
                       "audio": wav_name(f"manipulated_{setting_name(settings[i])}", seeds[0], cfg["SEED"])}
        all_claps[setting_name(dict(group))] = claps
        edit_groups.append((claps, members))
    return rows, all_claps, detections, edit_groups


def seed_span(seeds):
    """'42-44' (consecutive seeds), '42' (one), or '42, 47' (others)."""
    seeds = list(seeds)
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def interval_text(row, key):
    """'+0.0310 [+0.0120, +0.0500] PASS': a table row's mean, 95% interval and status of one contrast column
    (tiny figures, such as a random-weight run's, in two significant digits, as the verdict prints them)."""
    from verdict import number_text
    ci = (f"[{number_text(row[key + ' ci_low'])}, {number_text(row[key + ' ci_high'])}]" if key + " ci_low" in row
          else "(no CI with one seed)")
    return f"{number_text(row[key + ' mean'])} {ci} {row[key + ' status']}"


def confirm_choice(shared, rows, rank_key, settings, embs, suffixes):
    """The winner's curse: the ranked rows chose their best setting on the same seeds that score it, so its
    interval is optimistic. The best setting and the default one (main.py's constants, with the command line's
    overrides) run again on CONFIRM_SEEDS fresh seeds. Returns (their sweep.csv rows, marked 'confirmed',
    and the record for run.json with the printed text)."""
    cfg = shared["cfg"]
    chose, fresh = eval_seeds(cfg), confirm_seeds(cfg)
    names = list(cfg["SWEEP"])
    best = {k: rows[0][k] for k in names}
    default = {k: cfg[k] for k in names}
    record = {"chosen_on": chose, "rank_by": rank_key}
    if not fresh or set(names) <= {"EDIT_STRENGTH"}:
        why = ("CONFIRM_SEEDS=0" if not fresh else "EDIT_STRENGTH changes only step 8, not the ranked audio")
        record["text"] = (f"Not confirmed on fresh seeds ({why}): the best setting's interval above comes from the "
                          f"seeds that chose it ({seed_span(chose)}) and is optimistic (the winner's curse).")
        return [], record
    confirm = [best] + ([default] if default != best else [])
    roles = ["best (rank 1)"] + (["default"] if default != best else [])
    if default == best:
        roles = ["best (rank 1), the default"]
    print(f"\n=== Confirming the choice on fresh seeds {seed_span(fresh)}: {', '.join(roles)} ===")
    index = {setting_name(s): i for i, s in enumerate(settings)}
    confirm_embs = [embs[index[setting_name(s)]] if setting_name(s) in index else setting_embedding(shared, s)
                    for s in confirm]
    confirmed, claps, _, _ = judge_settings(shared, confirm, confirm_embs, fresh, suffixes)
    rank_of = {setting_name({k: r[k] for k in names}): r["rank"] for r in rows}
    lines = [f"Winner's curse: the best setting was chosen on seeds {seed_span(chose)}; it and the default setting "
             f"ran again on {len(fresh)} fresh seeds {seed_span(fresh)} (CONFIRM_SEEDS):"]
    record.update(confirmed_on=fresh, settings=[])
    for setting, row, role in zip(confirm, confirmed, roles):
        name = setting_name(setting)
        row.update({"seed role": "confirmed", "confirms": role, "rank": rank_of.get(name, "")})
        chosen_row = next((r for r in rows if setting_name({k: r[k] for k in names}) == name), None)
        chosen = (f"chosen on seeds {seed_span(chose)}: {interval_text(chosen_row, rank_key)}, " if chosen_row
                  else "not in the grid, ")
        lines.append(f"  {role:26s} {name:36s} {chosen}confirmed on {seed_span(fresh)}: {interval_text(row, rank_key)}")
        record["settings"].append({"role": role, "setting": setting, "confirmed": {
            k: row.get(f"{rank_key} {k}") for k in ("mean", "ci_low", "ci_high", "status")},
            "chosen": None if chosen_row is None else {k: chosen_row.get(f"{rank_key} {k}")
                                                       for k in ("mean", "ci_low", "ci_high", "status")}})
    record["text"] = "\n".join(lines)
    record["_claps"] = claps
    return confirmed, record


def sweep_rank_key(rows):
    """The column prefix a sweep ranks by: the method's own effect contrast by the classifier, or by CLAP
    when the classifier does not judge both the added and the removed source (never a mix of the two)."""
    for key in ("effect audioset contrast", "effect clap contrast"):
        if all(key + " mean" in r for r in rows):
            return key
    raise ValueError("no scorer judged both the added and the removed source in every setting")


def plot_sweep_heatmap(rows, names, path, key="effect audioset contrast mean"):
    """Heat map of `key` over the first two swept constants (mean over any others); one row for one constant."""
    import numpy as np
    from matplotlib.figure import Figure
    x_name, y_name = names[0], (names[1] if len(names) > 1 else None)
    label = lambda v: f"{v:g}" if isinstance(v, float) else str(v)   # noqa: E731
    xs = sorted({r[x_name] for r in rows}, key=str)
    ys = sorted({r[y_name] for r in rows}, key=str) if y_name else [None]
    xs = sorted(xs) if all(isinstance(v, (int, float)) for v in xs) else xs
    ys = sorted(ys) if y_name and all(isinstance(v, (int, float)) for v in ys) else ys
    grid = np.full((len(ys), len(xs)), np.nan)
    for j, y in enumerate(ys):
        for i, x in enumerate(xs):
            vals = [r[key] for r in rows if r[x_name] == x and (y_name is None or r[y_name] == y)]
            grid[j, i] = np.mean(vals) if vals else np.nan
    fig = Figure(figsize=(1.2 * len(xs) + 3, 0.8 * len(ys) + 2.5))
    ax = fig.add_subplot()
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(xs)), [label(x) for x in xs])
    ax.set_yticks(range(len(ys)), [label(y) for y in ys] if y_name else [""])
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name or "")
    for j in range(len(ys)):
        for i in range(len(xs)):
            ax.text(i, j, f"{grid[j, i]:.3f}", ha="center", va="center", color="w", fontsize=8)
    extra = f" (mean over {', '.join(names[2:])})" if len(names) > 2 else ""
    ax.set_title(f"{key}{extra}\n(method's own effect: change of the added source's score - change of the removed "
                 "one's, manipulated - baseline_edited, mean over the choosing seeds)", fontsize=8)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    from util import new_file
    with new_file(path) as f:   # complete or absent, never replaced
        fig.savefig(f, format="png", dpi=100)
    return path


def sweep_edits(plan, cfg, models, run_dir, claps, seeds, prompts, settings, members):
    """plan.step8_edit for every setting of one sweep group (its own manipulated row, its own strength): rows."""
    table = []
    for j, i in enumerate(members):
        setting = settings[i]
        result = plan.step8_edit(cfg, models, run_dir, claps, seeds, prompts, strength=setting.get(
            "EDIT_STRENGTH", cfg["EDIT_STRENGTH"]), manip_row=2 + j, suffix="_" + setting_name(setting))
        for name in EDIT_TARGETS:   # judged against the reconstruction (step8_edit)
            target = result["target"][name]
            row = {**setting, "strength": result["strength"], "audio": name, "target": round(target["mean"], 6),
                   "target scorer": target["scorer"], "target status": target["status"]}
            checks = result["edit_success"][name]["classifier"]["checks"]
            row.update({f"{check} status": c["status"] for check, c in checks.items()})
            row.update({f"{m} mean": round(v["mean"], 6) for m, v in result["preservation"][name].items()})
            table.append(row)
    return table


def plot_edit_tradeoff(rows, path):
    """Edit success (target gain over the reconstruction) against preservation of the reconstruction, one point
    per setting, both targets."""
    from matplotlib.figure import Figure
    panels = [("log_mel_l1_db mean", "log-mel L1 to the reconstruction (dB, lower = more of A_0 kept)"),
              ("onset_correlation mean", "onset-envelope correlation with the reconstruction (higher = timing kept)"),
              ("clap_cosine mean", "CLAP audio cosine to the reconstruction (higher = closer)")]
    fig = Figure(figsize=(15, 4.4), layout="constrained")
    for ax, (key, label) in zip(fig.subplots(1, len(panels)), panels):
        for name, marker in (("edited", "o"), ("edited_plain", "s")):
            pts = sorted((r["strength"], r[key], r["target"]) for r in rows if r["audio"] == name)
            ax.plot([p[1] for p in pts], [p[2] for p in pts], marker=marker, label=name)
            for strength, x, y in pts:
                ax.annotate(f"{strength:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel("edit success: gain in P(added) - P(removed) over the reconstruction")
        ax.legend(fontsize=8)
    fig.suptitle("Edit success against preservation, both against A_0's reconstruction (A_0 regenerated under c_src); "
                 "numbers = EDIT_STRENGTH (mean over seeds)", fontsize=10)
    with open(path, "xb") as f:
        fig.savefig(f, format="png", dpi=100)
    return path
