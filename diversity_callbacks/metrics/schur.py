"""Schur complement entropy as a torchmetrics metric: streams image/text pairs, syncs across DDP."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from diversity_callbacks.functional.kernels import KernelArgument, as_kernel, second_moment
from diversity_callbacks.functional.schur import (
    SchurBatch,
    _schur_check_inputs,
    _schur_compute,
    _schur_pairs_compute,
    _schur_update,
    check_rtol,
    group_rows,
    prefers_grouped,
    resolve_explicit,
)
from diversity_callbacks.metrics.base import Dims, HoldsRowsBack, unsized_moment

HELD_ROWS = 2048
"""Pairs whose images' product ``phi_i phi_i^T`` is held back, at least, to be added to the
D_I x D_I sum in blocks of this many rows, not one product per batch: at the published
D_I = 5000 each product of a 500-pair batch took 0.23 s, 4.6 s of a 10k-pair stream's 6.0 s,
against 0.16 s per 500 rows in 2048-row blocks. Up to D_I pairs are held (if that is more), so
that while they are all the metric has, ``compute`` takes the functional form's n x n dual path.
Each batch's prompt groups go to the states at once; held images are featurised again when
added (the feature map is cheap beside the product)."""
HELD_BYTES = 64 * 2**20
"""Bound on the bytes of pairs held back, whatever their dimensions."""


class SchurComplementEntropy(HoldsRowsBack):
    """Schur complement entropy of generated images given their prompts, over all pairs seen.

    Splits the images' kernel covariance into the part their prompts explain (``text_part``) and
    the rest (``sce``, the model's intrinsic diversity); see
    :func:`~diversity_callbacks.functional.schur_complement_entropy` for the definitions.

    A callback's text rows are a few prompts, each repeated over several seeds, so the metric
    keeps one group per distinct prompt (identical text rows, found by a hash of their bytes and
    then compared): the prompt, its kernel features, its number of samples and the sum of its
    images' kernel features, gathered across DDP ranks and merged by prompt. With the float64
    sum ``sum phi_i phi_i^T`` over all images, that is all the Schur complement needs
    (``compute`` works in the P-dimensional span of the prompts, see the functional form's
    "grouped" path), and each image costs its share of a D_I x D_I product, each batch the
    features of its distinct prompts only. Beyond ``D_T / 2`` distinct prompts on a rank the groups are folded
    into the float64 sums ``sum phi_t phi_t^T`` and ``sum phi_t phi_i^T``, and ``compute`` uses
    the D x D blocks: the state stays bounded whatever the prompts. The pairs themselves are
    held back, as given (copies, at most ``max(HELD_ROWS, D_I)`` pairs and ``HELD_BYTES``), and
    their images' products added to ``sum phi_i phi_i^T`` in blocks of ``HELD_ROWS``; while the
    pairs held are all there is (one process) and fewer than D_I, ``compute`` scores them by the
    functional form's n x n dual path instead. Every exit of the states (a sync, ``state_dict``,
    ``merge_state``, ``forward``) adds them first. Every state is exact and
    independent of the batching, summed or gathered across DDP ranks (uneven and empty ranks
    included). The sums hold ``D_T^2 + D_T D_I + D_I^2`` doubles (6 MiB for 512-d cosine
    features, 572 MiB for the published Gaussian setting, 2 x 2500 random features), the groups
    at most ``D_T / 2`` rows of ``d_T + D_T + 1 + D_I`` doubles. A last state keeps the
    precision of the text features seen (the coarsest, also across ranks and merges), which sets
    the cut-off on ``C_TT`` as in the functional form. States saved before the groups existed
    load and give the same scores.

    Args:
        kernel: a :class:`~diversity_callbacks.Kernel` or its text: ``"cosine"`` (default, as
            for the functional form and the Vendi score: per-sample cosine kernel, no bandwidth
            to choose), ``"gaussian:sigma=3.5"`` (seeded random Fourier features shared by text
            and images, 2500 frequencies unless told; sigma 3.5 in the published method, on raw
            CLIP ViT-B/32 embeddings) or ``"linear"``. The score depends on the frequency draw
            (about +-1.7% between seeds at the defaults): compare runs at the same seed.
        rtol: eigenvalue cut-off on ``C_TT`` relative to its trace; default from the precision
            of the text features (see
            :func:`~diversity_callbacks.functional.schur_complement_entropy`).
        compute_image_vendi: ``False`` skips the images' own spectrum (a third of ``compute``'s
            cost at large D); ``"image_vendi"`` is then NaN.
        kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ``process_group``...);
            the 0.1 kernel arguments (``sigma``, ``num_features``, ``seed``, ``frequencies``,
            ``feature_map``) still work, with a ``FutureWarning``.

    ``compute`` returns a dict of float64 scalars: ``"sce"``, ``"text_part"``, ``"image_vendi"``
    (see :class:`~diversity_callbacks.functional.schur.SchurComplementResult`). In the degenerate
    regime (the prompts span as many directions as there are samples, e.g. one prompt per
    sample) it warns and ``"sce"`` and ``"text_part"`` are NaN.

    Examples:
        >>> import torch
        >>> from diversity_callbacks import SchurComplementEntropy
        >>> metric = SchurComplementEntropy()
        >>> prompts = torch.eye(3).repeat_interleave(4, dim=0)  # 3 prompts x 4 images
        >>> metric.update(image_features=prompts[:6], text_features=prompts[:6])
        >>> metric.update(image_features=prompts[6:], text_features=prompts[6:])
        >>> {key: round(value.item(), 4) for key, value in metric.compute().items()}
        {'sce': 1.0, 'text_part': 3.0, 'image_vendi': 3.0}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 1.0
    num_dims = 4  # (text, image) input dimensions, then (text, image) kernel feature dimensions
    computes_from_held_rows = True  # pairs all held back, fewer than D_I: the n x n dual path

    def __init__(
        self,
        kernel: KernelArgument = None,
        *,
        rtol: float | None = None,
        compute_image_vendi: bool = True,
        **kwargs: Any,
    ) -> None:
        self.kernel_value = as_kernel(kernel, kwargs, type(self).__name__, strict=False)
        """The :class:`~diversity_callbacks.Kernel` the states are built with."""
        super().__init__(**kwargs)
        self.kernel = resolve_explicit(self.kernel_value, "the Schur complement entropy")
        """The resolved feature map of text and images."""
        self.rtol = check_rtol(rtol)
        self.compute_image_vendi = compute_image_vendi
        self._held: list[tuple[Tensor, Tensor]] = []  # (image, text) pairs held back, as given
        for name in ("text_text", "text_image", "image_image"):
            self.add_state(name, default=unsized_moment(), dist_reduce_fx="sum")
        # One row per distinct prompt: [text row | phi_t | count | sum of phi_i] (float64).
        self.add_state("prompt_groups", default=[], dist_reduce_fx="cat")
        # The input dimensions live in the states, so loaded or merged states still refuse
        # features of another size (random features would otherwise map them silently).
        self.add_state("input_dims", default=torch.zeros(2, dtype=torch.long), dist_reduce_fx="max")
        self.add_state(
            "num_samples", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum"
        )
        # Machine epsilon of the text features: the coarsest wins, on this rank and across ranks.
        self.add_state(
            "text_eps", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="max"
        )

    def update(self, image_features: Tensor, text_features: Tensor) -> None:
        """Add paired (N, d_I) image and (N, d_T) text features; row i of both is one sample."""
        held = self._dims_of(self.metric_state)
        text_dim, image_dim = (None, None) if held is None else held[:2]
        _schur_check_inputs(
            image_features, text_features, self.kernel, image_dim=image_dim, text_dim=text_dim
        )
        if image_features.shape[0] == 0:
            return
        image, text = image_features.to(self.device), text_features.to(self.device)
        # Each distinct prompt of the batch is featurised once (a callback repeats each prompt).
        batch = _schur_update(image, text, self.kernel)
        self._add_groups_of(batch, image.shape[1])
        limit = self._held_limit(batch.phi_image.shape[1], image, text)
        if self._held_count() + image.shape[0] > limit:
            self._flush()
        if image.shape[0] > limit:
            second_moment(batch.phi_image, out=self.image_image)
        else:  # copies: the caller may reuse its buffers
            self._held.append((image.clone(), text.clone()))

    def _add_groups_of(self, batch: SchurBatch, image_input_dim: int) -> None:
        """Add a featurised batch to every state but ``sum phi_i phi_i^T`` (held back)."""
        phi_text, phi_image = batch.phi_prompts, batch.phi_image
        dims = (batch.prompts.shape[1], image_input_dim, phi_text.shape[1], phi_image.shape[1])
        held = self._dims_of(self.metric_state)
        if held is None:
            self._allocate(dims)
        elif held != dims:
            raise ValueError(
                f"the features map to (text, image) kernel dimensions {dims[2:]}, but the "
                f"metric's states hold {held[2:]}: every update must use the same embedder and "
                "kernel"
            )
        group, num_prompts = batch.prompt_index, batch.prompts.shape[0]
        counts = torch.bincount(group, minlength=num_prompts).to(torch.float64)
        sums = phi_image.new_zeros(num_prompts, dims[3]).index_add_(0, group, phi_image)
        prompts = batch.prompts.to(torch.float64)
        self._add_groups(torch.cat([prompts, phi_text, counts[:, None], sums], dim=1), dims)
        self.num_samples += phi_image.shape[0]
        self.text_eps.clamp_min_(batch.text_eps)

    def _held_count(self) -> int:
        return sum(image.shape[0] for image, _ in self._held)

    @staticmethod
    def _held_limit(feature_dim: int, image: Tensor, text: Tensor) -> int:
        """Pairs like these that may be held: ``max(HELD_ROWS, D_I)``, within ``HELD_BYTES``."""
        row_bytes = image[0].numel() * image.element_size() + text[0].numel() * text.element_size()
        return min(max(HELD_ROWS, feature_dim), HELD_BYTES // row_bytes)

    def _flush(self) -> None:
        """Add the held-back images' ``phi_i phi_i^T`` to the states, ``HELD_ROWS`` at a time."""
        if self._held:
            image = torch.cat([image for image, _ in self._held])
            self._held = []
            for start in range(0, image.shape[0], HELD_ROWS):
                phi = self.kernel.features(image[start : start + HELD_ROWS], "image_features")
                second_moment(phi, out=self.image_image)

    def _drop_held(self) -> None:
        self._held = []

    def _add_groups(self, groups: Tensor, dims: Dims) -> None:
        """Merge a batch's prompt groups into this rank's; fold them into the sums past D_T / 2."""
        merged = _merge_groups(torch.cat([self._stored_groups(dims), groups]), dims)
        if not prefers_grouped(merged.shape[0], dims[2]):
            phi_text, counts, sums = _split_groups(merged, dims)
            second_moment(phi_text * counts.sqrt()[:, None], out=self.text_text)
            self.text_image.addmm_(phi_text.T, sums)
            merged = merged[:0]
        self.prompt_groups = [merged]

    def _stored_groups(self, dims: Dims) -> Tensor:
        """This rank's (or, once synced, every rank's) prompt groups as one tensor."""
        chunks = self.prompt_groups
        if isinstance(chunks, Tensor):  # torchmetrics gathered the chunks into one tensor
            return chunks
        width = _group_width(dims)
        empty = torch.zeros(0, width, dtype=torch.float64, device=self.device)
        return torch.cat([empty, *chunks])  # no chunks in states saved before the groups

    def compute(self) -> dict[str, Tensor]:
        """``{"sce", "text_part", "image_vendi"}`` over every pair seen on every rank (a collective)."""
        held = self._held_count()
        if held and held == int(self.num_samples) and held < self.image_image.shape[0]:
            # every pair is held back (one process), fewer than D_I: the n x n dual path
            return _schur_pairs_compute(
                torch.cat([image for image, _ in self._held]),
                torch.cat([text for _, text in self._held]),
                self.kernel, rtol=self.rtol, text_eps=float(self.text_eps),
                compute_image_vendi=self.compute_image_vendi,
            )._asdict()  # fmt: skip
        self._flush()
        num_samples = int(self.num_samples)
        if num_samples == 0:
            raise ValueError(
                f"{type(self).__name__}.compute() needs at least one sample, got none: call "
                "update(image_features, text_features) first"
            )
        dims = self._dims_of(self.metric_state)
        groups = _merge_groups(self._stored_groups(dims), dims)
        # The groups folded into the sums (many prompts), or states saved before the groups,
        # take the D x D blocks.
        result = _schur_compute(
            *_split_groups(groups, dims),
            self.image_image,
            num_samples,
            rtol=self.rtol,
            text_eps=float(self.text_eps),
            compute_image_vendi=self.compute_image_vendi,
            folded=(self.text_text, self.text_image),
        )
        return result._asdict()

    def _state_settings(self) -> dict[str, Any]:
        return self.kernel_value.settings()

    def _dims_of(self, states: Mapping[str, Any]) -> Dims | None:
        text_image = states["text_image"]
        if text_image.numel() == 0:
            return None
        return (*(int(d) for d in states["input_dims"]), *text_image.shape)

    def _zero_states(self, dims: Dims) -> dict[str, Any]:
        text_input_dim, image_input_dim, text_dim, image_dim = dims

        def zeros(rows: int, cols: int) -> Tensor:
            return torch.zeros(rows, cols, dtype=torch.float64, device=self.device)

        return {
            "prompt_groups": [zeros(0, _group_width(dims))],
            "text_text": zeros(text_dim, text_dim),
            "text_image": zeros(text_dim, image_dim),
            "image_image": zeros(image_dim, image_dim),
            "input_dims": torch.tensor([text_input_dim, image_input_dim], device=self.device),
        }


def _group_width(dims: Dims) -> int:
    """Columns of a prompt group: text row, its kernel features, the count, the images' sum."""
    text_input_dim, _, text_dim, image_dim = dims
    return text_input_dim + text_dim + 1 + image_dim


def _merge_groups(groups: Tensor, dims: Dims) -> Tensor:
    """One row per distinct prompt: counts and image sums added, the first features kept."""
    if groups.shape[0] == 0:
        return groups
    first, group = group_rows(groups[:, : dims[0]])
    additive = dims[0] + dims[2]  # the count and the images' sum
    merged = groups[first]
    merged[:, additive:] = torch.zeros_like(merged[:, additive:]).index_add_(
        0, group, groups[:, additive:]
    )
    return merged


def _split_groups(groups: Tensor, dims: Dims) -> tuple[Tensor, Tensor, Tensor]:
    """``(phi_t, counts, image sums)`` of the groups."""
    start = dims[0]
    count = start + dims[2]
    return groups[:, start:count], groups[:, count], groups[:, count + 1 :]
