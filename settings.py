"""Settings: main.py's constants as a config, the command line that overrides them, the one table of their ranges.

    cfg = default_config(main)                  # a deep copy of main.py's constants (NAME -> value)
    mode, target = parse_args(sys.argv[1:], cfg)   # --NAME=value, --smoke, --sweep, --manifest, --resume
    check_settings(cfg)                         # every value against RULES, one line per problem (UserError)

RULES is the one source of each number's range: check_settings reads its valid range, `python main.py --help`
and the README's table of settings (readme_table) show it, and the browser bench's sliders take their ends
and steps from it. main.py's comment on a constant states its typical range; a test holds the two together.
The checks of what the settings name (images, points, object names, a recording) are in inputs.py.
"""
import ast
import io
import json
import math
import os
import tokenize
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from errors import UserError

# a smoke run differs from a real run only in these (its time on a CPU is in the README's first section)
# (random CLIP scores no proposal of a name-only object as likely: TEXT_MIN_SCORE 0 takes the best one;
# a sweep confirms its choice on 2 fresh seeds, not 10)
SMOKE_SETTINGS = dict(CYCLE_ITS=2, CYCLE_SAMPLES=4, VAR_SAMPLES=4, DURATION=2.0, DDIM_STEPS=4, DEVICE="cpu",
                      TEXT_MIN_SCORE=0.0, CONFIRM_SEEDS=2)
# what a sweep may vary: everything after the masks and tokens; PIN_GLOBAL and SAMPLER change the baselines
# too; EDIT_STRENGTH only step 8 (the sweep's edit trade-off table and figure)
SWEEPABLE = ["SVD_K", "SVD_ALPHA", "SVD_BETA", "MIX_ALPHA", "MIX_BETA", "MIX_GAMMA", "MIX_DIRECT", "MASK_THRESHOLD",
             "PIN_GLOBAL", "SAMPLER", "EDIT_STRENGTH"]
AUDIO_KEYS = ("PIN_GLOBAL", "SAMPLER")   # settings that act on every audio row, baselines included
PATH_KEYS = ("IMAGE_DIR", "ORIGINAL", "EDITED", "OUTPUT_DIR", "CONFIG_PATH", "CHECKPOINT_PATH",
             "CIAP_CHECKPOINT")   # ~ expanded
RUN_NAME_LIMIT = 80                  # characters of RUN_NAME (it becomes a folder name)
SETTING_TYPES = (int, float, str, bool, list, dict)


# -----------------------------------------------------------------------------
# main.py's constants


def constants(plan):
    """{NAME: value} of the plan's settings (main.py's upper-case constants), in the order main.py lists them."""
    return {k: v for k, v in vars(plan).items() if k.isupper() and not k.startswith("_")
            and isinstance(v, SETTING_TYPES)}


def default_config(plan):
    """A deep copy of the plan's constants: the config a run starts from."""
    return {k: json.loads(json.dumps(v)) for k, v in constants(plan).items()}


def constant_comments(plan):
    """{NAME: the comment on its line in main.py}: what --help, the README's table and the bench show of it."""
    try:
        source = Path(plan.__file__).read_text()
    except (OSError, AttributeError, TypeError):
        return {}
    comments, line_name = {}, {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 0 and tok.string.isupper():
            line_name[tok.start[0]] = tok.string
        elif tok.type == tokenize.COMMENT and tok.start[0] in line_name and tok.start[1] > 0:
            comments[line_name[tok.start[0]]] = tok.string.lstrip("#").strip()
    return {k: v for k, v in comments.items() if k in constants(plan)}


# -----------------------------------------------------------------------------
# the command line


JSON_WORDS = {"true": True, "false": False, "null": None}


class _JSONWords(ast.NodeTransformer):
    def visit_Name(self, node):
        if node.id in JSON_WORDS:
            return ast.copy_location(ast.Constant(JSON_WORDS[node.id]), node)
        return node


def literal(text, json_words=True):
    """A Python literal from the command line; with json_words, JSON's true/false/null also read as
    True/False/None, so {"cat": {"union": true}} (JSON) and {'cat': {'union': True}} (Python) both work."""
    tree = ast.parse(text.lstrip(" \t"), mode="eval")
    return ast.literal_eval(_JSONWords().visit(tree) if json_words else tree)


def python_literal(value):
    """value written as Python source in main.py's style (double quotes, True/False/None, not JSON's true):
    the printed line pastes into main.py as it is, and main.py's command line reads it too."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{python_literal(k)}: {python_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(python_literal(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)   # JSON's string escapes are Python's (non-ASCII kept as is)
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    raise TypeError(f"no Python literal for {type(value).__name__} {value!r}")


def coerce(name, text, default):
    """The value of --NAME=text, as the type of the constant's default; UserError when it does not fit."""
    try:
        value = literal(text, json_words=not isinstance(default, str))   # a text setting keeps a bare 'true'
    except (ValueError, SyntaxError):
        value = text   # a bare word: a string (paths, names)
        if isinstance(default, float) and text.strip().lower() in ("inf", "+inf", "-inf", "infinity", "nan"):
            value = float(text)   # a number, so that the range check can say what is wrong with it
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default)) and not (isinstance(value, bool) and not isinstance(default, bool))
    if not ok:
        raise UserError(f"{name}={text}: {name} takes a {type(default).__name__} (default {default!r}), "
                        f"got {type(value).__name__} {value!r}")
    return value


