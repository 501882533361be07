"""What happens after step 7: the audio rows, their sample rate, E_final's reach, the verdict, the sweep table.

The wiring test (test_main_wiring.py) guards steps 1-7. These tests guard the handoff to the evaluation on
smoke runs, each against a quantity whose size fits what it guards (the tiny random classifier moves its
probabilities by ~1e-6 between rows, so row order is checked on the waveforms the scorers receive, not on
their scores), and each is run again on copies of main.py broken on purpose, which it must catch.
"""
import json
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from test_main_wiring import check_wiring, installed_mutant, mutant

import audio_io
import main
import scorers
import settings

ROWS = audio_io.AUDIO_NAMES
QUANT = 2 / 32767                        # a 16-bit wav holds a float waveform to within this
METHOD_OFF = ["--MIX_DIRECT=1", "--MIX_BETA=0", "--MIX_ALPHA=0", "--MIX_GAMMA=0"]
# every setting steps 3-7 read, away from its default: a run that ignores one is caught by the wiring check
NON_DEFAULT = ["--MASK_THRESHOLD=0.3", "--SVD_K=3", "--SVD_ALPHA=0.2", "--SVD_BETA=2.0", "--MIX_DIRECT=0.3",
               "--MIX_BETA=0.5", "--MIX_ALPHA=0.1", "--MIX_GAMMA=0.1", "--PIN_GLOBAL=True"]
SCENARIOS = {
    # AUDIO_BATCH=4 holds one seed's 3 rows per AudioLDM call, where equal rows drawn twice come out apart
    "off": ["--smoke", "--EVAL_SEEDS=3", "--AUDIO_BATCH=4", *METHOD_OFF],
    "on": ["--smoke", "--EVAL_SEEDS=2", *NON_DEFAULT],
    # setting MIX_BETA=0 is the method switched off, MIX_BETA=0.4 is not: each must be judged on its own row
    "sweep": ["--smoke", "--EVAL_SEEDS=2", *METHOD_OFF, "--sweep", "MIX_BETA=0,0.4"],
}


def cfg_of(args):
    cfg = settings.default_config(main)
    settings.parse_args(args, cfg)
    return cfg


def run(module, scenario, out):
    """A smoke run of `module` (main or a mutant), recording what the scorers were handed."""
    handed = []

    def spy(cls, method):
        original = getattr(cls, method)

        def recording(self, audios, sample_rate):
            handed.append({"scorer": cls.__name__, "audios": [np.array(a, copy=True) for a in audios],
                           "sample_rate": sample_rate})
            return original(self, audios, sample_rate)
        return recording

    with pytest.MonkeyPatch.context() as mp:
        # observers only: the real scorer runs on what it is handed
        mp.setattr(scorers.AudioClassifier, "class_probabilities",
                   spy(scorers.AudioClassifier, "class_probabilities"))
        mp.setattr(scorers.ClapScorer, "audio_embeddings", spy(scorers.ClapScorer, "audio_embeddings"))
        assert module.main([*SCENARIOS[scenario], f"--OUTPUT_DIR={out}"]) == 0
    (run_dir,) = out.iterdir()
    return run_dir, handed


def wav(run_dir, name, seed, seeds):
    data, rate = sf.read(run_dir / audio_io.wav_name(name, seed, seeds[0]), dtype="float32")
    return data, rate


# -----------------------------------------------------------------------------
# the checks, each a list of problems ([] = right), so the mutants below can reuse them

def off_problems(run_dir):
    """Method off: manipulated and baseline_edited are the same audio, and the headline says no effect."""
    problems = []
    results = json.loads((run_dir / "results.json").read_text())
    record = json.loads((run_dir / "run.json").read_text())
    for seed in results["seeds"]:
        a = (run_dir / audio_io.wav_name("manipulated", seed, results["seeds"][0])).read_bytes()
        b = (run_dir / audio_io.wav_name("baseline_edited", seed, results["seeds"][0])).read_bytes()
        if a != b:
            problems.append(f"seed {seed}: manipulated.wav is not baseline_edited.wav byte for byte")
    for view in ("classifier", "clap"):
        v = results["method_effect"][view]
        if v["status"] != "no effect":
            problems.append(f"method off, {view}: method's own effect is {v['status']!r}, not 'no effect'")
        moved = {n: c["mean"] for n, c in v["checks"].items() if c["mean"] != 0}
        if moved:
            problems.append(f"method off, {view}: manipulated - baseline_edited is not 0: {moved}")
    if record["verdict"]["method_effect"] != {"audioset": "no effect", "clap": "no effect"}:
        problems.append(f"run.json's verdict says {record['verdict']['method_effect']}")
    if record["verdict"]["headline"]["status"] != "no effect":
        problems.append(f"run.json's headline says {record['verdict']['headline']['status']}")
    if record["e_final_reach"]["mean_to_baseline_edited"] != 0:
        problems.append("E_final's reach to baseline_edited is not 0 with the method off")
    return problems


