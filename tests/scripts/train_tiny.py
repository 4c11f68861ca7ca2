"""Train the tiny generator with DiversityCallbacks and write what they logged to a folder.

Run by tests/test_callback_ddp.py as a script, because Lightning's DDP launcher re-runs
``sys.argv`` in one process per device: ``python train_tiny.py OUT --devices 2``.

The learning rate is 0, so the model is the same at every evaluation and on every world size:
the logged diversity must not depend on the number of devices. Three callbacks share the run:

- ``diversity``: 3 prompts x 3 samples in batches of 2, so one prompt's samples straddle ranks,
  with Vendi, per-prompt Vendi, SCE and two plug-in metrics (a user's own and torchmetrics'
  Calinski-Harabasz score over embeddings and prompt ids), and (``--wandb``) sample grids
  gathered on rank 0;
- ``single``: 1 prompt x 1 sample, so with 2 devices rank 1 draws nothing;
- ``failing``: its sampler fails on one prompt (drawn by rank 1 when there are 2 devices), with
  ``on_error="warn"``: every rank must skip the evaluation and training must go on.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from torchmetrics.clustering import CalinskiHarabaszScore

from diversity_callbacks import DiversityCallback, EvaluationMetric
from tests.helpers.trainer import PROMPTS, MeanNorm, PixelEmbedder, TinyGenerator, tiny_data

FAILING_PROMPT = PROMPTS[-1]


def failing_sampler(module: TinyGenerator, prompts: list[str], generators: list) -> torch.Tensor:
    if FAILING_PROMPT in prompts:
        raise RuntimeError("the sampler broke")
    return module.generate(prompts, generators)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--wandb", action="store_true", help="add an offline WandbLogger")
    args = parser.parse_args()
    torch.set_num_threads(1)  # two ranks share two cores
    L.seed_everything(0, verbose=False)
    common = {"embedder": PixelEmbedder(), "every_n_train_steps": 2}
    callbacks = [
        DiversityCallback(
            PROMPTS,
            samples_per_condition=3,
            batch_size=2,
            vendi_orders=(1, 2, "inf"),
            metrics={
                "mean_norm": MeanNorm(),
                "calinski_harabasz": EvaluationMetric(
                    CalinskiHarabaszScore(), inputs=("embeddings", "condition_ids")
                ),
            },
            **common,
        ),
        DiversityCallback(
            PROMPTS[:1], samples_per_condition=1, prefix="single", log_images=False, **common
        ),
        DiversityCallback(
            PROMPTS,
            samples_per_condition=1,
            sample_fn=failing_sampler,
            on_error="warn",
            prefix="failing",
            log_images=False,
            **common,
        ),
    ]
    loggers = [CSVLogger(args.out, name="csv", version=0)]
    if args.wandb:
        loggers.append(WandbLogger(save_dir=args.out, offline=True, project="tests"))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        max_steps=args.steps,
        logger=loggers,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        trainer.fit(TinyGenerator(lr=0.0), tiny_data())
    result = {
        "warnings": [str(w.message) for w in caught if "on_error='warn'" in str(w.message)],
        "rank": trainer.global_rank,
        "history": {cb.evaluator.prefix: cb.history for cb in callbacks},
        "callback_metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
    }
    (args.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))
    if args.wandb and trainer.is_global_zero:
        import wandb

        wandb.finish()
        wandb.teardown()  # flush the run file before the test reads it


if __name__ == "__main__":
    main()
