"""Edit-aware image-to-audio generation.

Given I_0 (e.g. cat + rocket) and an edited I_1 (astronaut + rocket), make audio that follows the edit:
SAM2 masks of the removed and added objects -> all 257 CLIP tokens of each image -> SVD suppression of the
removed region, SVD boost of the added one -> mix with background and plain CLIP -> global slot of SSV2A's
remixer next to YOLO crops of I_1 -> AudioLDM -> an AudioSet classifier (and CLAP) scores the three audios
over several seeds.

    python main.py                                      # the example pair in images/
    python main.py --SVD_K=8 --original=a.jpg           # override any constant below
    python main.py --smoke                              # tiny random models, CPU, no checkpoints: checks the plumbing
    python main.py --sweep SVD_K=1,5,10 SVD_ALPHA=0.1,0.3   # a grid; masks, tokens and detections computed once
    python main.py --manifest images/pairs.csv          # many edit pairs, models loaded once

Every setting, name, image and checkpoint is checked before the first model runs. Every run writes a new
folder outputs/<timestamp>_<name>/ and its run.json says how it ended; nothing is ever overwritten.
"""
import ast
import contextlib
import csv
import errno
import functools
import io
import itertools
import json
import math
import os
import platform
import random
import signal
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# -----------------------------------------------------------------------------
# configuration: every constant can be overridden as --NAME=value (names are case-insensitive)
IMAGE_DIR = "images"                 # folder of ORIGINAL / EDITED when they are bare file names
ORIGINAL = "original.jpg"            # I_0: the image before the edit
EDITED = "edited.jpg"                # I_1: the image after the edit
OUTPUT_DIR = "outputs"               # each run gets its own sub-folder here
RUN_NAME = ""                        # suffix of the run folder; '' = '<removed>-to-<added>'
CONFIG_PATH = "ssv2a.json"           # SSV2A configuration (the release's ssv2a.json)
CHECKPOINT_PATH = "checkpoints/ssv2a.pth"  # SSV2A weights (python -m model.checkpoints ssv2a says where)
# The objects: first entry = object to REMOVE (in I_0), second = object to ADD (in I_1). Either SAM2 points
# ({"x": [...], "y": [...], "labels": [...]}: pixels, labels 1 = on the object, 0 = not on it; find them with
# verify_masks.py) or {} to find the object by its name (SAM2 proposals ranked by CLIP; {"text": "..."} words
# the CLIP prompt differently). The names also name the sound sources of the evaluation.
SAM2_PROMPTS = {
    "cat": {"x": [448], "y": [330], "labels": [1]},
    "astronaut": {"x": [410, 370], "y": [130, 460], "labels": [1, 1]},
}
KEPT_SOURCES = ["rocket"]            # sound sources in both images: their scores should stay put
# AudioSet classes of each sound source for the verdict's classifier (exact display names of the 527 in
# model/audioset_labels.csv). A source not listed is matched by name ('dog' -> 'Dog'); [] = no AudioSet
# class: that source is judged by CLAP instead. AudioSet has no rocket; a launch sounds like a jet engine.
AUDIO_CLASSES = {
    "cat": ["Cat", "Meow", "Purr"],
    "astronaut": ["Speech", "Male speech, man speaking", "Female speech, woman speaking", "Narration, monologue"],
    "rocket": ["Jet engine", "Rumble", "Engine"],
}
# CLAP zero-shot label per source name (the second view); a source without an entry gets "the sound of a
# <name>"; extra entries are extra labels to choose from (distractors)
EVAL_LABELS = {"cat": "a cat meowing", "astronaut": "a person talking", "rocket": "a rocket engine roaring"}
EVAL_TOLERANCE = 0.05                # kept sources may move this much in probability and still pass, 0.0-0.2
EVAL_SEEDS = 3                       # draws of the three audios (seeds SEED, SEED+1, ...), 1-100; 1 = one draw
EVAL_MIN_EFFECT = 0.01               # effect floor: an up/down change of a probability below this is 'no effect', 0-0.2
SVD_K = 5                            # top singular values to modify, 1-15 (must stay below the region's rank)
SVD_ALPHA = 0.3                      # suppression factor for the removed object, 0.1-0.5 (1 = no effect)
SVD_BETA = 1.5                       # boost factor for the added object, 1.1-3.0 (1 = no effect)
MIX_ALPHA = 0.1                      # weight of the suppressed embedding, 0.0-0.3
MIX_BETA = 0.4                       # weight of the boosted embedding, 0.2-0.6
MIX_GAMMA = 0.1                      # weight of the background embedding, 0.0-0.3
MIX_DIRECT = 0.4                     # weight of the plain CLIP embedding of I_1, 0.2-0.6 (weights sum to 1)
MASK_THRESHOLD = 0.5                 # a patch belongs to the object when this fraction is masked, 0.3-0.7
TEXT_PROMPT = "a photo of a {}"      # CLIP wording for objects found by name ({} = the name; "a {}" reads
#                                      "an {}" before a name starting with a vowel: "a photo of an astronaut")
TEXT_MIN_SCORE = 0.3                 # CLIP probability a proposal needs to count as the named object, 0-1
CYCLE_ITS = 64                       # SSV2A cycle-mix rounds, 0-128 (more = closer to the detected sources)
CYCLE_SAMPLES = 64                   # remixes drawn per cycle-mix round, 1-128
VAR_SAMPLES = 64                     # variational draws averaged per sample, 1-128 (more = less random)
PIN_GLOBAL = False                   # ablation: keep slot 0 = E_final in every cycle-mix round (False = original)
DURATION = 10.0                      # seconds of audio, 2.5-20 (AudioLDM was trained on 10 s)
SAMPLER = "ddim"                     # 'ddim' (eta 1, the original's), 'dpmpp-2m', 'dpmpp-2m-sde' (faster)
DDIM_STEPS = 200                     # denoising steps, 50-400 for ddim; each faster sampler has its own default
GUIDANCE = 2.5                       # AudioLDM classifier-free guidance, 1.0-5.0
AUDIO_BATCH = 8                      # audios per AudioLDM call, 1-32 (GPU memory), in whole seeds (see step 7)
SEED = 42                            # first seed: masks-to-audio repeat exactly for the same seed
DEVICE = ""                          # '' = cuda if present, else mps, else cpu; or 'cuda', 'cuda:1', 'cpu'
SMOKE = False                        # tiny random-weight models on the CPU: tests the plumbing, audio is noise
# step 8 (optional), DeltaV2A's half of the problem: edit a recording A_0 that goes with I_0, keeping its timing
AUDIO_INPUT = ""                     # A_0: wav/flac/ogg (mono-mixed, 16 kHz, cut/padded to DURATION); '' = off
EDIT_STRENGTH = 0.5                  # fraction of AudioLDM's schedule re-run from A_0, (0, 1]: more edit, less A_0
EDIT_METHOD = "ddpm-inversion"       # 'ddpm-inversion' (edit-friendly, exact), 'ddim-inversion' or 'sdedit'
# grid for --sweep, e.g. {"SVD_K": [1, 5, 10], "SVD_ALPHA": [0.1, 0.3]}; the command line's --sweep wins
SWEEP = {}
# -----------------------------------------------------------------------------

CONFIG_KEYS = [k for k, v in list(globals().items()) if k.isupper() and not k.startswith("_")
               and isinstance(v, (int, float, str, bool, list, dict))]
# a smoke run finishes in about a minute on a CPU; only these differ from a real run
# (random CLIP scores no proposal of a name-only object as likely: TEXT_MIN_SCORE 0 takes the best one)
SMOKE_SETTINGS = dict(CYCLE_ITS=2, CYCLE_SAMPLES=4, VAR_SAMPLES=4, DURATION=2.0, DDIM_STEPS=4, DEVICE="cpu",
                      TEXT_MIN_SCORE=0.0)
# what a sweep may vary: everything after the masks and tokens; the last two change the baselines too
SWEEPABLE = ["SVD_K", "SVD_ALPHA", "SVD_BETA", "MIX_ALPHA", "MIX_BETA", "MIX_GAMMA", "MIX_DIRECT", "MASK_THRESHOLD",
             "PIN_GLOBAL", "SAMPLER"]
SWEEPABLE.append("EDIT_STRENGTH")    # step 8 only: the sweep's edit trade-off table and figure
AUDIO_KEYS = ("PIN_GLOBAL", "SAMPLER")   # settings that act on every audio row, baselines included
AUDIO_NAMES = ("baseline_original", "baseline_edited", "manipulated")
NAME_LIMIT = 40                      # characters of an object name (names become file names)
# warnings about the libraries' own internals (AST's 128 kaldi bands leave an empty one, by design): they say
# nothing about a run, so they are neither shown nor kept in run.json
LIBRARY_NOTICES = ("pkg_resources is deprecated", "`torch.jit.script` is deprecated", "`torch.jit.load` is deprecated",
                   "The AudioLDMPipeline has been deprecated", "At least one mel filter has all zero values")
RUN_NAME_LIMIT = 80
PATH_KEYS = ("IMAGE_DIR", "ORIGINAL", "EDITED", "OUTPUT_DIR", "CONFIG_PATH", "CHECKPOINT_PATH")   # ~ expanded


class UserError(Exception):
    """Bad input or a missing file: main() prints the message (which says what to do) without a traceback."""


class RunCancelled(Exception):
    """A caller's progress callback (the app's Cancel button) stopped the run between steps: run.json 'cancelled'."""


# -----------------------------------------------------------------------------
# command line


def default_config():
    return {k: json.loads(json.dumps(globals()[k])) for k in CONFIG_KEYS}   # deep copy of the constants


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


def parse_args(argv, config):
    """Apply the command line to config (a dict of the constants). Returns (mode, mode_argument).

    --NAME=value overrides a constant (nanoGPT style), --smoke selects the tiny models (and SMOKE_SETTINGS,
    which explicit overrides still beat), --sweep NAME=v1,v2 ... runs a grid, --manifest FILE runs many pairs.
    """
    by_lower = {k.lower(): k for k in config}
    overrides, sweep, mode, manifest, sweep_given = [], {}, "run", None, False
    args = list(argv)
    if "--smoke" in args:
        args.remove("--smoke")
        config["SMOKE"] = True
        config.update(SMOKE_SETTINGS)
        print("Smoke run: " + ", ".join(f"{k}={v!r}" for k, v in SMOKE_SETTINGS.items()))
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
            key, value_text = arg[2:].split("=", 1)
            name = by_lower.get(key.lower())
            if name is None:
                raise UserError(f"unknown setting --{key}. Settings: {', '.join(sorted(config))}")
            overrides.append((name, value_text))
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


def usage():
    lines = [__doc__.strip(), "", "Settings (defaults):"]
    lines += [f"  --{k}={globals()[k]!r}" for k in CONFIG_KEYS]
    return "\n".join(lines)


# -----------------------------------------------------------------------------
# settings: every value checked against its valid range before any model loads

SETTING_RULES = {
    # name: (kind, low, high, what the valid range is); None = unbounded
    "SVD_K": ("int", 1, None, "a whole number >= 1 (typical 1-15, below the region's rank)"),
    # singular values are float32: a factor past 1e3 drowns every other direction (and 1e39 is inf)
    "SVD_ALPHA": ("float", 0.0, 1000.0, "a number in [0, 1000] (typical 0.1-0.5; 1 = no effect)"),
    "SVD_BETA": ("float", 0.0, 1000.0, "a number in [0, 1000] (typical 1.1-3.0; 1 = no effect)"),
    # the four mix weights share E_final between them (they sum to 1), so each lies in [0, 1]
    "MIX_ALPHA": ("float", 0.0, 1.0, "a weight in [0, 1] (typical 0.0-0.3; the four weights sum to 1)"),
    "MIX_BETA": ("float", 0.0, 1.0, "a weight in [0, 1] (typical 0.2-0.6; the four weights sum to 1)"),
    "MIX_GAMMA": ("float", 0.0, 1.0, "a weight in [0, 1] (typical 0.0-0.3; the four weights sum to 1)"),
    "MIX_DIRECT": ("float", 0.0, 1.0, "a weight in [0, 1] (typical 0.2-0.6; the four weights sum to 1)"),
    "MASK_THRESHOLD": ("float", 1e-9, 1.0, "a fraction in (0, 1] (typical 0.3-0.7)"),
    "TEXT_MIN_SCORE": ("float", 0.0, 1.0, "a probability in [0, 1]"),
    "EVAL_TOLERANCE": ("float", 0.0, 1.0, "a probability difference in [0, 1] (typical 0.0-0.2)"),
    "EVAL_SEEDS": ("int", 1, 100, "a whole number in 1-100 (typical 3-10)"),
    "EVAL_MIN_EFFECT": ("float", 0.0, 0.2, "a probability difference in [0, 0.2] (typical 0.01; 0 = any change "
                                           "counts)"),
    "CYCLE_ITS": ("int", 0, 100_000, "a whole number >= 0 (typical 0-128)"),
    "CYCLE_SAMPLES": ("int", 1, 100_000, "a whole number >= 1 (typical 1-128)"),
    "VAR_SAMPLES": ("int", 1, 100_000, "a whole number >= 1 (typical 1-128)"),
    # the AudioSet classifier reads 25 ms windows (0.01 s crashed it after the audio was made): 0.1 s leaves margin
    "DURATION": ("float", 0.1, 60.0, "seconds in [0.1, 60] (typical 2.5-20; AudioLDM was trained on 10 s)"),
    # AudioLDM's 1000 noise levels with a timestep offset of 1: DDIM with 1000 steps would ask for level 1000
    "DDIM_STEPS": ("int", 1, 999, "a whole number in 1-999 (typical 50-400 for ddim, 20-50 for dpmpp)"),
    "GUIDANCE": ("float", 1.0, 20.0, "a number in [1, 20] (1 = no classifier-free guidance; typical 1-5)"),
    "AUDIO_BATCH": ("int", 1, 1024, "a whole number >= 1 (typical 1-32)"),
    "SEED": ("int", 0, 2**32 - 1, "a whole number in 0-4294967295"),
    "EDIT_STRENGTH": ("float", 1e-9, 1.0, "a fraction of the schedule in (0, 1] (typical 0.2-0.8; 1 = all of it)"),
}