def handoff_problems(run_dir, handed):
    """Each scorer got every row of every seed, in the order of AUDIO_NAMES, at the wavs' own rate.

    Smoke rows differ by ~6e-5, as much as a 16-bit wav rounds, so the scorers' input is compared bit for bit
    with the float audio the run saved, and that audio with the wavs."""
    problems = []
    results = json.loads((run_dir / "results.json").read_text())
    seeds = results["seeds"]
    wavs = {(s, n): wav(run_dir, n, s, seeds) for s in seeds for n in ROWS}
    rates = {rate for _, rate in wavs.values()}
    audio = torch.load(run_dir / "embeddings.pt", weights_only=True)["audio"].numpy()
    for (s, name), (data, _) in wavs.items():
        if np.abs(np.clip(audio[seeds.index(s), ROWS.index(name)], -1, 1) - data).max() > QUANT:
            problems.append(f"{audio_io.wav_name(name, s, seeds[0])} is not the saved audio of row {name}, seed {s}")
    for call in handed:
        if len(call["audios"]) != len(seeds) * len(ROWS):
            problems.append(f"{call['scorer']} got {len(call['audios'])} audios, not {len(seeds)} seeds x 3")
            continue
        if {call["sample_rate"]} != rates:
            problems.append(f"{call['scorer']} was told {call['sample_rate']} Hz; the wavs are at {rates}")
        for i, (s, name) in enumerate((s, n) for s in seeds for n in ROWS):
            if not np.array_equal(call["audios"][i], audio[seeds.index(s), ROWS.index(name)]):
                problems.append(f"{call['scorer']}'s audio {i} is not row {name} of seed {s}")
    if {c["scorer"] for c in handed} != {"AudioClassifier", "ClapScorer"}:
        problems.append(f"scorers called: {sorted({c['scorer'] for c in handed})}")
    # the order check means something only if no two rows are the same audio
    flat = audio.reshape(-1, audio.shape[-1])
    assert len({a.tobytes() for a in flat}) == len(flat), "two rows are the same audio: the test needs other inputs"
    return problems


def reach_problems(run_dir):
    """E_final's reach is 1 - cos between the manipulated row's remix CLAP and each baseline's, per seed."""
    record = json.loads((run_dir / "run.json").read_text())
    claps = torch.load(run_dir / "embeddings.pt", weights_only=True)["claps"].double()
    reach = record["e_final_reach"]
    problems = []
    for key, row in [("cosine_distance_to_baseline_edited", 1), ("cosine_distance_to_baseline_original", 0)]:
        expected = (1 - F.cosine_similarity(claps[:, 2], claps[:, row], dim=-1)).numpy()
        expected[(claps[:, 2] == claps[:, row]).all(-1).numpy()] = 0.0
        # the method-on reach to baseline_edited is ~1e-6 on smoke models: compare far below that
        if not np.allclose(reach[key], expected, rtol=0, atol=1e-12):
            problems.append(f"{key} {reach[key]} is not 1 - cos(manipulated, row {row}) = {expected.tolist()}")
    return problems


def sweep_problems(run_dir):
    """Each setting's verdict columns come from its own manipulated row: the method-off setting's are 0."""
    import csv
    with open(run_dir / "sweep.csv", newline="") as f:
        rows = {float(r["MIX_BETA"]): r for r in csv.DictReader(f) if r["seed role"] == "chose"}
    problems = []
    means = {b: {k: float(v) for k, v in r.items() if k.startswith("effect ") and k.endswith(" mean")}
             for b, r in rows.items()}
    if any(means[0.0].values()):
        problems.append(f"MIX_BETA=0 (method off) has a non-zero own effect: {means[0.0]}")
    if not all(means[0.4][k] != 0 for k in means[0.4] if k.startswith("effect clap")):
        problems.append(f"MIX_BETA=0.4 reads as method off: {means[0.4]}")
    if rows[0.0]["effect clap status"] != "no effect":
        problems.append(f"MIX_BETA=0 says {rows[0.0]['effect clap status']!r}")
    seeds = settings.eval_seeds(cfg_of(SCENARIOS["sweep"]))
    for seed in seeds:
        off = (run_dir / audio_io.wav_name("manipulated_MIX_BETA-0", seed, seeds[0])).read_bytes()
        if off != (run_dir / audio_io.wav_name("baseline_edited", seed, seeds[0])).read_bytes():
            problems.append(f"seed {seed}: the method-off setting's audio is not baseline_edited's")
    if sorted(int(r["rank"]) for r in rows.values()) != [1, 2]:
        problems.append("the settings are not ranked")
    return problems