def take_smoke(argv, config, smoke_settings):
    """argv without --smoke; with it, config gets SMOKE=True and the smoke settings (which the command line's own
    --NAME=value overrides, applied after, still beat). Shared by main.py's and train_ciap.py's command lines."""
    args = list(argv)
    if "--smoke" in args:
        args.remove("--smoke")
        config["SMOKE"] = True
        config.update(smoke_settings)
        print("Smoke run: " + ", ".join(f"{k}={v!r}" for k, v in smoke_settings.items()))
    return args


def named_override(arg, config):
    """'--NAME=value' -> (the config's NAME, whatever its case on the command line, the value's text)."""
    key, value_text = arg[2:].split("=", 1)
    name = {k.lower(): k for k in config}.get(key.lower())
    if name is None:
        raise UserError(f"unknown setting --{key}. Settings: {', '.join(sorted(config))}")
    return name, value_text


def parse_args(argv, config):
    """Apply the command line to config (a dict of the constants). Returns (mode, mode_argument).

    --NAME=value overrides a constant (nanoGPT style), --smoke selects the tiny models (and SMOKE_SETTINGS,
    which explicit overrides still beat), --sweep NAME=v1,v2 ... runs a grid, --manifest FILE runs many pairs.
    """
    by_lower = {k.lower(): k for k in config}
    overrides, sweep, mode, manifest, sweep_given = [], {}, "run", None, False
    args = take_smoke(argv, config, SMOKE_SETTINGS)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-h", "--help"):
            return "help", None
        if arg == "--sweep":
            mode, sweep_given = "sweep", True
            while i + 1 < len(args) and not args[i + 1].startswith("--"):
                i += 1
                key, _, values = args[i].partition("=")
                name = by_lower.get(key.lower())
                if name is None or not values:
                    raise UserError(f"--sweep takes NAME=v1,v2,... pairs; got {args[i]!r}. "
                                    f"Sweepable: {', '.join(SWEEPABLE)}")
                if name in sweep:   # a second NAME=... would silently replace the first one's values
                    raise UserError(f"--sweep gives {name} twice ({name}={sweep[name]} and {args[i]}): give all its "
                                    f"values once, e.g. {name}={sweep[name]},{values}")
                sweep[name] = values
        elif arg == "--manifest":
            if i + 1 >= len(args):
                raise UserError("--manifest needs a CSV file: python main.py --manifest images/pairs.csv")
            if manifest is not None:
                raise UserError(f"--manifest is given twice ({manifest} and {args[i + 1]}): give one CSV; put "
                                "every pair in it")
            mode, manifest = "manifest", args[i + 1]
            i += 1
        elif arg == "--reference":   # a manifest's folder of real audio, for the set-level FAD
            if i + 1 >= len(args):
                raise UserError("--reference needs a folder of real audio: --manifest pairs.csv --reference real/")
            config["_REFERENCE"] = args[i + 1]
            i += 1
        elif arg == "--resume":
            if i + 1 >= len(args):
                raise UserError("--resume needs a manifest's run folder: python main.py --resume outputs/<run>")
            if mode != "run" or any(a in ("--sweep", "--manifest") for a in args):
                raise UserError("--resume continues a manifest run with its own manifest and settings: give it "
                                "alone (python main.py --resume outputs/<run>, optionally --DEVICE=...)")
            mode, manifest = "resume", args[i + 1]
            i += 1
        elif arg.startswith("--") and "=" in arg:
            overrides.append(named_override(arg, config))
        else:
            raise UserError(f"unknown argument {arg!r}; see python main.py --help")
        i += 1
    if config.get("_REFERENCE") and mode != "manifest":
        raise UserError("--reference is read by a manifest run only (the set-level FAD): python main.py "
                        "--manifest pairs.csv --reference real_audio/")
    overridden = {name for name, _ in overrides}
    if sweep_given and manifest is not None:   # which one would run is not obvious: refuse both
        raise UserError("--sweep and --manifest cannot be combined: a sweep varies settings on one pair, a manifest "
                        "runs many pairs with one setting. Run them separately (e.g. the manifest with the setting "
                        "the sweep found best)")
    if "SWEEP" in overridden and sweep:
        raise UserError("the grid is given twice, as --SWEEP=... and as --sweep NAME=...: give one of them")
    if "SWEEP" in overridden and mode != "sweep":
        raise UserError("--SWEEP=... is only read by a sweep: add --sweep (python main.py --sweep "
                        "--SWEEP=\"{'SVD_K': [1, 5]}\"), or give the grid as --sweep SVD_K=1,5")
    for name, value_text in overrides:
        config[name] = coerce(name, value_text, config[name])
        if name in PATH_KEYS:   # the shell expands ~ only at the start of a word, not after --NAME=
            config[name] = os.path.expanduser(config[name])
        print(f"Overriding: {name} = {config[name]!r}")
    if mode == "sweep":
        grid = {name: [coerce(name, v, config[name]) for v in values.split(",")] for name, values in sweep.items()}
        config["SWEEP"] = grid or config["SWEEP"]
    # a faster sampler comes with its own step count unless DDIM_STEPS was given on the command line
    config["_STEPS_GIVEN"] = "DDIM_STEPS" in overridden or (config["SMOKE"] and "DDIM_STEPS" in SMOKE_SETTINGS)
    return mode, manifest