def check_settings(cfg, where=""):
    """UserError listing every setting outside its valid range, one line each, before anything loads."""
    from model.aldm import SAMPLERS
    problems = []
    for name, (kind, low, high, rule) in SETTING_RULES.items():
        value = cfg[name]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = number and math.isfinite(value) and (kind == "float" or float(value).is_integer())
        ok = ok and (low is None or value >= low) and (high is None or value <= high)
        if not ok:
            problems.append(f"{name}={value!r} is out of range: it must be {rule}")
    weights = {k: cfg[k] for k in ("MIX_DIRECT", "MIX_BETA", "MIX_ALPHA", "MIX_GAMMA")}
    if all(isinstance(w, (int, float)) and w == 0 for w in weights.values()):
        problems.append("MIX_DIRECT, MIX_BETA, MIX_ALPHA and MIX_GAMMA are all 0: give at least one a weight > 0 "
                        "(they should sum to 1)")
    if cfg["SAMPLER"] not in SAMPLERS:
        problems.append(f"SAMPLER={cfg['SAMPLER']!r} is not a sampler: it must be one of {', '.join(SAMPLERS)}")
    if isinstance(cfg["SEED"], int) and isinstance(cfg["EVAL_SEEDS"], int) and \
            cfg["SEED"] + cfg["EVAL_SEEDS"] - 1 > 2**32 - 1:
        problems.append(f"SEED={cfg['SEED']} with EVAL_SEEDS={cfg['EVAL_SEEDS']} runs past the largest seed 4294967295")
    problems += check_edit_settings(cfg)
    problems += text_prompt_problems(cfg["TEXT_PROMPT"])
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
        return [f"OUTPUT_DIR={output_dir!r} is empty: give the folder runs are written to (default {OUTPUT_DIR!r})"]
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


def eval_seeds(cfg):
    return [cfg["SEED"] + i for i in range(cfg["EVAL_SEEDS"])]


# -----------------------------------------------------------------------------
# names: every file or folder name built from user text goes through safe_name


def safe_name(text, limit=NAME_LIMIT):
    """util.safe_name, the one sanitiser of user text that becomes a file or folder name."""
    from util import safe_name as sanitise
    return sanitise(text, limit)


def run_file(run_dir, filename):
    """run_dir / filename, refused (ValueError) if it would land outside run_dir."""
    path = Path(run_dir) / filename
    if Path(os.path.abspath(path)).parent != Path(os.path.abspath(run_dir)):
        raise ValueError(f"refusing to write {filename!r} outside the run folder {run_dir}")
    return path


def new_run_dir(output_dir, name):
    """outputs/<timestamp>_<name>/, created fresh: a run never writes into an earlier run's folder."""
    import tempfile
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = safe_name(name, limit=RUN_NAME_LIMIT) if name else "run"
    try:
        for i in range(100):
            run_dir = Path(output_dir) / (f"{stamp}_{safe}" + (f"_{i}" if i else ""))
            try:
                run_dir.mkdir(parents=True, exist_ok=False)
                return run_dir
            except FileExistsError:
                continue
        # a hundred runs of this name in one second (a job array): a random suffix, which mkdtemp makes unique
        run_dir = Path(tempfile.mkdtemp(prefix=f"{stamp}_{safe}_", dir=output_dir))
        run_dir.chmod(0o777 & ~_umask())   # mkdtemp's folder is private (0700); a run folder is like any other
        return run_dir
    except OSError as err:
        raise UserError(f"cannot create a run folder in OUTPUT_DIR={str(output_dir)!r}: {err.strerror} "
                        f"({err.filename or output_dir}). Point --OUTPUT_DIR at a folder you can write to") from err


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_dir(output_dir):
    """Create OUTPUT_DIR and a file in it now, before any model loads: a read-only folder or disk, or one under a
    file, is found here and not after minutes of model loading. Folders made only for this are removed again."""
    out = Path(output_dir)
    made = [p for p in [out, *out.parents] if not p.exists()]   # deepest first
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile_in(out) as f:
            f.write(b"probe")
            f.flush()
    except OSError as err:
        raise UserError(f"OUTPUT_DIR={str(output_dir)!r} cannot be written: {err.strerror} ({err.filename or out}). "
                        "Point --OUTPUT_DIR at a folder you can write to (it is created when missing)") from err
    finally:
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()


def tempfile_in(folder):
    import tempfile
    return tempfile.TemporaryFile(dir=folder, prefix=".write-probe-")


# -----------------------------------------------------------------------------
# inputs: images and object prompts


@dataclass
class ObjectPrompt:
    """One object of SAM2_PROMPTS: found by SAM2 points, or by name (points None: SAM2 proposals + CLIP)."""
    name: str
    points: list = None           # [[x, y], ...] pixels of the image as a viewer shows it
    labels: list = None           # 1 / 0 per point
    text: str = ""                # the CLIP prompt of a name-only object
    union: bool = False           # name-only: the union of every proposal CLIP takes for it, not just the best

    @property
    def by_text(self):
        return self.points is None


def resolve_image(name, image_dir):
    """A path for an image given as a bare file name in IMAGE_DIR or as a path; UserError if missing."""
    path = Path(name)
    if not path.is_file() and not path.is_absolute():
        path = Path(image_dir) / name
    if not path.is_file():
        raise UserError(f"image not found: {name} (looked at {Path(name).resolve()} and {path.resolve()}). "
                        f"Set --ORIGINAL/--EDITED to an image file, or put it in {image_dir}/")
    return path


def parse_prompts(prompts, text_prompt=TEXT_PROMPT):
    """SAM2_PROMPTS -> [removed, added] ObjectPrompts; UserError when malformed."""
    example = ('{"cat": {"x": [448], "y": [330], "labels": [1]}, "duck": {"x": [410], "y": [130], "labels": [1]}} '
               'or, to find them by name, {"cat": {}, "duck": {}}')
    if not isinstance(prompts, dict) or len(prompts) != 2:
        raise UserError(f"SAM2_PROMPTS needs exactly two entries (object to remove in I_0, then object to add in "
                        f"I_1), got {cut(prompts, 300)!r}. Example: {example}")
    parsed = [parse_prompt(name, p, text_prompt) for name, p in prompts.items()]
    if name_key(parsed[0].name) == name_key(parsed[1].name):
        same = (f"both called {parsed[0].name!r}" if parsed[0].name == parsed[1].name else
                f"called {parsed[0].name!r} and {parsed[1].name!r}, which are one name (equal after trimming spaces "
                "and ignoring case, or the same file name): both would be scored as the same sound")
        raise UserError(f"SAM2_PROMPTS: the removed and the added object are {same}. Give them different names")
    return parsed


def parse_prompt(name, p, text_prompt=TEXT_PROMPT):
    """One SAM2_PROMPTS entry -> ObjectPrompt, by main's rules (verify_masks.py checks its lines with it too)."""
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"SAM2_PROMPTS: an object needs a name, got {name!r}")
    if len(name) > NAME_LIMIT:
        raise UserError(f"SAM2_PROMPTS name {name[:30]!r}... is {len(name)} characters long: names become file "
                        f"names and sound-source names, at most {NAME_LIMIT}")
    if not isinstance(p, dict):
        raise UserError(f"SAM2_PROMPTS[{name!r}] must be a dict: points {{'x': [...], 'y': [...]}} or {{}} to "
                        f"find the object by name, got {cut(p, 200)!r}")
    unknown = set(p) - {"x", "y", "labels", "text", "union"}
    if unknown:
        raise UserError(f"SAM2_PROMPTS[{name!r}] has unknown keys {cut(sorted(map(str, unknown)), 200)}; use x, y, "
                        "labels, or text and union for an object found by name")
    if "x" not in p and "y" not in p:
        if "labels" in p:   # labels belong to points: without them this is not a name search in disguise
            raise UserError(f"SAM2_PROMPTS[{name!r}] has labels but no points: give 'x' and 'y' with them, or "
                            "drop 'labels' to find the object by its name ({})")
        if text_prompt_problems(text_prompt):
            raise UserError(text_prompt_problems(text_prompt)[0])
        from mask import name_prompt
        text = p.get("text", name_prompt(name, text_prompt))
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"SAM2_PROMPTS[{name!r}]['text'] must be a non-empty string, got {p.get('text')!r}")
        if not isinstance(p.get("union", False), bool):
            raise UserError(f"SAM2_PROMPTS[{name!r}]['union'] must be true or false, got {p['union']!r}")
        return ObjectPrompt(name, text=text, union=p.get("union", False))
    if {"text", "union"} & set(p):
        raise UserError(f"SAM2_PROMPTS[{name!r}] has points and {sorted({'text', 'union'} & set(p))}: points "
                        "replace the name search; drop one of them")
    if "x" not in p or "y" not in p:
        raise UserError(f"SAM2_PROMPTS[{name!r}] needs both 'x' and 'y' (and optional 'labels'), or neither "
                        f"(find it by name), got {cut(p, 200)!r}")
    xs = p["x"] if isinstance(p["x"], (list, tuple)) else [p["x"]]
    ys = p["y"] if isinstance(p["y"], (list, tuple)) else [p["y"]]
    labels = p.get("labels", [1] * len(xs))
    labels = labels if isinstance(labels, (list, tuple)) else [labels] * len(xs)
    if not xs or len(xs) != len(ys) or len(labels) != len(xs):
        raise UserError(f"SAM2_PROMPTS[{name!r}]: x, y and labels must have the same length, got {cut(p, 200)!r}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in list(xs) + list(ys)):
        raise UserError(f"SAM2_PROMPTS[{name!r}]: x and y must be pixel numbers, got {cut(p, 200)!r}")
    if any(lab not in (0, 1) for lab in labels):
        raise UserError(f"SAM2_PROMPTS[{name!r}]: labels must be 1 (on the object) or 0 (not on it), got {labels}")
    if 1 not in labels:
        raise UserError(f"SAM2_PROMPTS[{name!r}] has no positive point (label 1): SAM2 needs one on the object")
    return ObjectPrompt(name, [[float(x), float(y)] for x, y in zip(xs, ys)], [int(v) for v in labels])


def check_image_and_points(image_path, prompt, notes):
    """The image opens safely and every point lies on it and where CLIP can see it; UserError otherwise."""
    from mask import check_points_inside
    from util import clip_view_box, inspect_image
    try:
        info = inspect_image(image_path)
    except (ValueError, OSError) as err:
        raise UserError(str(err)) from err
    notes.extend(info["warnings"])
    if prompt.by_text:
        return info
    try:
        check_points_inside(prompt.points, info["size"], str(image_path))
    except ValueError as err:
        raise UserError(f"SAM2_PROMPTS[{prompt.name!r}]: {err}") from err
    x0, y0, x1, y1 = clip_view_box(info["size"])
    positive = [p for p, lab in zip(prompt.points, prompt.labels) if lab == 1]
    if not any(x0 <= x < x1 and y0 <= y < y1 for x, y in positive):
        raise UserError(
            f"SAM2_PROMPTS[{prompt.name!r}]: every point on the object lies outside the centre square that CLIP "
            f"sees of {Path(image_path).name} ({info['size'][0]} x {info['size'][1]}: x in [{x0:g}, {x1:g}), y in "
            f"[{y0:g}, {y1:g})), so no CLIP patch would hold the object. Crop the image so the object is inside that "
            "square, or put a point on a part of it that is")
    return info


def eval_labels(cfg, removed, added):
    """(labels, removed_label, added_label, kept_labels) of the CLAP view, as evaluation.score_run builds them."""
    import evaluation
    sources = [removed, added] + [k for k in cfg["KEPT_SOURCES"] if k not in (removed, added)]
    try:
        labels = evaluation.clap_label_list(sources, cfg["EVAL_LABELS"])
    except ValueError:
        texts = [evaluation.clap_label(s, cfg["EVAL_LABELS"]) for s in sources]
        same = [(a, b) for i, a in enumerate(sources) for b in sources[i + 1:]
                if texts[sources.index(a)] == texts[sources.index(b)]]
        pairs = "; ".join(f"{cut(a)!r} and {cut(b)!r} both get {cut(texts[sources.index(a)])!r}" for a, b in same)
        raise UserError(f"EVAL_LABELS give two sound sources the same CLAP label ({pairs or texts}): CLAP could not "
                        "tell them apart. Give each source its own label text") from None
    label = lambda name: evaluation.clap_label(name, cfg["EVAL_LABELS"])   # noqa: E731
    return labels, label(removed), label(added), [label(k) for k in sources[2:]]


def check_names(cfg, prompts):
    """Sound-source names across settings: a kept source is not also the removed or added object (UserError).
    Returns warnings for EVAL_LABELS / AUDIO_CLASSES keys that differ from a source only in case or spaces:
    entries match exact names, so such a key is unused."""
    names = [p.name for p in prompts]
    problems = []
    for kept in cfg["KEPT_SOURCES"]:
        for role, name in zip(("removed", "added"), names):
            if name_key(kept) == name_key(name):
                problems.append(f"KEPT_SOURCES names {cut(kept)!r}, " + ("" if kept == name else "the same name as ")
                                + f"the {role} object of SAM2_PROMPTS ({cut(name)!r}): a source cannot be both "
                                f"{role} and kept. Drop it from KEPT_SOURCES")
    if problems:
        raise UserError(problems[0] if len(problems) == 1 else
                        f"{len(problems)} problems with the names:\n  " + "\n  ".join(problems))
    sources, notes = names + list(cfg["KEPT_SOURCES"]), []
    for setting in ("EVAL_LABELS", "AUDIO_CLASSES"):
        for key in cfg[setting]:
            near = [s for s in sources if name_key(s) == name_key(key) and s != key]
            if near and key not in sources:
                notes.append(f"{setting} has an entry {cut(key)!r} but the source is called {cut(near[0])!r}: "
                             "entries match exact names, so this one is unused (spell it as the source)")
    return notes


def check_audio_class_names(cfg, sources):
    """AUDIO_CLASSES against AudioSet's 527 names (model/audioset_labels.csv) before any model loads; the loaded
    classifier's own names are checked again after it loads (check_audio_classes)."""
    import evaluation
    try:
        evaluation.resolve_audio_classes(sources, cfg["AUDIO_CLASSES"], evaluation.audioset_labels())
    except ValueError as err:
        raise UserError(str(err)) from err


def roles_of(cfg, prompts):
    removed, added = prompts[0].name, prompts[1].name
    kept = list(dict.fromkeys(k for k in cfg["KEPT_SOURCES"] if k not in (removed, added)))
    return {"removed": removed, "added": added, "kept": kept}


def source_names(cfg, prompts):
    roles = roles_of(cfg, prompts)
    return [roles["removed"], roles["added"], *roles["kept"]]


def prepare_inputs(cfg):
    """Images, prompts and settings checked before any model loads: (images [I_0, I_1], prompts, notes)."""
    check_settings(cfg)
    images = [resolve_image(cfg["ORIGINAL"], cfg["IMAGE_DIR"]), resolve_image(cfg["EDITED"], cfg["IMAGE_DIR"])]
    prompts = parse_prompts(cfg["SAM2_PROMPTS"], cfg["TEXT_PROMPT"])
    notes = check_names(cfg, prompts)
    for image, prompt in zip(images, prompts):
        check_image_and_points(image, prompt, notes)
    if same_file(*images):
        notes.append(f"ORIGINAL and EDITED are the same image ({images[0]}" + ("" if images[0] == images[1] else
                     f" and {images[1]} hold the same bytes") + "): there is no edit to follow, so the three audios "
                     "differ only by the SVD manipulation. Give the edited image as --EDITED")
    eval_labels(cfg, prompts[0].name, prompts[1].name)   # label clashes fail now, not after the audio
    check_audio_class_names(cfg, source_names(cfg, prompts))   # unknown AudioSet names too
    if cfg["AUDIO_INPUT"]:
        notes += read_audio_input(cfg["AUDIO_INPUT"], cfg["DURATION"])[1]   # a bad recording fails now, too
    return images, prompts, notes


def same_file(a, b):
    """The two paths are one file, or two files with the same bytes."""
    import filecmp
    try:
        return os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


# -----------------------------------------------------------------------------
# helpers


def set_seed(seed):
    """Seed every random generator the pipeline draws from (Python, numpy, torch on all devices)."""
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def unit_norm_report(**embs):
    return ", ".join(f"{name} {tuple(e.shape)} |e|={float(e.float().norm()):.4f}" for name, e in embs.items())


class Timer:
    """Wall-clock seconds per named step, for run.json."""

    def __init__(self):
        self.seconds = {}

    @contextlib.contextmanager
    def __call__(self, name):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)


