"""Every model a run uses, each loaded once, on first use, and all of them before any work.

    models, notes = load_models(cfg, [(cfg, source_names)])   # real checkpoints (checked), or tiny twins (--smoke)
    models.clip, models.sam2, models.yolo, models.ssv2a, models.aldm, models.ast, models.clap
    models.ciap                                                # the CIAP back end's head (CIAP_CHECKPOINT set)

A real run first makes sure every checkpoint file is there (fetched when online) and then opens every model,
so a missing or broken file stops the run before any mask or audio is made and before a run folder exists.
"""
import functools
import time
from pathlib import Path

from errors import UserError


class Models:
    """Every model the pipeline uses, loaded lazily and once. smoke=True: tiny random-weight models, CPU."""

    NAMES = ("clip", "sam2", "yolo", "ssv2a", "aldm", "ast", "clap")
    CIAP_NAMES = ("clip", "sam2", "ciap", "aldm", "ast", "clap")   # the CIAP back end: no YOLO, no SSV2A

    def __init__(self, cfg):
        from util import get_device
        self.smoke = bool(cfg["SMOKE"])
        try:   # the tiny models are built on the CPU: a smoke run records the device it runs on
            self.device = get_device("cpu" if self.smoke else cfg["DEVICE"] or None)
        except RuntimeError as err:   # DEVICE='cuda' on a machine without one
            raise UserError(f"DEVICE={cfg['DEVICE']!r}: {err}") from err
        self.config_path = Path(cfg["CONFIG_PATH"])
        self.checkpoint_path = Path(cfg["CHECKPOINT_PATH"])
        self.ciap_path = cfg["CIAP_CHECKPOINT"]   # '' = SSV2A's remixer
        self.load_seconds = {}

    @property
    def names(self):
        """The models this run's back end uses: step 7 through SSV2A (YOLO + remixer) or a CIAP head."""
        return self.CIAP_NAMES if self.ciap_path else self.NAMES

    def load_all(self):
        """Open every model now, so a broken checkpoint stops the run before any work (and no folder is made)."""
        print(f"Loading every model on {self.device} (each checkpoint is opened and checked before any work) ...")
        if self.ciap_path:
            print(f"  back end: CIAP head {self.ciap_path} (YOLO and SSV2A's remixer are not used)")
        start = time.perf_counter()
        for name in self.names:
            t = time.perf_counter()
            getattr(self, name)
            self.load_seconds[name] = round(time.perf_counter() - t, 2)
        print(f"Models ready in {time.perf_counter() - start:.1f} s")

    @property
    def sample_rate(self):
        """AudioLDM's output rate (16 kHz): every wav of a run and every scorer's input."""
        return int(self.aldm.vocoder.config.sampling_rate)

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
    def ciap(self):
        """The CIAP back end's head (ClipToClap): refused unless trained on the CLIP and CLAP this run uses."""
        from model import ciap
        clip_name, clap_name = run_model_names(self.smoke)
        return ciap.load_ciap(self.ciap_path, self.device, clip_model=clip_name, clap_model=clap_name)

    @functools.cached_property
    def aldm(self):
        from model import aldm
        return aldm.tiny_audioldm() if self.smoke else aldm.load_audioldm(self.device)

    @functools.cached_property
    def ast(self):
        import scorers
        return scorers.tiny_ast() if self.smoke else scorers.load_ast(self.device)

    @functools.cached_property
    def clap(self):
        import scorers
        return scorers.tiny_clap() if self.smoke else scorers.load_clap(self.device)


def check_checkpoints(cfg):
    """Every checkpoint file a real run needs is there (fetched now when online) or listed with its fix."""
    from model.checkpoints import CHECKPOINTS, CheckpointError, checkpoint_path, hf_model_dir
    problems = []
    ciap = bool(cfg["CIAP_CHECKPOINT"])   # the CIAP back end needs neither SSV2A nor YOLO (its head: inputs.py)
    if not ciap and not Path(cfg["CONFIG_PATH"]).is_file():
        problems.append(f"SSV2A config {cfg['CONFIG_PATH']} not found (the repo ships ssv2a.json at its root; "
                        f"set --CONFIG_PATH)")
    ssv2a = Path(cfg["CHECKPOINT_PATH"])
    for name in ["ssv2a", "clip", "sam2", "yolo", "audioldm", "clap", "roberta", "ast"]:
        if ciap and name in ("ssv2a", "yolo"):
            continue
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
    """Which AudioSet classes judge each source (AUDIO_CLASSES checked against the loaded classifier's own names,
    then the name and CLAP-text layers): UserError with close matches; notes for every source AUDIO_CLASSES
    does not set."""
    import scorers
    try:
        _, notes = scorers.resolve_audio_classes(sources, cfg["AUDIO_CLASSES"], models.ast.labels, models.clap,
                                                 cfg["EVAL_LABELS"], cfg["EVAL_CLASS_MIN_SIMILARITY"])
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


def run_model_names(smoke=False):
    """(CLIP name, CLAP name) of the models a run uses, as train_ciap.py records them in a CIAP checkpoint, known
    without loading either: a smoke run's tiny twins (seed 0) or the real ViT-L/14 and LAION-CLAP."""
    import scorers
    from model import ciap
    return (ciap.tiny_clip_name() if smoke else ciap.REAL_CLIP_NAME), scorers.clap_name(smoke)
