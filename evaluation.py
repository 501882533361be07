"""Plan step 9 for one run: score the three audios of every seed, judge them, draw them, write results.json.

    results = evaluate_run(audio, seeds, {"removed": "cat", "added": "duck", "kept": ["dog"]}, run_dir,
                           classifier, clap, class_map={"cat": ["Cat", "Meow"]}, clap_labels={"cat": "a cat meowing"})

The scorers (the AudioSet classifier and CLAP) are in scorers.py, the statistics and statuses of the verdict
in verdict.py, the set-level figures of many runs (FAD, FD, KL) in metrics.py. Here: the figures of a run
(scores.png, spectrograms.png), how much of a recording an edit kept (step 8's preservation figures), how far
E_final moved the remix, and results.json.

    python evaluation.py fad|fd|kl DIR_A DIR_B | RUN_DIR [--reference DIR]   # set-level figures (metrics.py)
"""
import json
import sys
from pathlib import Path

import numpy as np

from audio_io import AUDIO_NAMES
from metrics import cosine_distance
from scorers import resolve_audio_classes, score_run
from util import new_file
from verdict import QUESTIONS, STATUS_COLOURS, VIEW_TITLES, build_verdict, check_roles, format_verdict

# -----------------------------------------------------------------------------
# the scores as a table

def format_scores(scores, sources, rows=(0, 1, 2)):
    """Mean ± std over seeds of each source's score per audio, for both scorers (AudioSet: probability; CLAP:
    cosine with the source's own label)."""
    rows = list(rows)
    lines = [f"  {'source':14s}{'scorer':12s}" + "".join(f"{n:>22s}" for n in AUDIO_NAMES)]
    for source in sources:
        tables = []
        if source in scores["classifier"]:
            tables.append(("AudioSet", scores["classifier"][source][:, rows]))
        tables.append(("CLAP cos", scores["clap"][source][:, rows]))
        for scorer, v in tables:
            cells = "".join(f"{mean_std_text(v[:, i]):>22s}" for i in range(3))
            lines.append(f"  {source:14s}{scorer:12s}{cells}")
    return "\n".join(lines)


def mean_std_text(x):
    x = np.asarray(x, dtype=np.float64)
    return f"{x.mean():.4f}" + (f" ± {x.std(ddof=1):.4f}" if len(x) > 1 else "")


# -----------------------------------------------------------------------------
# figures