@contextlib.contextmanager
def recorded_warnings(store):
    """Show each warning as it happens and keep it for run.json: a warning is part of the run's result."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        store.append(f"{category.__name__}: {message}")
        print(f"WARNING: {message}")

    warnings.showwarning = show
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", UserWarning)
            for notice in LIBRARY_NOTICES:   # "always" above would show them again
                warnings.filterwarnings("ignore", message=notice)
            warnings.showwarning = show
            yield store
    finally:
        warnings.showwarning = shown


def save_tensors(data, path):
    """torch.save into a new file, complete or absent (util.new_file): a full disk leaves no cut embeddings.pt."""
    import torch
    from util import new_file
    with new_file(path) as f:
        torch.save(data, f)


def write_json(path, data):
    from util import new_file
    with new_file(path, "x") as f:   # never replaces a file; complete or absent
        json.dump(data, f, indent=2, default=str)


class RunRecord:
    """run.json: written when the run folder is made (status 'running') and rewritten on every exit path.

    update() adds fields as the run goes; close() sets the status ('finished', 'failed' with the error,
    'interrupted') and lists every file the run made, so a crashed run's folder says what it holds.
    """

    def __init__(self, run_dir, data):
        self.run_dir, self.path = Path(run_dir), Path(run_dir) / "run.json"
        # pid and host: a run killed with SIGKILL (which nothing can record) stays 'running'; `ps -p <pid>` on
        # that host tells it apart from a run still going
        self.data = {"status": "running", "started": datetime.now().isoformat(timespec="seconds"),
                     "pid": os.getpid(), "host": platform.node(), **data}
        try:
            self.write()
        except OSError:   # not even run.json fits (a full disk): leave no empty run folder behind
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()
            raise

    def update(self, **fields):
        self.data.update(fields)
        self.write()

    def close(self, status, error=None, trace=None):
        """The final run.json. Never raises: it runs while another error is on its way out (a full disk)."""
        self.data.update(status=status, ended=datetime.now().isoformat(timespec="seconds"),
                         outputs=sorted(p.name for p in self.run_dir.iterdir() if not p.name.startswith(".")
                                        and p.name != "run.json.tmp"))
        if error is not None:
            self.data["error"] = error
        if trace is not None:
            self.data["traceback"] = trace
        try:
            self.write()
        except OSError as err:
            self.write_in_place(err)

    def write(self):
        # run.json is this run's own file: replaced atomically, so a crash never leaves half a JSON behind
        tmp = self.path.with_name("run.json.tmp")
        try:
            tmp.write_text(json.dumps(self.data, indent=2, default=str))
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)   # never a 0-byte run.json.tmp next to the last whole run.json
            raise

    def write_in_place(self, err):
        """A full disk refuses the new run.json: the end of the run goes over the old one's own blocks instead,
        as a short record (status, error, times), so run.json never stays at 'running' for a run that ended."""
        short = {k: self.data[k] for k in ("status", "error", "started", "ended", "pid", "host", "outputs")
                 if k in self.data}
        short["note"] = (f"run.json was cut to these fields: the full record could not be written "
                         f"({err.strerror or err}); results.json and the listed files hold the rest")
        text = json.dumps(short, indent=2, default=str).encode()
        try:
            with open(self.path, "r+b") as f:
                if len(text) > os.fstat(f.fileno()).st_size:
                    short.pop("outputs", None)
                    text = json.dumps(short, indent=2, default=str).encode()
                f.write(text)
                f.truncate(len(text))
        except OSError as again:
            print(f"WARNING: run.json in {self.run_dir} could not be updated ({again.strerror or again}): it still "
                  "says 'running'; this run ended " + self.data["status"], file=sys.stderr)


@contextlib.contextmanager
def recorded_run(run_dir, data):
    """A RunRecord that ends 'finished', 'failed' (with the error) or 'interrupted', whatever happens inside."""
    record = RunRecord(run_dir, data)
    try:
        yield record
    except RunCancelled as err:
        record.close("cancelled", error=f"RunCancelled: {err}")
        raise
    except Stopped as err:
        record.close("interrupted", error=str(err))
        raise
    except KeyboardInterrupt:
        record.close("interrupted", error="KeyboardInterrupt (Ctrl-C)")
        raise
    except BaseException as err:
        record.close("failed", error=f"{type(err).__name__}: {err}", trace=traceback.format_exc(limit=8))
        raise
    record.close("finished")


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a cluster job cancelled, the terminal closed): handled like Ctrl-C."""

    def __init__(self, signum):
        self.signum = signum
        super().__init__(f"{signal.Signals(signum).name} (the process was told to stop)")


@contextlib.contextmanager
def stop_signals_as_interrupts():
    """SIGTERM and SIGHUP raise Stopped in the main thread while the run goes, so run.json records them."""
    def stop(signum, frame):
        raise Stopped(signum)

    names = [s for s in ("SIGTERM", "SIGHUP") if hasattr(signal, s)]
    try:
        previous = {s: signal.signal(getattr(signal, s), stop) for s in names}
    except ValueError:   # not the main thread (e.g. a UI calls main()): signals stay as they were
        previous = {}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(getattr(signal, s), handler)


# -----------------------------------------------------------------------------
# models: each loaded on first use, then kept for every step, pair and setting of the run


class Models:
    """Every model the pipeline uses, loaded lazily and once. smoke=True: tiny random-weight models, CPU."""

    NAMES = ("clip", "sam2", "yolo", "ssv2a", "aldm", "ast", "clap")

    def __init__(self, cfg):
        from util import get_device
        self.smoke = bool(cfg["SMOKE"])
        try:   # the tiny models are built on the CPU: a smoke run records the device it runs on
            self.device = get_device("cpu" if self.smoke else cfg["DEVICE"] or None)
        except RuntimeError as err:   # DEVICE='cuda' on a machine without one
            raise UserError(f"DEVICE={cfg['DEVICE']!r}: {err}") from err
        self.config_path = Path(cfg["CONFIG_PATH"])
        self.checkpoint_path = Path(cfg["CHECKPOINT_PATH"])
        self.load_seconds = {}

    def load_all(self):
        """Open every model now, so a broken checkpoint stops the run before any work (and no folder is made)."""
        print(f"Loading every model on {self.device} (each checkpoint is opened and checked before any work) ...")
        start = time.perf_counter()
        for name in self.NAMES:
            t = time.perf_counter()
            getattr(self, name)
            self.load_seconds[name] = round(time.perf_counter() - t, 2)
        print(f"Models ready in {time.perf_counter() - start:.1f} s")

    @functools.cached_property
    def clip(self):
        import util
        return util.tiny_clip() if self.smoke else util.load_clip(self.device)   # (model, preprocess)

    @functools.cached_property
    def sam2(self):
        import mask
        return mask.tiny_sam2_predictor() if self.smoke else mask.load_sam2_predictor(self.device)

    @functools.cached_property
    def yolo(self):
        from model import detect
        # class_bias 0: the random detector then finds boxes, so smoke runs exercise the crop path
        return detect.tiny_yolo(class_bias=0.0) if self.smoke else detect.load_yolo(
            self.ssv2a.config["detector"]["detection_model"], self.device)

    @functools.cached_property
    def ssv2a(self):
        from model import pipeline
        if self.smoke:
            return pipeline.tiny_ssv2a()
        return pipeline.load_ssv2a(self.config_path, self.checkpoint_path, self.device)

    @functools.cached_property
    def aldm(self):
        from model import aldm
        return aldm.tiny_audioldm() if self.smoke else aldm.load_audioldm(self.device)

    @functools.cached_property
    def ast(self):
        import evaluation
        return evaluation.tiny_ast() if self.smoke else evaluation.load_ast(self.device)

    @functools.cached_property
    def clap(self):
        import evaluation
        return evaluation.tiny_clap() if self.smoke else evaluation.load_clap(self.device)


def check_checkpoints(cfg):
    """Every checkpoint file a real run needs is there (fetched now when online) or listed with its fix."""
    from model.checkpoints import CHECKPOINTS, CheckpointError, checkpoint_path, hf_model_dir
    problems = []
    if not Path(cfg["CONFIG_PATH"]).is_file():
        problems.append(f"SSV2A config {cfg['CONFIG_PATH']} not found (the repo ships ssv2a.json at its root; "
                        f"set --CONFIG_PATH)")
    ssv2a = Path(cfg["CHECKPOINT_PATH"])
    for name in ["ssv2a", "clip", "sam2", "yolo", "audioldm", "clap", "roberta", "ast"]:
        if name == "ssv2a" and ssv2a.is_file():
            continue   # there: its loader checks it against CONFIG_PATH (another config's file has another size)
        try:
            hf_model_dir(name) if CHECKPOINTS[name].hf_repo else checkpoint_path(
                name, check_hash=False, path=ssv2a if name == "ssv2a" else None)
        except CheckpointError as err:
            problems.append(str(err))
    if problems:
        raise UserError(f"{len(problems)} checkpoint(s) missing; nothing was run.\n\n" + "\n\n".join(problems)
                        + "\n\nOn a machine with internet, `python -m model.checkpoints` fetches them all."
                        + "\nTo check the pipeline without any weights: python main.py --smoke")


def check_audio_classes(cfg, models, sources):
    """AUDIO_CLASSES against the loaded classifier's own class names: UserError with close matches."""
    import evaluation
    try:
        _, notes = evaluation.resolve_audio_classes(sources, cfg["AUDIO_CLASSES"], models.ast.labels)
    except ValueError as err:
        raise UserError(str(err)) from err
    return notes


