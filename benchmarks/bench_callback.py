"""Cost of DiversityCallback: one evaluation split into stages, and its overhead on a training run.

A small conditional convolutional generator (noise + prompt embedding -> 3 x 64 x 64, about
1 M parameters) trains on CPU with SGD. Two runs of the same length, same seed, same loggers
(CSVLogger and an offline WandbLogger, both started before the clock runs):

- without the callback;
- with ``DiversityCallback`` evaluating ``prompts x samples`` images every ``--every`` steps,
  logging scalars to both loggers and sample grids plus the per-prompt table to W&B.

Reported: seconds per evaluation on rank 0 by stage (``DiversityCallback.last_timings``:
sampling = generator + output checks; embedding = image and prompt embedding; metric = state
updates, sync and compute of Vendi, per-prompt Vendi and SCE; logging = scalars, grids, table),
the share of metric + logging in an evaluation, and the callback's overhead: the evaluations'
share of the run's wall time, measured inside the run (the difference to the run without the
callback is printed too, but two runs differ by more than that on a loaded machine). The
embedder is built before the runs (its one-off build time is reported separately):
``--embedder vit-b-32`` is CLIP ViT-B/32 with random weights (the default embedder's compute; no
download), ``tiny`` the test-sized ViT. ``--threads 1`` avoids the slowdown of multi-threaded
BLAS on an oversubscribed CPU.

Run: ``python benchmarks/bench_callback.py [--steps 100 --every 50 --threads 1]`` (minutes).

Two more parts, each under a minute:

- ``--part idle``: an idle callback (10,000 prompts, no evaluation due) beside no callback, on a
  small MLP whose training step takes a few ms: fits alternated, per-step medians, the paired
  ratio; and the callback's own per-step work timed directly (the ``state_key`` reads Lightning
  makes around each hook, counted in a fit, plus ``on_train_batch_end``), as a share of a 4 ms
  step, beside what hashing the prompts on every read cost before.
- ``--part loggers``: for each logger (CSV, offline W&B, TensorBoard, MLflow's file store) a
  200-step fit with and without the callback (an evaluation every 50 steps plus the baseline and
  the final one, grids and table logged), alternated, fastest of ``--repeats``: the difference,
  the evaluations' own time measured inside the run (and their logging part), and the
  remainder; with the CPU seconds other threads and processes (W&B's service, TensorBoard's
  writer thread) spent during the fit.

``--modes-only`` runs only the row of the modes (``modes=8`` with ``compare_to``): the cost of the
leading modes and of the lost and gained modes against the metric time of the same evaluation,
at n = 1000 samples of D = 512 (125 prompts x 8, every default metric; and unconditional, the
Vendi score alone), measured inside each evaluation (about a minute).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
import timeit
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import lightning as L
import torch
from lightning.pytorch.loggers import (
    CSVLogger,
    Logger,
    MLFlowLogger,
    TensorBoardLogger,
    WandbLogger,
)
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from diversity_callbacks import CLIPEmbedder, DiversityCallback

LATENT = 64
TINY_CLIP: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


class SmallGenerator(L.LightningModule):
    """Noise and a prompt embedding -> a 64 x 64 RGB image in [-1, 1] through 3 upsamplings."""

    def __init__(self, prompts: list[str]) -> None:
        super().__init__()
        self.prompts = prompts
        self.embed = nn.Embedding(len(prompts), 32)
        self.stem = nn.Linear(LATENT + 32, 128 * 8 * 8)
        self.body = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1),
            nn.GELU(),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.GELU(),
            nn.ConvTranspose2d(32, 3, 4, stride=2, padding=1),
            nn.Tanh(),
        )

    def forward(self, noise: Tensor, ids: Tensor) -> Tensor:
        hidden = self.stem(torch.cat([noise, self.embed(ids)], dim=1))
        return self.body(hidden.view(-1, 128, 8, 8))

    def generate(self, prompts: list[str], generators: list[torch.Generator]) -> Tensor:
        noise = torch.stack(
            [torch.randn(LATENT, generator=g, device=self.device) for g in generators]
        )
        ids = torch.tensor([self.prompts.index(p) for p in prompts], device=self.device)
        return self(noise, ids)

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        noise, ids, target = batch
        return (self(noise, ids) - target).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class TimedCallback(DiversityCallback):
    """Keeps the stage timings of every evaluation, not only the last."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timings: list[dict[str, float]] = []
        self.inside = [0.0, 0.0]  # wall and CPU seconds inside evaluate() and setup(), this fit

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.inside = [0.0, 0.0]
        with self.clock():
            super().setup(trainer, pl_module, stage)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Any:
        with self.clock():
            result = super().evaluate(trainer, pl_module)
        self.timings.append(dict(self.last_timings))
        return result

    @contextlib.contextmanager
    def clock(self) -> Iterator[None]:
        start, cpu = time.perf_counter(), time.thread_time()
        yield
        self.inside[0] += time.perf_counter() - start
        self.inside[1] += time.thread_time() - cpu


