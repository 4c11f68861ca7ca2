"""A generator as a source of batches: the sampling contract and the plan's batches.

**Sampling contract** (:data:`SampleFn`). For each batch of at most ``batch_size`` samples the
evaluator calls ``sample_fn(conditions, generators)``, where ``generators`` is a list of
``torch.Generator`` on the evaluation's device, one per sample, seeded for that sample alone
(draw each sample's noise from its own generator and the sample is the same at every evaluation
and world size), and ``conditions`` is a ``list[str]`` of prompts, a ``(B,)`` long tensor of
class labels on the device, or ``None`` for an unconditional generator (``B = len(generators)``).
It returns ``B`` samples: a ``(B, 3, H, W)`` tensor in ``value_range`` for images, a sequence of
``B`` items otherwise.

:func:`sampled_source` turns a plan and a ``sample_fn`` into the
:class:`~diversity_callbacks.evaluation.pipeline.BatchSource` that
:func:`~diversity_callbacks.evaluation.pipeline.run_evaluation` reads: in eval mode, with the
global RNG isolated, inside the precision context, each rank making as many generator calls as
the others (:mod:`~diversity_callbacks.evaluation.sharding`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from lightning.pytorch.utilities.seed import isolate_rng
from torch import Tensor

from diversity_callbacks.evaluation.conditions import Conditions, SamplingPlan
from diversity_callbacks.evaluation.errors import EvaluationError
from diversity_callbacks.evaluation.pipeline import BatchSource
from diversity_callbacks.evaluation.sharding import LockStep, lockstep_calls, pad_call
from diversity_callbacks.utilities import distributed

SampleFn = Callable[[Conditions, list[torch.Generator]], Any]
"""``sample_fn(conditions, generators) -> samples``: the one sampling contract (module docstring).

Training loops that hand the sampler their module (:class:`~diversity_callbacks.DiversityCallback`,
:class:`~diversity_callbacks.DiversityTrainerCallback`) make one with
:func:`~diversity_callbacks.samplers.contract.bind_module`."""


class PlanBatches:
    """This rank's share of ``plan``, drawn by ``sample_fn``: iterating calls the generator.

    Every rank makes as many calls as the rank with the most batches (a throw-away call pads
    a shorter share, never yielded), each agreed with the others (:class:`LockStep`).
    """

    def __init__(
        self,
        plan: SamplingPlan,
        sample_fn: SampleFn,
        batch_size: int,
        device: torch.device,
        module: torch.nn.Module | None,
        precision_context: Callable[[], AbstractContextManager] | None,
    ) -> None:
        rank, world_size = distributed.rank_and_world_size()
        self.plan, self.sample_fn, self.device, self.module = plan, sample_fn, device, module
        self.batches = plan.batches(rank, world_size, batch_size)
        self.calls = lockstep_calls(module, plan, batch_size)
        self.lockstep = LockStep(device)
        self.precision_context = precision_context or nullcontext

    def __iter__(self) -> Iterator[tuple[Any, Tensor]]:
        plan, device = self.plan, self.device
        for index in range(self.calls):
            if index < len(self.batches):
                batch = self.batches[index]
                generators = plan.generators(batch, device)
                conditions = plan.conditions_for(batch, device)
                with self.precision_context():
                    samples = self.lockstep.call(self.sample_fn, conditions, generators)
                yield samples, plan.condition_ids(batch, device)
            else:  # this rank has one batch fewer: keep its calls in step
                with self.precision_context():
                    self.lockstep.call(pad_call, self.sample_fn, plan, device)

    @contextmanager
    def sampling(self) -> Iterator[None]:
        """Around the whole draw: the global RNG isolated, the module in eval mode, its
        forwards watched for the ranks' agreement."""
        with isolate_rng(), eval_mode(self.module), self.lockstep.watching():
            yield

    def name_failure(self, index: int, seen: int, error: Exception) -> EvaluationError:
        """The error of call ``index``: its samples and conditions (see :func:`call_error`)."""
        return call_error(self.plan, self.batches, index, error)


def sampled_source(
    plan: SamplingPlan,
    sample_fn: SampleFn,
    *,
    batch_size: int,
    device: torch.device,
    module: torch.nn.Module | None = None,
    precision_context: Callable[[], AbstractContextManager] | None = None,
    description: str = "sampling",
    thumbnails: Callable[[Tensor, range], dict[int, Tensor]] | None = None,
) -> BatchSource:
    """This rank's share of ``plan``, drawn by ``sample_fn`` batch by batch (:class:`PlanBatches`),
    as the pipeline's source.

    Args:
        plan: the samples to draw.
        sample_fn: the generator (:data:`SampleFn`).
        batch_size: samples per call.
        device: where the generators and the condition labels live.
        module: put in eval mode while sampling; a sharded one keeps every rank in step.
        precision_context: a context manager factory entered around each call.
        description: the progress bar's label.
        thumbnails: picks the thumbnails to keep from each checked batch.
    """
    batches = PlanBatches(plan, sample_fn, batch_size, device, module, precision_context)
    return BatchSource(
        batches,
        description=description,
        total=len(batches.batches),
        stage="sampling or embedding",
        first_index=batches.batches[0].start if batches.batches else 0,
        generated=True,
        context=batches.sampling,
        name_failure=batches.name_failure,
        failed_elsewhere=lambda: batches.lockstep.agreed_failure,
        thumbnails=thumbnails,
    )


def call_error(
    plan: SamplingPlan, batches: list[range], index: int, error: Exception
) -> EvaluationError:
    """The error of a failed generator call (or of its batch's embedding): its batch's samples
    and conditions, or the throw-away call that kept this rank in step."""
    if index < len(batches):
        batch = batches[index]
        where = f"samples {batch[0]}..{batch[-1]} ({plan.describe(batch)})"
    else:
        where = "a throw-away generator call that keeps this rank in step with the others"
    wrapped = EvaluationError(f"{where}: {error}")
    wrapped.__cause__ = error
    return wrapped


def device_of(module: torch.nn.Module | None) -> torch.device:
    """Where ``module`` lives: its ``device`` (a LightningModule's), its first parameter's, or
    the CPU."""
    if module is None:
        return torch.device("cpu")
    device = getattr(module, "device", None)  # a LightningModule knows its device
    if isinstance(device, torch.device):
        return device
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@contextmanager
def eval_mode(module: torch.nn.Module | None) -> Iterator[None]:
    """Put every submodule in eval mode; restore each one's own mode on exit, also on error."""
    if module is None:
        yield
        return
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for submodule, training in modes:
            submodule.training = training
