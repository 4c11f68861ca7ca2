"""Watch diversity collapse: train a text-conditional shape generator, then reward fine-tune it.

Runs on CPU, offline, with nothing to download:

1. draws a data set of 32 x 32 shapes with prompts like "a red circle" (position, size and
   shade vary within a prompt);
2. trains a small conditional VAE on it from scratch (``--pretrain-steps``);
3. fine-tunes its decoder toward one preferred look per prompt by backpropagating a reward
   (``--finetune-steps``), which narrows what it draws;
4. throughout, ``DiversityCallback`` samples 9 prompts x ``--samples-per-prompt`` fixed seeds
   every ``--eval-every`` steps and logs the Vendi score, the per-prompt Vendi score and the
   Schur complement entropy, with sample grids, to W&B (offline) and a CSV file.

At the end it writes ``diversity_vs_step.png``, sample grids (a row per prompt, labelled; the
grids before and after fine-tuning side by side in ``samples_before_after.png``) and the modes
before and after fine-tuning with the modes fine-tuning lost (``modes_before_after.png``) to
``--output-dir``, prints a
summary and writes it to ``summary.json``. Send the W&B run to the web with
``wandb sync <output-dir>/wandb/offline-run-*`` (or run with ``--wandb-mode online``).

Usage::

    python examples/shapes_collapse.py                      # ~3 minutes on 2 CPU cores
    python examples/shapes_collapse.py --devices 2          # CPU DDP on 2 processes
    python examples/shapes_collapse.py --clip ViT-B-32 --pretrained laion2b_s34b_b79k
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the `shapes` helpers

from shapes.data import PROMPTS, ShapesDataset, draw_shapes
from shapes.embedder import PixelEmbedder
from shapes.model import ShapesVAE
from shapes.plot import labelled_grid, plot_modes, plot_run, read_metrics_csv, side_by_side

from diversity_callbacks import DiversityCallback, DiversityCollapseMonitor, DiversityEvaluator
from diversity_callbacks.images import make_grid

COLLAPSE = {"monitor": "diversity/vendi_q1", "min_fraction": 0.75, "patience": 2}
"""When the collapse monitor fires: a fall from the peak, since training starts collapsed."""

SUMMARY_KEYS = {
    "diversity/vendi_q1": "Vendi q=1, all samples",
    "diversity/vendi_q2": "Vendi q=2, all samples",
    "diversity/per_prompt_vendi_q1": "Vendi q=1 within a prompt (mean)",
    "diversity/sce": "Schur complement entropy",
    "diversity/sce_text": "SCE text part",
}
"""The measures in the printed summary and ``summary.json`` (the table of docs/example.md), with labels."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--pretrain-steps", type=int, default=1000, help="VAE training steps")
    parser.add_argument("--finetune-steps", type=int, default=300, help="reward fine-tuning steps")
    parser.add_argument("--eval-every", type=int, default=50, help="steps between evaluations")
    parser.add_argument("--samples-per-prompt", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64, help="training batch per device")
    parser.add_argument("--dataset-size", type=int, default=10_000)
    parser.add_argument("--width", type=int, default=16, help="channels of the first conv layer")
    parser.add_argument("--lr", type=float, default=2e-3, help="learning rate of pre-training")
    parser.add_argument("--finetune-lr", type=float, default=1.5e-4)
    parser.add_argument("--devices", type=int, default=1, help="CPU processes; 2+ runs DDP")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per process: these small convolutions gain little from more, and "
        "lose much when other programs share the cores",
    )
    parser.add_argument("--output-dir", default=os.path.join("outputs", "shapes_collapse"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--wandb-mode", choices=("offline", "online", "disabled"), default="offline"
    )
    parser.add_argument("--wandb-project", default="diversity-callbacks-examples")
    parser.add_argument(
        "--stop-on-collapse",
        action="store_true",
        help=f"stop training once {COLLAPSE['monitor']} stays below "
        f"{COLLAPSE['min_fraction']:.0%} of its best value for {COLLAPSE['patience']} "
        "evaluations (default: warn and go on)",
    )
    parser.add_argument(
        "--clip",
        metavar="MODEL",
        help="embed with this open_clip model (e.g. ViT-B-32) instead of pixel features",
    )
    parser.add_argument(
        "--pretrained",
        default="laion2b_s34b_b79k",
        help="open_clip weights tag or local file for --clip (downloaded on first use)",
    )
    args = parser.parse_args(argv)
    positive = ("pretrain_steps", "eval_every", "samples_per_prompt", "batch_size", "devices")
    for name in (*positive, "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.finetune_steps < 0:
        parser.error(f"--finetune-steps must be >= 0, got {args.finetune_steps}")
    return args


def build_embedder(args: argparse.Namespace) -> Any:
    """Pixel features by default; CLIP with ``--clip`` (its weights need a download or a file)."""
    if args.clip is None:
        return PixelEmbedder()
    from diversity_callbacks import CLIPEmbedder

    return CLIPEmbedder(args.clip, args.pretrained)


class Milestones(L.Callback):
    """Diversity and a grid of samples at the start, before and after fine-tuning.

    ``DiversityCallback`` evaluates on its cadence, from the first step on; this adds the
    untrained model and makes sure the two ends of fine-tuning are evaluated whatever the
    cadence. Each grid (one row per prompt, the same seeds in every grid, so they compare sample
    for sample) goes to the output folder as ``samples_<moment>.png`` and to W&B as
    ``samples/<moment>``.
    """

    def __init__(
        self, diversity: DiversityCallback, finetune_start: int, output_dir: str, seeds: int = 8
    ) -> None:
        self.diversity = diversity
        self.finetune_start = finetune_start
        self.output_dir = output_dir
        self.seeds = seeds
        self.results: dict[str, Any] = {}  # moment -> EvaluationResult, with its modes

    def on_train_start(self, trainer: L.Trainer, pl_module: ShapesVAE) -> None:
        self._milestone(trainer, pl_module, "start")

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: ShapesVAE, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.finetune_start:
            self._milestone(trainer, pl_module, "before_finetune")

    def on_train_end(self, trainer: L.Trainer, pl_module: ShapesVAE) -> None:
        self._milestone(trainer, pl_module, "after_finetune")
        if trainer.is_global_zero:
            moments = ("before_finetune", "after_finetune")
            grids = [os.path.join(self.output_dir, f"samples_{m}.png") for m in moments]
            titles = [f"before fine-tuning (step {self.finetune_start})"]
            titles.append(f"after fine-tuning (step {trainer.global_step})")
            side_by_side(grids, titles, os.path.join(self.output_dir, "samples_before_after.png"))
            plot_modes(
                self.results["before_finetune"],
                self.results["after_finetune"],
                os.path.join(self.output_dir, "modes_before_after.png"),
            )

    def _milestone(self, trainer: L.Trainer, pl_module: ShapesVAE, moment: str) -> None:
        history = self.diversity.history
        if not history or history[-1]["global_step"] != trainer.global_step:
            self.diversity.evaluate(trainer, pl_module)  # a collective: every rank calls it
        self.results[moment] = self.diversity.last_result
        if trainer.is_global_zero:
            self._save_grid(trainer, pl_module, moment)

    def _save_grid(self, trainer: L.Trainer, pl_module: ShapesVAE, moment: str) -> None:
        prompts = [p for p in PROMPTS for _ in range(self.seeds)]
        generators = [
            torch.Generator(pl_module.device).manual_seed(i % self.seeds)
            for i in range(len(prompts))
        ]
        grid = make_grid(pl_module.generate(prompts, generators), nrow=self.seeds)
        path = os.path.join(self.output_dir, f"samples_{moment}.png")
        labelled_grid(grid, PROMPTS).save(path)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                caption = f"step {trainer.global_step}; rows: {', '.join(PROMPTS)}"
                logger.log_image(
                    f"samples/{moment}", [path], step=trainer.global_step, caption=[caption]
                )


def reference_diversity(evaluator: DiversityEvaluator) -> dict[str, float]:
    """The logged diversity measures of real data: the callback's own evaluation, with the data
    drawn by the same seeds standing in for the generator (a collective under DDP)."""
    scalars = evaluator.evaluate(draw_shapes, progress=False).scalars
    return {key: scalars[key] for key in SUMMARY_KEYS}


def summarize(
    history: list[dict[str, float]],
    series: dict[str, list[tuple[int, float]]],
    reference: dict[str, float],
    finetune_start: int,
) -> dict[str, Any]:
    """Diversity at the start, before and after fine-tuning, on real data; the losses' ends."""
    by_step = {int(row["global_step"]): row for row in history}
    moments = {"start": 0, "before_finetune": finetune_start, "after_finetune": max(by_step)}
    summary: dict[str, Any] = {
        "steps": moments,
        "diversity": {
            key: {
                **{m: by_step[s][key] for m, s in moments.items() if s in by_step},
                "real_data": reference[key],
            }
            for key in SUMMARY_KEYS
        },
    }
    losses = {}
    for key in ("train/vae_loss", "train/reward_loss"):
        if series.get(key):
            losses[key] = {"first": series[key][0][1], "last": series[key][-1][1]}
    summary["losses"] = losses
    return summary


def format_summary(summary: dict[str, Any], output_dir: str) -> str:
    """The summary as text: a table of the diversity measures, the losses, where outputs are."""
    moments = ("start", "before_finetune", "after_finetune")
    rows = [
        ["", "start", "before FT", "after FT", "real data"],
        ["(step)", *(str(summary["steps"][m]) for m in moments), ""],
    ]
    for key, label in SUMMARY_KEYS.items():
        values = summary["diversity"][key]
        cells = [values.get(m) for m in (*moments, "real_data")]
        rows.append([label, *("-" if v is None else f"{v:.2f}" for v in cells)])
    lines = ["", "Diversity of the evaluation samples (effective number of distinct samples):"]
    lines += [f"{row[0]:42s}" + "".join(f"{cell:>11s}" for cell in row[1:]) for row in rows]
    for key, values in summary["losses"].items():
        lines.append(f"{key}: {values['first']:.4g} (first logged) -> {values['last']:.4g} (last)")
    fell = f"{COLLAPSE['monitor']} below {COLLAPSE['min_fraction']:.0%} of its best"
    step = summary["collapse_step"]
    lines.append(
        f"Collapse monitor: {fell} at step {step}"
        if step is not None
        else f"Collapse monitor: never {fell}"
    )
    lines += [
        f"Plot: {os.path.join(output_dir, 'diversity_vs_step.png')}",
        f"Sample grids (a row per prompt): {os.path.join(output_dir, 'samples_*.png')}",
        f"W&B offline run: wandb sync {os.path.join(output_dir, 'wandb', 'offline-run-*')}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Run the example; return the summary on rank 0 (None on the other DDP ranks)."""
    args = parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    # Lightning's DDP launcher reads OMP_NUM_THREADS for its processes.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    L.seed_everything(args.seed, workers=True, verbose=False)
    embedder = build_embedder(args)
    diversity = DiversityCallback(
        list(PROMPTS),
        samples_per_condition=args.samples_per_prompt,
        every_n_train_steps=args.eval_every,
        embedder=embedder,
        value_range="[0,1]",
        vendi_orders=(1, 2),
        seed=args.seed,
        compare_to=args.pretrain_steps,  # lost modes: since the end of pre-training
    )
    collapse = DiversityCollapseMonitor(
        diversity, reference="best", mode="stop" if args.stop_on_collapse else "warn", **COLLAPSE
    )
    loggers: list[Any] = [CSVLogger(args.output_dir, name="", version="csv")]
    if args.wandb_mode != "disabled":
        loggers.append(
            WandbLogger(
                project=args.wandb_project,
                name="shapes_collapse",
                save_dir=args.output_dir,
                offline=args.wandb_mode == "offline",
                config=vars(args),
            )
        )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=args.devices,
        # Fine-tuning leaves the encoder out of the loss: DDP must expect unused parameters.
        strategy="ddp_find_unused_parameters_true" if args.devices > 1 else "auto",
        max_steps=args.pretrain_steps + args.finetune_steps,
        max_epochs=-1,
        logger=loggers,
        callbacks=[
            diversity,
            collapse,
            Milestones(diversity, args.pretrain_steps, args.output_dir),
        ],
        log_every_n_steps=10,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    model = ShapesVAE(
        args.pretrain_steps, width=args.width, lr=args.lr, finetune_lr=args.finetune_lr
    )
    data = DataLoader(
        ShapesDataset(args.dataset_size, seed=args.seed),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
    )
    trainer.fit(model, data)
    reference = reference_diversity(diversity.evaluator)  # on every rank: it syncs under DDP
    if not trainer.is_global_zero:
        return None
    series = read_metrics_csv(os.path.join(loggers[0].log_dir, "metrics.csv"))
    plot_path = os.path.join(args.output_dir, "diversity_vs_step.png")
    plot_run(series, args.pretrain_steps, reference, plot_path)
    summary = summarize(diversity.history, series, reference, args.pretrain_steps)
    summary["collapse_step"] = collapse.collapse_step
    with open(os.path.join(args.output_dir, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image("summary/diversity_vs_step", [plot_path], step=trainer.global_step)
            logger.experiment.finish()  # flush the offline run before pointing at it
    print(format_summary(summary, args.output_dir))
    return summary


if __name__ == "__main__":
    main()