def usage(plan):
    """python main.py --help: the plan's docstring, then every constant with its default, its comment in main.py
    and, for a number, its valid range (RULES)."""
    comments = constant_comments(plan)
    lines = [plan.__doc__.strip(), "", "Settings (defaults; --NAME=value overrides one):"]
    for name, default in constants(plan).items():
        lines.append(f"  --{name}={default!r}")
        about = comments.get(name, "")
        if name in RULES:
            about += ("; " if about else "") + "valid: " + RULES[name].valid
        if about:
            lines.append(f"        {about}")
    return "\n".join(lines)


# -----------------------------------------------------------------------------
# the ranges: every number checked before any model loads


@dataclass(frozen=True)
class Rule:
    """The range of one numeric setting. `valid` is what check_settings enforces; `typical` is where a user
    usually tunes (main.py's comment states it too); `page` and `step` are the browser bench's slider."""
    kind: str                  # 'int' or 'float'
    low: float                 # valid range [low, high]; None = unbounded
    high: float
    valid: str                 # the valid range in words, as messages say it
    typical: tuple = ()        # (lo, hi) or (value,): the usual range, as main.py's comment writes it
    note: str = ""             # said after the typical range, e.g. "; 1 = no effect"
    page: tuple = ()           # (lo, hi) of the bench's slider: inside the valid range, around the typical one
    step: float = None         # the slider's step (None: no slider)

    @property
    def typical_text(self):
        return "-".join(str(v) for v in self.typical)

    @property
    def text(self):
        """'a whole number >= 1 (typical 1-15, below the region's rank)': what an out-of-range message says."""
        extra = (f"typical {self.typical_text}" if self.typical else "") + self.note
        return f"{self.valid} ({extra.lstrip('; ')})" if extra else self.valid


