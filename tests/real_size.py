"""Every model of the pipeline at its real architecture with random weights, built offline (for benchmarks).

The hyper-parameters are the published ones: openai-clip's ViT-L/14, sam2's sam2.1_hiera_l.yaml, ultralytics'
yolov8x.yaml with Open Images V7's 601 classes, our ssv2a.json (the release's config), AudioLDM-S-full-v2 as
diffusers' conversion script (scripts/convert_original_audioldm_to_diffusers.py) builds it, HTSAT-tiny +
RoBERTa-base for LAION-CLAP, and transformers' default ASTConfig (the AudioSet AST). Timings and memory of
these are those of the real models; their outputs mean nothing. Each builder draws its weights from torch seed
0 (without moving the caller's random state), so every benchmark run measures the same networks.
"""
import functools
import sys
from pathlib import Path

import torch

import scorers

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# AudioLDM-S-full-v2 (the conversion script's DEFAULT_CONFIG): UNet model_channels 128, channel_mult 1-2-3-5,
# attention at resolutions 8, 4, 2, 2 res blocks, FiLM condition 512 concatenated; VAE ch 128, mult 1-2-4,
# 8 latent channels; HiFi-GAN 64 mels, 16 kHz, upsampling 5-4-2-2-2 from 1024 channels
AUDIOLDM_S_UNET = dict(
    sample_size=128, in_channels=8, out_channels=8,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(128, 256, 384, 640), layers_per_block=2, cross_attention_dim=(128, 256, 384, 640),
    class_embed_type="simple_projection", projection_class_embeddings_input_dim=512, class_embeddings_concat=True)
AUDIOLDM_S_VAE = dict(
    sample_size=512, in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(128, 256, 512), latent_channels=8,
    layers_per_block=2)
AUDIOLDM_S_VOCODER = dict(
    model_in_dim=64, sampling_rate=16000, upsample_initial_channel=1024, upsample_rates=[5, 4, 2, 2, 2],
    upsample_kernel_sizes=[16, 16, 8, 4, 4], resblock_kernel_sizes=[3, 7, 11],
    resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]], normalize_before=False)


def seeded(build):
    """Build with torch seed 0, leaving the caller's random state as it was."""
    @functools.wraps(build)
    def wrapper(*args, **kwargs):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return build(*args, **kwargs)
    return wrapper


@seeded
def clip_vit_l14():
    """(model, preprocess) of openai-clip's CLIP with ViT-L/14's hyper-parameters."""
    import clip
    from clip.model import CLIP
    model = CLIP(embed_dim=768, image_resolution=224, vision_layers=24, vision_width=1024, vision_patch_size=14,
                 context_length=77, vocab_size=49408, transformer_width=768, transformer_heads=12,
                 transformer_layers=12)
    return model.float().eval(), clip.clip._transform(224)


@seeded
def sam2_hiera_l(device="cpu"):
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    import mask
    return mask.PointSegmenter(SAM2ImagePredictor(build_sam2(mask.SAM2_CONFIG, ckpt_path=None, device=device)))


@seeded
def yolov8x_oiv7():
    from model import detect
    detect._ultralytics()
    from ultralytics import YOLO
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load
    from ultralytics.utils import ROOT as UL_ROOT
    from ultralytics.utils import YAML
    yolo = YOLO("yolov8x.yaml", task="detect")
    cfg = yaml_model_load("yolov8x.yaml")
    cfg["nc"] = 601
    model = DetectionModel(cfg, verbose=False).eval()
    model.names = YAML.load(UL_ROOT / "cfg" / "datasets" / "open-images-v7.yaml")["names"]
    model.args = {**DEFAULT_CFG_DICT, **yolo.overrides}
    model.task = "detect"
    yolo.model = model
    return yolo


@seeded
def ssv2a_release():
    from model.pipeline import SSV2A
    return SSV2A.from_config(ROOT / "ssv2a.json").eval()


@seeded
def audioldm_s(dtype=torch.float32):
    from diffusers import AudioLDMPipeline, AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

    from model.aldm import _tiny_tokenizer
    pipe = AudioLDMPipeline(
        vae=AutoencoderKL(**AUDIOLDM_S_VAE).eval(), unet=UNet2DConditionModel(**AUDIOLDM_S_UNET).eval(),
        text_encoder=ClapTextModelWithProjection(ClapTextConfig(projection_dim=512)).eval(),
        tokenizer=_tiny_tokenizer(),   # only encodes '' (the negative embedding): its vocabulary size is immaterial
        vocoder=SpeechT5HifiGan(SpeechT5HifiGanConfig(**AUDIOLDM_S_VOCODER)).eval(),
        scheduler=DDIMScheduler(beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear", clip_sample=False,
                                set_alpha_to_one=False, steps_offset=1))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(dtype=dtype)


@seeded
def clap_htsat_tiny():
    from model.aldm import _tiny_tokenizer
    model = scorers.build_clap_model(scorers.ROBERTA_BASE)
    return scorers.ClapScorer(model.eval(), _tiny_tokenizer(), "cpu", name="real-size random CLAP")


@seeded
def ast_audioset():
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    labels = scorers.audioset_labels()
    config = ASTConfig(num_labels=len(labels), id2label=dict(enumerate(labels)),
                       label2id={n: i for i, n in enumerate(labels)})
    return scorers.AudioClassifier(ASTForAudioClassification(config).eval(), ASTFeatureExtractor(), "cpu",
                                      name="real-size random AST")


def n_params(module):
    return sum(p.numel() for p in module.parameters())
