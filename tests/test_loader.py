"""loader.py: every model of a run, loaded once and before any work; missing checkpoints listed first."""
import pytest
import torch

import main

# -----------------------------------------------------------------------------
# before any work

def test_missing_checkpoints_are_all_listed_before_any_work(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    from model import checkpoints
    monkeypatch.setattr(checkpoints, "CHECKPOINT_DIR", tmp_path / "ckpts")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    code = main.main([f"--OUTPUT_DIR={tmp_path / 'out'}", "--DEVICE=cpu",
                      f"--CHECKPOINT_PATH={tmp_path / 'ckpts' / 'ssv2a.pth'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "8 checkpoint(s) missing; nothing was run" in err
    for name in ["ssv2a.pth", "ViT-L-14.pt", "sam2.1_hiera_large.pt", "yolov8x-oiv7.pt", "630k-audioset-best.pt",
                 "cvssp/audioldm-s-full-v2", "roberta-base", "MIT/ast-finetuned-audioset-10-10-0.4593",
                 "drive.google.com", "python main.py --smoke"]:
        assert name in err, name
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_one_is_a_clear_error(tmp_path, capsys):
    assert main.main([f"--OUTPUT_DIR={tmp_path}", "--DEVICE=cuda"]) == 2
    err = capsys.readouterr().err
    assert "DEVICE='cuda'" in err and "CUDA is not available" in err
    assert list(tmp_path.iterdir()) == []


# -----------------------------------------------------------------------------
# each model once, on first use


def test_each_model_is_built_once_and_only_when_first_used():
    import loader
    import settings
    models = loader.Models({**settings.default_config(main), **settings.SMOKE_SETTINGS, "SMOKE": True})
    assert "aldm" not in vars(models)                 # nothing is built by the constructor
    assert models.aldm is models.aldm and models.sample_rate == 16000
    assert models.clip is models.clip and set(vars(models)) >= {"aldm", "clip"}
