"""``DiversityCallback``: sample the generator during training and log how diverse it still is.

One evaluation, left to right: a fixed list of (prompt, seed) samples -> this rank's share ->
the generator (eval mode, no grad, the trainer's precision, global RNG isolated) -> images in
``[0, 1]`` -> the embedder -> metric states (float64, owned here) -> ``compute`` on every rank ->
rank 0 sends the scalars to every logger and W&B media to a ``WandbLogger``.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.seed import isolate_rng
from torch import Tensor
from tqdm.auto import tqdm

from diversity_callbacks._conditional import PromptVendi
from diversity_callbacks._validation import check_positive_int
from diversity_callbacks.functional.spectrum import Order, order_key, parse_orders
from diversity_callbacks.images import ValueRange, to_uint8, to_unit_range, value_range_bounds
from diversity_callbacks.metrics.schur import SchurComplementEntropy
from diversity_callbacks.metrics.vendi import VendiScore

if TYPE_CHECKING:  # pragma: no cover
    from diversity_callbacks.embedders.base import ImageEmbedder

SampleFn = Callable[[LightningModule, list[str], list[torch.Generator]], Tensor]
"""``sample_fn(pl_module, prompts, generators) -> images``: see :class:`DiversityCallback`."""


@dataclass
class _Draw:
    """What one rank drew in one evaluation, before the collective part."""

    num_samples: int = 0
    error: BaseException | None = None
    thumbnails: dict[int, Tensor] = field(default_factory=dict)
    seconds: dict[str, float] = field(
        default_factory=lambda: {"sampling": 0.0, "embedding": 0.0, "metric": 0.0}
    )


class DiversityCallback(Callback):
    r"""Sample a generator at a fixed cadence during training and log the diversity of its samples.

    The evaluation set is fixed: sample ``i`` is drawn for prompt ``i // samples_per_prompt``
    with a seed derived from ``(seed, i)`` alone, so two evaluations differ only because the model
    changed, and the set is the same whatever the number of devices. It is split across ranks
    without padding (a rank may get no sample); each rank embeds its share, the metric states
    are synced and ``compute`` runs on every rank; rank 0 logs.

    **Sampling contract.** For each batch of at most ``batch_size`` samples the callback calls
    ``sample_fn(pl_module, prompts, generators)``, or ``pl_module.generate(prompts, generators)``
    when no ``sample_fn`` is given, where

    - ``prompts`` is a ``list[str]`` with one prompt per sample of the batch (a prompt repeats
      for its several samples);
    - ``generators`` is a ``list[torch.Generator]`` of the same length on ``pl_module.device``,
      generator ``j`` seeded for sample ``j`` of the batch: draw that sample's noise from it
      (``torch.randn(shape, generator=generators[j], device=...)``) and it is the same at every
      evaluation and every world size;

    and it must return a ``(B, 3, H, W)`` tensor, ``B = len(prompts)``, in ``image_range``:
    floating in ``[-1, 1]`` or ``[0, 1]``, or ``torch.uint8`` in ``[0, 255]``. It runs with the
    module in eval mode (the previous train/eval mode of every submodule is restored afterwards,
    also on error), under ``torch.no_grad()``, inside the trainer's precision context (autocast
    for ``"16-mixed"``/``"bf16-mixed"``, the default dtype for ``"bf16-true"``), and with the global
    torch/numpy/python RNG states restored afterwards, so training is unchanged.

    **Cadence.** ``every_n_train_steps`` (after the training batch whose optimizer step(s) bring
    ``trainer.global_step`` to or past a multiple of it: once per optimizer step under gradient
    accumulation, and on cadence when several optimizers step per batch), ``every_n_epochs``
    (at the end of every n-th training epoch) and ``on_validation_end`` (at the end of every
    validation epoch, before ``EarlyStopping`` and ``ModelCheckpoint`` read
    ``trainer.callback_metrics``) combine; one ``global_step`` is evaluated at most once. With
    none of them, ``every_n_epochs=1``. The sanity check is skipped.

    **Logged keys** (``prefix="diversity"``), sent to every logger in ``trainer.loggers`` at
    ``step=trainer.global_step`` and written to ``trainer.callback_metrics`` on every rank (so
    ``EarlyStopping(monitor="diversity/vendi_q1")`` and ``ModelCheckpoint(monitor=...)`` work):

    - ``diversity/vendi_q1``, ``diversity/vendi_q2``, ... Vendi score of all samples, one per order
      of ``vendi_orders`` (``qinf`` for infinity);
    - ``diversity/conditional_vendi_q1``, ... Vendi score within each prompt's samples, averaged
      over prompts (with ``conditional=True``);
    - ``diversity/sce`` and ``diversity/sce_text``: Schur complement entropy of the images given
      the prompts and its text part (with ``sce``);
    - ``diversity/eval_seconds``: wall time of the evaluation on rank 0, logging excluded.

    With a ``WandbLogger`` the same history row also holds ``diversity/samples`` (one uint8 grid
    per prompt, captioned), ``diversity/table`` (prompt, grid, per-prompt Vendi) and, with
    ``log_spectrum``, ``diversity/spectrum`` (the eigenvalues of ``K / n``).

    Args:
        prompts: a list of prompts, or the path of a UTF-8 text file with one prompt per line
            (blank lines skipped).
        samples_per_prompt: samples drawn for each prompt.
        every_n_train_steps: evaluate every this many optimizer steps.
        every_n_epochs: evaluate at the end of every this many training epochs.
        on_validation_end: evaluate at the end of every validation epoch.
        batch_size: samples per call of the generator.
        seed: seed of the evaluation set; sample ``i`` uses :meth:`sample_seed` ``(seed, i)``.
        embedder: an object with ``embed_images(images) -> (B, D)`` taking floats in ``[0, 1]``
            (and, for SCE, ``embed_texts(prompts) -> (P, D)``). ``None``: a
            :class:`~diversity_callbacks.CLIPEmbedder` with its defaults, built at ``setup``. An
            ``nn.Module`` embedder is moved to the module's device.
        image_range: value range of the generator's output: ``"[-1,1]"``, ``"[0,1]"`` or
            ``"uint8"``.
        sample_fn: how to sample; default ``pl_module.generate``.
        vendi_orders: orders q of the Vendi score.
        vendi_kernel: kernel of the Vendi scores: ``"cosine"``, ``"linear"`` or ``"gaussian"``.
        vendi_sigma: bandwidth of the Gaussian kernel.
        vendi_num_features: approximate the Gaussian kernel with this many random Fourier
            frequencies.
        sce: log the Schur complement entropy of the images given their prompts (needs
            ``embed_texts`` and ``samples_per_prompt >= 2``); ``None``: whenever both hold.
        sce_kwargs: keyword arguments of :class:`~diversity_callbacks.SchurComplementEntropy`
            (default kernel ``"cosine"``; ``compute_image_vendi=False`` unless given).
        conditional: log the per-prompt Vendi score averaged over prompts.
        log_images: with a ``WandbLogger``, log sample grids and the per-prompt table.
        log_spectrum: with a ``WandbLogger``, log the eigenvalue spectrum as a plot (needs
            matplotlib).
        max_logged_prompts: log images of at most this many prompts (the first ones).
        thumbnail_size: longest side of a logged sample, in pixels (larger ones are shrunk).
        on_error: ``"raise"``: a failure while sampling or embedding (malformed generator output
            included) raises, naming the step, the samples and their prompts; ``"warn"``: it
            warns, this evaluation is skipped on every rank and training goes on.
        prefix: first part of every logged key.

    Example:
        >>> from diversity_callbacks import DiversityCallback
        >>> callback = DiversityCallback(["a red apple", "a bird"], samples_per_prompt=4,
        ...                              every_n_train_steps=500)
        >>> callback.num_samples  # sample i: prompt i // 4, seed sample_seed(0, i)
        8
        >>> callback.embedder is None  # the default CLIPEmbedder is built at setup
        True

        Then ``L.Trainer(callbacks=[callback]).fit(module)`` with a module that has
        ``generate(prompts, generators)``; ``tests/lightning_helpers.py`` has a tiny one.
    """

    def __init__(
        self,
        prompts: Sequence[str] | str | os.PathLike,
        samples_per_prompt: int = 8,
        *,
        every_n_train_steps: int | None = None,
        every_n_epochs: int | None = None,
        on_validation_end: bool = False,
        batch_size: int = 16,
        seed: int = 0,
        embedder: ImageEmbedder | None = None,
        image_range: ValueRange = "[-1,1]",
        sample_fn: SampleFn | None = None,
        vendi_orders: Order | Sequence[Order] = (1, 2),
        vendi_kernel: str = "cosine",
        vendi_sigma: float | None = None,
        vendi_num_features: int | None = None,
        sce: bool | None = None,
        sce_kwargs: dict[str, Any] | None = None,
        conditional: bool = True,
        log_images: bool = True,
        log_spectrum: bool = False,
        max_logged_prompts: int = 16,
        thumbnail_size: int = 128,
        on_error: Literal["raise", "warn"] = "raise",
        prefix: str = "diversity",
    ) -> None:
        self.prompts = _load_prompts(prompts)
        self._prompts_digest = hashlib.sha1("\n".join(self.prompts).encode()).hexdigest()[:12]
        self.samples_per_prompt = check_positive_int(samples_per_prompt, "samples_per_prompt")
        if every_n_train_steps is not None:
            check_positive_int(every_n_train_steps, "every_n_train_steps")
        if every_n_epochs is not None:
            check_positive_int(every_n_epochs, "every_n_epochs")
        if every_n_train_steps is None and every_n_epochs is None and not on_validation_end:
            every_n_epochs = 1
        self.every_n_train_steps = every_n_train_steps
        self.every_n_epochs = every_n_epochs
        self._at_validation_end = bool(on_validation_end)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"`seed` must be an integer >= 0, got {seed!r}")
        self.seed = seed
        value_range_bounds(image_range)  # raises on an unknown range
        self.image_range = image_range
        if sample_fn is not None and not callable(sample_fn):
            raise TypeError(f"`sample_fn` must be callable, got {type(sample_fn).__name__}")
        self.sample_fn = sample_fn
        self.vendi_orders, _ = parse_orders(vendi_orders)
        self.kernel_kwargs = {
            "kernel": vendi_kernel,
            "sigma": vendi_sigma,
            "num_features": vendi_num_features,
        }
        _check_embedder(embedder, sce)
        self.embedder = embedder
        self.sce = sce
        self.sce_kwargs = dict(sce_kwargs or {})
        self.conditional = bool(conditional)
        self.log_images = bool(log_images)
        self.log_spectrum = bool(log_spectrum)
        self.max_logged_prompts = check_positive_int(max_logged_prompts, "max_logged_prompts")
        self.thumbnail_size = check_positive_int(thumbnail_size, "thumbnail_size")
        if on_error not in ("raise", "warn"):
            raise ValueError(f'`on_error` must be "raise" or "warn", got {on_error!r}')
        self.on_error = on_error
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"`prefix` must be a non-empty string, got {prefix!r}")
        self.prefix = prefix

        self.history: list[dict[str, float]] = []
        """One dict per evaluation: ``step``, ``epoch`` and the logged scalars."""
        self.last_timings: dict[str, float] = {}
        """Seconds spent on this rank in the last evaluation: ``sampling`` (generator and
        output checks), ``embedding``, ``metric`` (state updates, sync, compute, gathering
        images) and ``logging``."""
        self._last_step = -1
        self._step_seen = 0
        # Built here so that bad kernel settings fail at construction; SCE waits for setup when
        # the default embedder decides whether it is on.
        self._vendi = VendiScore(q=self.vendi_orders, **self.kernel_kwargs)
        self._prompt_vendi = (
            PromptVendi(len(self.prompts), q=self.vendi_orders, kernel_kwargs=self.kernel_kwargs)
            if self.conditional
            else None
        )
        self._sce: SchurComplementEntropy | None = None
        if self.embedder is not None:
            self._build_sce()

    # ------------------------------------------------------------------ identity and state

    @property
    def num_samples(self) -> int:
        """Size of the evaluation set: ``len(prompts) * samples_per_prompt``."""
        return len(self.prompts) * self.samples_per_prompt

    @property
    def state_key(self) -> str:
        """Identifies the evaluation set and its keys, so that two instances keep separate
        states in a checkpoint; the cadence is left out, so it may change on resume."""
        return self._generate_state_key(
            prefix=self.prefix,
            prompts=self._prompts_digest,
            samples_per_prompt=self.samples_per_prompt,
            seed=self.seed,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self._last_step, "history": [dict(row) for row in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_step = int(state_dict["last_step"])
        self.history = [dict(row) for row in state_dict["history"]]

    @staticmethod
    def sample_seed(seed: int, index: int) -> int:
        """Seed of sample ``index`` of the evaluation set drawn with ``seed``: a 63-bit hash.

        A hash rather than ``seed + index`` so that sets drawn with nearby seeds share no sample.
        """
        digest = hashlib.blake2b(f"{seed}/{index}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") & (2**63 - 1)

    # ------------------------------------------------------------------ hooks, in call order

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage not in ("fit", "validate"):
            return  # test and predict never evaluate: no embedder to build
        with isolate_rng():  # building a model consumes global random numbers
            if self.embedder is None:
                from diversity_callbacks.embedders.clip import CLIPEmbedder

                self.embedder = CLIPEmbedder()
            if self._sce is None:
                self._build_sce()
        self._to_device(pl_module.device)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._step_seen = trainer.global_step  # after a resume, the checkpoint's step

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        n, step = self.every_n_train_steps, trainer.global_step
        # Crossing a multiple of n rather than landing on one: under gradient accumulation several
        # micro-batches end at one step, and with several optimizers (GANs) global_step moves by
        # more than one per batch.
        crossed = n is not None and step // n > self._step_seen // n
        self._step_seen = step
        if crossed and self._may_evaluate(trainer):
            self.evaluate(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._at_validation_end and self._may_evaluate(trainer):
            self.evaluate(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        n = self.every_n_epochs
        if n is not None and (trainer.current_epoch + 1) % n == 0 and self._may_evaluate(trainer):
            self.evaluate(trainer, pl_module)

    def _may_evaluate(self, trainer: Trainer) -> bool:
        """Not in the sanity check, and not twice at one global step.

        fast_dev_run is not skipped: it is meant to run every code path once.
        """
        return not trainer.sanity_checking and trainer.global_step != self._last_step

    # ------------------------------------------------------------------ one evaluation

    def evaluate(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float] | None:
        """Sample, embed, compute and log now; return the logged scalars (None if it failed).

        Every rank must call it (the metrics sync). The hooks call it on their cadence; call it
        yourself for an extra evaluation, e.g. after ``trainer.fit`` returns.
        """
        if self.embedder is None:
            raise RuntimeError(
                "DiversityCallback.evaluate() needs the default embedder built in setup(): pass "
                "the callback to a Trainer (Trainer(callbacks=[...])) before evaluating"
            )
        self._last_step = trainer.global_step
        start = time.perf_counter()
        try:
            # inference_mode(False): validation runs under inference mode, and metric states
            # made there could not be updated in place later, outside it.
            with torch.inference_mode(False), torch.no_grad():
                draw = self._draw(trainer, pl_module)
            # Every rank learns of a failure on any rank before the collective compute.
            if trainer.strategy.reduce_boolean_decision(draw.error is not None, all=False):
                self._handle_failure(trainer, draw.error)
                return None
            metric_start = time.perf_counter()
            with torch.inference_mode(False), warnings.catch_warnings():
                if draw.num_samples == 0:
                    # A rank that drew nothing still joins the collective compute; its metrics'
                    # "compute before update" warning is expected there.
                    warnings.filterwarnings("ignore", message=r".*was called before the ``update``")
                scalars, per_prompt, spectrum = self._compute()
            thumbnails = self._gather_thumbnails(trainer, draw.thumbnails)
        finally:
            self._reset_metrics()  # the next evaluation starts empty, whatever happened here
        scalars[f"{self.prefix}/eval_seconds"] = time.perf_counter() - start
        log_start = time.perf_counter()
        self._publish(trainer, scalars, per_prompt, spectrum, thumbnails)
        self.last_timings = {
            **draw.seconds,
            "metric": draw.seconds["metric"] + log_start - metric_start,
            "logging": time.perf_counter() - log_start,
        }
        return scalars

    def _draw(self, trainer: Trainer, pl_module: LightningModule) -> _Draw:
        """Sample and embed this rank's share; a failure is caught and returned, not raised."""
        draw = _Draw()
        indices = self._shard(trainer.global_rank, trainer.world_size)
        draw.num_samples = len(indices)
        batches = [
            indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)
        ]
        want_thumbnails = self.log_images and _has_wandb(trainer)
        progress = tqdm(
            batches,
            desc=f"{self.prefix}: sampling",
            leave=False,
            dynamic_ncols=True,
            disable=not (trainer.is_global_zero and _progress_bar_enabled(trainer)),
        )
        with isolate_rng(), _eval_mode(pl_module):
            for batch in progress:
                prompts = [self.prompts[i // self.samples_per_prompt] for i in batch]
                try:
                    images = self._sample(trainer, pl_module, batch, prompts, draw)
                    self._embed(images, batch, prompts, pl_module.device, draw)
                except Exception as error:
                    draw.error = _EvaluationError(
                        f"{type(self).__name__} failed at global step {trainer.global_step} on "
                        f"samples {batch[0]}..{batch[-1]} (prompts {_quote(prompts)}): {error}"
                    )
                    draw.error.__cause__ = error
                    break
                if want_thumbnails:
                    draw.thumbnails.update(self._thumbnails(images, batch))
        progress.close()
        return draw

    def _shard(self, rank: int, world_size: int) -> list[int]:
        """This rank's contiguous share of the sample indices; no padding, possibly empty."""
        return list(
            range(
                rank * self.num_samples // world_size, (rank + 1) * self.num_samples // world_size
            )
        )

    def _sample(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: list[int],
        prompts: list[str],
        draw: _Draw,
    ) -> Tensor:
        """Draw one batch and return it validated, as floats in [0, 1]."""
        start = time.perf_counter()
        device = pl_module.device
        generators = [
            torch.Generator(device=device).manual_seed(self.sample_seed(self.seed, i))
            for i in batch
        ]
        with trainer.precision_plugin.forward_context():
            if self.sample_fn is not None:
                images = self.sample_fn(pl_module, prompts, generators)
            else:
                images = _default_generate(pl_module)(prompts, generators)
        source = (
            "sample_fn" if self.sample_fn is not None else f"{type(pl_module).__name__}.generate"
        )
        if isinstance(images, Tensor) and images.ndim >= 1 and images.shape[0] != len(batch):
            raise ValueError(
                f"{source} must return one image per prompt, {len(batch)} in all, got a batch of "
                f"{images.shape[0]} (shape {tuple(images.shape)})"
            )
        unit = to_unit_range(images, self.image_range, name=f"the images returned by {source}")
        _synchronize(device)
        draw.seconds["sampling"] += time.perf_counter() - start
        return unit

    def _embed(
        self,
        images: Tensor,
        batch: list[int],
        prompts: list[str],
        device: torch.device,
        draw: _Draw,
    ) -> None:
        """Embed one batch (and its prompts, for SCE) and update the metric states."""
        start = time.perf_counter()
        features = self.embedder.embed_images(images)
        if self._sce is not None:
            unique = list(dict.fromkeys(prompts))
            text = self.embedder.embed_texts(unique)
            text = text[torch.tensor([unique.index(p) for p in prompts], device=text.device)]
        _synchronize(device)
        updated = time.perf_counter()
        draw.seconds["embedding"] += updated - start
        self._vendi.update(features)
        if self._prompt_vendi is not None:
            prompt_ids = torch.tensor([i // self.samples_per_prompt for i in batch], device=device)
            self._prompt_vendi.update(features, prompt_ids)
        if self._sce is not None:
            self._sce.update(features, text)
        _synchronize(device)
        draw.seconds["metric"] += time.perf_counter() - updated

    def _compute(self) -> tuple[dict[str, float], Tensor | None, Tensor | None]:
        """Collective: every rank computes every metric; returns scalars, per-prompt, spectrum."""
        scalars: dict[str, float] = {}
        vendi = self._vendi.compute()
        for q in self.vendi_orders:
            scalars[f"{self.prefix}/vendi_{order_key(q)}"] = float(vendi[order_key(q)])
        per_prompt = None
        if self._prompt_vendi is not None:
            # torchmetrics squeezes a one-element result: one prompt and one order give a scalar
            per_prompt = self._prompt_vendi.compute().reshape(len(self.prompts), -1)
            means = per_prompt.nanmean(dim=0)
            for column, key in enumerate(self._prompt_vendi.keys):
                scalars[f"{self.prefix}/conditional_vendi_{key}"] = float(means[column])
        if self._sce is not None:
            sce = self._sce.compute()
            scalars[f"{self.prefix}/sce"] = float(sce["sce"])
            scalars[f"{self.prefix}/sce_text"] = float(sce["text_part"])
        spectrum = self._vendi.spectrum() if self.log_spectrum else None
        return scalars, per_prompt, spectrum

    def _publish(
        self,
        trainer: Trainer,
        scalars: dict[str, float],
        per_prompt: Tensor | None,
        spectrum: Tensor | None,
        thumbnails: dict[int, Tensor],
    ) -> None:
        """Write callback_metrics on every rank, the history, and the loggers on rank 0."""
        step = trainer.global_step
        trainer.callback_metrics.update(
            {key: torch.tensor(value, dtype=torch.float64) for key, value in scalars.items()}
        )
        self.history.append({"step": step, "epoch": trainer.current_epoch, **scalars})
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            metrics: dict[str, Any] = dict(scalars)
            if isinstance(logger, WandbLogger):
                from diversity_callbacks._wandb import wandb_media

                metrics.update(
                    wandb_media(
                        prefix=self.prefix,
                        prompts=self.prompts,
                        samples_per_prompt=self.samples_per_prompt,
                        thumbnails=thumbnails,
                        per_prompt=per_prompt,
                        per_prompt_keys=self._prompt_vendi.keys if per_prompt is not None else [],
                        spectrum=spectrum,
                    )
                )
            # WandbLogger.log_metrics puts media and scalars in one history row at
            # trainer/global_step, as its own log_image does.
            logger.log_metrics(metrics, step=step)
            logger.save()

    # ------------------------------------------------------------------ helpers

    def _build_sce(self) -> None:
        """Decide whether SCE is on, now that the embedder is known, and build its metric."""
        if self.sce is None:
            # With one sample per prompt the prompts explain every image: SCE is undefined.
            self.sce = _embeds_texts(self.embedder) and self.samples_per_prompt > 1
        if self.sce and self.samples_per_prompt == 1:
            raise ValueError(
                "`sce=True` needs `samples_per_prompt` >= 2: with one sample per prompt the "
                "prompts explain every image and the Schur complement is empty; got 1"
            )
        if self.sce:
            _check_embedder(self.embedder, self.sce)
            # The images' own Vendi score is logged from VendiScore already.
            options = {"compute_image_vendi": False, **self.sce_kwargs}
            self._sce = SchurComplementEntropy(**options)

    def _metrics(self) -> list[Any]:
        return [m for m in (self._vendi, self._prompt_vendi, self._sce) if m is not None]

    def _to_device(self, device: torch.device) -> None:
        for metric in self._metrics():
            metric.to(device)
        if isinstance(self.embedder, torch.nn.Module):
            self.embedder.to(device)

    def _reset_metrics(self) -> None:
        for metric in self._metrics():
            metric.reset()

    def _thumbnails(self, images: Tensor, batch: list[int]) -> dict[int, Tensor]:
        """uint8 CPU copies, longest side at most thumbnail_size, of the samples to be logged."""
        keep = [
            j for j, i in enumerate(batch) if i // self.samples_per_prompt < self.max_logged_prompts
        ]
        if not keep:
            return {}
        images = images[keep]
        longest = max(images.shape[-2:])
        if longest > self.thumbnail_size:
            size = [max(1, round(s * self.thumbnail_size / longest)) for s in images.shape[-2:]]
            images = torch.nn.functional.interpolate(
                images.float(), size=size, mode="bilinear", antialias=True, align_corners=False
            ).clamp_(0, 1)
        pixels = to_uint8(images).cpu()
        return {batch[j]: pixels[n] for n, j in enumerate(keep)}

    def _gather_thumbnails(self, trainer: Trainer, local: dict[int, Tensor]) -> dict[int, Tensor]:
        """All ranks' thumbnails on rank 0 (a collective when logging images to W&B)."""
        if trainer.world_size == 1 or not (self.log_images and _has_wandb(trainer)):
            return local
        gathered: list[Any] | None = [None] * trainer.world_size if trainer.is_global_zero else None
        dist.gather_object(local, gathered, dst=0)
        merged: dict[int, Tensor] = {}
        for part in gathered or []:
            merged.update(part)
        return merged

    def _handle_failure(self, trainer: Trainer, error: BaseException | None) -> None:
        if self.on_error == "raise":
            if error is not None:
                raise error
            raise _EvaluationError(
                f"{type(self).__name__} failed on another rank at global step "
                f"{trainer.global_step}; that rank's error says why"
            )
        if error is not None:
            warnings.warn(
                f"{error}; skipping this evaluation (on_error='warn')", RuntimeWarning, stacklevel=2
            )


class _EvaluationError(RuntimeError):
    """Sampling or embedding failed during a diversity evaluation."""


def _load_prompts(prompts: Sequence[str] | str | os.PathLike) -> list[str]:
    if isinstance(prompts, (str, os.PathLike)):
        path = os.fspath(prompts)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"`prompts` must be a list of strings or the path of a text file with one prompt "
                f"per line; no file at {path!r}"
            )
        with open(path, encoding="utf-8") as handle:
            loaded = [line.strip() for line in handle if line.strip()]
        if not loaded:
            raise ValueError(f"`prompts` file {path!r} holds no prompt (it is empty or blank)")
        return loaded
    loaded = list(prompts)
    if not loaded:
        raise ValueError("`prompts` must hold at least one prompt, got an empty sequence")
    bad = [p for p in loaded if not isinstance(p, str)]
    if bad:
        raise TypeError(f"`prompts` must hold strings, got {type(bad[0]).__name__} {bad[0]!r}")
    return loaded


def _check_embedder(embedder: Any, sce: bool | None) -> None:
    if embedder is None:
        return
    if not callable(getattr(embedder, "embed_images", None)):
        raise TypeError(
            "`embedder` must have a method embed_images(images) -> (B, D) features, got "
            f"{type(embedder).__name__}"
        )
    if getattr(embedder, "value_range", "[0,1]") != "[0,1]":
        raise ValueError(
            "`embedder` must take images in [0, 1] (the callback converts the generator's output "
            "as `image_range` says), got an embedder built with "
            f"value_range={embedder.value_range!r}"
        )
    if sce and not _embeds_texts(embedder):
        raise ValueError(
            "`sce=True` needs an embedder with embed_texts(prompts) -> (P, D), got "
            f"{type(embedder).__name__} without it"
        )


def _embeds_texts(embedder: Any) -> bool:
    """Whether the embedder can embed prompts (a FunctionEmbedder only with a text_fn)."""
    from diversity_callbacks.embedders.base import FunctionEmbedder

    if isinstance(embedder, FunctionEmbedder):
        return embedder.text_fn is not None
    return callable(getattr(embedder, "embed_texts", None))


def _default_generate(pl_module: LightningModule) -> Callable[..., Tensor]:
    generate = getattr(pl_module, "generate", None)
    if not callable(generate):
        raise AttributeError(
            f"{type(pl_module).__name__} has no generate(prompts, generators) method: add one "
            "or pass DiversityCallback(sample_fn=...)"
        )
    return generate


@contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode; restore each one's own mode on exit, also on error."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for submodule, training in modes:
            submodule.training = training


def _has_wandb(trainer: Trainer) -> bool:
    return any(isinstance(logger, WandbLogger) for logger in trainer.loggers)


def _progress_bar_enabled(trainer: Trainer) -> bool:
    bar = trainer.progress_bar_callback
    return bar is not None and bar.is_enabled


def _synchronize(device: torch.device) -> None:
    """Wait for the device, so that stage timings are not shifted by asynchronous kernels."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _quote(prompts: list[str], limit: int = 3) -> str:
    unique = list(dict.fromkeys(prompts))
    shown = ", ".join(repr(p) for p in unique[:limit])
    return shown + (f" and {len(unique) - limit} more" if len(unique) > limit else "")


__all__ = ["DiversityCallback", "SampleFn"]
