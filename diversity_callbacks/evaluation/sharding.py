"""Sampling a generator whose parameters are sharded across ranks (FSDP, FSDP2 ``fully_shard``).

A sharded module all-gathers its parameters in every forward, a collective: every rank must run
the same forwards. The evaluation set is split without padding, so ranks may draw different
numbers of batches (a rank may draw none), and a rank that stopped early would leave the others
waiting forever. Under sharding each rank therefore makes as many generator calls as the rank
with the most batches, padding its share with throw-away calls (one sample, never checked,
embedded or counted). The values are those of an unsharded run; the cost is at most one
batch's sampling time per evaluation on the ranks with fewer samples, and no extra memory
(gathering the full parameters for the evaluation would need the whole model on every rank).

DeepSpeed ZeRO-3 and tensor parallelism without FSDP are refused with a clear error: their
forwards are collectives too, but they are not tested here.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch

from diversity_callbacks.evaluation import _distributed
from diversity_callbacks.evaluation.conditions import EvaluationSet
from diversity_callbacks.evaluation.errors import EvaluationError


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
    """Generator calls every rank must make under sharding (the most batches of any rank);
    0 when the module is not sharded or there is one rank.

    Raises:
        NotImplementedError: for sharded setups other than FSDP, naming them and what to do.
    """
    _, world_size = _distributed.rank_and_world_size()
    kind = sharding_of(module)
    if kind is None or world_size == 1:
        return 0
    if not kind.startswith("FSDP"):
        raise NotImplementedError(
            f"sampling a module sharded by {kind} is not supported: its forwards are collectives "
            "that every rank must join, which only FSDP and FSDP2 (fully_shard) are tested for. "
            "Evaluate an unsharded copy instead (an EMA model, the consolidated weights, a "
            "LoRA-merged copy) through `sample_fn`, or shard the model with FSDP"
        )
    return max(
        len(evaluation_set.batches(rank, world_size, batch_size)) for rank in range(world_size)
    )


def pad_calls(
    sample_fn: Callable[..., Any],
    evaluation_set: EvaluationSet,
    device: torch.device,
    context: Callable[[], AbstractContextManager],
    count: int,
) -> EvaluationError | None:
    """Make ``count`` throw-away generator calls of one sample (sample 0's condition and seed)
    so that this rank joins every forward of the others; return the first failure, if any.

    The calls also run after this rank's own batch failed, so that the other ranks are not left
    waiting in a forward; the caller reports that first failure instead.
    """
    error = None
    conditions, generators = (
        evaluation_set.conditions_for([0], device),
        evaluation_set.generators([0], device),
    )
    for _ in range(count):
        try:
            with context():
                sample_fn(conditions, generators)
        except Exception as exc:  # reported by the caller once every rank is past the forwards
            error = error or EvaluationError(
                "a throw-away generator call that keeps this rank in step with the other ranks "
                f"of the sharded model failed: {exc}"
            )
    return error
