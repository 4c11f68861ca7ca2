"""The few collectives an evaluation needs, through ``torch.distributed`` when it is initialised.

Lightning's DDP strategies, ``torchrun`` and a hand-made process group all initialise the default
group, so the evaluator works the same under each, and alone when there is none.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def rank_and_world_size() -> tuple[int, int]:
    """This process's rank and the number of ranks; ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` holds on at least one rank (a collective)."""
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return flag
    packed = torch.tensor([int(flag)], device=_collective_device(device))
    dist.all_reduce(packed, op=dist.ReduceOp.MAX)
    return bool(packed.item())


def all_reduce_sum(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` summed over every rank, on ``tensor``'s device (a collective)."""
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return tensor
    packed = tensor.to(_collective_device(device), copy=True)
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    return packed.to(tensor.device)


def all_gather_objects(item: Any) -> list[Any]:
    """Every rank's ``item``, in rank order (a collective)."""
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return [item]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, item)
    return gathered


def gather_to_rank_zero(item: dict[Any, Any]) -> dict[Any, Any]:
    """The union of every rank's dict on rank 0, this rank's own dict elsewhere (a collective)."""
    rank, world_size = rank_and_world_size()
    if world_size == 1:
        return item
    gathered: list[Any] | None = [None] * world_size if rank == 0 else None
    dist.gather_object(item, gathered, dst=0)
    merged: dict[Any, Any] = {}
    for part in gathered or [item]:
        merged.update(part)
    return merged


def first_difference(settings: dict[str, str]) -> tuple[int, list[str]] | None:
    """Collective: the first rank whose ``settings`` differ from rank 0's, and how
    (``"name X on rank 0, Y on rank 2"``); None when every rank's are the same."""
    ranks = all_gather_objects(settings)
    for rank, theirs in enumerate(ranks):
        differing = [
            f"{name} {ranks[0].get(name)} on rank 0, {theirs.get(name)} on rank {rank}"
            for name in {**ranks[0], **theirs}
            if ranks[0].get(name) != theirs.get(name)
        ]
        if differing:
            return rank, differing
    return None


def _collective_device(device: torch.device) -> torch.device:
    """NCCL reduces CUDA tensors only; gloo takes CPU ones."""
    if dist.get_backend() == "nccl":
        return (
            device if device.type == "cuda" else torch.device("cuda", torch.cuda.current_device())
        )
    return torch.device("cpu")