RULES = {
    "SVD_K": Rule("int", 1, None, "a whole number >= 1", (1, 15), ", below the region's rank", (1, 30), 1),
    # singular values are float32: a factor past 1e3 drowns every other direction (and 1e39 is inf)
    "SVD_ALPHA": Rule("float", 0.0, 1000.0, "a number in [0, 1000]", (0.1, 0.5), "; 1 = no effect", (0.0, 1.0), 0.05),
    "SVD_BETA": Rule("float", 0.0, 1000.0, "a number in [0, 1000]", (1.1, 3.0), "; 1 = no effect", (1.0, 5.0), 0.05),
    # the four mix weights share E_final between them (they sum to 1), so each lies in [0, 1]
    "MIX_ALPHA": Rule("float", 0.0, 1.0, "a weight in [0, 1]", (0.0, 0.3), "; the four weights sum to 1", (0.0, 1.0),
                      0.05),
    "MIX_BETA": Rule("float", 0.0, 1.0, "a weight in [0, 1]", (0.2, 0.6), "; the four weights sum to 1", (0.0, 1.0),
                     0.05),
    "MIX_GAMMA": Rule("float", 0.0, 1.0, "a weight in [0, 1]", (0.0, 0.3), "; the four weights sum to 1", (0.0, 1.0),
                      0.05),
    "MIX_DIRECT": Rule("float", 0.0, 1.0, "a weight in [0, 1]", (0.2, 0.6), "; the four weights sum to 1", (0.0, 1.0),
                       0.05),
    "MASK_THRESHOLD": Rule("float", 1e-9, 1.0, "a fraction in (0, 1]", (0.3, 0.7), "", (0.05, 1.0), 0.05),
    "TEXT_MIN_SCORE": Rule("float", 0.0, 1.0, "a probability in [0, 1]"),
    # a cosine of two CLAP text embeddings; a choice, not calibrated on the released weights (README, the verdict)
    "EVAL_CLASS_MIN_SIMILARITY": Rule("float", -1.0, 1.0, "a cosine similarity in [-1, 1]", (0.4, 0.7),
                                      "; 1 = never use the CLAP-text layer"),
    "EVAL_TOLERANCE": Rule("float", 0.0, 1.0, "a probability difference in [0, 1]", (0.0, 0.2), "", (0.0, 0.5),
                           0.01),
    "EVAL_TOLERANCE_CLAP": Rule("float", 0.0, 1.0, "a CLAP cosine difference in [0, 1]", (0.0, 0.05)),
    "EVAL_SEEDS": Rule("int", 1, 100, "a whole number in 1-100", (3, 10), "", (1, 20), 1),
    "EVAL_MIN_EFFECT": Rule("float", 0.0, 0.2, "a probability difference in [0, 0.2]", (0.01,),
                            "; 0 = any change counts", (0.0, 0.2), 0.005),
    # each unit its own floor: a probability's, carried through CLAP's softmax at its steepest (slope logit
    # scale / 4 = 3.6 at CLAP's temperature 0.07: 0.01 / 3.6 = 0.003), and as the KL of moving 0.01 of
    # probability between two equally likely labels (2 x 0.01^2 = 0.0002 nats)
    "EVAL_MIN_EFFECT_CLAP": Rule("float", 0.0, 0.2, "a CLAP cosine difference in [0, 0.2]", (0.003,),
                                 "; 0 = any change counts"),
    "EVAL_MIN_EFFECT_KL": Rule("float", 0.0, 0.5, "a KL difference in [0, 0.5] nats", (0.0002,),
                               "; 0 = any change counts"),
    "CYCLE_ITS": Rule("int", 0, 100_000, "a whole number >= 0", (0, 128), "", (0, 128), 1),
    "CYCLE_SAMPLES": Rule("int", 1, 100_000, "a whole number >= 1", (1, 128)),
    "VAR_SAMPLES": Rule("int", 1, 100_000, "a whole number >= 1", (1, 128)),
    # the AudioSet classifier reads 25 ms windows (0.01 s crashed it after the audio was made): 0.1 s leaves margin
    "DURATION": Rule("float", 0.1, 60.0, "seconds in [0.1, 60]", (2.5, 20), "; AudioLDM was trained on 10 s",
                     (0.5, 30.0), 0.5),
    # AudioLDM's 1000 noise levels with a timestep offset of 1: DDIM with 1000 steps would ask for level 1000
    "DDIM_STEPS": Rule("int", 1, 999, "a whole number in 1-999", (50, 400), " for ddim, 20-50 for dpmpp", (1, 999), 1),
    "GUIDANCE": Rule("float", 1.0, 20.0, "a number in [1, 20]", (1.0, 5.0), "; 1 = no classifier-free guidance",
                     (1.0, 10.0), 0.1),
    "AUDIO_BATCH": Rule("int", 1, 1024, "a whole number >= 1", (1, 32)),
    "SEED": Rule("int", 0, 2**32 - 1, "a whole number in 0-4294967295"),
    "CONFIRM_SEEDS": Rule("int", 0, 100, "a whole number in 0-100", (5, 20), "; 0 = no confirmation"),
    "EDIT_STRENGTH": Rule("float", 1e-9, 1.0, "a fraction of the schedule in (0, 1]", (0.2, 0.8), "; 1 = all of it",
                          (0.05, 1.0), 0.05),
    # classifier-free guidance of step 8, per direction; 1 = the conditional prediction alone
    "EDIT_GUIDANCE_SRC": Rule("float", 1.0, 20.0, "a number in [1, 20]", (1.0, 5.0), "; ZETA uses 3", (1.0, 10.0), 0.5),
    "EDIT_GUIDANCE_TGT": Rule("float", 1.0, 30.0, "a number in [1, 30]", (3.0, 15.0), "; ZETA uses 12", (1.0, 20.0),
                              0.5),
    "EDIT_DDIM_GUIDANCE_SRC": Rule("float", 1.0, 20.0, "a number in [1, 20]", (1.0,), "; 1 = unguided", (1.0, 5.0),
                                   0.5),
    # torch.distributed's default wait (30 minutes) is shorter than the spread of a long manifest's shards
    "MANIFEST_WAIT_HOURS": Rule("float", 0.01, 10_000.0, "hours in [0.01, 10000]", (24, 168)),
}


