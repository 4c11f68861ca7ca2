"""Tiny random-weight diffusers pipelines built offline from configs, for the sampler tests.

A character-level CLIP tokenizer is written to a folder at test time (nothing is downloaded);
every model is a few thousand parameters, so 32 px images with 2 steps take well under a second.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

SIZE = 32
"""Image side in pixels; the VAE halves it once."""
TOKENS = 16


def write_tokenizer(folder: Path) -> Path:
    """A character-level CLIP vocabulary (``vocab.json`` + an empty ``merges.txt``)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in string.ascii_lowercase:
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


def _tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=TOKENS
    )


def _text_encoder(folder: Path, projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(json.loads((folder / "vocab.json").read_text())),
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=TOKENS,
        projection_dim=32,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=SIZE,
    )


def _scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def _unet(**options):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=SIZE // 2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        **options,
    )


def tiny_sd_pipeline(folder: Path, seed: int = 0):
    """A Stable Diffusion 1.x-style pipeline with random weights (the same for the same seed)."""
    from diffusers import StableDiffusionPipeline

    torch.manual_seed(seed)
    pipeline = StableDiffusionPipeline(
        vae=_vae(),
        text_encoder=_text_encoder(folder),
        tokenizer=_tokenizer(folder),
        unet=_unet(cross_attention_dim=32, attention_head_dim=4),
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def tiny_sdxl_pipeline(folder: Path, seed: int = 0):
    """An SDXL-style pipeline: two text encoders, size and crop conditioning."""
    from diffusers import StableDiffusionXLPipeline

    torch.manual_seed(seed)
    tokenizer = _tokenizer(folder)
    return StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=_text_encoder(folder),
        text_encoder_2=_text_encoder(folder, projection=True),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        # cross attention on both encoders' states (32 + 32); the added embedding takes six
        # 8-wide time ids and the 32-wide pooled text embedding
        unet=_unet(
            cross_attention_dim=64,
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + 32,
        ),
        scheduler=_scheduler(),
    )


class PipelineModule(L.LightningModule):
    """A LightningModule holding a pipeline as ``self.pipeline``, its UNet, VAE and text encoder
    registered so Lightning moves them; it trains one dummy weight, so the pipeline's weights stay
    what they were built as (frozen)."""

    def __init__(self, pipeline) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.unet, self.vae, self.text_encoder = pipeline.unet, pipeline.vae, pipeline.text_encoder
        self.requires_grad_(False)
        self.dummy = nn.Parameter(torch.zeros(()))

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        return (self.dummy - batch[0].mean()).pow(2)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD([self.dummy], lr=0.1)


def dummy_data(num: int = 8) -> DataLoader:
    return DataLoader(TensorDataset(torch.ones(num, 1)), batch_size=2)
