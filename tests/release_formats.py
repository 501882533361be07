"""Checkpoints in each publisher's release format, with tiny random weights (for the release-format tests).

What differs from the real files is only the size of the weights; the containers are the publishers':
- CLIP: OpenAI's TorchScript archive (a traced model, fp16 weights), opened by openai-clip's own loader;
- SAM2: Meta's {"model": state_dict};
- YOLO: a file written by ultralytics itself (its pickled DetectionModel, fp16);
- SSV2A: {"timestamp", "manifold_state", "generator_state", "remixer_state"} (+ whatever extra is asked for);
- LAION-CLAP: a training checkpoint {"epoch", "name", "state_dict" ('module.' keys, stale position_ids),
  "optimizer" (AdamW state, numpy.float64 learning rates)};
- Hugging Face repos (AudioLDM, roberta-base, AST): a hub cache folder models--<org>--<name> with
  snapshots/<commit>/..., refs/main, and the repo's file layout, configs in the era they were uploaded.
"""
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

COMMIT = "feeb3d1c0ffee0ddba11ab1e5eedca7cafe00001"


class RunsCode:
    """A pickle that runs a shell command when unpickled: at a checkpoint path it must never run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def clip_torchscript(model, path):
    """OpenAI's format: torch.jit.trace of the whole CLIP (image and text) with fp16 weights, saved."""
    import clip
    from clip.model import convert_weights
    model = model.float()
    convert_weights(model)   # fp16, as OpenAI ships it
    image = torch.zeros(1, 3, model.visual.input_resolution, model.visual.input_resolution, dtype=torch.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (image, clip.tokenize(["a photo of a cat"])), check_trace=False)
    traced.save(str(path))
    model.float()
    return path


def sam2_release(model, path):
    torch.save({"model": model.state_dict()}, path)
    return path


def ssv2a_release(model, path, timestamp="2024-09-12 10:51:07", **extra):
    torch.save({"timestamp": timestamp, **model.checkpoint_state(timestamp), **extra}, path)
    return path


def training_optimizer(tensors, lr=9.87e-5):
    """An AdamW optimizer state_dict as a training loop leaves it, with numpy.float64 learning rates."""
    first = [t for t in tensors if t.is_floating_point()][:2]
    return {"state": {i: {"step": torch.tensor(1000.0), "exp_avg": torch.zeros_like(t), "exp_avg_sq": torch.zeros_like(t)}
                      for i, t in enumerate(first)},
            "param_groups": [{"lr": np.float64(lr), "initial_lr": np.float64(1e-4), "betas": (0.9, 0.99), "eps": 1e-9,
                              "weight_decay": 0.0, "amsgrad": False, "maximize": False, "foreach": None,
                              "capturable": False, "differentiable": False, "fused": None,
                              "params": list(range(len(first)))}]}


def clap_training_checkpoint(state_dict):
    """LAION-CLAP's release format around a model state dict (keys without 'module.')."""
    state = {"module." + k: v for k, v in state_dict.items()}
    state["module.text_branch.embeddings.position_ids"] = torch.arange(514)[None]
    return {"epoch": 45, "name": "2022_12_12-HTSAT-tiny-roberta-630k+audioset", "state_dict": state,
            "optimizer": training_optimizer(list(state.values()))}


def hf_snapshot(hub, repo_id):
    """The hub cache folder huggingface_hub resolves offline: refs/main -> snapshots/<commit>."""
    repo = Path(hub) / ("models--" + repo_id.replace("/", "--"))
    folder = repo / "snapshots" / COMMIT
    folder.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return folder


def _age_config(path, **fields):
    """Rewrite a saved config.json as the older library that wrote the hub's copy did."""
    data = json.loads(Path(path).read_text())
    data.update(fields)
    Path(path).write_text(json.dumps(data, indent=2))


def slow_tokenizer_files(tokenizer, folder):
    """vocab.json, merges.txt and special_tokens_map.json as the hub's tokenizer folders hold them."""
    folder = Path(folder)
    spec = json.loads((folder / "tokenizer.json").read_text())
    (folder / "vocab.json").write_text(json.dumps(spec["model"]["vocab"]))
    merges = [" ".join(m) if isinstance(m, list) else m for m in spec["model"]["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "cls_token": "<s>", "eos_token": "</s>", "mask_token": "<mask>", "pad_token": "<pad>",
         "sep_token": "</s>", "unk_token": "<unk>"}))


