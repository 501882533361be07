"""settings.py: main.py's constants as a config, the command line, RULES (the one table of ranges), the checks."""
import re
from pathlib import Path

import pytest
import torch
from conftest import refused

import errors
import inputs
import main
import settings
import sweep

ROOT = Path(__file__).resolve().parent.parent


# -----------------------------------------------------------------------------
# the command line

def test_overrides_are_typed_printed_and_case_insensitive(capsys):
    cfg = settings.default_config(main)
    mode, _ = settings.parse_args(["--svd_k=8", "--SVD_ALPHA=1", "--original=a.jpg", "--KEPT_SOURCES=['dog']"], cfg)
    assert mode == "run"
    assert cfg["SVD_K"] == 8 and cfg["SVD_ALPHA"] == 1.0 and isinstance(cfg["SVD_ALPHA"], float)
    assert cfg["ORIGINAL"] == "a.jpg" and cfg["KEPT_SOURCES"] == ["dog"]
    out = capsys.readouterr().out
    assert "Overriding: SVD_K = 8" in out and "Overriding: ORIGINAL = 'a.jpg'" in out
    assert main.SVD_K == 5   # the module's constants are untouched


@pytest.mark.parametrize("arg, match", [("--SVD_K=2.5", "SVD_K takes a int"), ("--NOPE=1", "unknown setting --NOPE"),
                                        ("--SMOKE=1", "SMOKE takes a bool"), ("stray", "unknown argument")])
def test_bad_overrides_are_user_errors(arg, match):
    with pytest.raises(errors.UserError, match=match):
        settings.parse_args([arg], settings.default_config(main))


def test_smoke_settings_then_explicit_overrides_win():
    cfg = settings.default_config(main)
    settings.parse_args(["--DDIM_STEPS=7", "--smoke"], cfg)
    assert cfg["SMOKE"] is True and cfg["CYCLE_ITS"] == settings.SMOKE_SETTINGS["CYCLE_ITS"] and cfg["DDIM_STEPS"] == 7


def test_sweep_grid_from_the_command_line():
    cfg = settings.default_config(main)
    mode, _ = settings.parse_args(["--sweep", "SVD_K=1,5", "svd_alpha=0.1,0.3", "--SEED=3"], cfg)
    assert mode == "sweep" and cfg["SEED"] == 3
    assert cfg["SWEEP"] == {"SVD_K": [1, 5], "SVD_ALPHA": [0.1, 0.3]}
    grid = sweep.sweep_settings(cfg["SWEEP"])
    assert len(grid) == 4 and grid[1] == {"SVD_K": 1, "SVD_ALPHA": 0.3}
    with pytest.raises(errors.UserError, match="cannot sweep CYCLE_ITS"):
        sweep.sweep_settings({"CYCLE_ITS": [1, 2]})
    with pytest.raises(errors.UserError, match="SVD_K takes a int"):
        settings.parse_args(["--sweep", "SVD_K=1,x"], settings.default_config(main))


@pytest.mark.parametrize("text", ['{"cat": {"union": true, "text": "a tabby cat"}, "duck": {"x": [1], "y": [2]}}',
                                  "{'cat': {'union': True, 'text': 'a tabby cat'}, 'duck': {'x': [1], 'y': [2]}}"])
def test_prompts_on_the_command_line_in_json_or_python(text, capsys):
    cfg = settings.default_config(main)
    settings.parse_args([f"--SAM2_PROMPTS={text}"], cfg)
    assert cfg["SAM2_PROMPTS"] == {"cat": {"union": True, "text": "a tabby cat"}, "duck": {"x": [1], "y": [2]}}
    removed, added = inputs.parse_prompts(cfg["SAM2_PROMPTS"])
    assert removed.union is True and removed.text == "a tabby cat" and added.points == [[1.0, 2.0]]


def test_json_words_read_as_python_constants_except_in_text_settings(capsys):
    cfg = settings.default_config(main)
    settings.parse_args(["--PIN_GLOBAL=true", "--RUN_NAME=true", "--SWEEP={\"PIN_GLOBAL\": [false, true]}", "--sweep"], cfg)
    assert cfg["PIN_GLOBAL"] is True and cfg["RUN_NAME"] == "true" and cfg["SWEEP"] == {"PIN_GLOBAL": [False, True]}
    assert settings.literal('[null, true, {"a": false}]') == [None, True, {"a": False}]
    with pytest.raises(ValueError):
        settings.literal("[nothing]")   # other bare names are still no literal
    with pytest.raises(errors.UserError, match="SAM2_PROMPTS takes a dict"):
        settings.parse_args(["--SAM2_PROMPTS={'cat': {'union': yes}}"], settings.default_config(main))


