"""``DiffusersSampler``: sample any Hugging Face ``diffusers`` text-to-image pipeline.

The glue every user would otherwise rediscover: one ``torch.Generator`` per sample passed as a
list (a single generator is accepted by the pipelines without a word and makes every sample share
one noise stream), ``output_type="pt"`` (images in ``[0, 1]``, declared as ``value_range``), the
pipeline's own progress bar switched off during the call (the user's setting put back after),
options checked against the pipeline's call (its ``**kwargs`` would swallow a typo), its
components on the evaluation's device, and, when the pipeline is named as an attribute of the
LightningModule, the module's current weights (trained UNet or transformer, active LoRA adapters)
being the ones sampled.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import numbers
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from diversity_callbacks.evaluation.sampling import SampleFn
from diversity_callbacks.samplers.contract import check_batch, split_call
from diversity_callbacks.utilities.checks import check_positive_int

_INSTALL = 'pip install "diversity-callbacks[diffusers]"'
# Set by the sampler itself; passing them in `call_kwargs` would break the contract.
_RESERVED = ("prompt", "generator", "output_type", "num_images_per_prompt", "return_dict")


class DiffusersSampler:
    """Draw images from a ``diffusers`` pipeline as the sampling contract asks.

    Works with any pipeline with the standard ``pipe(prompt=..., generator=..., output_type=...)``
    call (Stable Diffusion 1.x/2.x, SDXL, SD3, PixArt, Flux, ...). Use it as
    ``DiversityCallback(prompts, sample_fn=DiffusersSampler("pipeline"))``: the callback reads
    :attr:`value_range`, so no ``value_range`` is needed. With a :class:`DiversityEvaluator
    <diversity_callbacks.DiversityEvaluator>`, pass it as ``sample_fn`` and
    ``value_range=sampler.value_range``.

    Each call passes ``generator=<one torch.Generator per sample>`` and
    ``output_type="pt"``, moves pipeline components that are not on the generators' device there
    (Lightning already moved those registered in the module; dtypes are left alone, the trainer's
    autocast applies) and returns the ``(B, 3, H, W)`` float images in ``[0, 1]``.

    Args:
        pipeline: a pipeline, or the name of the LightningModule attribute that holds one (read at
            every call, so the module's trained UNet/transformer and LoRA adapters are sampled).
        num_inference_steps: denoising steps per sample.
        guidance_scale: classifier-free guidance scale; ``None``: the pipeline's default.
        height: image height in pixels; ``None``: the pipeline's default.
        width: image width in pixels; ``None``: the pipeline's default.
        negative_prompt: one negative prompt for every sample.
        call_kwargs: further keyword arguments of the pipeline call (e.g. ``eta``,
            ``guidance_rescale``, ``max_sequence_length``).

    Raises:
        ImportError: if diffusers is not installed.
        TypeError: for a pipeline whose call cannot take prompts, a list of generators or
            ``output_type``, or an option that is not a named argument of its call (the
            pipelines' ``**kwargs`` would swallow a misspelt one).
        ValueError: for an invalid option or a ``call_kwargs`` key the sampler sets itself.

    Examples:
        >>> sampler = DiffusersSampler("pipeline", num_inference_steps=20, guidance_scale=7.5)
        >>> sampler.value_range
        '[0,1]'
    """

    value_range = "[0,1]"
    """What the pipeline returns with ``output_type="pt"``; read by ``DiversityCallback``."""

    def __init__(
        self,
        pipeline: Any,
        *,
        num_inference_steps: int = 25,
        guidance_scale: float | None = None,
        height: int | None = None,
        width: int | None = None,
        negative_prompt: str | None = None,
        **call_kwargs: Any,
    ) -> None:
        _require_diffusers()
        if isinstance(pipeline, str) and not pipeline.isidentifier():
            raise ValueError(
                f"`pipeline` must be a pipeline or the name of an attribute, got {pipeline!r}"
            )
        self.call_kwargs = _call_options(
            num_inference_steps, guidance_scale, height, width, negative_prompt, call_kwargs
        )
        if not isinstance(pipeline, str):
            check_pipeline(pipeline, options=self.call_kwargs)
        self.pipeline = pipeline
        self._checked: set[int] = set()  # ids of pipelines whose call signature passed

    def __call__(self, *args: Any) -> Tensor:
        """``sampler(prompts, generators)``, the sampling contract (``module`` None)."""
        module, prompts, generators = split_call("DiffusersSampler", args)
        return self.sample(prompts, generators, module=module)

    def bind(self, module: torch.nn.Module | None) -> SampleFn:
        """This sampler on ``module``'s own attribute or model: ``bind(module)(prompts,
        generators)``; the callbacks bind it to the module they evaluate."""
        return functools.partial(self.sample, module=module)

    def sample(
        self,
        prompts: list[str],
        generators: list[torch.Generator],
        module: torch.nn.Module | None = None,
    ) -> Tensor:
        """One image per (prompt, generator), as a float ``(B, 3, H, W)`` tensor in ``[0, 1]``.

        Args:
            prompts: one prompt per sample.
            generators: one generator per sample, all on the device to sample on.
            module: the LightningModule holding the pipeline, when ``pipeline`` is a name.
        """
        check_batch(prompts, generators, "DiffusersSampler", "text-to-image pipelines")
        pipeline = self.resolve(module)
        _move_to(pipeline, generators[0].device)
        options = dict(self.call_kwargs)
        if "negative_prompt" in options:
            options["negative_prompt"] = [options["negative_prompt"]] * len(prompts)
        with _progress_bar_off(pipeline):  # the evaluator draws its own bar
            output = pipeline(
                prompt=list(prompts), generator=list(generators), output_type="pt", **options
            )
        return _images_of(output, pipeline, len(prompts))

    def resolve(self, module: torch.nn.Module | None = None) -> Any:
        """The pipeline to sample: the one given, or ``module``'s attribute of that name."""
        if not isinstance(self.pipeline, str):
            return self.pipeline
        if module is None:
            raise TypeError(
                f"DiffusersSampler(pipeline={self.pipeline!r}) names a LightningModule "
                "attribute: use it as DiversityCallback(sample_fn=...), call it as "
                "sampler.bind(pl_module)(prompts, generators), or pass the pipeline itself"
            )
        pipeline = getattr(module, self.pipeline, None)
        if pipeline is None:
            found = [name for name, value in vars(module).items() if _looks_like_pipeline(value)]
            raise AttributeError(
                f"`pipeline`={self.pipeline!r}: {type(module).__name__} has no such attribute "
                f"(attributes holding a pipeline: {found or 'none'})"
            )
        if id(pipeline) not in self._checked:
            name = f"{type(module).__name__}.{self.pipeline}"
            check_pipeline(pipeline, name=name, options=self.call_kwargs)
            self._checked.add(id(pipeline))
        return pipeline

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.call_kwargs.items())
        pipeline = self.pipeline if isinstance(self.pipeline, str) else type(self.pipeline)
        return f"DiffusersSampler({pipeline!r}, {options})"


