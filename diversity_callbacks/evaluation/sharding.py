"""Sampling a generator whose parameters are sharded across ranks (FSDP, FSDP2 ``fully_shard``).

A sharded module all-gathers its parameters in every forward, a collective: every rank must run
the same forwards. The evaluation set is split without padding, so ranks may draw different
numbers of batches (a rank may draw none), and a rank that stopped early would leave the others
waiting forever. Under ``torch.distributed`` each rank therefore makes as many generator calls as
the rank with the most batches, padding its share with a throw-away call (one sample, never
checked, embedded or counted), whether or not the ``module`` given is sharded (without one the
evaluator cannot tell), and :class:`LockStep` agrees once per call whether a rank failed. The
values are those of an unsharded run; the cost is at most one one-sample call and one tiny
collective per call, and no extra memory (gathering the full parameters for the evaluation would
need the whole model on every rank).

DeepSpeed ZeRO-3 and tensor parallelism without FSDP are refused with a clear error: their
forwards are collectives too, but they are not tested here.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.nn.modules.module import register_module_forward_pre_hook

from diversity_callbacks.evaluation.conditions import EvaluationSet
from diversity_callbacks.utilities import distributed


def sharding_of(module: torch.nn.Module | None) -> str | None:
    """How ``module``'s parameters are sharded: ``"FSDP"``, ``"FSDP2"``, ... or None."""
    if module is None:
        return None
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    kinds = set()
    for submodule in module.modules():
        if isinstance(submodule, FSDPModule):
            kinds.add("FSDP2")
        elif isinstance(submodule, FullyShardedDataParallel):
            kinds.add("FSDP")
    if kinds:
        return " + ".join(sorted(kinds))
    parameters = list(module.parameters())
    if any(hasattr(p, "ds_id") for p in parameters):
        return "DeepSpeed ZeRO-3"
    if any(type(p.data).__name__ == "DTensor" for p in parameters):
        return "tensor parallelism (DTensor parameters)"
    return None


def lockstep_calls(
    module: torch.nn.Module | None, evaluation_set: EvaluationSet, batch_size: int
) -> int:
    """Generator calls every rank makes under ``torch.distributed``: the most batches of any
    rank (at most one more than this rank's); this rank's batches when there is one rank.

    Raises:
        NotImplementedError: for sharded setups other than FSDP, naming them and what to do.
    """
    rank, world_size = distributed.rank_and_world_size()
    kind = sharding_of(module)
    if kind is not None and not kind.startswith("FSDP") and world_size > 1:
        raise NotImplementedError(
            f"sampling a module sharded by {kind} is not supported: its forwards are collectives "
            "that every rank must join, which only FSDP and FSDP2 (fully_shard) are tested for. "
            "Evaluate an unsharded copy instead (an EMA model, the consolidated weights, a "
            "LoRA-merged copy) through `sample_fn`, or shard the model with FSDP"
        )
    ranks = range(world_size) if world_size > 1 else [rank]
    return max(len(evaluation_set.batches(r, world_size, batch_size)) for r in ranks)


class Stopped(BaseException):
    """Raised in a forward of this rank once the ranks agreed that one of them failed.

    A BaseException, so that a ``sample_fn`` catching ``Exception`` does not swallow it and go
    on into forwards that no other rank joins.
    """


class LockStep:
    """One agreement per generator call: whether some rank failed, before any sharded forward.

    Every rank makes the same number of calls (:func:`lockstep_calls`) and, in each call, one
    collective (``any_rank``): at the first forward of a module whose forwards are collectives
    (FSDP, FSDP2, DDP), seen by a global forward pre-hook, or after the call when it made none.
    A rank whose call failed stops and makes its next collective ``any_rank(True)``; the other
    ranks meet it there, in the pre-hook of their next forward or after their next call, and
    stop too (:class:`Stopped`) instead of waiting in a forward that the failed rank never
    joins. Without a process group it makes no collective.

    Not covered: a call that fails between two forwards of its own (step 25 of a 50-step
    sampling loop) leaves the others in their next forward until the process group's timeout.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.distributed = distributed.rank_and_world_size()[1] > 1
        self.agreed_failure = False  # an any_rank(...) already returned True on every rank
        self._checked = True  # this call's collective is made
        self._thread = threading.get_ident()

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Watch every module forward of this thread while sampling (only under a group)."""
        if not self.distributed:
            yield
            return
        handle = register_module_forward_pre_hook(self._before_forward)
        try:
            yield
        finally:
            handle.remove()

    def call(self, sample_fn: Callable[..., Any], *args: Any) -> Any:
        """``sample_fn(*args)`` with this call's agreement made in it or right after it.

        Raises:
            Stopped: when the ranks agreed that one of them failed.
        """
        self._checked = False
        try:
            result = sample_fn(*args)
        finally:
            checked, self._checked = self._checked, True
        if not checked:
            self._agree(failed=False)
        return result

    def _before_forward(self, module: torch.nn.Module, _: Any) -> None:
        if self._checked or threading.get_ident() != self._thread:
            return
        if isinstance(module, _collective_modules()):
            self._checked = True
            self._agree(failed=False)

    def _agree(self, failed: bool) -> None:
        if distributed.any_rank(failed, self.device):
            self.agreed_failure = True
            raise Stopped


@functools.cache
def _collective_modules() -> tuple[type, ...]:
    """Module classes whose forward may be a collective (imported once, when first needed)."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    from torch.nn.parallel import DistributedDataParallel

    return (FSDPModule, FullyShardedDataParallel, DistributedDataParallel)


def pad_call(
    sample_fn: Callable[..., Any], evaluation_set: EvaluationSet, device: torch.device
) -> None:
    """A throw-away generator call of one sample (sample 0's condition and seed), never checked,
    embedded or counted: it keeps a rank with fewer batches in step with the others."""
    sample_fn(evaluation_set.conditions_for([0], device), evaluation_set.generators([0], device))