def test_help_lists_every_constant(capsys):
    assert main.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"--{k}=" in out for k in settings.constants(main))


def test_help_shows_every_mode_with_an_example(capsys):
    import inspect
    import re
    assert main.main(["--help"]) == 0
    examples = [line.strip() for line in capsys.readouterr().out.splitlines()
                if line.strip().startswith(("python main.py", "accelerate launch"))]
    parser = inspect.getsource(settings.parse_args) + inspect.getsource(settings.take_smoke)
    flags = set(re.findall(r'"(--[a-z]+)"', parser)) - {"--help"}
    assert flags >= {"--smoke", "--sweep", "--manifest", "--reference", "--resume"}   # the parser's own flags
    for flag in flags:   # every flag the command line reads has an example line that uses it
        assert any(re.search(rf"{flag}\b", line) for line in examples), flag
    assert any(line.startswith("accelerate launch --multi_gpu --num_processes") and "--manifest" in line
               for line in examples)   # several GPUs
    assert any("--AUDIO_INPUT=" in line and "--EDIT_STRENGTH=" in line and "--EDIT_METHOD=" in line
               for line in examples)   # step 8 and its settings
    assert any(line.startswith("python main.py --help") for line in examples)


# -----------------------------------------------------------------------------
# every value checked before any model loads

@pytest.mark.parametrize("args, says", [
    (["--SVD_K=0"], "SVD_K=0 is out of range: it must be a whole number >= 1"),
    (["--SVD_ALPHA=-0.1"], "SVD_ALPHA=-0.1 is out of range: it must be a number in [0, 1000]"),
    (["--MIX_ALPHA=0", "--MIX_BETA=0", "--MIX_GAMMA=0", "--MIX_DIRECT=0"], "are all 0: give at least one"),
    (["--MIX_BETA=-0.4"], "MIX_BETA=-0.4 is out of range: it must be a weight in [0, 1]"),
    (["--DURATION=0"], "DURATION=0.0 is out of range: it must be seconds in [0.1, 60]"),
    (["--DURATION=inf"], "DURATION=inf is out of range"),
    (["--DDIM_STEPS=0"], "DDIM_STEPS=0 is out of range: it must be a whole number in 1-999"),
    (["--DDIM_STEPS=1000"], "DDIM_STEPS=1000 is out of range"),
    (["--CYCLE_ITS=-1"], "CYCLE_ITS=-1 is out of range: it must be a whole number >= 0"),
    (["--SEED=-1"], "SEED=-1 is out of range: it must be a whole number in 0-4294967295"),
    (["--EVAL_SEEDS=0"], "EVAL_SEEDS=0 is out of range"),
    (["--SAMPLER=euler"], "SAMPLER='euler' is not a sampler: it must be one of ddim, dpmpp-2m, dpmpp-2m-sde"),
    (["--RUN_NAME=" + "r" * 300], "RUN_NAME is 300 characters long: it becomes a folder name, at most 80"),
    (["--SAM2_PROMPTS={'" + "c" * 300 + "': {}, 'dog': {}}"], "is 300 characters long: names become file names"),
    (["--SWEEP={'SVD_K': [1, 5]}"], "--SWEEP=... is only read by a sweep: add --sweep"),
    (["--sweep", "SVD_K=1,0"], "sweep setting SVD_K-0: SVD_K=0 is out of range"),
    (["--TEXT_PROMPT=a photo"], "has no '{}' where the object's name goes"),
    (["--MANIFEST_ADJUSTMENT=bonferroni"], "MANIFEST_ADJUSTMENT='bonferroni' is not an adjustment: it must be 'holm'"),
    (["--EVAL_MIN_EFFECT_KL=-1"], "EVAL_MIN_EFFECT_KL=-1.0 is out of range: it must be a KL difference in [0, 0.5] nats"),
    (["--CONFIRM_SEEDS=-1"], "CONFIRM_SEEDS=-1 is out of range: it must be a whole number in 0-100"),
    # the fresh seeds of a sweep's confirmation come after the choosing ones: they too must be seeds
    (["--SEED=4294967293", "--sweep", "SVD_K=1,5"], "with EVAL_SEEDS=3 and CONFIRM_SEEDS=2 runs past the largest seed"),
])
def test_every_bad_setting_is_one_line_before_any_model_loads(args, says, tmp_path, capsys):
    out = tmp_path / "outputs"
    assert main.main(["--smoke", f"--OUTPUT_DIR={out}", *args]) == 2
    captured = capsys.readouterr()
    assert says in captured.err, captured.err
    assert "Traceback" not in captured.err and "Loading every model" not in captured.out
    assert not out.exists()                                   # no run folder for a run that never started


