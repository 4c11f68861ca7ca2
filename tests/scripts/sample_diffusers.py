"""Evaluate a frozen tiny Stable Diffusion pipeline with DiffusersSampler during a short fit.

Run by tests/samplers/test_diffusers.py as a script, because Lightning's DDP launcher re-runs
``sys.argv`` in one process per device: ``python sample_diffusers.py OUT --devices 2``. The
pipeline is built from the same seed in every process and never trained, so the logged diversity
must not depend on the number of devices. 3 prompts x 3 samples in batches of 2: one prompt's
samples straddle the ranks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightning as L
import torch

from diversity_callbacks import DiffusersSampler, DiversityCallback
from tests.helpers.diffusion import PipelineModule, dummy_data, tiny_sd_pipeline, write_tokenizer
from tests.helpers.trainer import PROMPTS, PixelEmbedder


def run(out: Path, devices: int) -> dict:
    """Fit one step, evaluating at the start and after it; return this rank's history."""
    pipeline = tiny_sd_pipeline(write_tokenizer(out / f"tokenizer{devices}"))
    callback = DiversityCallback(
        PROMPTS,
        samples_per_condition=3,
        batch_size=2,
        sample_fn=DiffusersSampler("pipeline", num_inference_steps=2, guidance_scale=1.0),
        embedder=PixelEmbedder(),
        every_n_train_steps=1,
        log_images=False,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_steps=1,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    trainer.fit(PipelineModule(pipeline), dummy_data())
    return {"rank": trainer.global_rank, "history": callback.history}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--devices", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)  # two ranks share two cores
    result = run(args.out, args.devices)
    (args.out / f"rank{result['rank']}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
