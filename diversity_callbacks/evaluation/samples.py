"""From the generator's samples to embeddings: checks, the value range, thumbnails.

Images are ``(B, 3, H, W)`` tensors in a declared value range, converted to ``[0, 1]`` for the
embedder; samples of any other kind (strings, audio, molecules) go to the embedder unchanged.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from diversity_callbacks.embedders.base import check_embeddings
from diversity_callbacks.evaluation.applicability import embeds_texts
from diversity_callbacks.evaluation.conditions import EvaluationSet
from diversity_callbacks.images import ValueRange, to_uint8, to_unit_range, value_range_bounds
from diversity_callbacks.utilities.checks import check_dense, describe


class SampleEmbedder:
    """Check a batch of samples and embed it (and prompts) with the user's embedder.

    Args:
        value_range: the images' value range, or ``None`` for samples that are not images.
        embedder: see :class:`~diversity_callbacks.DiversityEvaluator`; ``None`` until the
            default one is built (images only).
    """

    def __init__(self, value_range: ValueRange | None, embedder: Any) -> None:
        if value_range is not None:
            try:
                value_range_bounds(value_range)
            except ValueError:
                raise ValueError(
                    '`value_range` must be "[-1,1]", "[0,1]", "uint8" (images) or None (samples '
                    f"of another kind), got {value_range!r}"
                ) from None
        self.value_range = value_range
        self.embedder = embedder
        self._lowest: Tensor | None = None  # of this evaluation's images, in [0, 1] units
        self._range_warned = False
        if value_range is None:
            self._embed_samples = _sample_embedding_function(embedder)
        elif embedder is not None:
            self._embed_samples = _image_embedding_function(embedder)

    @property
    def embeds_texts(self) -> bool:
        """Whether the embedder can embed prompts (a FunctionEmbedder only with a text_fn)."""
        return self.embedder is not None and embeds_texts(self.embedder)

    def check_samples(self, samples: Any, rows: int) -> Any:
        """Check that the generator returned ``rows`` samples; images come back in [0, 1]."""
        if isinstance(samples, Tensor):
            check_dense(samples, "samples")
        if self.value_range is None:
            if isinstance(samples, (str, bytes)) or not hasattr(samples, "__len__"):
                raise TypeError(
                    f"the generator must return a sequence of {rows} samples, got "
                    f"{type(samples).__name__}"
                )
            if len(samples) != rows:
                raise ValueError(
                    f"the generator must return one sample per generator, {rows} in all, got "
                    f"{len(samples)}"
                )
            return samples
        if isinstance(samples, Tensor) and samples.ndim >= 1 and samples.shape[0] != rows:
            raise ValueError(
                f"the generator must return one image per generator, {rows} in all, got a "
                f"batch of {samples.shape[0]} (shape {tuple(samples.shape)})"
            )
        unit = to_unit_range(samples, self.value_range, name="the generator's images")
        if self.value_range == "[-1,1]" and unit.numel():
            lowest = unit.amin()  # kept on the device: one synchronisation per evaluation
            self._lowest = lowest if self._lowest is None else torch.minimum(self._lowest, lowest)
        return unit

    def warn_on_range(self) -> None:
        """After an evaluation: warn, once, when its images contradict the declared range.

        Images in [0, 1] declared ``"[-1,1]"`` pass every bound check and are silently read at
        half their contrast (diffusers' ``output_type="pt"`` and sigmoid decoders return [0, 1]).
        A whole evaluation of a [-1, 1] generator without one value below 0 is implausible, so
        it is taken as that mistake; a warning rather than an error, since a generator of only
        bright images is possible. (Floats above 1 declared ``"[0,1]"`` fail the bound check.)
        """
        lowest, self._lowest = self._lowest, None
        if lowest is None or self._range_warned or float(lowest) < 0.5:
            return
        self._range_warned = True
        warnings.warn(
            "value_range='[-1,1]' was declared, but no value of this evaluation's images lies "
            f"below 0 (the lowest is {2 * float(lowest) - 1:.3g}): images in [0, 1] read as "
            "[-1, 1] lose half their contrast and bias every score; pass value_range='[0,1]' if "
            "the generator returns [0, 1] (warned once)",
            UserWarning,
            stacklevel=2,
        )

    def embed(self, samples: Any) -> Tensor:
        """``(B, D)`` embeddings of a checked batch, checked to hold one row per sample."""
        name, function = self._embed_samples
        return check_embeddings(function(samples), rows=len(samples), source=name)

    def embed_prompts(self, prompts: Sequence[str]) -> Tensor:
        """``(P, D')`` text embeddings of distinct prompts, checked."""
        embeddings = self.embedder.embed_texts(list(prompts))
        return check_embeddings(embeddings, rows=len(prompts), source="embedder.embed_texts")

    def prompt_embeddings(
        self, prompts: Sequence[str], condition_ids: Tensor, cache: dict[int, Tensor]
    ) -> Tensor:
        """Each sample's prompt embedding, ``(B, D')``. ``cache`` holds this evaluation's rows:
        every prompt is embedded once, so all its samples share one row whatever the batch
        size (SCE needs them equal; a text encoder's output varies with the batch)."""
        wanted = [c for c in dict.fromkeys(condition_ids.tolist()) if c not in cache]
        if wanted:
            rows = self.embed_prompts([prompts[c] for c in wanted])
            cache.update(zip(wanted, rows, strict=True))
        return torch.stack([cache[c] for c in condition_ids.tolist()])


def _image_embedding_function(embedder: Any) -> tuple[str, Any]:
    if not callable(getattr(embedder, "embed_images", None)):
        raise TypeError(
            "`embedder` must have a method embed_images(images) -> (B, D) features (for samples "
            "that are not images, pass value_range=None and an embedder callable on them or "
            f"with embed_samples(samples)), got {_described(embedder)}"
        )
    if getattr(embedder, "value_range", "[0,1]") != "[0,1]":
        raise ValueError(
            "`embedder` must take images in [0, 1] (the evaluator converts the generator's "
            "output as `value_range` says), got an embedder built with "
            f"value_range={embedder.value_range!r}"
        )
    return "embedder.embed_images", embedder.embed_images


def _sample_embedding_function(embedder: Any) -> tuple[str, Any]:
    method = getattr(embedder, "embed_samples", None)
    if callable(method):
        return "embedder.embed_samples", method
    if callable(embedder):
        return "the embedder", embedder
    raise TypeError(
        "with value_range=None (samples that are not images) `embedder` must be a callable or "
        f"have embed_samples(samples) -> (B, D), got {_described(embedder)}"
    )


def _described(embedder: Any) -> str:
    """What an unusable embedder is, in an error; a model name gets the embedder to build."""
    if isinstance(embedder, str):
        # A CLIP model name is the likely intent: the string itself embeds nothing.
        return (
            f"the string {embedder!r} (a model name is not an embedder: for CLIP, pass "
            f"CLIPEmbedder({embedder!r}))"
        )
    return describe(embedder)


def thumbnails_of(
    images: Tensor,
    batch: Sequence[int],
    evaluation_set: EvaluationSet,
    max_conditions: int,
    max_per_condition: int,
    size: int,
) -> dict[int, Tensor]:
    """uint8 CPU copies, longest side at most ``size``, of the batch's samples to be shown."""
    keep = [
        j
        for j, i in enumerate(batch)
        if evaluation_set.condition_index(i) < max_conditions
        and i - evaluation_set.sample_indices(evaluation_set.condition_index(i)).start
        < max_per_condition
    ]
    if not keep:
        return {}
    pixels = thumbnails(images[keep], size)
    return {batch[j]: pixels[n] for n, j in enumerate(keep)}


def thumbnails(images: Tensor, size: int) -> Tensor:
    """uint8 CPU copies of (B, 3, H, W) images in [0, 1], longest side at most ``size``."""
    longest = max(images.shape[-2:])
    if longest > size:
        shape = [max(1, round(s * size / longest)) for s in images.shape[-2:]]
        images = torch.nn.functional.interpolate(
            images.float(), size=shape, mode="bilinear", antialias=True, align_corners=False
        ).clamp_(0, 1)
    return to_uint8(images).cpu()