def plot_scores(scores, sources, path, rows=(0, 1, 2), seeds=None, result=None):
    """Grouped bars (mean over seeds, error bar = std, dots = single seeds) for each scorer, and the verdict.

    Left: the AudioSet classifier's score of each source; next: CLAP's cosine with each source's label; then (with a
    build_verdict result) one panel per question, method's own effect first: each check's paired difference
    (manipulated - baseline_edited, manipulated - baseline_original) by the headline's scorer, mean with its
    95% interval and status, seeds as dots, the effect floor / kept tolerance band shaded. Writes a PNG.
    """
    from matplotlib.figure import Figure
    rows = list(rows)
    panels = [("AudioSet classifier score (independent sigmoid)",
               {s: scores["classifier"][s][:, rows] for s in sources if s in scores["classifier"]}),
              ("CLAP cosine of the audio with the source's own label",
               {s: scores["clap"][s][:, rows] for s in sources})]
    n_panels = 2 + (len(QUESTIONS) if result is not None else 0)
    fig = Figure(figsize=(max(4.8, 1.5 * len(sources) + 1.5) * n_panels, 5.0), layout="constrained")
    axes = fig.subplots(1, n_panels)
    width = 0.8 / len(AUDIO_NAMES)
    for ax, (title, table) in zip(axes, panels):
        names = list(table)
        x = np.arange(len(names))
        for j, audio_name in enumerate(AUDIO_NAMES):
            vals = np.array([table[s][:, j] for s in names]) if names else np.zeros((0, 1))
            pos = x + (j - 1) * width
            mean = vals.mean(axis=1) if names else []
            std = vals.std(axis=1, ddof=1) if names and vals.shape[1] > 1 else None
            bars = ax.bar(pos, mean, width, yerr=std, capsize=3, label=audio_name, alpha=0.85)
            ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
            for k in range(len(names)):
                ax.scatter(np.full(vals.shape[1], pos[k]), vals[k], s=8, c="k", zorder=3)
        ax.set_xticks(x, names)
        if title.startswith("AudioSet"):
            ax.set_ylim(0, 1.08)   # probabilities; CLAP's cosines keep their own (narrower, signed) range
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    if result is not None:
        for ax, (q, info) in zip(axes[2:], QUESTIONS.items()):
            view = result[q][result["headline"]["view"]]
            checks = list(view["checks"].items()) + ([("contrast", view["contrast"])] if view["contrast"] else [])
            for i, (name, c) in enumerate(checks):
                lo, hi = c["ci95"] if c["ci95"] else (c["mean"], c["mean"])
                ax.errorbar([i], [c["mean"]], yerr=[[c["mean"] - lo], [hi - c["mean"]]], fmt="o",
                            color=STATUS_COLOURS[c["status"]], capsize=5)
                ax.scatter(np.full(len(c["deltas"]), i + 0.12), c["deltas"], s=10, c="k", zorder=3)
                band = c["tolerance"] if c["expect"] == "same" else c["min_effect"]
                ax.fill_between([i - 0.3, i + 0.3], -band, band, color="0.85", zorder=0)
                ax.annotate(c["status"], (i, hi), textcoords="offset points", xytext=(0, 6), ha="center",
                            fontsize=8, color=STATUS_COLOURS[c["status"]])
            ax.axhline(0, color="0.4", lw=0.8)
            ax.set_xticks(range(len(checks)), [n.replace("kept_within_tolerance:", "kept: ") for n, _ in checks],
                          rotation=12)
            ax.set_title(f"{info['title']} ({VIEW_TITLES[result['headline']['view']]}): manipulated - "
                         f"{info['base']}\nper seed, mean and 95% CI; grey: effect floor / kept tolerance\n"
                         "green PASS, olive inconclusive, red FAIL, grey no effect", fontsize=9)
    n = len(seeds) if seeds is not None else scores["clap_probs"].shape[0]
    fig.suptitle(f"Scores per source and audio: mean ± std over {n} seed(s), dots = single seeds", fontsize=10)
    with new_file(path) as f:   # complete or absent, never replaced
        fig.savefig(f, format="png", dpi=110)
    return Path(path)


def analysis_log_mel(audio, sample_rate, n_mels=64):
    """[n_mels, frames] log-mel power in dB (10 ms hop, 40 ms Hann window, 64 Slaney-normalised HTK mel bands
    up to sample_rate / 2), through transformers' audio_utils: the front end of the figures and of step 8's
    preservation figures (AudioLDM's own, the VAE's input, is model.edit.audioldm_log_mel)."""
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function
    audio = np.asarray(audio, dtype=np.float64).ravel()
    hop = max(1, sample_rate // 100)
    n_fft = 4 * hop
    filters = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
                              max_frequency=sample_rate / 2, sampling_rate=sample_rate, norm="slaney", mel_scale="htk")
    # equal-area (Slaney) bands keep white noise flat; reflect padding needs more samples than half a window
    return spectrogram(audio, window_function(n_fft, "hann"), frame_length=n_fft, hop_length=hop, power=2.0,
                       pad_mode="reflect" if len(audio) > n_fft // 2 else "constant", mel_filters=filters,
                       mel_floor=1e-10, log_mel="dB")