def check_settings(cfg, where=""):
    """UserError listing every setting outside its valid range, one line each, before anything loads."""
    from model.aldm import SAMPLERS
    from model.edit import EDIT_METHODS
    problems = []
    for name, rule in RULES.items():
        value = cfg[name]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = number and math.isfinite(value) and (rule.kind == "float" or float(value).is_integer())
        ok = ok and (rule.low is None or value >= rule.low) and (rule.high is None or value <= rule.high)
        if not ok:
            problems.append(f"{name}={value!r} is out of range: it must be {rule.text}")
    weights = {k: cfg[k] for k in ("MIX_DIRECT", "MIX_BETA", "MIX_ALPHA", "MIX_GAMMA")}
    if all(isinstance(w, (int, float)) and w == 0 for w in weights.values()):
        problems.append("MIX_DIRECT, MIX_BETA, MIX_ALPHA and MIX_GAMMA are all 0: give at least one a weight > 0 "
                        "(they should sum to 1)")
    if cfg["SAMPLER"] not in SAMPLERS:
        problems.append(f"SAMPLER={cfg['SAMPLER']!r} is not a sampler: it must be one of {', '.join(SAMPLERS)}")
    if isinstance(cfg["SEED"], int) and isinstance(cfg["EVAL_SEEDS"], int) and \
            cfg["SEED"] + cfg["EVAL_SEEDS"] - 1 > 2**32 - 1:
        problems.append(f"SEED={cfg['SEED']} with EVAL_SEEDS={cfg['EVAL_SEEDS']} runs past the largest seed 4294967295")
    elif cfg["SWEEP"] and all(isinstance(cfg[k], int) for k in ("SEED", "EVAL_SEEDS", "CONFIRM_SEEDS")) and \
            cfg["SEED"] + cfg["EVAL_SEEDS"] + cfg["CONFIRM_SEEDS"] - 1 > 2**32 - 1:
        problems.append(f"SEED={cfg['SEED']} with EVAL_SEEDS={cfg['EVAL_SEEDS']} and CONFIRM_SEEDS="
                        f"{cfg['CONFIRM_SEEDS']} runs past the largest seed 4294967295")
    if cfg["MANIFEST_ADJUSTMENT"] not in ("holm", "bh"):
        problems.append(f"MANIFEST_ADJUSTMENT={cfg['MANIFEST_ADJUSTMENT']!r} is not an adjustment: it must be 'holm' "
                        "(Holm, the family-wise error) or 'bh' (Benjamini-Hochberg, the false-discovery rate)")
    if cfg["EDIT_METHOD"] not in EDIT_METHODS:
        problems.append(f"EDIT_METHOD={cfg['EDIT_METHOD']!r} is not an edit method: it must be one of "
                        f"{', '.join(EDIT_METHODS)}")
    if not isinstance(cfg["CIAP_CHECKPOINT"], str):
        problems.append(f"CIAP_CHECKPOINT={cfg['CIAP_CHECKPOINT']!r} must be the path of a ciap.safetensors, or '' "
                        "(SSV2A's remixer)")
    if not isinstance(cfg["AUDIO_INPUT"], str):
        problems.append(f"AUDIO_INPUT={cfg['AUDIO_INPUT']!r} must be the path of a recording, or '' (off)")
    problems += text_prompt_problems(cfg["TEXT_PROMPT"])
    problems += name_problems(cfg)
    if len(cfg["RUN_NAME"]) > RUN_NAME_LIMIT:
        problems.append(f"RUN_NAME is {len(cfg['RUN_NAME'])} characters long: it becomes a folder name, at most "
                        f"{RUN_NAME_LIMIT}")
    problems += output_dir_problems(cfg["OUTPUT_DIR"])
    problems += device_problems(cfg["DEVICE"], cfg["SMOKE"])
    if not all(isinstance(v, str) and v.strip() for v in cfg["KEPT_SOURCES"]):
        problems.append(f"KEPT_SOURCES={cfg['KEPT_SOURCES']!r} must be a list of source names")
    else:
        problems += [f"KEPT_SOURCES {clash}" for clash in name_clashes(cfg["KEPT_SOURCES"])]
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in cfg["EVAL_LABELS"].items()):
        problems.append(f"EVAL_LABELS must map source names to label texts, got {cfg['EVAL_LABELS']!r}")
    else:
        problems += [f"EVAL_LABELS[{cut(k)!r}] is empty: give the CLAP label text (e.g. 'a cat meowing'), or drop "
                     "the entry to get 'the sound of a <name>'" for k, v in cfg["EVAL_LABELS"].items() if not v.strip()]
    if not all(isinstance(k, str) and isinstance(v, list) for k, v in cfg["AUDIO_CLASSES"].items()):
        problems.append("AUDIO_CLASSES must map source names to lists of AudioSet class names, "
                        f"got {cfg['AUDIO_CLASSES']!r}")
    if problems:
        raise UserError((f"{where}: " if where else "") + ("\n  ".join(problems) if len(problems) == 1 else
                        f"{len(problems)} settings are out of range:\n  " + "\n  ".join(problems)))


