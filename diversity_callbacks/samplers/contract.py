"""What every sampler checks and how it is called: shared by the adapters in this package.

A sampler is a :data:`~diversity_callbacks.evaluation.sampling.SampleFn`,
``sampler(prompts, generators)``. A training loop that evaluates its own module (the Lightning
and Hugging Face callbacks) calls :func:`bind_module` once per evaluation: a sampler that reads
the module (``DiffusersSampler("pipeline")``, ``TransformersSampler(None, ...)``) has
``bind(module) -> SampleFn``; a plain function is the loops' ``sample_fn(module, conditions,
generators)``.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch

from diversity_callbacks.evaluation.sampling import SampleFn


def bind_module(sample_fn: Any, module: torch.nn.Module) -> SampleFn:
    """The :data:`SampleFn` a training loop calls for ``module``: ``sample_fn.bind(module)``
    for a sampler that has it, else ``sample_fn(module, conditions, generators)``.

    Example:
        >>> def sample(module, conditions, generators):
        ...     return [module(c) for c in conditions]
        >>> bind_module(sample, str.upper)(["a", "b"], [None, None])
        ['A', 'B']
    """
    bind = getattr(sample_fn, "bind", None)
    if callable(bind):
        return bind(module)
    return functools.partial(sample_fn, module)


def split_call(name: str, args: tuple[Any, ...]) -> tuple[Any, Any, Any]:
    """``(module, prompts, generators)`` from ``sampler(prompts, generators)`` (``module``
    None), or from the deprecated ``sampler(module, prompts, generators)``, which warns: use
    ``sampler.bind(module)(prompts, generators)``."""
    if len(args) == 3:
        warnings.warn(
            f"{name}(module, prompts, generators) is deprecated: call "
            f"{name}.bind(module)(prompts, generators) (the callbacks bind it for you)",
            FutureWarning,
            stacklevel=3,
        )
        return args[0], args[1], args[2]
    if len(args) == 2:
        return None, args[0], args[1]
    raise TypeError(
        f"{name} takes (prompts, generators) (use {name}.bind(module) for a module's own "
        f"model or pipeline), got {len(args)} arguments"
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
