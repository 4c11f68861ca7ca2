"""What every sampler checks and how it is called: shared by the adapters in this package."""

from __future__ import annotations

from typing import Any

import torch


def split_call(name: str, args: tuple[Any, ...]) -> tuple[Any, Any, Any]:
    """``(module, prompts, generators)`` from ``sampler(prompts, generators)`` (the evaluator's
    contract, ``module`` None) or ``sampler(pl_module, prompts, generators)`` (the callback's)."""
    if len(args) == 3:
        return args[0], args[1], args[2]
    if len(args) == 2:
        return None, args[0], args[1]
    raise TypeError(
        f"{name} takes (prompts, generators) or (pl_module, prompts, generators), "
        f"got {len(args)} arguments"
    )


def check_batch(prompts: Any, generators: Any, name: str, draws: str) -> None:
    """Refuse what a library would take and get wrong, or fail on deep inside: not a list of
    prompts, no prompt, one generator for all samples, or a generator count that differs.

    Args:
        prompts: the conditions the evaluator passed.
        generators: the generators it passed.
        name: the sampler's class name, for the messages.
        draws: what the sampler draws ("text-to-image pipelines", "language models").
    """
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
        raise TypeError(
            f"{name} draws {draws}: the conditions must be a list of prompts (give the callback "
            f"`prompts=`), got {type(prompts).__name__}"
        )
    if not prompts:
        raise ValueError("`prompts` must hold at least one prompt, got an empty list")
    if not isinstance(generators, (list, tuple)) or not all(
        isinstance(g, torch.Generator) for g in generators
    ):
        got = type(generators).__name__
        if isinstance(generators, (list, tuple)):
            got = f"a list holding {sorted({type(g).__name__ for g in generators})}"
        raise TypeError(
            "`generators` must be a list of torch.Generator, one per prompt (a single generator "
            f"would make every sample share one noise stream), got {got}"
        )
    if len(generators) != len(prompts):
        raise ValueError(
            f"`generators` must hold one generator per prompt, {len(prompts)} in all, got "
            f"{len(generators)}"
        )