def test_an_output_dir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "outputs").write_text("not a folder")
    assert main.main(["--smoke", f"--OUTPUT_DIR={tmp_path / 'outputs'}"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


# -----------------------------------------------------------------------------
# hostile values (issue 19)

@pytest.mark.parametrize("args, says", [
    # names that are one name after trimming and case-folding
    (["--SAM2_PROMPTS={'cat': {}, 'Cat': {}}"], "'cat' and 'Cat', which are one name"),
    (["--SAM2_PROMPTS={'cat': {}, 'cat\t': {}}"], "which are one name"),
    (["--KEPT_SOURCES=['rocket', 'Rocket ']"], "KEPT_SOURCES lists 'rocket' and 'Rocket ', which are one name"),
    (["--KEPT_SOURCES=['rocket', 'rocket']"], "KEPT_SOURCES lists 'rocket' twice"),
    (["--KEPT_SOURCES=['Cat']"], "KEPT_SOURCES names 'Cat', the same name as the removed object of SAM2_PROMPTS"),
    # errors that used to blame EVAL_LABELS for a duplicated KEPT_SOURCES or an empty label
    (["--EVAL_LABELS={'cat': ''}"], "EVAL_LABELS['cat'] is empty"),
    (["--EVAL_LABELS={'cat': 'a sound', 'astronaut': 'a sound'}"],
     "'cat' and 'astronaut' both get 'a sound'"),
    # labels without points are not a name search
    (["--SAM2_PROMPTS={'cat': {'labels': [1]}, 'astronaut': {}}"], "has labels but no points"),
    # TEXT_PROMPT that str.format cannot take
    (["--TEXT_PROMPT={}{}"], "TEXT_PROMPT='{}{}' cannot take the name (IndexError"),
    (["--TEXT_PROMPT={name}{}"], "TEXT_PROMPT='{name}{}' cannot take the name (KeyError"),
    # ranges the models take
    (["--DURATION=0.01"], "DURATION=0.01 is out of range: it must be seconds in [0.1, 60]"),
    (["--MIX_ALPHA=1e308", "--MIX_BETA=1e308"], "2 settings are out of range"),
    (["--SVD_BETA=1e308"], "SVD_BETA=1e+308 is out of range"),
    # a smoke run records the device it runs on
    (["--DEVICE=cuda:0"], "a smoke run builds its tiny models on the CPU"),
    # AudioSet class names checked against model/audioset_labels.csv, not after the models load
    (["--AUDIO_CLASSES={'cat': ['Kat']}"], "AUDIO_CLASSES['cat']: the classifier has no class 'Kat'"),
    # a sweep grid that silently lost values, or a sweep and a manifest at once
    (["--sweep", "SVD_K=1,5", "SVD_K=2"], "--sweep gives SVD_K twice (SVD_K=1,5 and SVD_K=2)"),
    (["--sweep", "SVD_K=1,5", "--manifest", "images/pairs.csv"], "--sweep and --manifest cannot be combined"),
    (["--manifest", "a.csv", "--manifest", "b.csv"], "--manifest is given twice"),
    (["--SWEEP={'SVD_K': [1]}", "--sweep", "SVD_K=2"], "the grid is given twice"),
])
def test_refused_before_any_model_with_the_reason(args, says, tmp_path, capsys):
    err = refused(args, tmp_path, capsys)
    assert says in err, err


@pytest.mark.parametrize("device, says", [
    ("meta", "DEVICE='meta': device 'meta' cannot run the models here"),
    ("gpu", "DEVICE='gpu': 'gpu' is not a device name"),
    pytest.param("mps", "MPS (Apple-silicon GPU) is not available on this machine",
                 marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")),
    pytest.param("cuda:63", "this machine has", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                         reason="no CUDA: cuda:63 fails as cuda")),
])
def test_devices_are_checked_like_cuda(device, says, tmp_path, capsys):
    err = refused([f"--DEVICE={device}"], tmp_path, capsys, smoke=False)   # a real run: before the checkpoints
    assert says in err and "checkpoint" not in err, err


def test_an_empty_output_dir_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main.main(["--smoke", "--OUTPUT_DIR="]) == 2
    assert "OUTPUT_DIR='' is empty: give the folder runs are written to" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_output_dir_under_a_file_or_read_only_is_found_before_the_models(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    err = refused([f"--OUTPUT_DIR={tmp_path / 'afile' / 'runs'}"], tmp_path, capsys)
    assert "lies under" in err and "afile, which is a file, not a folder" in err
    # /sys refuses new folders to every user, root included: a read-only place that needs no chmod
    code = main.main(["--smoke", "--OUTPUT_DIR=/sys/edit-aware-runs"])
    captured = capsys.readouterr()
    assert code == 2 and "OUTPUT_DIR='/sys/edit-aware-runs' cannot be written" in captured.err
    assert "Loading every model" not in captured.out and not Path("/sys/edit-aware-runs").exists()


def test_tilde_in_a_path_setting_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = settings.default_config(main)
    settings.parse_args(["--OUTPUT_DIR=~/runs", "--ORIGINAL=~/a.jpg"], cfg)
    assert cfg["OUTPUT_DIR"] == str(tmp_path / "runs") and cfg["ORIGINAL"] == str(tmp_path / "a.jpg")


# -----------------------------------------------------------------------------
# RULES: one table of ranges, read by the checks, --help, the README and the bench's sliders


def test_constants_are_main_pys_upper_case_settings_in_order():
    source = (ROOT / "main.py").read_text()
    assigned = re.findall(r"(?m)^([A-Z][A-Z0-9_]*) = ", source)
    assert list(settings.constants(main)) == assigned
    assert "MANIFEST_WAIT_HOURS" in assigned and assigned.index("SVD_K") < source.index("def step1_masks")


def test_every_rule_is_a_numeric_constant_of_main_py():
    values = settings.constants(main)
    for name, rule in settings.RULES.items():
        assert isinstance(values[name], (int, float)) and not isinstance(values[name], bool), name
        assert rule.kind == ("int" if isinstance(values[name], int) else "float"), name
        low, high = rule.low, rule.high
        assert (low is None or values[name] >= low) and (high is None or values[name] <= high), name


def test_main_pys_comment_states_the_typical_range_of_the_rules_table():
    comments = settings.constant_comments(main)
    for name, rule in settings.RULES.items():
        if rule.typical:
            assert re.search(rf"(?<![\d.]){re.escape(rule.typical_text)}(?![\d.])", comments[name]), \
                f"main.py's comment on {name} does not say its typical range {rule.typical_text}: {comments[name]!r}"


def test_the_readme_table_is_the_rules_table():
    readme = (ROOT / "README.md").read_text()
    begin, end = "<!-- settings table: begin -->\n", "\n<!-- settings table: end -->"
    table = readme[readme.index(begin) + len(begin):readme.index(end)]
    assert table == settings.readme_table(main), (
        "README.md's table of settings differs from settings.RULES and main.py; paste the output of\n"
        "  python -c \"import main, settings; print(settings.readme_table(main))\"")


def test_a_slider_offers_only_valid_values_around_the_typical_range():
    values = settings.constants(main)
    for name, rule in settings.RULES.items():
        if rule.step is None:
            continue
        lo, hi = rule.page
        assert (rule.low is None or lo >= rule.low) and (rule.high is None or hi <= rule.high), name
        assert lo <= min(rule.typical) and max(rule.typical) <= hi and lo <= values[name] <= hi, name
        settings.check_settings({**settings.default_config(main), name: lo})   # both ends pass the checks
        settings.check_settings({**settings.default_config(main), name: hi})


def test_the_checks_read_the_rules_table(monkeypatch):
    """Narrow one rule and the same value is refused, with the table's words: the table is the one source."""
    cfg = settings.default_config(main)
    settings.check_settings(cfg)
    monkeypatch.setitem(settings.RULES, "SVD_K", settings.Rule("int", 1, 3, "a whole number in 1-3", (1, 2)))
    with pytest.raises(errors.UserError, match=r"SVD_K=5 is out of range: it must be a whole number in 1-3 "
                                               r"\(typical 1-2\)"):
        settings.check_settings(cfg)


def test_help_shows_each_constant_with_its_comment_and_valid_range(capsys):
    assert main.main(["--help"]) == 0
    out = capsys.readouterr().out
    out = out[out.index("Settings (defaults"):]   # below the modes' examples, which use constants too
    comments = settings.constant_comments(main)
    for name, rule in settings.RULES.items():
        block = out[out.index(f"\n  --{name}=") + 1:].split("\n  --")[0]   # its line and the one under it
        assert comments[name] in block and "valid: " + rule.valid in block, name