def plot_spectrograms(audios, sample_rate, path):
    """Log-mel spectrograms of the named audios side by side, on one colour scale. Writes a PNG."""
    from matplotlib.figure import Figure
    mels = {name: analysis_log_mel(a, sample_rate) for name, a in audios.items()}
    top = max(float(m.max()) for m in mels.values())
    fig = Figure(figsize=(4.2 * len(mels) + 1, 3.4), layout="constrained")
    axes = fig.subplots(1, len(mels), squeeze=False, sharey=True)
    for ax, (name, mel) in zip(axes[0], mels.items()):
        seconds = len(np.asarray(audios[name]).ravel()) / sample_rate
        im = ax.imshow(mel, origin="lower", aspect="auto", extent=[0, seconds, 0, mel.shape[0]],
                       vmin=top - 80, vmax=top, cmap="magma")
        ax.set_title(str(name))
        ax.set_xlabel("time (s)")
    axes[0][0].set_ylabel(f"mel band (0-{sample_rate // 2} Hz)")
    fig.colorbar(im, ax=axes[0].tolist(), label="dB")
    with new_file(path) as f:   # complete or absent, never replaced
        fig.savefig(f, format="png", dpi=110)
    return Path(path)


# -----------------------------------------------------------------------------
# preservation: how much of a recording A_0 an edit kept (step 8)

PRESERVATION_METRICS = {
    "log_mel_l1_db": "mean |log-mel(base) - log-mel(edit)| in dB, base = reconstructed or A_0 (lower = closer)",
    "log_spectral_distance_db": "log-spectral distance in dB, STFT power, mean over frames (lower = closer)",
    "clap_cosine": "cosine of the CLAP audio embeddings (higher = closer)",
    "onset_correlation": "Pearson correlation of librosa's onset-strength envelopes (higher = same timing)",
}


def log_mel_l1(a, b, sample_rate):
    """Mean absolute difference of the two audios' log-mel spectrograms (analysis_log_mel), in dB."""
    ma, mb = analysis_log_mel(a, sample_rate), analysis_log_mel(b, sample_rate)
    n = min(ma.shape[1], mb.shape[1])
    return float(np.abs(ma[:, :n] - mb[:, :n]).mean())