CONTROL_NAMES = {"\x1b": "ESC", "\n": "a newline", "\r": "a carriage return", "\x00": "a NUL byte", "\x7f": "DEL"}


def control_problem(what, text):
    """A message when a name holds a control character (Unicode category Cc: ESC, newline, NUL, DEL ...; a tab
    counts as a space), else None. Names are printed on the console, where an ESC sequence colours it, in log
    lines, which a newline splits, and in run.json and file names. The name is shown escaped (repr)."""
    found = list(dict.fromkeys(c for c in str(text) if unicodedata.category(c) == "Cc" and c != "\t"))
    if not found:
        return None
    which = ", ".join(CONTROL_NAMES.get(c, f"U+{ord(c):04X}") for c in found)
    return (f"{what} {cut(text)!r} holds a control character ({which}): names are printed and written to "
            "run.json and file names, where it would colour the terminal or split lines. Remove it")


def name_problems(cfg):
    """Control characters in the settings' names and texts (object names are checked in inputs.parse_prompt)."""
    named = [("RUN_NAME", cfg["RUN_NAME"]), ("TEXT_PROMPT", cfg["TEXT_PROMPT"])]
    if isinstance(cfg["KEPT_SOURCES"], list):
        named += [("KEPT_SOURCES name", k) for k in cfg["KEPT_SOURCES"]]
    for setting in ("EVAL_LABELS", "AUDIO_CLASSES"):
        if isinstance(cfg[setting], dict):
            named += [(f"{setting} name", k) for k in cfg[setting]]
            named += [(f"{setting}[{cut(k)!r}]", v) for k, v in cfg[setting].items()
                      for v in (v if isinstance(v, list) else [v])]
    return [problem for what, text in named if isinstance(text, str) and (problem := control_problem(what, text))]


