"""Fine-tune a diffusers text-to-image model with LoRA while DiversityCallback watches its samples.

By default everything is tiny and offline: a Stable Diffusion pipeline with random weights built
from configs (a character-level tokenizer written to the output folder), the 32 x 32 shapes of
``examples/shapes`` as the image-caption set, a small random CLIP as the embedder. It runs on CPU
in about a minute and shows the wiring, not meaningful values. ``--model`` loads a real Stable
Diffusion 1.x/2.x pipeline (a hub id or a local folder) and CLIP ViT-B/32 for a real run on a GPU.

``DiversityCallback(sample_fn=DiffusersSampler("pipeline"))`` samples ``self.pipeline`` at each
evaluation: its UNet is the module's, with the LoRA adapters being trained, so the logged Vendi
score, per-prompt Vendi score and SCE follow the fine-tuning. Values go to W&B (offline by
default, ``wandb sync <output-dir>/wandb/offline-run-*`` to upload) and a CSV file.

``--dreambooth N`` trains DreamBooth-style instead: a handful of instance images (the first N
shapes, each with its caption), seen over and over for many steps, and the callback compares
every sample with them (``reference=``): ``diversity/copy_rate`` rises as the fine-tune starts
returning its instance images (the tiny offline run then embeds with the pixel features of
``examples/shapes``, which do tell two shape pictures apart). ``--full-unet`` trains every UNet
weight rather than LoRA adapters, as DreamBooth does.

Usage::

    python examples/diffusers_lora.py                       # tiny, CPU, offline
    python examples/diffusers_lora.py --dreambooth 4 --full-unet --steps 400 --eval-every 50
    python examples/diffusers_lora.py --model stable-diffusion-v1-5/stable-diffusion-v1-5 \\
        --resolution 512 --precision bf16-mixed --weights-dtype bf16 --steps 1000 --eval-every 250
"""

from __future__ import annotations

import argparse
import json
import os
import string
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the `shapes` helpers

from shapes.data import PROMPTS, ShapesDataset

from diversity_callbacks import CLIPEmbedder, DiffusersSampler, DiversityCallback

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
"""A random CLIP for the offline default: it embeds, but its values mean nothing."""
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # the UNet's attention projections
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--model", help="hub id or folder of an SD 1.x/2.x pipeline (default: tiny)"
    )
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps")
    parser.add_argument("--eval-every", type=int, default=20, help="steps between evaluations")
    parser.add_argument("--prompts", type=int, default=3, help="evaluate the first N shape prompts")
    parser.add_argument("--samples-per-prompt", type=int, default=4)
    parser.add_argument("--inference-steps", type=int, default=None, help="default 4 tiny, 25")
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--resolution", type=int, default=32, help="training and sampling size")
    parser.add_argument("--lora-rank", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dataset-size", type=int, default=256)
    parser.add_argument(
        "--dreambooth",
        type=int,
        default=None,
        metavar="N",
        help="DreamBooth-style: train on the first N images only, and log the copy rate",
    )
    parser.add_argument(
        "--full-unet", action="store_true", help="train every UNet weight (not LoRA adapters)"
    )
    parser.add_argument("--precision", default="32-true", help="Trainer precision, e.g. bf16-mixed")
    parser.add_argument(
        "--weights-dtype",
        choices=tuple(DTYPES),
        default="fp32",
        help="dtype of the frozen weights (LoRA weights stay fp32)",
    )
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default=os.path.join("outputs", "diffusers_lora"))
    parser.add_argument(
        "--wandb-mode", choices=("offline", "online", "disabled"), default="offline"
    )
    parser.add_argument("--wandb-project", default="diversity-callbacks-examples")
    args = parser.parse_args(argv)
    positive = ("steps", "eval_every", "prompts", "samples_per_prompt", "resolution")
    if args.dreambooth is not None and args.dreambooth < 1:
        parser.error(f"--dreambooth must be >= 1, got {args.dreambooth}")
    for name in (*positive, "lora_rank", "batch_size", "dataset_size", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.inference_steps is None:
        args.inference_steps = 25 if args.model else 4
    return args


def tiny_pipeline(folder: Path) -> Any:
    """A Stable Diffusion pipeline with random weights, built offline from configs."""
    from diffusers import (
        AutoencoderKL,
        DDPMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in string.ascii_lowercase:  # a character-level vocabulary, no merges
        vocab[char], vocab[char + "</w>"] = len(vocab), len(vocab) + 1
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8,
        sample_size=32,
    )
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=16,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
    )
    scheduler = DDPMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def load_pipeline(args: argparse.Namespace) -> Any:
    """The tiny offline pipeline, or ``--model`` with its frozen weights in ``--weights-dtype``."""
    if args.model is None:
        return tiny_pipeline(Path(args.output_dir) / "tiny_tokenizer")
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(
        args.model, torch_dtype=DTYPES[args.weights_dtype], safety_checker=None
    )


