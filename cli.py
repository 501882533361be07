"""The command line of main.py: read the arguments, check everything, load the models, run; exit codes.

    python main.py [--NAME=value ...] [--smoke] [--sweep NAME=v1,v2 ...] [--manifest CSV [--reference DIR]]
    python main.py --resume outputs/<manifest run>

main.py's entry point calls main(argv, plan=main) with itself as the plan: the constants its settings start
from and the steps and pipeline that do the work. Exit codes: 0 done, 2 a UserError or a bad checkpoint (the
message says what to do, no traceback), 130 Ctrl-C, 128 + N signal N, 1 a full or read-only disk.
"""
import errno
import functools
import sys
import time
import warnings
from pathlib import Path

from errors import UserError
from inputs import prepare_inputs, source_names
from runs import LIBRARY_NOTICES, Stopped, check_output_dir, run_edit_pair, stop_signals_as_interrupts
from settings import default_config, parse_args, usage


def main(argv, plan):
    """Parse the command line, check inputs and checkpoints, then run / sweep / manifest into a new run folder."""
    for notice in LIBRARY_NOTICES:
        warnings.filterwarnings("ignore", message=notice)
    cfg = default_config(plan)
    try:
        mode, manifest = parse_args(argv, cfg)
        if mode == "help":
            print(usage(plan))
            return 0
        with stop_signals_as_interrupts():
            return run(plan, cfg, mode, manifest)
    except UserError as err:
        print(f"\nError: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        why = f" by {str(err).split()[0]}" if isinstance(err, Stopped) else ""
        print(f"\nInterrupted{why}. {last_words(cfg)}", file=sys.stderr)
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


def last_words(cfg):
    """What an interrupted command leaves, from the run folder the run named in cfg (runs.run_edit_pair, or
    manifest.run_manifest_job, which also says whether the folder is resumable and still as it was)."""
    run_dir = cfg.get("_RUN_DIR")
    if not run_dir:
        return "No run folder was made yet."
    if cfg.get("_RUN_UNCHANGED"):
        return (f"The resume stopped before it changed anything: {run_dir} is as it was. Resume it again with "
                f"python main.py --resume {run_dir}")
    return (f"What the run made so far stays in {run_dir}; run.json says 'interrupted'."
            + (f" Finished pairs are kept: python main.py --resume {run_dir} runs the rest." if cfg.get("_RESUMABLE")
               else ""))


def run(plan, cfg, mode, manifest):
    """One mode of the command line: 'run' or 'sweep' of one edit pair, or a 'manifest' / 'resume' of many."""
    from loader import load_models
    if cfg["SMOKE"]:
        road = "a smoke-trained CIAP head" if cfg["CIAP_CHECKPOINT"] else "YOLO, SSV2A"
        print("=" * 78 + f"\nSMOKE RUN: tiny RANDOM-WEIGHT models (CLIP, SAM2, {road}, AudioLDM, AST, CLAP) on "
              "the CPU.\nThe masks are arbitrary and the audio is noise: this checks the plumbing, not the method.\n"
              + "=" * 78)
    if mode in ("manifest", "resume"):   # sharded over the processes accelerate started (or this one)
        import manifest as manifests
        return manifests.run_manifest_job(plan, cfg, mode, manifest)
    # 1. everything the user wrote, checked before any model loads
    images, prompts, notes = prepare_inputs(cfg)
    if mode == "sweep":
        import sweep
        notes += sweep.check_sweep(cfg)
        pipeline = functools.partial(sweep.run_sweep, plan)
    else:
        pipeline = plan.main_pipeline
    for note in notes:
        print(f"WARNING: {note}")
    check_output_dir(cfg["OUTPUT_DIR"])   # a read-only or full OUTPUT_DIR shows now, not after the models load
    # 2. every model opened (every checkpoint checked) before any work and before a run folder exists
    models, class_notes = load_models(cfg, [(cfg, source_names(cfg, prompts))])
    for note in class_notes:
        print(f"  AudioSet classes: {note}")
    # 3. the work, in a new run folder
    start = time.perf_counter()
    run_dir, _ = run_edit_pair(cfg, models, (images, prompts, notes + class_notes), pipeline, mode)
    print(f"\nDone in {time.perf_counter() - start:.1f} s. Everything is in {run_dir}/")
    if mode == "run":
        print("  " + ", ".join(sorted(p.name for p in run_dir.iterdir())))
    return 0