def log_spectral_distance(a, b, sample_rate, floor=1e-10):
    """LSD in dB: per frame the RMS over frequency of 10 log10(P_a / P_b) (STFT power, 40 ms Hann window, 10 ms
    hop, powers floored at `floor`), then the mean over frames."""
    from transformers.audio_utils import spectrogram, window_function
    hop = max(1, int(sample_rate) // 100)
    n_fft = 4 * hop

    def power(x):
        x = np.asarray(x, dtype=np.float64).ravel()
        return spectrogram(x, window_function(n_fft, "hann"), frame_length=n_fft, hop_length=hop, power=2.0,
                           pad_mode="reflect" if len(x) > n_fft // 2 else "constant")

    pa, pb = power(a), power(b)
    n = min(pa.shape[1], pb.shape[1])
    diff = 10 * np.log10(np.maximum(pa[:, :n], floor)) - 10 * np.log10(np.maximum(pb[:, :n], floor))
    return float(np.sqrt((diff ** 2).mean(axis=0)).mean())


def onset_correlation(a, b, sample_rate):
    """Pearson correlation of librosa's onset-strength envelopes: do the events of b fall where a's do?
    0.0 when either envelope is flat (no onsets: the correlation is undefined)."""
    import librosa
    ea = librosa.onset.onset_strength(y=np.asarray(a, dtype=np.float32).ravel(), sr=int(sample_rate))
    eb = librosa.onset.onset_strength(y=np.asarray(b, dtype=np.float32).ravel(), sr=int(sample_rate))
    n = min(len(ea), len(eb))
    ea, eb = ea[:n] - ea[:n].mean(), eb[:n] - eb[:n].mean()
    denom = float(np.sqrt((ea ** 2).sum() * (eb ** 2).sum()))
    return float((ea * eb).sum() / denom) if denom > 0 else 0.0


def preservation(audio, sample_rate, clap_embs=None, base=0):
    """Every preservation metric of each row of audio [S, R, T] against row `base` (A_0), per seed.

    clap_embs: [S, R, 512] (score_run's) for the CLAP cosine, which is left out without them. Returns
    {row index or name: {metric: {'per_seed': [S], 'mean', 'std'}}} for every row but base (keys are row indexes;
    step 8 names them). std is None for one seed.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 3 or 0 in audio.shape:
        raise ValueError(f"audio must be [seeds, rows, samples], got shape {audio.shape}")
    S, R, _ = audio.shape
    out = {}
    for r in range(R):
        if r == base:
            continue
        per = {"log_mel_l1_db": [log_mel_l1(audio[s, base], audio[s, r], sample_rate) for s in range(S)],
               "log_spectral_distance_db": [log_spectral_distance(audio[s, base], audio[s, r], sample_rate)
                                            for s in range(S)],
               "onset_correlation": [onset_correlation(audio[s, base], audio[s, r], sample_rate) for s in range(S)]}
        if clap_embs is not None:
            e = np.asarray(clap_embs, dtype=np.float64)
            per["clap_cosine"] = [1.0 - cosine_distance(e[s, r], e[s, base]) for s in range(S)]
        out[r] = {m: {"per_seed": v, "mean": float(np.mean(v)),
                      "std": float(np.std(v, ddof=1)) if len(v) > 1 else None} for m, v in per.items()}
    return out


def format_preservation(result, names=None, title="Preservation of A_0"):
    """preservation()'s dict as a table under `title` (what the rows are compared with): one line per row,
    mean ± std per metric."""
    metrics = list(PRESERVATION_METRICS)
    lines = [f"  {title} (mean ± std over seeds)", f"  {'':46s}" + "".join(f"{m:>28s}" for m in metrics)]
    for row, per in result.items():
        name = names[row] if names is not None and isinstance(row, int) else str(row)
        cells = "".join(f"{mean_std_text(per[m]['per_seed']):>28s}" if m in per else f"{'-':>28s}" for m in metrics)
        lines.append(f"  {name:46s}{cells}")
    return "\n".join(lines)


EDIT_PRESERVATION_TITLES = {
    "reconstructed": "Preservation of the reconstruction (A_0 regenerated under c_src: the edit alone)",
    "audio_input": "Preservation of A_0 as recorded (also the VAE, vocoder and inversion round trip)"}


def format_edit_preservation(result):
    """Step 8's two preservation tables from edit_results.json's dict: against the reconstruction (what the edits
    are judged against) first, against A_0 as recorded second (main.py prints them; the bench shows them)."""
    return "\n".join(format_preservation(kept, title=EDIT_PRESERVATION_TITLES[base]) for base, kept in
                     ((result["judged_against"], result["preservation"]),
                      (result["raw"]["judged_against"], result["raw"]["preservation"])))


# -----------------------------------------------------------------------------
# one run

def evaluate_run(audio, seeds, roles, run_dir, classifier, clap, class_map=None, clap_labels=None,
                 sample_rate=16000, tolerance=0.05, extra=None, min_effect=0.01, class_min_similarity=None, **floors):
    """Score the three audios of every seed, print the verdict, write results.json, scores.png, spectrograms.png.

    audio: [S, 3, T] (seeds x baseline_original, baseline_edited, manipulated); seeds: the S seeds.
    roles: {'removed', 'added', 'kept'} source names. extra: more entries for results.json (e.g. how far
    E_final moved the remix). class_min_similarity: the CLAP-text threshold of scorers.resolve_audio_classes;
    floors: the CLAP and KL floors of verdict.build_verdict (clap_min_effect, clap_tolerance, kl_min_effect).
    Never overwrites: an existing run_dir/results.json raises FileExistsError first.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 3 or audio.shape[1] != 3 or audio.shape[0] != len(seeds):
        raise ValueError(f"audio must be [{len(seeds)} seeds, 3 audios, samples], got shape {audio.shape}")
    check_roles(roles)
    sources = [roles["removed"], roles["added"], *roles["kept"]]
    resolve_audio_classes(sources, class_map or {}, classifier.labels)   # unknown class names fail before any work
    run_dir = Path(run_dir)
    results_path = run_dir / "results.json"
    if results_path.exists():
        raise FileExistsError(f"{results_path} already exists; evaluate into a new run folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    scores = score_run(audio, sources, classifier, clap, class_map or {}, clap_labels or {}, sample_rate,
                       **({} if class_min_similarity is None else {"class_min_similarity": class_min_similarity}))
    result = build_verdict(scores, roles, tolerance, min_effect=min_effect, **floors)
    plot_scores(scores, sources, run_dir / "scores.png", seeds=seeds, result=result)
    plot_spectrograms(dict(zip(AUDIO_NAMES, audio[0])), sample_rate, run_dir / "spectrograms.png")
    results = {"seeds": [int(s) for s in seeds], "audios": list(AUDIO_NAMES), "sources": sources,
               **result, "scores": scores_record(scores, sources),
               "sample_rate": int(sample_rate), "figures": ["scores.png", "spectrograms.png"], **(extra or {})}
    with new_file(results_path, "x") as f:   # fail rather than overwrite if another run raced us here
        json.dump(results, f, indent=2)
    print(format_scores(scores, sources))
    print(format_verdict(result))
    print(f"Results: {results_path}")
    return results


def scores_record(scores, sources, rows=(0, 1, 2)):
    """The per-seed scores as plain lists for results.json: scorer -> source -> audio -> [S]."""
    rows = list(rows)
    classifier = {s: {n: scores["classifier"][s][:, r].tolist() for n, r in zip(AUDIO_NAMES, rows)}
                  for s in sources if s in scores["classifier"]}
    clap = {s: {n: scores["clap"][s][:, r].tolist() for n, r in zip(AUDIO_NAMES, rows)} for s in sources}
    return {"classifier": {"name": scores["classifier_name"], "classes": scores["classes"],
                           "judged_by": scores["judged_by"], "per_seed": classifier},
            "clap": {"name": scores["clap_name"], "score": "cosine of the audio with the source's own label",
                     "labels": scores["clap_labels"], "logit_scale": scores["logit_scale"], "per_seed": clap,
                     "all_labels_per_seed": {n: scores["clap_probs"][:, r].tolist() for n, r in zip(AUDIO_NAMES, rows)},
                     "all_labels": "softmax over the labels (the label-distribution KL's P)"},
            "notes": scores["notes"]}


def e_final_reach(claps, row=2):
    """How far E_final moved AudioLDM's condition: cosine distances of a manipulated row's CLAP to the baselines'.

    The manipulated and baseline_edited rows of one seed share every other slot and all noise, so their
    distance is what E_final alone changed. claps: [S, rows, 512]; row: the manipulated row. Per seed + means.
    """
    import torch.nn.functional as F
    claps = claps.double()   # float32 puts 1 - cos(x, x) at ~1e-7, the size of a real but small reach

    def distance(other):     # equal rows (the method switched off) are 0, not 1 - cos's rounding
        d = 1 - F.cosine_similarity(claps[:, row], claps[:, other], dim=-1)
        return d.masked_fill((claps[:, row] == claps[:, other]).all(-1), 0.0).tolist()
    d_edit, d_orig = distance(1), distance(0)
    return {"cosine_distance_to_baseline_edited": d_edit, "cosine_distance_to_baseline_original": d_orig,
            "mean_to_baseline_edited": sum(d_edit) / len(d_edit),
            "mean_to_baseline_original": sum(d_orig) / len(d_orig),
            "what": "1 - cos between the CLAP embeddings AudioLDM is conditioned on (SSV2A's remix or the CIAP "
                    "head's output), per seed"}


if __name__ == "__main__":   # python evaluation.py fad DIR_A DIR_B: set-level figures (metrics.py)
    import metrics
    sys.exit(metrics.main(sys.argv[1:]))