class LoRAFineTuning(L.LightningModule):
    """The denoising loss of a Stable Diffusion UNet whose only trainable weights are LoRA
    adapters on its attention projections.

    ``self.pipeline`` is what ``DiffusersSampler("pipeline")`` samples; its UNet, VAE and text
    encoder are registered here as well, so Lightning moves them and the sampler sees the UNet
    being trained.
    """

    def __init__(
        self, pipeline: Any, rank: int = 4, lr: float = 1e-3, full_unet: bool = False
    ) -> None:
        from peft import LoraConfig

        super().__init__()
        self.pipeline = pipeline
        self.unet, self.vae = pipeline.unet, pipeline.vae
        self.text_encoder, self.tokenizer = pipeline.text_encoder, pipeline.tokenizer
        self.noise_scheduler = pipeline.scheduler
        self.requires_grad_(False)
        self.lr = lr
        if full_unet:  # DreamBooth's setting: every UNet weight trains
            self.unet.requires_grad_(True)
            return
        self.unet.add_adapter(
            LoraConfig(
                r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS
            )
        )
        for parameter in self.lora_parameters():
            parameter.data = parameter.data.float()  # fp32 LoRA weights on fp16/bf16 models

    def lora_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.unet.parameters() if p.requires_grad]

    def training_step(self, batch: tuple[Tensor, list[str]], batch_idx: int) -> Tensor:
        images, captions = batch
        latents = self.vae.encode(images.to(self.vae.dtype) * 2 - 1).latent_dist.sample()
        latents = latents * self.vae.config.scaling_factor
        noise = torch.randn_like(latents)
        steps = self.noise_scheduler.config.num_train_timesteps
        t = torch.randint(0, steps, (latents.shape[0],), device=self.device)
        tokens = self.tokenizer(
            list(captions),
            padding="max_length",
            truncation=True,
            max_length=self.tokenizer.model_max_length,
            return_tensors="pt",
        )
        text = self.text_encoder(tokens.input_ids.to(self.device))[0]
        noisy = self.noise_scheduler.add_noise(latents, noise, t)
        prediction = self.unet(noisy, t, text).sample
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, t)
        else:
            target = noise
        loss = nn.functional.mse_loss(prediction.float(), target.float())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.lora_parameters(), lr=self.lr)


def training_pairs(args: argparse.Namespace) -> list[tuple[Tensor, str]]:
    """The shapes images at ``--resolution`` in [0, 1] with their prompts as captions; with
    ``--dreambooth N`` the first N only (the instance images)."""
    shapes = ShapesDataset(args.dreambooth or args.dataset_size, seed=args.seed)
    images = nn.functional.interpolate(shapes.images, size=args.resolution, mode="bilinear")
    return [(image, PROMPTS[int(i)]) for image, i in zip(images, shapes.prompt_index, strict=True)]


def caption_data(args: argparse.Namespace) -> DataLoader:
    """Batches of the training pairs; the few instance images of ``--dreambooth`` repeated so
    that every batch is full."""
    pairs = training_pairs(args)
    if args.dreambooth:
        pairs = pairs * max(1, -(-args.batch_size // len(pairs)))
    return DataLoader(pairs, batch_size=args.batch_size, shuffle=True, drop_last=True)


def build_callback(args: argparse.Namespace) -> DiversityCallback:
    """Diversity of ``--prompts`` x ``--samples-per-prompt`` samples every ``--eval-every``;
    with ``--dreambooth``, of the instance prompts, against the instance images."""
    prompts = list(PROMPTS[: args.prompts])
    if args.model:
        embedder: Any = CLIPEmbedder()
    elif args.dreambooth:
        from shapes.embedder import PixelEmbedder

        embedder = PixelEmbedder()
    else:
        embedder = CLIPEmbedder(pretrained=None, model_kwargs=TINY_CLIP)
    memorization: dict[str, Any] = {}
    if args.dreambooth:
        pairs = training_pairs(args)
        prompts = list(dict.fromkeys(caption for _, caption in pairs))
        memorization = {
            "reference": torch.stack([image for image, _ in pairs]),  # [0, 1], as sampled
            "reference_cache_dir": Path(args.output_dir) / "reference_cache",
        }
    return DiversityCallback(
        prompts,
        samples_per_condition=args.samples_per_prompt,
        every_n_train_steps=args.eval_every,
        sample_fn=DiffusersSampler(
            "pipeline",
            num_inference_steps=args.inference_steps,
            guidance_scale=args.guidance_scale,
            height=args.resolution,
            width=args.resolution,
        ),
        embedder=embedder,
        batch_size=8,
        **memorization,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Fine-tune, evaluating on the cadence; return and write ``summary.json``."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    L.seed_everything(args.seed, verbose=False)
    os.makedirs(args.output_dir, exist_ok=True)
    model = LoRAFineTuning(
        load_pipeline(args), rank=args.lora_rank, lr=args.lr, full_unet=args.full_unet
    )
    diversity = build_callback(args)
    loggers: list[Any] = [CSVLogger(args.output_dir, name="csv", version="")]
    if args.wandb_mode != "disabled":
        loggers.append(
            WandbLogger(
                project=args.wandb_project,
                save_dir=args.output_dir,
                offline=args.wandb_mode == "offline",
            )
        )
    trainer = L.Trainer(
        max_steps=args.steps,
        accelerator=args.accelerator,
        devices=1,
        precision=args.precision,
        logger=loggers,
        callbacks=[diversity],
        enable_checkpointing=False,
        log_every_n_steps=1,
    )
    trainer.fit(model, caption_data(args))
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()  # flush the offline run before pointing at it
    summary = {"history": diversity.history, "model": args.model or "tiny"}
    Path(args.output_dir, "summary.json").write_text(json.dumps(summary, indent=1))
    for row in diversity.history:
        print(
            f"step {row['step']:>5}: "
            + ", ".join(
                f"{key.split('/')[1]} {value:.3f}"
                for key, value in row.items()
                if key.startswith("diversity/") and not key.endswith("eval_seconds")
            )
        )
    return summary


if __name__ == "__main__":
    main()