def load_models(cfg, sources_list):
    """Models, every checkpoint opened (real runs) and AUDIO_CLASSES resolved: all before any run folder."""
    models = Models(cfg)
    if models.device.type == "cpu" and not cfg["SMOKE"]:
        print("WARNING: no CUDA GPU found, running on the CPU. Expect tens of minutes per run "
              "(--SAMPLER=dpmpp-2m --CYCLE_ITS=8 --EVAL_SEEDS=1 for a quicker look).")
    if not cfg["SMOKE"]:
        check_checkpoints(cfg)
    models.load_all()
    notes = []
    for p_cfg, sources in sources_list:
        notes += check_audio_classes(p_cfg, models, sources)
    return models, list(dict.fromkeys(notes))


# -----------------------------------------------------------------------------
# the 7 steps of the research plan (each prints its header and the shapes it produced)


def step1_masks(images, prompts, models, run_dir=None, cfg=None):
    """SAM2 masks: M_neg = the removed object in I_0, M_pos = the added object in I_1 ([H, W] float32 {0, 1}).

    Point prompts go to SAM2 directly; a name-only object is found by SAM2's automatic proposals ranked by
    CLIP against its name (mask.segment_by_text). Returns ([M_neg [1, H, W], M_pos [1, H, W]], info per object).
    """
    import torch
    import mask
    cfg = cfg or default_config()
    print("\n=== STEP 1: SAM2 masks ===")
    masks, infos = [], []
    for image, prompt, role in zip(images, prompts, ("remove", "add")):
        tag = f"M_{'neg' if role == 'remove' else 'pos'} ({role} '{prompt.name}' in {Path(image).name})"
        if prompt.by_text:
            # distractors: the pair's other object and the kept sources (a rocket is not the astronaut)
            others = [p.name for p in prompts if p is not prompt] + list(cfg["KEPT_SOURCES"])   # repeats dropped there
            model, preprocess = models.clip
            options = mask.TINY_PROPOSAL_OPTIONS if models.smoke else {}
            try:
                m, info = mask.segment_by_text(image, prompt.name, text=prompt.text, other_names=others,
                                               predictor=models.sam2, clip_model=model, preprocess=preprocess,
                                               min_score=cfg["TEXT_MIN_SCORE"], union=prompt.union,
                                               prompt_template=cfg["TEXT_PROMPT"], **options)
            except mask.NoMatchError as err:
                raise UserError(str(err)) from err
            print(f"  {tag}: found by name with CLIP prompt {prompt.text!r}: proposal(s) {info['chosen']} of "
                  f"{len(info['candidates'])}, P = {info['score']:.3f}")
        else:
            m = mask.get_mask(image, [p[0] for p in prompt.points], [p[1] for p in prompt.points], prompt.labels,
                              predictor=models.sam2)
            info = {"points": prompt.points, "labels": prompt.labels}
        print(f"  {tag}: {tuple(m.shape)}, {m.mean() * 100:.1f}% of pixels")
        if m.sum() == 0:
            raise UserError(f"SAM2 found nothing for '{prompt.name}' in {image}; check it with "
                            f"python verify_masks.py --image {image} --interactive")
        if run_dir is not None:
            path = run_file(run_dir, f"mask_{role}_{safe_name(prompt.name)}.png")
            title = f"{role} '{prompt.name}' ({Path(image).name})"
            if prompt.by_text:
                mask.save_proposals_figure(image, m, info, path=path, title=title)
            else:
                mask.save_mask_figure(image, m, path=path, points=prompt.points, labels=prompt.labels, title=title)
            print(f"  figure: {path}")
        masks.append(torch.from_numpy(m)[None])   # [1, H, W], the batch the mask functions take
        infos.append({k: v for k, v in info.items() if k != "segmentations"})   # run.json: scores, not pixels
    return masks, infos


def step2_clip_tokens(images, models):
    """All 257 CLIP tokens of I_0 and I_1 -> cls_0, patches_0, cls_1, patches_1."""
    from util import extract_full_clip_tokens
    print("\n=== STEP 2: CLIP tokens ===")
    model, preprocess = models.clip
    tokens = extract_full_clip_tokens(images, model=model, preprocess=preprocess)
    tok = dict(cls_0=tokens[0, 0], patches_0=tokens[0, 1:], cls_1=tokens[1, 0], patches_1=tokens[1, 1:])
    print(f"  tokens {tuple(tokens.shape)} -> " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in tok.items()))
    return tok


def step3_patch_weights(M_neg, M_pos, threshold, names=("removed", "added")):
    """Masks on CLIP's 16x16 patch grid, aligned with CLIP's resize + centre crop: m_neg, m_pos [1, 256]."""
    from util import mask_to_patch_weights
    print("\n=== STEP 3: masks -> CLIP patch grid ===")
    m_neg = mask_to_patch_weights(M_neg, threshold=threshold)
    m_pos = mask_to_patch_weights(M_pos, threshold=threshold)
    for m, name in ((m_neg, names[0]), (m_pos, names[1])):
        if m.sum() == 0:
            raise UserError(f"the mask of '{name}' lies entirely outside the centre square that CLIP sees of its "
                            "image: no CLIP patch holds the object. Crop the image so the object is inside it")
    print(f"  m_neg {tuple(m_neg.shape)}: {int((m_neg > 0).sum())} patches; "
          f"m_pos {tuple(m_pos.shape)}: {int((m_pos > 0).sum())} patches (threshold {threshold})")
    return m_neg, m_pos


def step4_background(patches_1, m_neg, m_pos):
    """E_bg: mean of I_1's patches outside both masks, L2-normalised [768]."""
    from util import background_embedding
    print("\n=== STEP 4: background embedding ===")
    emb_bg = background_embedding(patches_1, m_neg[0], m_pos[0])
    n_bg = int((((1 - m_neg[0]) * (1 - m_pos[0])) > 0.5).sum())
    print(f"  {n_bg} background patches -> {unit_norm_report(emb_bg=emb_bg)}")
    return emb_bg


def step5_svd(tok, m_neg, m_pos, cfg):
    """emb_suppress (removed object, top-K singular values x SVD_ALPHA), emb_boost (added object, x SVD_BETA)."""
    from util import svd_manipulate_embeddings
    print("\n=== STEP 5: SVD manipulation ===")
    emb_suppress, info_suppress = svd_manipulate_embeddings(
        tok["cls_0"], tok["patches_0"], m_neg[0], k=cfg["SVD_K"], mode="suppress", alpha=cfg["SVD_ALPHA"],
        return_info=True)
    emb_boost, info_boost = svd_manipulate_embeddings(
        tok["cls_1"], tok["patches_1"], m_pos[0], k=cfg["SVD_K"], mode="boost", beta=cfg["SVD_BETA"],
        return_info=True)
    for name, info in (("suppress", info_suppress), ("boost", info_boost)):
        print(f"  {name}: [CLS; {info['n_patches']} patches] -> k={info['k_effective']} of rank {info['rank']} "
              f"x{info['scale']:g} (top-k energy {info['topk_energy']:.1%})" + ("  NO-OP" if info["no_op"] else ""))
    print("  " + unit_norm_report(emb_suppress=emb_suppress, emb_boost=emb_boost))
    return emb_suppress, emb_boost, {"suppress": info_suppress, "boost": info_boost}


def step6_mix(normal_clip, emb_boost, emb_suppress, emb_bg, cfg):
    """E_final = MIX_DIRECT*normal + MIX_BETA*boost + MIX_ALPHA*suppress + MIX_GAMMA*bg, L2-normalised [768]."""
    import torch.nn.functional as F
    from util import mix_embeddings
    print("\n=== STEP 6: mix ===")
    emb_final = mix_embeddings(normal_clip, emb_boost, emb_suppress, emb_bg, w_direct=cfg["MIX_DIRECT"],
                               w_boost=cfg["MIX_BETA"], w_suppress=cfg["MIX_ALPHA"], w_bg=cfg["MIX_GAMMA"])
    cos = float(F.cosine_similarity(emb_final, normal_clip, dim=0))
    print(f"  {unit_norm_report(emb_final=emb_final)}; cosine to plain CLIP of I_1: {cos:.4f}")
    return emb_final


def detect_sources(images, tok, models):
    """YOLO on I_0 and I_1 -> SSV2A remix slots [2, 64, 768], slot 0 = each image's CLS from step 2."""
    import torch
    from model.detect import image_remix_slots
    model, preprocess = models.clip
    # the CLS tokens are the plain CLIP embeddings SSV2A puts in slot 0: no second CLIP pass over the images
    global_embs = torch.stack([tok["cls_0"], tok["cls_1"]])
    slots, detections = image_remix_slots(images, yolo=models.yolo, clip_model=model, preprocess=preprocess,
                                          detector_cfg=models.ssv2a.config["detector"], global_embs=global_embs,
                                          slot=models.ssv2a.slot, device=models.device)
    return slots, detections