def check_pipeline(pipeline: Any, name: str = "`pipeline`", options: Iterable[str] = ()) -> None:
    """Raise ``TypeError`` unless ``pipeline`` takes ``prompt``, a list of generators,
    ``output_type`` and every one of ``options``, and has ``set_progress_bar_config`` (what every
    ``DiffusionPipeline`` has)."""
    if not callable(pipeline) or not callable(getattr(pipeline, "set_progress_bar_config", None)):
        raise TypeError(
            f"{name} must be a diffusers pipeline (callable, with set_progress_bar_config), got "
            f"{type(pipeline).__name__}"
        )
    parameters = inspect.signature(pipeline).parameters
    missing = [p for p in ("prompt", "generator", "output_type") if p not in parameters]
    if missing:
        raise TypeError(
            f"{name} ({type(pipeline).__name__}) cannot be sampled with prompts, per-sample "
            f"generators and tensor output: its call has no {missing} argument"
        )
    annotation = parameters["generator"].annotation
    # diffusers annotates what it accepts; a pipeline without a list there would share one noise
    # stream between samples (or fail), and a sample would depend on its batch.
    if annotation is not inspect.Parameter.empty and "list" not in str(annotation).lower():
        raise TypeError(
            f"{name} ({type(pipeline).__name__}) cannot take a list of generators, one per "
            f"sample: its `generator` argument is {annotation}"
        )
    _check_options(pipeline, name, parameters, options)