# -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for scenario in SCENARIOS:
        out[scenario] = run(main, scenario, tmp_path_factory.mktemp(scenario))
    return out


def test_method_off_is_no_effect_end_to_end_and_the_audio_identical(runs):
    run_dir, _ = runs["off"]
    assert off_problems(run_dir) == []
    results = json.loads((run_dir / "results.json").read_text())
    # the headline comes first in the printout and in the record; step 9's answer does not decide it
    assert results["headline"]["question"] == "method_effect"


def test_the_scorers_get_every_row_in_order_at_the_wavs_rate(runs):
    run_dir, handed = runs["on"]
    assert handoff_problems(run_dir, handed) == []
    assert handed and all(c["sample_rate"] == 16000 for c in handed)


def test_a_run_uses_every_setting_it_is_given(runs):
    run_dir, _ = runs["on"]
    problems = check_wiring(run_dir, cfg_of(SCENARIOS["on"]))
    assert problems == [], "\n".join(problems)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["config"]["MASK_THRESHOLD"] == 0.3 and record["config"]["PIN_GLOBAL"] is True


def test_e_final_reach_reads_the_manipulated_row(runs):
    run_dir, _ = runs["on"]
    assert reach_problems(run_dir) == []
    assert json.loads((run_dir / "run.json").read_text())["e_final_reach"]["mean_to_baseline_edited"] > 0


def test_a_sweep_judges_each_setting_on_its_own_row(runs):
    run_dir, _ = runs["sweep"]
    assert sweep_problems(run_dir) == []


# handoffs broken on purpose; each must be caught by the check named with it
MUTANTS = {
    "rows reach the evaluation in the wrong order": (
        ("results = evaluate(audio, seeds,", "results = evaluate(audio[:, [1, 0, 2]], seeds,"), "on", "handoff"),
    "the classifier is told the wrong sample rate": (
        ("sample_rate=models.sample_rate, extra=", "sample_rate=2 * models.sample_rate, extra="),
        "on", "handoff"),
    "E_final's reach reads baseline_edited": (
        ("reach = evaluation.e_final_reach(claps)", "reach = evaluation.e_final_reach(claps, row=1)"), "on", "reach"),
    "a sweep setting is judged on the first setting's row": (
        ("rows=(0, 1, 2 + j)", "rows=(0, 1, 2)"), "sweep", "sweep", "sweep.py"),
    "MASK_THRESHOLD ignored": (
        ('step3_patch_weights(M_neg, M_pos, cfg["MASK_THRESHOLD"]', 'step3_patch_weights(M_neg, M_pos, 0.5'),
        "on", "wiring"),
    "PIN_GLOBAL ignored": (
        ('pin_global=cfg["PIN_GLOBAL"], sampler=cfg["SAMPLER"])', 'pin_global=False, sampler=cfg["SAMPLER"])'),
        "on", "wiring"),
    "SVD_K ignored by the boost": (('k=cfg["SVD_K"], mode="boost"', 'k=5, mode="boost"'), "on", "wiring"),
    "equal rows drawn twice": (
        ("same_as = [next(j for j in range(r + 1) if torch.equal(slots[j], slots[r])) for r in range(len(slots))]",
         "same_as = list(range(len(slots)))"), "off", "off"),
}
CHECKS = {"handoff": lambda d, h: handoff_problems(d, h), "reach": lambda d, h: reach_problems(d),
          "sweep": lambda d, h: sweep_problems(d), "off": lambda d, h: off_problems(d),
          "wiring": lambda d, h: check_wiring(d, cfg_of(SCENARIOS["on"]))}


@pytest.mark.parametrize("name", list(MUTANTS))
def test_a_broken_handoff_is_caught(name, tmp_path):
    edit, scenario, check, *where = MUTANTS[name]
    if where:   # a module below main.py: main runs with the mis-wired copy in its place
        with installed_mutant(edit, where[0]) as module:
            run_dir, handed = run(module, scenario, tmp_path)
    else:
        module = mutant(edit)
        try:
            run_dir, handed = run(module, scenario, tmp_path)
        finally:
            sys.modules.pop("main_mutant", None)
    assert CHECKS[check](run_dir, handed), f"the {check} check missed: {name}"