def step7_audio(images, tok, emb_finals, models, cfg, sources=None, seeds=None, progress=None):
    """Hybrid SSV2A: baselines (I_0, I_1 as SSV2A hears them) and I_1's slots with slot 0 = E_final, per seed.

    emb_finals: [n, 768] manipulated embeddings (one per setting). seeds: the seeds to draw every row with
    (default eval_seeds(cfg)). Returns (audio numpy [S, 2 + n, samples], claps [S, 2 + n, 512],
    slots [2 + n, 64, 768], detections). Rows 0 and 1 are the baselines; a row of seed s draws its cycle-mix
    and AudioLDM noise from s alone, so the rows of one seed differ only by their slots. progress: main_pipeline's
    callback, told ('audio', k, n) before each batch (the batch starts with seed k of n).
    """
    import numpy as np
    import torch
    from model.pipeline import slots_to_audio
    print("\n=== STEP 7: audio via hybrid SSV2A (YOLO -> slots -> cycle_mix -> AudioLDM) ===")
    seeds = eval_seeds(cfg) if seeds is None else list(seeds)
    slots_base, detections = sources if sources is not None else detect_sources(images, tok, models)
    slots_manip = slots_base[1:2].repeat(len(emb_finals), 1, 1)
    slots_manip[:, 0] = emb_finals.to(slots_manip)   # plan step 8.2: our embedding is the global context
    slots = torch.cat([slots_base, slots_manip])
    # a row whose slots equal an earlier row's bit for bit (the method switched off: E_final is the plain CLIP
    # of I_1) is drawn once and copied, so the two audios are identical rather than apart by float arithmetic
    same_as = [next(j for j in range(r + 1) if torch.equal(slots[j], slots[r])) for r in range(len(slots))]
    drawn = sorted(set(same_as))
    rows = [(s, r) for s in seeds for r in drawn]
    steps = audio_steps(cfg)
    print(f"  slots {tuple(slots.shape)}: rows = baseline_original, baseline_edited, {len(emb_finals)} manipulated; "
          f"object slots filled per image: {[min(len(d), slots.shape[1] - 1) for d in detections]} of "
          f"{slots.shape[1] - 1}; "
          f"{len(seeds)} seed(s) {seeds}; "
          f"{cfg['SAMPLER']} x {steps} steps" + ("; slot 0 pinned" if cfg["PIN_GLOBAL"] else ""))
    audio, claps = [], []
    # whole seeds per AudioLDM call: the rows of one seed share a batch, so the manipulated and baseline rows
    # they are compared with go through the same batched arithmetic
    batch = len(drawn) * max(1, int(cfg["AUDIO_BATCH"]) // len(drawn))
    if len(drawn) > cfg["AUDIO_BATCH"]:
        print(f"  note: a seed's {len(drawn)} rows go in one AudioLDM call, more than AUDIO_BATCH={cfg['AUDIO_BATCH']}")
    if len(drawn) < len(slots):
        print(f"  rows {[r for r in range(len(slots)) if same_as[r] != r]} have the same slots as rows "
              f"{[same_as[r] for r in range(len(slots)) if same_as[r] != r]}: drawn once, copied")
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        if progress is not None:
            progress("audio", seeds.index(chunk[0][0]) + 1, len(seeds))
        a, c = slots_to_audio(slots[[r for _, r in chunk]], models.ssv2a, models.aldm, its=cfg["CYCLE_ITS"],
                              samples=cfg["CYCLE_SAMPLES"], var_samples=cfg["VAR_SAMPLES"], duration=cfg["DURATION"],
                              steps=steps, guidance=cfg["GUIDANCE"], seed=[s for s, _ in chunk],
                              pin_global=cfg["PIN_GLOBAL"], sampler=cfg["SAMPLER"])
        audio.append(a)
        claps.append(c)
        if len(rows) > batch:
            print(f"  audio {min(start + batch, len(rows))}/{len(rows)}")
    column = [drawn.index(j) for j in same_as]
    audio = np.concatenate(audio).reshape(len(seeds), len(drawn), -1)[:, column]
    claps = torch.cat(claps).reshape(len(seeds), len(drawn), -1)[:, column]
    print(f"  remix CLAPs {tuple(claps.shape)} -> audio {audio.shape} at {sample_rate(models)} Hz")
    return audio, claps, slots, detections


def sample_rate(models):
    return int(models.aldm.vocoder.config.sampling_rate)


def e_final_reach(claps, row=2):
    """How far slot 0 moved the remix: cosine distances of a manipulated row's remix CLAP to the baselines'.

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
            "mean_to_baseline_edited": sum(d_edit) / len(d_edit), "mean_to_baseline_original": sum(d_orig) / len(d_orig),
            "what": "1 - cos between SSV2A remix CLAP embeddings (before AudioLDM), per seed"}


def wav_name(name, seed, first_seed):
    """The first seed's audio keeps the plain name; other seeds' get _seed<N>."""
    return f"{name}.wav" if seed == first_seed else f"{name}_seed{seed}.wav"


# -----------------------------------------------------------------------------
# step 8 (optional): edit a recording A_0 the user already has (DeltaV2A's task, training-free; model/edit.py)

AUDIO_INPUT_MIN_S = 0.5          # shorter recordings are refused: too little sound to keep the structure of
AUDIO_INPUT_SILENCE = 1e-4       # peak (after removing DC) below -80 dBFS: nothing to edit, nothing to normalise
EDIT_AUDIO_NAMES = ("audio_input", "edited", "edited_plain")   # rows of the edit's evaluation: A_0, c_tgt, plain I_1


def check_edit_settings(cfg):
    """Lines for check_settings: EDIT_METHOD is a method, AUDIO_INPUT a path string."""
    from model.edit import EDIT_METHODS
    problems = []
    if cfg["EDIT_METHOD"] not in EDIT_METHODS:
        problems.append(f"EDIT_METHOD={cfg['EDIT_METHOD']!r} is not an edit method: it must be one of "
                        f"{', '.join(EDIT_METHODS)}")
    if not isinstance(cfg["AUDIO_INPUT"], str):
        problems.append(f"AUDIO_INPUT={cfg['AUDIO_INPUT']!r} must be the path of a recording, or '' (off)")
    return problems


def read_audio_input(path, duration, sample_rate=16000):
    """A_0 as the edit reads it: (float64 [<= duration * sample_rate] at sample_rate, warnings); UserError when it
    cannot be used, saying why and what to do. Only the header and the first `duration` seconds are read, so a
    10-hour file costs what a 10-second one does. Fallbacks, each warned: several channels are mixed to mono
    (their mean); longer recordings are cut to DURATION, shorter ones are padded with silence after AudioLDM's
    normalisation (model.edit.audioldm_waveform, as AudioLDM's loader pads); 8-bit samples are used
    as they are; any rate is resampled (scipy's polyphase filter, as evaluation resamples)."""
    import numpy as np
    import soundfile as sf
    from evaluation import _resample
    what = f"AUDIO_INPUT {path}"
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what}: no such file (looked at {p.resolve()}). Give a wav, flac or ogg recording, or "
                        "--AUDIO_INPUT='' to switch the edit off")
    try:
        info = sf.info(str(p))
    except Exception as err:   # libsndfile says 'Format not recognised', 'unknown format', ... in its own words
        raise UserError(f"{what}: cannot read it as audio ({str(err).strip() or type(err).__name__}). soundfile "
                        "reads WAV, FLAC and OGG; convert it first, e.g. ffmpeg -i in.m4a -ac 1 -ar 16000 out.wav") \
            from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise UserError(f"{what}: the file holds no audio ({info.frames} samples); record or export it again")
    seconds = info.frames / info.samplerate
    if seconds < AUDIO_INPUT_MIN_S:
        raise UserError(f"{what} is {seconds:.3g} s long: too short to edit (at least {AUDIO_INPUT_MIN_S} s; "
                        f"{duration:g} s is used, DURATION)")
    warns = []
    if seconds > duration:
        length = f"{seconds / 3600:.1f} hours" if seconds >= 3600 else f"{seconds:.2f} s"
        warns.append(f"{what} is {length} long: only its first {duration:g} s are edited (DURATION); cut the part "
                     "you want first to edit another")
    elif seconds < duration - 1e-9:
        warns.append(f"{what} is {seconds:.2f} s long: padded with silence to DURATION={duration:g} s")
    if info.channels > 1:
        warns.append(f"{what} has {info.channels} channels: mixed down to mono (the mean of the channels)")
    if info.subtype in ("PCM_U8", "PCM_S8"):
        warns.append(f"{what} has 8-bit samples ({info.subtype}): its quantisation noise (about -48 dB) is part of "
                     "A_0 and the edit may keep it")
    needed = min(info.frames, math.ceil(duration * info.samplerate) + 64)   # + the resampler's filter reach
    try:
        wave, rate = sf.read(str(p), frames=needed, dtype="float64", always_2d=True)
    except Exception as err:
        raise UserError(f"{what}: reading its samples failed ({err}); the file may be damaged") from None
    bad = ~np.isfinite(wave)
    if bad.any():
        first = int(np.argwhere(bad)[0][0])
        raise UserError(f"{what} contains {int(bad.sum())} NaN or infinite samples (the first at "
                        f"{first / rate:.3f} s): repair or re-export the recording")
    wave = _resample(wave.mean(axis=1), rate, sample_rate)
    n = int(round(duration * sample_rate))
    wave = wave[:n]
    peak = float(np.abs(wave - wave.mean()).max()) if wave.size else 0.0   # before padding: a DC offset is silence
    if peak < AUDIO_INPUT_SILENCE:
        raise UserError(f"{what} is silent in its first {min(seconds, duration):.2f} s (peak "
                        f"{20 * math.log10(peak) if peak > 0 else float('-inf'):.0f} dBFS after removing DC): "
                        "there is no sound to edit")
    return wave, warns


def step8_edit(cfg, models, run_dir, claps, seeds, prompts, strength=None, manip_row=2, suffix=""):
    """A_0 inverted under c_src (baseline_original's remix CLAP) and regenerated under c_tgt (the manipulated
    row's) and, for comparison, under baseline_edited's ('edit by plain I_1'), per seed. Writes audio_input.wav,
    edited*.wav and edited_plain*.wav (wav_name's seed naming, `suffix` before it in sweeps), a before/after
    spectrogram figure and edit_results*.json; returns the dict written there (plus the audio under '_audio')."""
    import numpy as np
    import evaluation
    from model import edit
    from model.aldm import save_wav
    strength = cfg["EDIT_STRENGTH"] if strength is None else strength
    sr, steps = sample_rate(models), int(cfg["DDIM_STEPS"])
    print(f"\n=== STEP 8: edit {cfg['AUDIO_INPUT']} ({cfg['EDIT_METHOD']}, strength {strength:g} of {steps} DDIM "
          f"steps, guidance {cfg['GUIDANCE']:g}) ===")
    wave, _ = read_audio_input(cfg["AUDIO_INPUT"], cfg["DURATION"], sr)
    n = int(round(cfg["DURATION"] * sr))
    a0 = edit.audioldm_waveform(wave, n).astype(np.float32)   # normalised and padded as AudioLDM's loader does
    if not (run_dir / "audio_input.wav").exists():
        save_wav(run_file(run_dir, "audio_input.wav"), a0, sr)
    batch = max(1, int(cfg["AUDIO_BATCH"]) // 2)   # two targets regenerate from each inversion
    out = []
    for start in range(0, len(seeds), batch):
        rows = slice(start, start + batch)
        out.append(edit.edit_audio(models.aldm, np.repeat(a0[None], len(seeds[rows]), 0), claps[rows, 0],
                                   [claps[rows, manip_row], claps[rows, 1]], cfg["DURATION"], strength, steps,
                                   cfg["GUIDANCE"], seeds[rows], cfg["EDIT_METHOD"]))
    out = np.concatenate(out, axis=1)   # [2, S, n]: edited, edited_plain
    for s, seed in enumerate(seeds):
        for k, name in enumerate(EDIT_AUDIO_NAMES[1:]):
            save_wav(run_file(run_dir, wav_name(name + suffix, seed, seeds[0])), out[k, s], sr)
    audio = np.stack([np.repeat(a0[None], len(seeds), 0), out[0], out[1]], axis=1)   # [S, 3, n]
    evaluation.plot_spectrograms({"A_0 (audio_input)": a0, "edited": out[0, 0], "edited_plain": out[1, 0]}, sr,
                                 run_file(run_dir, f"edit_spectrograms{suffix}.png"))
    roles = roles_of(cfg, prompts)
    scores = evaluation.score_run(audio, source_names(cfg, prompts), models.ast, models.clap, cfg["AUDIO_CLASSES"],
                                  cfg["EVAL_LABELS"], sr)
    result = {"audio_input": str(cfg["AUDIO_INPUT"]), "method": cfg["EDIT_METHOD"], "strength": strength,
              "steps": steps, "guidance": cfg["GUIDANCE"], "seeds": list(seeds), "rows": list(EDIT_AUDIO_NAMES),
              "conditioning": {"c_src": "baseline_original's remix CLAP", "edited": "c_tgt = the manipulated row's",
                               "edited_plain": "baseline_edited's"},
              "edit_success": {n: evaluation.compare_rows(scores, roles, 0, r, cfg["EVAL_TOLERANCE"],
                                                          cfg["EVAL_MIN_EFFECT"], names=("A_0", n))
                               for r, n in enumerate(EDIT_AUDIO_NAMES) if r},
              "preservation": {EDIT_AUDIO_NAMES[r]: v for r, v in
                               evaluation.preservation(audio, sr, clap_embs=scores["clap_embs"]).items()}}
    result["target"] = {n: edit_target(c) for n, c in result["edit_success"].items()}
    write_json(run_file(run_dir, f"edit_results{suffix}.json"), result)
    print(evaluation.format_preservation(result["preservation"]))
    for name, comparison in result["edit_success"].items():
        print(f"  {name} vs A_0: " + ", ".join(f"{check} {c['status']} ({c['mean']:+.4f})" for check, c in
                                               comparison["classifier"]["checks"].items()))
    print(f"  figure: {run_dir / f'edit_spectrograms{suffix}.png'}; results: {run_dir / f'edit_results{suffix}.json'}")
    return {**result, "_audio": audio}


def edit_target(comparison):
    """The edit's success in one number: the contrast (change of P(added)) - (change of P(removed)) against A_0,
    mean over seeds with its interval and status, by the classifier, or by CLAP when the classifier judges
    neither object (the scorer is named: the two are never mixed)."""
    import evaluation
    view = "classifier" if comparison["classifier"]["contrast"] else "clap"
    c = comparison[view]["contrast"]
    return {"scorer": evaluation.SCORERS[view], "mean": c["mean"], "ci95": c["ci95"], "status": c["status"]}


def edit_summary(result):
    """The fields of an edit result that run.json keeps (no audio, no per-seed arrays)."""
    return {k: result[k] for k in ("audio_input", "method", "strength", "steps", "target")} | {
        "preservation_means": {row: {m: v["mean"] for m, v in metrics.items()}
                               for row, metrics in result["preservation"].items()}}


def sweep_edits(cfg, models, run_dir, claps, seeds, prompts, settings, members):
    """step8_edit for every setting of one sweep group (its own manipulated row, its own strength): table rows."""
    table = []
    for j, i in enumerate(members):
        setting = settings[i]
        result = step8_edit(cfg, models, run_dir, claps, seeds, prompts, strength=setting.get(
            "EDIT_STRENGTH", cfg["EDIT_STRENGTH"]), manip_row=2 + j, suffix="_" + setting_name(setting))
        for name in EDIT_AUDIO_NAMES[1:]:
            target = result["target"][name]
            row = {**setting, "strength": result["strength"], "audio": name, "target": round(target["mean"], 6),
                   "target scorer": target["scorer"], "target status": target["status"]}
            checks = result["edit_success"][name]["classifier"]["checks"]
            row.update({f"{check} status": c["status"] for check, c in checks.items()})
            row.update({f"{m} mean": round(v["mean"], 6) for m, v in result["preservation"][name].items()})
            table.append(row)
    return table


def plot_edit_tradeoff(rows, path):
    """Edit success (target gain over A_0) against preservation of A_0, one point per setting, both targets."""
    from matplotlib.figure import Figure
    panels = [("log_mel_l1_db mean", "log-mel L1 to A_0 (dB, lower = more of A_0 kept)"),
              ("onset_correlation mean", "onset-envelope correlation with A_0 (higher = timing kept)"),
              ("clap_cosine mean", "CLAP audio cosine to A_0 (higher = closer)")]
    fig = Figure(figsize=(15, 4.4), layout="constrained")
    for ax, (key, label) in zip(fig.subplots(1, len(panels)), panels):
        for name, marker in (("edited", "o"), ("edited_plain", "s")):
            pts = sorted((r["strength"], r[key], r["target"]) for r in rows if r["audio"] == name)
            ax.plot([p[1] for p in pts], [p[2] for p in pts], marker=marker, label=name)
            for strength, x, y in pts:
                ax.annotate(f"{strength:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel("edit success: gain in P(added) - P(removed) over A_0")
        ax.legend(fontsize=8)
    fig.suptitle("Edit success against preservation of A_0; numbers = EDIT_STRENGTH (mean over seeds)", fontsize=10)
    with open(path, "xb") as f:
        fig.savefig(f, format="png", dpi=100)
    return path


# -----------------------------------------------------------------------------
# the pipeline


def main_pipeline(cfg, models, run_dir, images, prompts, record, progress=None):
    """Steps 1-7 of the plan, then the evaluation; writes everything into run_dir and fields into record.

    progress: optional callback(step, k=None, n=None), told 'masks', 'tokens', 'SVD', ('audio', seed k, of n)
    and 'evaluation' (the wavs are written by then) as the run reaches them; it may raise RunCancelled.
    """
    import torch
    from model.aldm import save_wav
    step = progress or (lambda name, k=None, n=None: None)
    timer, caught = Timer(), record.data.setdefault("warnings", [])
    seeds = eval_seeds(cfg)
    set_seed(cfg["SEED"])
    with recorded_warnings(caught):
        step("masks")
        with timer("step1_masks"):
            (M_neg, M_pos), mask_info = step1_masks(images, prompts, models, run_dir, cfg)
        record.update(masks=dict(zip(("removed", "added"), mask_info)), timings_s=timer.seconds)
        step("tokens")
        with timer("step2_clip_tokens"):
            tok = step2_clip_tokens(images, models)
        step("SVD")
        with timer("step3_patch_weights"):
            m_neg, m_pos = step3_patch_weights(M_neg, M_pos, cfg["MASK_THRESHOLD"], (prompts[0].name, prompts[1].name))
        with timer("step4_background"):
            emb_bg = step4_background(tok["patches_1"], m_neg, m_pos)
        with timer("step5_svd"):
            emb_suppress, emb_boost, svd_info = step5_svd(tok, m_neg, m_pos, cfg)
        with timer("step6_mix"):
            emb_final = step6_mix(tok["cls_1"], emb_boost, emb_suppress, emb_bg, cfg)
        record.update(svd=svd_info, timings_s=timer.seconds)
        with timer("step7_audio"):
            audio, claps, slots, detections = step7_audio(images, tok, emb_final[None], models, cfg, seeds=seeds,
                                                          progress=progress)

        sr = sample_rate(models)
        wavs = []
        for s, seed in enumerate(seeds):
            for r, name in enumerate(AUDIO_NAMES):
                wavs.append(save_wav(run_file(run_dir, wav_name(name, seed, seeds[0])), audio[s, r], sr).name)
        reach = e_final_reach(claps)
        save_tensors({"cls_0": tok["cls_0"], "patches_0": tok["patches_0"], "cls_1": tok["cls_1"],
                    "patches_1": tok["patches_1"], "M_neg": M_neg.bool(), "M_pos": M_pos.bool(), "m_neg": m_neg,
                    "m_pos": m_pos, "emb_bg": emb_bg, "emb_suppress": emb_suppress, "emb_boost": emb_boost,
                    "emb_final": emb_final, "slots": slots, "claps": claps, "seeds": torch.tensor(seeds),
                    "audio": torch.from_numpy(audio),   # float [seeds, rows, samples]: the wavs before 16-bit
                    "audio_rows": list(AUDIO_NAMES),
                    "boxes": [torch.tensor([d.box for d in dets], dtype=torch.float64).reshape(-1, 4)
                              for dets in detections]},
                   run_dir / "embeddings.pt")
        record.update(detections=detection_record(detections), audio_seconds=cfg["DURATION"], sample_rate=sr,
                      seeds=seeds, wavs=wavs, e_final_reach=reach, timings_s=timer.seconds)
        print(f"\n  E_final's reach (remix CLAP cosine distance, mean over seeds): to baseline_edited "
              f"{reach['mean_to_baseline_edited']:.4f}, to baseline_original {reach['mean_to_baseline_original']:.4f}")

        step("evaluation")
        print(f"\n=== Evaluation: AudioSet classifier and CLAP over {len(seeds)} seed(s) ===")
        with timer("evaluation"):
            results = evaluate(audio, seeds, cfg, prompts, models, run_dir, extra={"e_final_reach": reach})
        if cfg["AUDIO_INPUT"]:
            with timer("step8_edit"):
                edit_result = step8_edit(cfg, models, run_dir, claps, seeds, prompts)
            record.update(edit=edit_summary(edit_result), timings_s=timer.seconds)
    import evaluation
    record.update(timings_s=timer.seconds, verdict=evaluation.headline_record(results))
    return results


def evaluate(audio, seeds, cfg, prompts, models, run_dir, extra=None):
    import evaluation
    return evaluation.evaluate_run(audio, seeds, roles_of(cfg, prompts), run_dir, models.ast, models.clap,
                                   class_map=cfg["AUDIO_CLASSES"], clap_labels=cfg["EVAL_LABELS"],
                                   sample_rate=sample_rate(models), tolerance=cfg["EVAL_TOLERANCE"], extra=extra,
                                   min_effect=cfg["EVAL_MIN_EFFECT"])


def detection_record(detections):
    return [[{"label": d.label, "score": round(d.score, 4), "box": [round(v, 1) for v in d.box]} for d in dets]
            for dets in detections]


def run_record(cfg, models, mode, images=None, prompts=None, notes=()):
    import torch
    record = {
        "command": " ".join(sys.argv),
        "mode": mode,
        "config": {k: v for k, v in cfg.items() if not k.startswith("_")},
        "sampler": {"name": cfg["SAMPLER"], "steps": audio_steps(cfg)},
        "seed": cfg["SEED"], "seeds": eval_seeds(cfg),
        "device": str(models.device),
        "smoke": models.smoke,
        "model_load_s": models.load_seconds,
        "warnings": list(notes),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    if getattr(models.ssv2a, "checkpoint_file", None):   # the SSV2A weights read: path, size, SHA-256
        record["ssv2a_checkpoint"] = models.ssv2a.checkpoint_file
    if images is not None:
        record.update(images={"original": str(images[0]), "edited": str(images[1])},
                      removed=prompts[0].name, added=prompts[1].name,
                      prompts={p.name: ({"text": p.text, "union": p.union} if p.by_text
                                        else {"points": p.points, "labels": p.labels}) for p in prompts})
    return record


# -----------------------------------------------------------------------------
# sweeps: masks, tokens and detections once; steps 3-6 per setting; cycle_mix + AudioLDM batched


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
    parts = [f"{k}-{v:g}" if isinstance(v, float) else f"{k}-{v}" for k, v in setting.items()]
    return safe_name("_".join(parts), limit=120)


def run_sweep(cfg, models, run_dir, images, prompts, record):
    """Every setting of cfg['SWEEP'] over every seed: sweep.csv, a heat map of the target score, the wavs."""
    import torch
    import evaluation
    from model.aldm import save_wav
    settings = sweep_settings(cfg["SWEEP"])
    timer, caught = Timer(), record.data.setdefault("warnings", [])
    roles = roles_of(cfg, prompts)
    seeds = eval_seeds(cfg)
    print(f"Sweep: {len(settings)} settings over {', '.join(cfg['SWEEP'])}, {len(seeds)} seed(s) each")
    set_seed(cfg["SEED"])
    rows, emb_finals, infos = [None] * len(settings), [], []
    edit_rows = []
    with recorded_warnings(caught):
        with timer("shared: masks, tokens, detection"):
            (M_neg, M_pos), _ = step1_masks(images, prompts, models, run_dir, cfg)
            tok = step2_clip_tokens(images, models)
            sources = detect_sources(images, tok, models)
        with timer("per setting: steps 3-6"):
            for setting in settings:
                s_cfg = {**cfg, **setting}
                print(f"\n--- setting {setting_name(setting)} ---")
                m_neg, m_pos = step3_patch_weights(M_neg, M_pos, s_cfg["MASK_THRESHOLD"],
                                                   (prompts[0].name, prompts[1].name))
                emb_bg = step4_background(tok["patches_1"], m_neg, m_pos)
                emb_suppress, emb_boost, info = step5_svd(tok, m_neg, m_pos, s_cfg)
                emb_finals.append(step6_mix(tok["cls_1"], emb_boost, emb_suppress, emb_bg, s_cfg))
                infos.append(info)
        # settings that change every audio (slot pinning, sampler) need their own baselines
        groups = {}
        for i, setting in enumerate(settings):
            groups.setdefault(tuple((k, setting.get(k, cfg[k])) for k in AUDIO_KEYS), []).append(i)
        sr = sample_rate(models)
        all_claps = {}
        for g, (group, members) in enumerate(groups.items()):
            g_cfg = {**cfg, **dict(group)}
            suffix = "" if g == 0 else "_" + setting_name(dict(group))
            with timer("per setting: cycle_mix + AudioLDM"):
                audio, claps, _, detections = step7_audio(images, tok, torch.stack([emb_finals[i] for i in members]),
                                                          models, g_cfg, sources, seeds=seeds)
            for s, seed in enumerate(seeds):
                for r, name in enumerate(AUDIO_NAMES[:2]):
                    save_wav(run_file(run_dir, wav_name(name + suffix, seed, seeds[0])), audio[s, r], sr)
                for j, i in enumerate(members):
                    save_wav(run_file(run_dir, wav_name(f"manipulated_{setting_name(settings[i])}", seed, seeds[0])),
                             audio[s, 2 + j], sr)
            with timer("evaluation"):
                scores = evaluation.score_run(audio, source_names(cfg, prompts), models.ast, models.clap,
                                              cfg["AUDIO_CLASSES"], cfg["EVAL_LABELS"], sr)
            for j, i in enumerate(members):
                result = evaluation.build_verdict(scores, roles, cfg["EVAL_TOLERANCE"], rows=(0, 1, 2 + j),
                                                  min_effect=cfg["EVAL_MIN_EFFECT"])
                reach = e_final_reach(claps, row=2 + j)
                rows[i] = {**settings[i], **evaluation.verdict_columns(result),
                           "reach_to_baseline_edited": round(reach["mean_to_baseline_edited"], 6),
                           "k_effective_suppress": infos[i]["suppress"]["k_effective"],
                           "k_effective_boost": infos[i]["boost"]["k_effective"],
                           "no_op": infos[i]["suppress"]["no_op"] or infos[i]["boost"]["no_op"],
                           "audio": wav_name(f"manipulated_{setting_name(settings[i])}", seeds[0], seeds[0])}
            all_claps[setting_name(dict(group))] = claps
            if cfg["AUDIO_INPUT"]:   # step 8 per setting: its manipulated row steers the recording
                edit_rows += sweep_edits(cfg, models, run_dir, claps, seeds, prompts, settings, members)
        rank_key = sweep_rank_key(rows)
        rows.sort(key=lambda r: -r[rank_key + " mean"])
        for rank, row in enumerate(rows, start=1):
            row["rank"] = rank
        write_csv(run_file(run_dir, "sweep.csv"), rows)
        plot_sweep_heatmap(rows, list(cfg["SWEEP"]), run_dir / "sweep_heatmap.png", key=rank_key + " mean")
        if edit_rows:
            write_csv(run_file(run_dir, "edit_sweep.csv"), edit_rows)
            plot_edit_tradeoff(edit_rows, run_file(run_dir, "edit_tradeoff.png"))
            print(f"Edit trade-off: {run_dir / 'edit_sweep.csv'}, {run_dir / 'edit_tradeoff.png'}")
    save_tensors({"settings": settings, "emb_final": torch.stack(emb_finals), "claps": all_claps, "seeds": seeds},
               run_dir / "embeddings.pt")
    record.update(settings=settings, timings_s=timer.seconds, detections=detection_record(detections))
    print(f"\nSettings ranked by the method's own effect ({rank_key}: change of P(added) - change of P(removed), "
          f"manipulated - baseline_edited, mean over {len(seeds)} seed(s)):")
    for row in rows:
        ci = (f"95% CI [{row[rank_key + ' ci_low']:+.4f}, {row[rank_key + ' ci_high']:+.4f}]"
              if rank_key + " ci_low" in row else "no CI with one seed")
        print(f"  {row['rank']:3d}. {setting_name({k: row[k] for k in cfg['SWEEP']}):40s} "
              f"{row[rank_key + ' mean']:+.4f}  {ci}  {row[rank_key + ' status']}")
    print(f"Sweep table: {run_dir / 'sweep.csv'}; heat map: {run_dir / 'sweep_heatmap.png'}")
    return rows


def sweep_rank_key(rows):
    """The column prefix a sweep ranks by: the method's own effect contrast by the classifier, or by CLAP
    when the classifier does not judge both the added and the removed source (never a mix of the two)."""
    for key in ("effect audioset contrast", "effect clap contrast"):
        if all(key + " mean" in r for r in rows):
            return key
    raise ValueError("no scorer judged both the added and the removed source in every setting")


def write_csv(path, rows):
    """A table of result rows (complete or absent, never replacing a file); user text is spreadsheet-safe."""
    from util import new_file
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with new_file(path, "x", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[spreadsheet_text(k) for k in fields])
        writer.writeheader()
        writer.writerows({spreadsheet_text(k): spreadsheet_text(v) for k, v in r.items()} for r in rows)


def spreadsheet_text(value):
    """A text cell that a spreadsheet would run as a formula (=, +, -, @, or a tab or carriage return first) gets
    a leading apostrophe, which spreadsheets read as "this is text" (OWASP's advice on CSV injection). Numbers
    stay numbers."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


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
    ax.set_title(f"{key}{extra}\n(method's own effect: change of P(added) - change of P(removed), manipulated - "
                 "baseline_edited, mean over seeds)", fontsize=8)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    from util import new_file
    with new_file(path) as f:   # complete or absent, never replaced
        fig.savefig(f, format="png", dpi=100)
    return path


# -----------------------------------------------------------------------------
# manifests: many edit pairs, models loaded once per process; with `accelerate launch --num_processes N` the
# pairs are shared out over N processes (one GPU each), and the main process writes the table at the end

MANIFEST_COLUMNS = ["original", "edited", "remove", "remove_x", "remove_y", "add", "add_x", "add_y"]
MANIFEST_HELP = ("columns: original, edited, remove, remove_x, remove_y, [remove_labels], add, add_x, add_y, "
                 "[add_labels], [kept], [eval_labels]; several points as 410;370, kept as dog;rocket, "
                 "eval_labels as cat=a cat meowing;duck=a duck quacking; empty x and y = find the object by name")
# how long a process that has finished its pairs waits for the others (torch.distributed's default, 30 minutes,
# is shorter than the spread of a long manifest's shards)
MANIFEST_WAIT_HOURS = 72


def read_manifest(path):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"manifest not found: {path}. A CSV with a header row; {MANIFEST_HELP}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")   # -sig: Excel's "CSV UTF-8" starts with a byte-order mark
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise UserError(f"manifest {path} is not UTF-8 text: byte {data[err.start]:#04x} on line {line} is not "
                        f"valid UTF-8, so the file was saved in another encoding (Latin-1 / Windows-1252, as "
                        f"Excel's plain 'CSV' does). Save it as 'CSV UTF-8', or convert it: iconv -f latin1 -t utf-8 "
                        f"{path} > {path.with_name(path.stem + '_utf8.csv')}") from None
    rows = list(csv.DictReader(text.splitlines()))
    missing = [c for c in MANIFEST_COLUMNS if not rows or c not in rows[0]]
    if not rows or missing:
        raise UserError(f"manifest {path} " + (f"lacks columns {', '.join(missing)}" if rows else "has no rows")
                        + f"; {MANIFEST_HELP}")
    return rows


def pair_config(cfg, row, manifest_dir):
    """The run config of one manifest row (paths relative to the manifest's folder, then IMAGE_DIR)."""
    def numbers(text, what):
        try:
            return [float(v) if "." in v else int(v) for v in str(text or "").replace(",", ";").split(";") if v.strip()]
        except ValueError:
            raise UserError(f"{what}={text!r} is not a number or a ;-separated list of numbers") from None

    def image(name):
        p = Path(name)
        return str(manifest_dir / p) if not p.is_absolute() and (manifest_dir / p).is_file() else name

    prompts = {}
    for role in ("remove", "add"):
        name = (row.get(role) or "").strip()
        if not name:
            raise UserError(f"the '{role}' column is empty: name the object to {role}")
        xs, ys = numbers(row[f"{role}_x"], f"{role}_x"), numbers(row[f"{role}_y"], f"{role}_y")
        if not xs and not ys:
            prompts[name] = {}   # empty coordinates: find the object by its name
            continue
        labels = numbers(row.get(f"{role}_labels") or ";".join(["1"] * len(xs)), f"{role}_labels")
        prompts[name] = {"x": xs, "y": ys, "labels": labels}
    labels = dict(cfg["EVAL_LABELS"])
    for item in (row.get("eval_labels") or "").split(";"):
        if "=" in item:
            name, text = item.split("=", 1)
            labels[name.strip()] = text.strip()
    kept = [k.strip() for k in (row.get("kept") or "").split(";") if k.strip()]
    return {**cfg, "ORIGINAL": image((row.get("original") or "").strip()),
            "EDITED": image((row.get("edited") or "").strip()), "SAM2_PROMPTS": prompts, "EVAL_LABELS": labels,
            "KEPT_SOURCES": kept if row.get("kept") is not None else cfg["KEPT_SOURCES"],
            # optional column audio_input: the recording A_0 of this pair (step 8); empty = the run's AUDIO_INPUT
            "AUDIO_INPUT": image(row["audio_input"].strip()) if (row.get("audio_input") or "").strip()
            else cfg["AUDIO_INPUT"]}


@dataclass
class Manifest:
    """A manifest checked row by row before any model loads."""
    path: Path                    # the CSV read
    base_dir: Path                # relative image paths are relative to this folder (the manifest's own)
    rows: list                    # every row as read
    pairs: list                   # [(row number, cfg, images, prompts, notes)] of the rows that run
    skipped: list                 # rows the pre-check refused: {pair, original, edited, error}
    duplicates: list              # rows equal to an earlier one: {pair, same_as}; they run once
    notes: list                   # warnings for run.json
    source: str = ""              # the user's manifest file (a resumed run reads its copy in the run folder)
    reference: list = None        # real audio to compare the sets with: files / folders (reference_audio, --reference)


def pair_folder(i, prompts):
    """The sub-folder of manifest row i: the same name in every process and every resume."""
    return f"pair{i:03d}_{safe_name(prompts[0].name)}-to-{safe_name(prompts[1].name)}"


def pair_key(images, prompts, p_cfg):
    """What makes two rows the same run: the images (resolved), objects, points, labels and kept sources."""
    from dataclasses import asdict
    return json.dumps([[str(Path(p).resolve()) for p in images], [asdict(p) for p in prompts],
                       p_cfg["EVAL_LABELS"], p_cfg["KEPT_SOURCES"]], sort_keys=True, default=str)


def prepare_manifest(cfg, manifest, base_dir=None):
    """Every row checked before any model loads; duplicates of an earlier row are warned about and run once."""
    rows = read_manifest(manifest)
    base_dir = Path(base_dir) if base_dir else Path(manifest).resolve().parent
    pairs, skipped, duplicates, notes, seen = [], [], [], [], {}
    for i, row in enumerate(rows, start=1):
        try:
            p_cfg = pair_config(cfg, row, base_dir)
            images, prompts, pair_notes = prepare_inputs(p_cfg)
        except (UserError, ValueError) as err:
            print(f"SKIPPED pair {i} ({row.get('original')} -> {row.get('edited')}): {err}")
            skipped.append({"pair": i, "original": row.get("original"), "edited": row.get("edited"),
                            "error": str(err)})
            continue
        key = pair_key(images, prompts, p_cfg)
        if key in seen:
            note = (f"manifest row {i} repeats row {seen[key]} (same images, objects, points and labels): "
                    f"it runs once, as pair {seen[key]}, and counts once in the summary")
            print(f"WARNING: {note}")
            notes.append(note)
            duplicates.append({"pair": i, "same_as": seen[key]})
            continue
        seen[key] = i
        pairs.append((i, p_cfg, images, prompts, pair_notes))
    if not pairs:
        raise UserError(f"no row of {manifest} can run ({len(skipped)} skipped, reasons above); nothing was run")
    reference = []
    for i, row in enumerate(rows, start=1):   # reference_audio: a file or folder of real audio per row (optional)
        ref = (row.get("reference_audio") or "").strip()
        path = Path(ref) if Path(ref).is_absolute() else base_dir / ref
        if ref and not path.exists():
            raise UserError(f"manifest row {i}: reference_audio {ref} not found (looked at {path})")
        if ref and str(path) not in reference:
            reference.append(str(path))
    return Manifest(Path(manifest), base_dir, rows, pairs, skipped, duplicates, notes, reference=reference)


def manifest_state(cfg):
    """accelerate's PartialState: this process's index and the process count under `accelerate launch` (or
    torchrun); one process, index 0, under plain python. Smoke and DEVICE=cpu runs share out over gloo."""
    from datetime import timedelta
    from accelerate import PartialState
    return PartialState(cpu=cfg["SMOKE"] or cfg["DEVICE"] == "cpu", timeout=timedelta(hours=MANIFEST_WAIT_HOURS))


def read_run_json(folder):
    """A folder's run.json as a dict ({} when there is none or it cannot be read)."""
    try:
        return json.loads((Path(folder) / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def resume_target(run_dir, cfg):
    """The run folder, config and manifest of `--resume outputs/<run>`: UserError when it is not a manifest run."""
    run_dir = Path(run_dir)
    record = read_run_json(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"--resume {run_dir}: no such folder; give a manifest's run folder, e.g. "
                        f"--resume outputs/<timestamp>_manifest-pairs")
    if not record:
        raise UserError(f"--resume {run_dir}: the folder has no readable run.json, so it is not a run folder")
    if record.get("mode") != "manifest" or not (run_dir / "manifest.csv").is_file():
        raise UserError(f"--resume {run_dir}: only a manifest run can be resumed (its run.json says mode "
                        f"{record.get('mode')!r}{'' if (run_dir / 'manifest.csv').is_file() else ', and it has no manifest.csv'})")
    given = {k: v for k, v in cfg.items() if not k.startswith("_") and k != "DEVICE" and v != globals().get(k)}
    if given:
        raise UserError(f"--resume runs with the settings the run started with (run.json); only --DEVICE may "
                        f"change. Got {', '.join(sorted(given))}")
    resumed = {**default_config(), **record["config"], "DEVICE": cfg["DEVICE"] or record["config"]["DEVICE"]}
    resumed["DDIM_STEPS"], resumed["_STEPS_GIVEN"] = record["sampler"]["steps"], True
    return run_dir, resumed, record


def run_manifest_job(cfg, mode, target):
    """--manifest FILE or --resume RUN_DIR, in each process accelerate started (or the only one)."""
    import torch
    state = manifest_state(cfg)
    main_process = state.is_main_process
    run_dir = previous = data = None
    # the checks and model loading print once, from the main process; the others check the same rows silently
    with contextlib.redirect_stdout(io.StringIO()) if not main_process else contextlib.nullcontext():
        if mode == "resume":
            run_dir, cfg, previous = resume_target(target, cfg)
            manifest = prepare_manifest(cfg, run_dir / "manifest.csv", base_dir=previous["manifest_dir"])
            manifest.source, manifest.reference = previous["manifest"], previous.get("reference", [])
            print(f"Resuming {run_dir} (it ended {previous.get('status')!r}) with the settings it started with"
                  + (" (smoke models)" if cfg["SMOKE"] else ""))
        else:
            check_settings(cfg)
            manifest = prepare_manifest(cfg, target)
            manifest.source = str(manifest.path.resolve())
            if cfg.get("_REFERENCE"):   # --reference DIR: a folder of real audio for every pair
                if not Path(cfg["_REFERENCE"]).is_dir():
                    raise UserError(f"--reference {cfg['_REFERENCE']}: not a folder (give a folder of real audio)")
                manifest.reference.append(str(Path(cfg["_REFERENCE"]).resolve()))
        asked_device = cfg["DEVICE"]   # what run.json keeps, so that --resume lets each process pick its GPU again
        if state.num_processes > 1 and cfg["DEVICE"] in ("", "cuda") and state.device.type == "cuda":
            cfg["DEVICE"] = str(state.device)   # one GPU per process: cuda:<local rank>
        sources = [(p_cfg, source_names(p_cfg, prompts)) for _, p_cfg, _, prompts, _ in manifest.pairs]
        notes = list(dict.fromkeys(n for *_, pair_notes in manifest.pairs for n in pair_notes))
        for note in notes:
            print(f"WARNING: {note}")
        models, class_notes = load_models(cfg, sources)
        for note in class_notes:
            print(f"  AudioSet classes: {note}")
    if mode == "manifest":
        if main_process:
            name = cfg["RUN_NAME"] or f"manifest-{Path(target).stem}"
            run_dir = new_run_dir(cfg["OUTPUT_DIR"], name + ("_smoke" if cfg["SMOKE"] else ""))
            with open(run_dir / "manifest.csv", "xb") as f:   # the rows as run: --resume reads this copy
                f.write(manifest.path.read_bytes())
        from accelerate.utils import broadcast_object_list
        run_dir = Path(broadcast_object_list([str(run_dir)])[0])   # the main process's folder, for every process
    if main_process:
        print(f"Run folder: {run_dir}\nDevice: {models.device}; processes: {state.num_processes}")
        data = {**run_record(cfg, models, "manifest", notes=manifest.notes + notes + class_notes),
                "manifest": manifest.source, "reference": manifest.reference,
                "manifest_dir": str(manifest.base_dir), "processes": state.num_processes}
        data["config"]["DEVICE"] = asked_device
        if previous:
            data = {**{k: v for k, v in previous.items() if k not in ("outputs", "ended", "error", "traceback")},
                    "resumed": previous.get("resumed", []) + [{
                        "at": datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv),
                        "previous_status": previous.get("status"), "processes": state.num_processes}]}
    start = time.perf_counter()
    torch.set_grad_enabled(False)
    try:
        with recorded_run(run_dir, data) if main_process else contextlib.nullcontext() as record:
            run_manifest(cfg, models, run_dir, manifest, record, state)
    finally:
        torch.set_grad_enabled(True)
    if main_process:
        print(f"\nDone in {time.perf_counter() - start:.1f} s. Everything is in {run_dir}/")
    return 0


def run_pair(pair, models, run_dir, process):
    """One manifest row in its own sub-folder with its own run.json. A failure of any kind (a CUDA
    out-of-memory included) is recorded there and returns False, so the other pairs go on; Ctrl-C stops."""
    import torch
    i, p_cfg, images, prompts, notes = pair
    pair_dir = run_file(run_dir, pair_folder(i, prompts))
    if pair_dir.exists():   # a failed or interrupted attempt (--resume): kept aside, never overwritten
        keep_aside(run_dir, pair_dir)
    pair_dir.mkdir()
    print(f"\n##### pair {i}: {images[0]} -> {images[1]} (process {process['index']}) #####")
    try:
        with recorded_run(pair_dir, {**run_record(p_cfg, models, "run", images, prompts, notes),
                                     "pair": i, "process": process}) as pair_record:
            try:
                main_pipeline(p_cfg, models, pair_dir, images, prompts, pair_record)
            finally:   # kept with the pair's run.json however it ends
                pair_record.data["process"] = {**process, **peak_memory(models.device)}
        return True
    except Exception as err:   # noqa: BLE001 -- recorded in the pair's run.json (with its traceback)
        print(f"FAILED pair {i}: {type(err).__name__}: {err}")
        if models.device.type == "cuda":
            torch.cuda.empty_cache()   # an out-of-memory pair must not starve the next one
        return False


def keep_aside(run_dir, path):
    """Move an earlier attempt's file or folder to earlier_attempts/<stem>_tryN<suffix>: never overwritten."""
    earlier = run_dir / "earlier_attempts"
    earlier.mkdir(exist_ok=True)
    stem, suffix = (path.name, "") if path.is_dir() else (path.stem, path.suffix)
    n = 1 + sum(1 for p in earlier.iterdir() if p.name.startswith(f"{stem}_try"))
    os.replace(path, earlier / f"{stem}_try{n}{suffix}")


def peak_memory(device):
    """This process's peak resident memory (and CUDA memory) so far, in MiB."""
    import resource
    import torch
    peak = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        peak["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return peak


def run_manifest(cfg, models, run_dir, manifest, record, state):
    """This process's share of the pairs not finished yet; then (main process) the table of all of them."""
    from tqdm import tqdm
    todo = [p for p in manifest.pairs if read_run_json(run_dir / pair_folder(p[0], p[3])).get("status") != "finished"]
    if state.is_main_process:
        print(f"Manifest {manifest.path}: {len(manifest.rows)} rows, {len(manifest.pairs)} pairs, "
              f"{len(manifest.skipped)} skipped, {len(manifest.duplicates)} duplicates; "
              f"{len(manifest.pairs) - len(todo)} finished earlier, {len(todo)} to run on {state.num_processes} "
              f"process(es)")
    state.wait_for_everyone()   # every process has listed the same pairs before any pair folder changes
    with state.split_between_processes(todo) as mine:
        mine = list(mine)
    process = {"index": state.process_index, "of": state.num_processes}
    # several processes: each one's pair output goes to its own log, the console shows one bar per process
    log = open(run_dir / f"process{state.process_index}.log", "a") if state.num_processes > 1 else None
    bar = tqdm(total=len(mine), desc=f"process {state.process_index}", unit="pair", position=state.process_index,
               file=sys.stderr, dynamic_ncols=True)
    failed = 0
    try:
        with contextlib.redirect_stdout(log) if log else contextlib.nullcontext():
            for pair in mine:
                if not run_pair(pair, models, run_dir, process):
                    failed += 1
                    bar.write(f"pair {pair[0]} FAILED (process {state.process_index}); see its run.json",
                              file=sys.stderr)
                bar.update(1)
                bar.set_postfix(failed=failed)
                if record is not None:
                    record.update(**manifest_counts(run_dir, manifest))
    finally:
        bar.close()
        if log:
            log.close()
    state.wait_for_everyone()
    if state.is_main_process:
        return summarise_manifest(run_dir, manifest, record, set_metrics=manifest_set_metrics(run_dir, manifest, models))


def manifest_counts(run_dir, manifest):
    statuses = [read_run_json(run_dir / pair_folder(p[0], p[3])).get("status") for p in manifest.pairs]
    return {"pairs_done": statuses.count("finished"), "pairs_failed": statuses.count("failed")}


def manifest_table(run_dir, manifest):
    """One row per manifest row, read back from the pair folders (whichever process or attempt made them)."""
    import evaluation
    table, processes = [], {}
    for i, p_cfg, images, prompts, notes in manifest.pairs:
        folder = pair_folder(i, prompts)
        pair = read_run_json(run_dir / folder)
        row = {"pair": i, "status": pair.get("status", "not run"), "original": str(images[0]),
               "edited": str(images[1]), "folder": folder}
        if row["status"] == "finished":
            row.update(evaluation.verdict_columns(json.loads((run_dir / folder / "results.json").read_text())))
        else:
            row["error"] = pair.get("error", "")
        proc = pair.get("process", {})
        if "peak_rss_mib" in proc:
            p = processes.setdefault(proc["index"], {"pairs": 0})
            p["pairs"] += 1
            for k in ("peak_rss_mib", "peak_cuda_mib"):
                if k in proc:
                    p[k] = max(p.get(k, 0), proc[k])
        table.append(row)
    table += [{"pair": s["pair"], "status": "skipped", "original": s["original"], "edited": s["edited"],
               "error": s["error"]} for s in manifest.skipped]
    by_pair = {r["pair"]: r for r in table}
    table += [{"pair": d["pair"], "status": f"duplicate of pair {d['same_as']}",
               "original": by_pair[d["same_as"]]["original"], "edited": by_pair[d["same_as"]]["edited"],
               "folder": by_pair[d["same_as"]].get("folder", "")} for d in manifest.duplicates]
    return sorted(table, key=lambda r: r["pair"]), processes


def manifest_set_metrics(run_dir, manifest, models):
    """FAD (VGGish), FD and KL (PANNs CNN14) between the manifest's three audio sets and against the reference
    audio; a missing checkpoint is reported, never fatal: the pairs are done by now."""
    import metrics
    from model.checkpoints import CheckpointError
    print("\nSet-level figures (FAD with VGGish, FD and KL with PANNs CNN14) over the finished pairs ...")
    figures = {}
    try:
        embedder = metrics.tiny_vggish() if models.smoke else metrics.load_vggish(models.device)
        figures = metrics.manifest_fads(run_dir, embedder, reference=manifest.reference)
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"  FAD skipped: {err}")
        figures["skipped"] = f"{err}; once fixed: python evaluation.py fad {run_dir}"
    try:
        scorer = metrics.tiny_cnn14() if models.smoke else metrics.load_cnn14(models.device)
        figures["panns"] = metrics.manifest_panns(run_dir, scorer, reference=manifest.reference)
    except (CheckpointError, FileNotFoundError, ValueError, ImportError) as err:
        print(f"  FD / KL skipped: {err}")
        figures["panns"] = {"skipped": f"{err}; once fixed: python evaluation.py fd {run_dir}"}
    return figures


def summarise_manifest(run_dir, manifest, record=None, set_metrics=None):
    """pairs.csv (every row, with its status) and summary.json (means and stds over the finished pairs)."""
    import numpy as np
    table, processes = manifest_table(run_dir, manifest)
    finished = [r for r in table if r["status"] == "finished"]
    failed = [{k: r[k] for k in ("pair", "original", "edited", "folder", "error")}
              for r in table if r["status"] not in ("finished", "skipped") and not r["status"].startswith("duplicate")]
    for name in ("pairs.csv", "summary.json"):   # an earlier attempt's table (--resume): kept aside
        if (run_dir / name).exists():
            keep_aside(run_dir, run_dir / name)
    write_csv(run_file(run_dir, "pairs.csv"), table)
    summary = {"manifest": manifest.source or str(manifest.path), "pairs": len(manifest.rows), "completed": len(finished),
               "failed": failed, "skipped": manifest.skipped, "duplicates": manifest.duplicates, "metrics": {},
               "statuses": {}, "set_metrics": set_metrics or {}}
    # each metric over the pairs that have it: rows may name different kept sources
    keys = list(dict.fromkeys(k for r in finished for k in r if k != "pair"))
    for key in keys:
        present = [r[key] for r in finished if key in r]
        if present and all(isinstance(v, (int, float)) for v in present):
            values = np.array(present, dtype=float)
            summary["metrics"][key] = {"mean": float(values.mean()), "n": len(values),
                                       "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
        elif key == "headline" or key.endswith(" status"):
            summary["statuses"][key] = {s: present.count(s) for s in dict.fromkeys(present)}
    write_json(run_file(run_dir, "summary.json"), summary)
    if record is not None:
        record.update(processes_peak_memory=processes, **manifest_counts(run_dir, manifest))
    print(f"\nManifest done: {len(finished)} of {len(manifest.rows)} rows finished, {len(failed)} failed, "
          f"{len(manifest.skipped)} skipped, {len(manifest.duplicates)} duplicates")
    for r in failed:
        print(f"  FAILED pair {r['pair']}: {r['error'][:200]} (run.json in {r['folder']})")
    for key in [k for k in summary["statuses"] if k == "headline" or k.count(" ") == 2]:
        counts = ", ".join(f"{n} {s}" for s, n in summary["statuses"][key].items())
        print(f"  {key:32s} {counts}")
    for key in [k for k in summary["metrics"] if k.endswith(" contrast mean")]:
        m = summary["metrics"][key]
        print(f"  {key:32s} mean over pairs {m['mean']:+.4f}  std {m['std']:.4f}  (n={m['n']})")
    if set_metrics and "fad" in set_metrics:
        import metrics
        print(metrics.format_fads(set_metrics))
    if set_metrics and "fd" in set_metrics.get("panns", {}):
        import metrics
        print(metrics.format_panns(set_metrics["panns"], "kl"))
    print(f"Per-pair table: {run_dir / 'pairs.csv'}; means and stds: {run_dir / 'summary.json'}")
    if failed:
        print(f"Redo the failed pairs (finished ones are kept): python main.py --resume {run_dir}")
    return summary


# -----------------------------------------------------------------------------


def main(argv=None):
    """Parse the command line, check inputs and checkpoints, then run / sweep / manifest into a new run folder."""
    for notice in LIBRARY_NOTICES:
        warnings.filterwarnings("ignore", message=notice)
    cfg = default_config()
    try:
        mode, manifest = parse_args(sys.argv[1:] if argv is None else argv, cfg)
        if mode == "help":
            print(usage())
            return 0
        with stop_signals_as_interrupts():
            return run(cfg, mode, manifest)
    except UserError as err:
        print(f"\nError: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        why = f" by {str(err).split()[0]}" if isinstance(err, Stopped) else ""
        print(f"\nInterrupted{why}. " + (f"What the run made so far stays in {cfg['_RUN_DIR']}; run.json says "
                                         "'interrupted'." if cfg.get("_RUN_DIR") else "No run folder was made yet."),
              file=sys.stderr)
        return 128 + err.signum if isinstance(err, Stopped) else 130
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        folder = Path(err.filename).parent if err.filename else Path(cfg["OUTPUT_DIR"])
        what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                errno.EROFS: "the disk became read-only"}[err.errno]
        print(f"\nError: {what} ({err.strerror}) while writing {err.filename or 'a result file'}. No file was left "
              f"half-written: each file in {folder} is complete, and its run.json says 'failed'. Free some space "
              f"(df -h {folder}) or point --OUTPUT_DIR at another disk, then run again.", file=sys.stderr)
        return 1
    except Exception as err:
        from model.checkpoints import CheckpointError
        if isinstance(err, CheckpointError):
            print(f"\nError: {err}", file=sys.stderr)
            return 2
        raise


def run(cfg, mode, manifest):
    import torch
    if cfg["SMOKE"]:
        print("=" * 78 + "\nSMOKE RUN: tiny RANDOM-WEIGHT models (CLIP, SAM2, YOLO, SSV2A, AudioLDM, AST, CLAP) on "
              "the CPU.\nThe masks are arbitrary and the audio is noise: this checks the plumbing, not the method.\n"
              + "=" * 78)
    if mode in ("manifest", "resume"):   # sharded over the processes accelerate started (or this one)
        return run_manifest_job(cfg, mode, manifest)
    # 1. everything the user wrote, checked before any model loads
    images, prompts, notes = prepare_inputs(cfg)
    if mode == "sweep":
        notes += check_sweep(cfg)
    sources = [(cfg, source_names(cfg, prompts))]
    for note in notes:
        print(f"WARNING: {note}")
    check_output_dir(cfg["OUTPUT_DIR"])   # a read-only or full OUTPUT_DIR shows now, not after the models load
    # 2. every model opened (every checkpoint checked) before any work and before a run folder exists
    models, class_notes = load_models(cfg, sources)
    for note in class_notes:
        print(f"  AudioSet classes: {note}")
    name = cfg["RUN_NAME"] or f"{safe_name(prompts[0].name)}-to-{safe_name(prompts[1].name)}"
    name += "_sweep" if mode == "sweep" else ""
    run_dir = new_run_dir(cfg["OUTPUT_DIR"], name + ("_smoke" if cfg["SMOKE"] else ""))
    cfg["_RUN_DIR"] = str(run_dir)   # for main()'s last word on an interrupted or failed run
    print(f"Run folder: {run_dir}\nDevice: {models.device}")
    start = time.perf_counter()
    torch.set_grad_enabled(False)
    try:
        with recorded_run(run_dir, run_record(cfg, models, mode, images, prompts, notes + class_notes)) as record:
            if mode == "sweep":
                run_sweep(cfg, models, run_dir, images, prompts, record)
            else:
                main_pipeline(cfg, models, run_dir, images, prompts, record)
    except UserError:
        # refused before it made anything (no proposal matches a name, SAM2 found nothing): the message says why,
        # and a folder holding only run.json would be a failed run left lying around, with nothing in it to keep
        if [p.name for p in run_dir.iterdir()] == ["run.json"]:
            (run_dir / "run.json").unlink()
            run_dir.rmdir()
            cfg["_RUN_DIR"] = None
        raise
    finally:
        torch.set_grad_enabled(True)
    print(f"\nDone in {time.perf_counter() - start:.1f} s. Everything is in {run_dir}/")
    if mode == "run":
        print("  " + ", ".join(sorted(p.name for p in run_dir.iterdir())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