def _check_options(
    pipeline: Any, name: str, parameters: Mapping[str, inspect.Parameter], options: Iterable[str]
) -> None:
    """Refuse options that are not named parameters of the pipeline's call: diffusers pipelines
    end their call with ``**kwargs``, which would swallow a misspelt option without a word."""
    named = [
        key
        for key, parameter in parameters.items()
        if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
    ]
    unknown = [key for key in options if key not in named]
    if unknown:
        valid = sorted(set(named) - set(_RESERVED))
        raise TypeError(
            f"{name} ({type(pipeline).__name__}) has no call argument {unknown}: the options of "
            f"its call are {valid}"
        )


@contextmanager
def _progress_bar_off(pipeline: Any) -> Iterator[None]:
    """Switch the pipeline's progress bar off for one call, then put back the user's setting
    (diffusers keeps it in ``_progress_bar_config``, which ``set_progress_bar_config`` replaces)."""
    config = getattr(pipeline, "_progress_bar_config", None)
    config = dict(config) if isinstance(config, dict) else {}
    pipeline.set_progress_bar_config(**{**config, "disable": True})
    try:
        yield
    finally:
        pipeline.set_progress_bar_config(**config)


def _call_options(
    num_inference_steps: int,
    guidance_scale: float | None,
    height: int | None,
    width: int | None,
    negative_prompt: str | None,
    call_kwargs: Mapping[str, Any],
) -> dict[str, Any]:
    """The validated keyword arguments of every pipeline call; ``None`` options left out."""
    options: dict[str, Any] = {
        "num_inference_steps": check_positive_int(num_inference_steps, "num_inference_steps")
    }
    if guidance_scale is not None:
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real):
            raise TypeError(f"`guidance_scale` must be a number, got {guidance_scale!r}")
        options["guidance_scale"] = float(guidance_scale)
    for key, value in (("height", height), ("width", width)):
        if value is not None:
            options[key] = check_positive_int(value, key)
    if negative_prompt is not None:
        if not isinstance(negative_prompt, str):
            raise TypeError(f"`negative_prompt` must be a string, got {negative_prompt!r}")
        options["negative_prompt"] = negative_prompt
    reserved = sorted(set(call_kwargs) & set(_RESERVED))
    if reserved:
        raise ValueError(
            f"`call_kwargs` must not set {reserved}: DiffusersSampler sets them (one image per "
            "prompt, one generator per sample, tensors)"
        )
    options.update(call_kwargs)
    return options


def _images_of(output: Any, pipeline: Any, rows: int) -> Tensor:
    """The float ``(B, 3, H, W)`` images of a pipeline's output, or a ``TypeError``."""
    images = getattr(output, "images", None)
    if images is None and isinstance(output, tuple) and output:
        images = output[0]
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise TypeError(
            f"{type(pipeline).__name__} cannot return tensors: with output_type='pt' it returned "
            f"{shape}, expected a (B, 3, H, W) tensor with B = {rows}"
        )
    return images.float()  # fp16/bf16 pipelines: the embedder and the checks want float32


def _move_to(pipeline: Any, device: torch.device) -> None:
    """Move the pipeline's modules that are elsewhere to ``device``, leaving their dtypes."""
    for component in pipeline.components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        parameter = next(component.parameters(), None)
        if parameter is not None and parameter.device != device:
            component.to(device)


def _looks_like_pipeline(value: Any) -> bool:
    return callable(value) and hasattr(value, "components") and not isinstance(value, type)


def _require_diffusers() -> None:
    if importlib.util.find_spec("diffusers") is None:
        raise ImportError(f"DiffusersSampler needs diffusers: {_INSTALL}")