def data(num_prompts: int, batch_size: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    n = 1024
    dataset = TensorDataset(
        torch.randn(n, LATENT, generator=g),
        torch.randint(0, num_prompts, (n,), generator=g),
        torch.rand(n, 3, 64, 64, generator=g) * 2 - 1,
    )
    return DataLoader(dataset, batch_size=batch_size, shuffle=True)


def timed_fit(args: argparse.Namespace, folder: str, callback: DiversityCallback | None) -> float:
    prompts = [f"prompt {i}" for i in range(args.prompts)]
    loggers = [
        CSVLogger(folder, name="csv"),
        WandbLogger(save_dir=folder, offline=True, project="bench"),
    ]
    _ = loggers[1].experiment  # start the W&B run before the clock
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=args.steps,
        logger=loggers,
        log_every_n_steps=50,
        callbacks=[callback] if callback is not None else [],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    module = SmallGenerator(prompts)
    start = time.perf_counter()
    trainer.fit(module, data(args.prompts, args.batch_size))
    seconds = time.perf_counter() - start
    loggers[1].experiment.finish()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part",
        nargs="+",
        choices=["stages", "idle", "loggers"],
        default=["stages"],
        help="stages: one evaluation by stage; idle: an idle callback's cost per step; "
        "loggers: fit time with and without the callback per logger",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="alternated fits (idle, loggers); evaluations per modes row",
    )
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32, help="training and sampling batch")
    parser.add_argument("--embedder", choices=["vit-b-32", "tiny"], default="vit-b-32")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--modes-only", action="store_true", help="only the modes' cost row")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.modes_only:
        bench_modes(args.repeats)
        return
    print(f"load average {os.getloadavg()[0]:.1f}, torch threads {torch.get_num_threads()}\n")
    for part in args.part:
        {"stages": stages, "idle": idle, "loggers": loggers}[part](args)
        print(f"\nload average {os.getloadavg()[0]:.1f}\n")