def audioldm_snapshot(hub, pipe, bin_payload=None):
    """cvssp/audioldm-s-full-v2 as the hub has it: its 0.15-era model_index.json and scheduler config, every
    component's config and weights in both .safetensors and .bin (bin_payload: what to put in the .bin
    files instead of the weights, e.g. a RunsCode: nothing may ever read them)."""
    folder = hf_snapshot(hub, "cvssp/audioldm-s-full-v2")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "AudioLDMPipeline", "_diffusers_version": "0.15.0.dev0",
        "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "ClapTextModelWithProjection"],
        "tokenizer": ["transformers", "RobertaTokenizerFast"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "vocoder": ["transformers", "SpeechT5HifiGan"]}, indent=2))
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({
        "_class_name": "DDIMScheduler", "_diffusers_version": "0.15.0.dev0", "beta_end": 0.0195,
        "beta_schedule": "scaled_linear", "beta_start": 0.0015, "clip_sample": False, "num_train_timesteps": 1000,
        "prediction_type": "epsilon", "set_alpha_to_one": False, "steps_offset": 1, "trained_betas": None}, indent=2))
    for name, weights in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                          ("text_encoder", "pytorch_model"), ("vocoder", "pytorch_model")):
        component = getattr(pipe, name)
        component.save_pretrained(folder / name, safe_serialization=True)
        library = {"_diffusers_version": "0.15.0.dev0"} if weights == "diffusion_pytorch_model" else \
            {"transformers_version": "4.27.0.dev0"}
        _age_config(folder / name / "config.json", **library)
        torch.save(bin_payload if bin_payload is not None else component.state_dict(), folder / name / f"{weights}.bin")
    pipe.tokenizer.save_pretrained(folder / "tokenizer")
    slow_tokenizer_files(pipe.tokenizer, folder / "tokenizer")
    (folder / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({
        "add_prefix_space": False, "bos_token": "<s>", "cls_token": "<s>", "eos_token": "</s>", "errors": "replace",
        "mask_token": "<mask>", "model_max_length": 512, "pad_token": "<pad>", "sep_token": "</s>",
        "special_tokens_map_file": None, "tokenizer_class": "RobertaTokenizer", "trim_offsets": True,
        "unk_token": "<unk>"}, indent=2))
    return folder


def roberta_snapshot(hub, tokenizer, config):
    """roberta-base's config and tokenizer files (the weights CLAP needs come from its own checkpoint)."""
    folder = hf_snapshot(hub, "roberta-base")
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    slow_tokenizer_files(tokenizer, folder)
    (folder / "tokenizer_config.json").unlink()   # roberta-base on the hub has none
    return folder


def ast_snapshot(hub, classifier, bin_payload=None):
    """MIT/ast-finetuned-audioset-10-10-0.4593: config (527 id2label), preprocessor_config, safetensors + .bin."""
    folder = hf_snapshot(hub, "MIT/ast-finetuned-audioset-10-10-0.4593")
    classifier.model.save_pretrained(folder, safe_serialization=True)
    _age_config(folder / "config.json", transformers_version="4.27.0.dev0")
    classifier.feature_extractor.save_pretrained(folder)
    torch.save(bin_payload if bin_payload is not None else classifier.model.state_dict(), folder / "pytorch_model.bin")
    return folder


def drive_folder(files, calls=None):
    """A stand-in for model.checkpoints._drive_fetch, the one network call of a Google Drive download: a public
    folder holding `files` ({name: local file}) that delivers a copy of the file asked for to dest, as gdown
    writes it, and lists no other name (DriveFileMissing, as the real listing does). calls: a list that
    records each (folder_url, filename) asked for."""
    import shutil
    from model.checkpoints import DriveFileMissing

    def fetch(folder_url, filename, dest):
        if calls is not None:
            calls.append((folder_url, filename))
        if filename not in files:
            raise DriveFileMissing(f"the folder {folder_url} lists no {filename} (it lists: {', '.join(files)})")
        shutil.copyfile(files[filename], dest)
        return dest
    return fetch