def cut(text, limit=60):
    """User text shortened for a message: a 5000-character name must not become a 5000-character error."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit - 20]}...{text[-10:]} ({len(text)} characters)"


def text_prompt_problems(template):
    """TEXT_PROMPT needs one '{}' for the name and no other field (write a literal brace as '{{' or '}}')."""
    try:
        worded = template.format("NAME")
    except (IndexError, KeyError, ValueError) as err:
        return [f"TEXT_PROMPT={cut(template)!r} cannot take the name ({type(err).__name__}: {err}): it needs exactly "
                "one '{}' and no other braces (write a literal brace as '{{' or '}}'), e.g. 'a photo of a {}'"]
    if "NAME" not in worded or worded.count("NAME") != template.count("NAME") + 1:
        return [f"TEXT_PROMPT={cut(template)!r} has no '{{}}' where the object's name goes, e.g. 'a photo of a {{}}'"]
    return []


def output_dir_problems(output_dir):
    """OUTPUT_DIR is a folder name, and neither it nor a folder above it is an existing file."""
    if not isinstance(output_dir, str) or not output_dir.strip():
        return [f"OUTPUT_DIR={output_dir!r} is empty: give the folder runs are written to (e.g. 'outputs')"]
    if output_dir.startswith("~") and os.path.expanduser(output_dir) == output_dir:
        return [f"OUTPUT_DIR={output_dir!r} starts with '~', which names no home folder here: give the full path"]
    for folder in [Path(output_dir), *Path(output_dir).parents]:
        if folder.exists():
            if folder.is_dir():
                break
            where = "is a file" if folder == Path(output_dir) else f"lies under {folder}, which is a file"
            return [f"OUTPUT_DIR={cut(output_dir)!r} {where}, not a folder: point it at a folder (it is created "
                    "when missing)"]
    return []


def device_problems(device, smoke):
    """DEVICE names a device this machine has (checked like CUDA: mps, meta, cuda:5 ...); smoke runs use the CPU."""
    from util import get_device
    if smoke and device not in ("", "cpu"):
        return [f"DEVICE={device!r}: a smoke run builds its tiny models on the CPU; drop --DEVICE or give cpu"]
    try:
        get_device(device or None)
    except (RuntimeError, ValueError) as err:
        return [f"DEVICE={device!r}: {str(err).splitlines()[0]}"]
    return []


def name_key(name):
    """The identity of an object or sound-source name: names equal after trimming and case-folding (' Cat',
    'cat\t') are one name, and so are names that would make the same file name (safe_name, the one sanitiser)."""
    from util import safe_name
    return safe_name(" ".join(str(name).split()).casefold())


def name_clashes(names):
    """One line per name that repeats an earlier one (the same name_key): 'lists 'cat' and 'Cat ', ...'."""
    seen, clashes = {}, []
    for i, name in enumerate(names):
        j = seen.setdefault(name_key(name), i)
        if j != i:
            clashes.append(f"lists {cut(name)!r} twice: list each name once" if names[j] == name else
                           f"lists {cut(names[j])!r} and {cut(name)!r}, which are one name (equal after trimming "
                           "spaces and ignoring case, or the same file name): keep one")
    return clashes


def audio_steps(cfg):
    """Denoising steps for the run's sampler: DDIM_STEPS, or the faster sampler's default unless given."""
    from model.aldm import default_steps
    if cfg["SAMPLER"] == "ddim" or cfg.get("_STEPS_GIVEN"):
        return int(cfg["DDIM_STEPS"])
    return default_steps(cfg["SAMPLER"])


def edit_guidance(cfg):
    """(source, target) guidance of step 8: the source guidance is EDIT_DDIM_GUIDANCE_SRC for ddim-inversion (whose
    inversion is unguided by default) and EDIT_GUIDANCE_SRC for the others; the target one is EDIT_GUIDANCE_TGT."""
    source = cfg["EDIT_DDIM_GUIDANCE_SRC"] if cfg["EDIT_METHOD"] == "ddim-inversion" else cfg["EDIT_GUIDANCE_SRC"]
    return float(source), float(cfg["EDIT_GUIDANCE_TGT"])


def eval_seeds(cfg):
    return [cfg["SEED"] + i for i in range(cfg["EVAL_SEEDS"])]


def confirm_seeds(cfg):
    """The fresh seeds a sweep confirms its best setting on: the CONFIRM_SEEDS after the ones that chose it."""
    return [cfg["SEED"] + cfg["EVAL_SEEDS"] + i for i in range(cfg["CONFIRM_SEEDS"])]


def readme_table(plan):
    """The README's table of numeric settings, made from RULES and main.py's constants and comments (a test
    holds the README to it: python -c "import main, settings; print(settings.readme_table(main))")."""
    values, comments = constants(plan), constant_comments(plan)
    lines = ["| constant | default | valid | typical | what |", "|---|---|---|---|---|"]
    for name, rule in RULES.items():
        what = comments.get(name, "").replace("|", "\\|")
        lines.append(f"| `{name}` | {values[name]!r} | {rule.valid} | {rule.typical_text or '-'} | {what} |")
    return "\n".join(lines)