def stages(args: argparse.Namespace) -> None:
    """One evaluation by stage, and the evaluations' share of a short run (the first table)."""
    start = time.perf_counter()
    model_kwargs = TINY_CLIP if args.embedder == "tiny" else None
    embedder = CLIPEmbedder(pretrained=None, model_kwargs=model_kwargs)
    embedder.embed_texts(["warm up the tokenizer"])
    build = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as folder:
        plain = timed_fit(args, folder, None)
        callback = TimedCallback(
            [f"prompt {i}" for i in range(args.prompts)],
            samples_per_condition=args.samples,
            every_n_train_steps=args.every,
            batch_size=args.batch_size,
            embedder=embedder,
        )
        watched = timed_fit(args, folder, callback)
        timings = callback.timings

    n = args.prompts * args.samples
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, embedder {args.embedder}")
    print(
        f"evaluation set: {args.prompts} prompts x {args.samples} samples = {n} images of 64 x 64"
    )
    print(f"embedder build (once, before training): {build:.2f} s\n")
    print(
        "| evaluation | sampling s | embedding s | metric s | logging s | total s | metric + logging |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for i, t in enumerate(timings):
        total = sum(t.values())
        share = (t["metric"] + t["logging"]) / total
        print(
            f"| {i + 1} | {t['sampling']:.3f} | {t['embedding']:.3f} | {t['metric']:.3f} | "
            f"{t['logging']:.3f} | {total:.3f} | {share:.1%} |"
        )
    eval_total = sum(sum(t.values()) for t in timings)
    print(
        f"\ntraining run: {args.steps} steps of batch {args.batch_size}, evaluation every "
        f"{args.every} steps ({len(timings)} evaluations)"
    )
    print(
        f"overhead: evaluations took {eval_total:.2f} s = {eval_total / watched:.1%} of the "
        f"{watched:.2f} s run"
    )
    print(
        f"run without the callback: {plain:.2f} s, {(watched - plain) / watched:.1%} less "
        "(a difference of two runs: noisy on a shared machine)"
    )
    per_step = plain / args.steps
    print(
        f"one training step: {per_step * 1000:.1f} ms; one evaluation = "
        f"{statistics.mean(sum(t.values()) for t in timings) / per_step:.0f} training steps"
    )


# ---------------------------------------------------------------- --part idle

IDLE_PROMPTS = 10_000
STEP_MS = 4.0  # the training step of the target: an idle callback adds < 1% to it


class Autoencoder(L.LightningModule):
    """A small MLP whose training step takes a few ms on one CPU thread; never sampled."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(256, 512), nn.GELU(), nn.Linear(512, 256))

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        return (self.net(batch[0]) - batch[0]).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class CountingCallback(DiversityCallback):
    """Counts Lightning's reads of ``state_key`` (it reads it around every hook it calls)."""

    reads = 0

    @property
    def state_key(self) -> str:
        self.reads += 1
        return super().state_key


class TrainTimer(L.Callback):
    """Wall seconds from the first training batch to the end of training (no set-up)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds = time.perf_counter() - self.start


def seconds_per_step(callbacks: list[L.Callback], steps: int) -> tuple[float, L.Trainer]:
    """Seconds per training step of a fit of the autoencoder with these callbacks."""
    timer = TrainTimer()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        callbacks=[timer, *callbacks],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    data = DataLoader(TensorDataset(torch.randn(4096, 256)), batch_size=64)
    trainer.fit(Autoencoder(), data)
    return timer.seconds / steps, trainer


def best_of(function: Callable[[], Any], number: int) -> float:
    """Seconds per call of ``function``: the fastest of 5 repeats of ``number`` calls."""
    return min(timeit.repeat(function, number=number, repeat=5)) / number


def idle(args: argparse.Namespace) -> None:
    """An idle callback with 10,000 prompts beside no callback (the --part idle table)."""
    steps = 300
    callback = CountingCallback(
        [f"prompt number {i}" for i in range(IDLE_PROMPTS)],
        samples_per_condition=1,
        every_n_train_steps=10**9,  # never due: the callback stays idle
        evaluate_at_start=False,
        evaluate_on_train_end=False,
        embedder=lambda samples: samples,
        value_range=None,
    )
    seconds_per_step([], 30)  # warm-up
    plain, watched = [], []
    for repeat in range(args.repeats):
        for with_callback in (False, True) if repeat % 2 == 0 else (True, False):  # ABBA
            if with_callback:
                callback.reads = 0
                seconds, trainer = seconds_per_step([callback], steps)
                reads = callback.reads / steps
                watched.append(seconds)
            else:
                plain.append(seconds_per_step([], steps)[0])
    ratio = statistics.median(w / p for w, p in zip(watched, plain, strict=True))
    read = best_of(lambda: callback.state_key, 10_000)
    module = trainer.lightning_module
    hook = best_of(lambda: callback.on_train_batch_end(trainer, module, None, None, 0), 10_000)
    own = reads * read + hook
    evaluation_set = callback.evaluation_set
    conditions = evaluation_set.condition_set
    digest = best_of(lambda: type(conditions)._digest.func(conditions), 20)
    print(
        f"idle callback: {IDLE_PROMPTS:,} prompts, no evaluation due; MLP 256-512-256, batch 64, "
        f"{steps} steps; {args.repeats} alternated pairs of fits (medians)\n"
    )
    print("| path | per step | ratio to no callback | share of a 4 ms step |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| fit without a callback | {statistics.median(plain) * 1e3:.2f} ms | 1.000 | |")
    print(
        f"| fit with the idle callback | {statistics.median(watched) * 1e3:.2f} ms | "
        f"**{ratio:.3f}** | |"
    )
    print(
        f"| the callback's own work per step, timed directly: {reads:.1f} `state_key` reads "
        f"+ `on_train_batch_end` | {own * 1e6:.2f} µs | | **{own / (STEP_MS / 1e3):.3%}** |"
    )
    print(
        f"| before: hashing the {IDLE_PROMPTS:,} prompts at each of the {reads:.1f} reads | "
        f"{reads * digest * 1e6:.0f} µs | | {reads * digest / (STEP_MS / 1e3):.0%} |"
    )


# ---------------------------------------------------------------- --part loggers


def make_logger(kind: str, folder: str) -> Logger:
    """A logger of this kind writing under ``folder``, its run started (outside the clock)."""
    if kind == "CSV":
        return CSVLogger(folder, name="csv")
    if kind == "W&B offline":
        logger: Logger = WandbLogger(save_dir=folder, offline=True, project="bench")
    elif kind == "TensorBoard":
        logger = TensorBoardLogger(folder, name="tb")
    else:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow >= 3.7 wants a database
        logger = MLFlowLogger(tracking_uri=f"file:{folder}/mlruns")
    _ = logger.experiment
    return logger


def background_cpu() -> float:
    """CPU seconds of this process's threads other than this one (TensorBoard's writer...) and
    of its live child processes (W&B's service), so far."""
    import psutil  # a dependency of wandb

    children = sum(
        sum(child.cpu_times()[:2]) for child in psutil.Process().children(recursive=True)
    )
    return time.process_time() - time.thread_time() + children


def logged_fit(kind: str, folder: str, callback: TimedCallback | None, steps: int) -> list[float]:
    """Wall seconds, CPU seconds of this thread and background CPU seconds of one fit of the
    small generator."""
    logger = make_logger(kind, folder)
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=logger,
        log_every_n_steps=50,
        callbacks=[callback] if callback is not None else [],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    module = SmallGenerator([f"prompt {i}" for i in range(8)])
    before = [time.perf_counter(), time.thread_time(), background_cpu()]
    trainer.fit(module, data(8, 8))
    after = [time.perf_counter(), time.thread_time(), background_cpu()]
    if isinstance(logger, WandbLogger):
        logger.experiment.finish()
    return [b - a for a, b in zip(before, after, strict=True)]


def loggers(args: argparse.Namespace) -> None:
    """Per logger: fit time with and without the callback, the evaluations' own time, and the
    remainder (the --part loggers table)."""
    steps, every = 200, 50
    embedder = CLIPEmbedder(pretrained=None, model_kwargs=TINY_CLIP)
    embedder.embed_texts(["warm up the tokenizer"])
    print(
        f"{steps} steps of the small generator (batch 8), an evaluation every {every} steps plus "
        f"the baseline and the final one, 8 prompts x 8 samples of 64 x 64, test-sized ViT, "
        f"grids and table logged; fastest of {args.repeats} alternated pairs\n"
    )
    print(
        "| logger | fit without | fit with | difference | evaluations | of which logging | "
        "**remainder** | background CPU without / with |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind in ("CSV", "W&B offline", "TensorBoard", "MLflow"):
        plain, watched = [], []  # [wall, CPU, background CPU, (evaluations wall, CPU, logging)]
        with tempfile.TemporaryDirectory() as folder:
            for repeat in range(args.repeats):
                for with_callback in (False, True) if repeat % 2 == 0 else (True, False):
                    if not with_callback:
                        plain.append(logged_fit(kind, folder, None, steps))
                        continue
                    callback = TimedCallback(
                        [f"prompt {i}" for i in range(8)],
                        samples_per_condition=8,
                        every_n_train_steps=every,
                        batch_size=32,
                        embedder=embedder,
                    )
                    fit = logged_fit(kind, folder, callback, steps)
                    logging = sum(t["logging"] for t in callback.timings)
                    watched.append([*fit, *callback.inside, logging])
        without, with_ = min(plain), min(watched)
        for unit, column in (("wall s", 0), ("CPU s", 1)):
            difference = with_[column] - without[column]
            evaluations = with_[3 + column]
            logging = f"{with_[5]:.2f}" if column == 0 else ""
            background = f"{without[2]:.2f} / {with_[2]:.2f}" if column == 1 else ""
            print(
                f"| {kind}, {unit} | {without[column]:.2f} | {with_[column]:.2f} | "
                f"{difference:.2f} | {evaluations:.2f} | {logging} | "
                f"**{difference - evaluations:.2f}** | {background} |"
            )


def bench_modes(repeats: int, num_samples: int = 1000, dim: int = 512) -> None:
    """The modes' seconds against the rest of the metric time of the same evaluations."""
    from diversity_callbacks import DiversityEvaluator

    projection = torch.randn(3 * 8 * 8, dim, generator=torch.Generator().manual_seed(0))

    class Embedder:  # a fixed random projection: D = 512 at no embedding cost
        def embed_images(self, images: Tensor) -> Tensor:
            return images.flatten(1) @ projection

        def embed_texts(self, prompts: list[str]) -> Tensor:
            return torch.stack([projection[hash(p) % projection.shape[0]] for p in prompts])

    def sample(conditions: Any, generators: list[torch.Generator]) -> Tensor:
        return torch.stack([torch.rand(3, 8, 8, generator=g) for g in generators])

    prompts = [f"prompt {i}" for i in range(num_samples // 8)]
    setups = {
        "125 prompts x 8 (every default metric)": {"prompts": prompts, "samples_per_condition": 8},
        "unconditional (Vendi score only)": {"num_samples": num_samples},
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()}")
    print(f"n = {num_samples}, D = {dim}, modes=8 with compare_to (median of {repeats})\n")
    print("| evaluation | metric s (without modes) | modes s | modes / metric |")
    print("| --- | --- | --- | --- |")
    for name, setup in setups.items():
        evaluator = DiversityEvaluator(
            **setup, embedder=Embedder(), value_range="[0,1]", batch_size=250, modes=8
        )
        earlier = evaluator.evaluate(sample, progress=False)
        runs = [
            evaluator.evaluate(sample, progress=False, compare_to=earlier) for _ in range(repeats)
        ]
        modes = statistics.median(r.timings["modes"] for r in runs)
        rest = statistics.median(r.timings["metric"] - r.timings["modes"] for r in runs)
        print(f"| {name} | {rest:.3f} | {modes:.3f} | {modes / rest:.1%} |")


if __name__ == "__main__":
    main()
