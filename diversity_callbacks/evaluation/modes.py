"""The modes of one evaluation, and the modes lost and gained since an earlier one.

The evaluator's part of :mod:`~diversity_callbacks.functional.modes` (FKEA's modes) and
:mod:`~diversity_callbacks.functional.novelty` (KEN): as batches arrive each rank keeps its own
samples' embeddings and a preview of each (a small uint8 thumbnail of an image, the text of a
string). In the collective part, with a feature-map kernel (cosine, linear, random features):

- the kernel covariance's sums are all-reduced (one D x D and one D tensor), so every rank holds
  the same covariance and the same leading directions, whatever the number of ranks;
- each rank computes the loadings of its own samples, and the top ones of every rank are
  gathered: the top of the tops is the top of all samples;
- the lost modes come from the earlier evaluation's samples (a :class:`ModeReference`, the same
  on every rank), the gained ones from this evaluation's, the same way.

A kernel without a feature map (the exact Gaussian) needs every row: they are gathered and every
rank computes the same n x n decomposition. Sample ``i`` is the evaluation set's sample ``i``,
so a lost mode's samples at the reference and now are drawn from the same seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from diversity_callbacks.evaluation.samples import thumbnails
from diversity_callbacks.functional.kernels import ResolvedKernel
from diversity_callbacks.functional.modes import (
    KernelMoments,
    Mode,
    as_modes,
    descending_eigvalsh,
    keep_leading,
    kernel_modes,
    top_samples,
)
from diversity_callbacks.functional.novelty import (
    check_eta,
    covariance_novelty_both_ways,
    ken_score,
    kernel_novelty,
)
from diversity_callbacks.utilities import distributed
from diversity_callbacks.utilities.checks import check_positive, check_positive_int

MODE_KEYS = ("num_modes", "lost_mode_mass", "gained_mode_mass")
"""The scalars of the modes, after the prefix."""

Preview = Tensor | str
"""How a sample is shown beside its mode: a uint8 (3, h, w) thumbnail, or its text."""


@dataclass(frozen=True)
class ModeOptions:
    """How many modes, how many samples per mode, what counts and how novelty weighs.

    Attributes:
        num_modes: at most this many leading modes per evaluation, and lost or gained modes per
            comparison; only those with a share of at least ``threshold`` are kept.
        samples: samples kept per mode (its grid).
        threshold: the ``num_modes`` scalar counts modes with at least this share.
        eta: KEN's weight of the other set (a mode is lost where the reference held more
            than ``eta`` times the current share).
        preview_size: longest side of a kept thumbnail, in pixels.
    """

    num_modes: int
    samples: int = 16
    threshold: float = 0.01
    eta: float = 1.0
    preview_size: int = 48

    def __post_init__(self) -> None:
        check_positive_int(self.num_modes, "modes")
        check_positive_int(self.samples, "mode_samples")
        check_positive_int(self.preview_size, "mode_preview_size")
        if not 0 < check_positive(self.threshold, "mode_threshold") <= 1:
            raise ValueError(f"`mode_threshold` must be in (0, 1], got {self.threshold!r}")
        check_eta(self.eta)


@dataclass
class ModeReference:
    """What a later evaluation needs to find the modes lost since this one.

    Attributes:
        embeddings: ``(n, d)`` every sample's embedding (CPU, the embedder's dtype), on every
            rank.
        indices: ``(n,)`` long: the samples' indices in the evaluation set.
        previews: thumbnail or text by sample index (every sample's, on rank 0; empty without
            media).
        step: the training step it was measured at, when known.

    Its size is ``n * d`` embedding values plus ``n * 3 * s^2`` bytes of thumbnails (``s`` the
    preview size): at n = 1000, d = 512, s = 48, about 2 MB and 7 MB.
    """

    embeddings: Tensor
    indices: Tensor
    previews: dict[int, Preview] = field(default_factory=dict)
    step: int | None = None
    moments: KernelMoments | None = field(default=None, repr=False, compare=False)
    """Its kernel moments, kept from its own evaluation (not saved: recomputed on resume)."""

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors, ints and strings, for a checkpoint."""
        return {
            "embeddings": self.embeddings,
            "indices": self.indices,
            "previews": dict(self.previews),
            "step": self.step,
        }

    @classmethod
    def from_state_dict(cls, state: Any, owner: str) -> ModeReference:
        """The reference a checkpoint holds, checked: a foreign entry fails naming ``owner``."""
        embeddings = state.get("embeddings") if isinstance(state, dict) else None
        indices = state.get("indices") if isinstance(state, dict) else None
        if (
            not isinstance(embeddings, Tensor)
            or not isinstance(indices, Tensor)
            or embeddings.ndim != 2
            or indices.shape != (embeddings.shape[0],)
        ):
            raise TypeError(
                f"{owner}: checkpoint entry 'mode_reference' must hold (n, d) 'embeddings' and "
                f"(n,) 'indices' tensors, got {type(state).__name__}"
            )
        return cls(embeddings, indices.long(), dict(state.get("previews") or {}), state.get("step"))


@dataclass(frozen=True)
class SharedMoment:
    """Another metric's sum of ``phi phi^T`` over this rank's ``count`` samples (same kernel)."""

    second: Tensor
    count: int


@dataclass
class ModeValues:
    """The modes part of an evaluation's result (scalars without the prefix)."""

    scalars: dict[str, float]
    modes: list[Mode]
    lost_modes: list[Mode]
    gained_modes: list[Mode]
    reference: ModeReference | None = None  # set by ModeCollector.compute
    previews: dict[int, Preview] = field(default_factory=dict)


class ModeCollector:
    """One rank's samples of one evaluation: embeddings, indices and (optionally) previews."""

    def __init__(self, options: ModeOptions, previews: bool, offset_by_rank: bool = False) -> None:
        self.options = options
        self.offset_by_rank = offset_by_rank  # indices count this rank's samples only
        self.rows: list[Tensor] = []
        self.indices: list[Tensor] = []
        self.previews: dict[int, Preview] | None = {} if previews else None

    def add(self, embeddings: Tensor, indices: range, samples: Any) -> None:
        """Keep a batch: its embeddings, the samples' indices and their previews."""
        self.rows.append(embeddings.detach().cpu())
        self.indices.append(torch.as_tensor(list(indices), dtype=torch.long))
        if self.previews is not None:
            self.previews.update(_previews(samples, indices, self.options.preview_size))

    def compute(
        self,
        kernel: ResolvedKernel,
        device: torch.device,
        compare_to: ModeReference | None,
        shared: SharedMoment | None = None,
    ) -> ModeValues:
        """Collective: the modes, the reference for later evaluations, and the comparison.

        ``shared``: the Vendi metric's own second moment of this rank's samples under
        ``kernel``; used instead of a second D x D product when it holds exactly these samples.
        """
        rows, indices = self._local(device)
        everything = _gathered(rows, indices)
        reference = ModeReference(everything[0].cpu(), everything[1].cpu())
        if kernel.feature_map is None:
            values = self._by_kernel(kernel, everything, compare_to, device)
        else:
            values = self._by_features(kernel, rows, indices, compare_to, device, reference, shared)
        values.reference = reference
        # Modes below the threshold are noise and round-off; the masses still count them.
        threshold = self.options.threshold
        for group in ("modes", "lost_modes", "gained_modes"):
            setattr(values, group, [m for m in getattr(values, group) if m.share >= threshold])
        shown = _shown(values)
        values.previews = _gathered_previews(self.previews, shown)
        reference.previews = _gathered_previews(self.previews, None)
        return values

    def _local(self, device: torch.device) -> tuple[Tensor, Tensor]:
        dims = {int(r.shape[1]) for r in self.rows}
        agreed = {d for part in distributed.all_gather_objects(sorted(dims)) for d in part}
        if len(agreed) != 1:
            raise ValueError(
                f"the modes need one embedding dimension on every rank, got {sorted(agreed)}"
            )
        dim = agreed.pop()
        rows = torch.cat(self.rows) if self.rows else torch.zeros(0, dim)
        indices = torch.cat(self.indices) if self.indices else torch.zeros(0, dtype=torch.long)
        if self.offset_by_rank:  # existing batches: rank r's samples follow the lower ranks'
            rank, _ = distributed.rank_and_world_size()
            counts = distributed.all_gather_objects(rows.shape[0])
            indices = indices + sum(counts[:rank])
            self._shift_previews(sum(counts[:rank]))
        return rows.to(device), indices.to(device)

    def _shift_previews(self, offset: int) -> None:
        if self.previews and offset:
            self.previews = {i + offset: p for i, p in self.previews.items()}

    def _by_features(
        self,
        kernel: ResolvedKernel,
        rows: Tensor,
        indices: Tensor,
        compare_to: ModeReference | None,
        device: torch.device,
        reference: ModeReference,
        shared: SharedMoment | None,
    ) -> ModeValues:
        options = self.options
        phi = kernel.features(rows)
        moments = _all_reduced(_local_moments(phi, shared), device)
        reference.moments = moments  # what a later comparison with this evaluation needs
        covariance = moments.covariance
        values = descending_eigvalsh(covariance)
        scalars = {"num_modes": float((values >= options.threshold).sum())}
        shares, directions = keep_leading(
            covariance, values, options.num_modes, moments.first, options.threshold
        )
        modes = as_modes(shares, *_top_of_ranks(phi @ directions, indices, options.samples))
        lost: list[Mode] = []
        gained: list[Mode] = []
        if compare_to is not None:
            then_rows = compare_to.embeddings.to(device)
            then_phi = kernel.features(then_rows, "the reference's embeddings")
            then = compare_to.moments or KernelMoments.of(then_phi)
            (lost_found, lost_directions), (gained_found, gained_directions) = (
                covariance_novelty_both_ways(
                    then.covariance,
                    covariance,
                    options.eta,
                    options.num_modes,
                    then.first,
                    moments.first,
                    options.threshold,
                )
            )
            lost_top = top_samples(
                then_phi @ lost_directions, compare_to.indices.to(device), options.samples
            )
            lost = as_modes(lost_found, *lost_top)
            gained_top = _top_of_ranks(phi @ gained_directions, indices, options.samples)
            gained = as_modes(gained_found, *gained_top)
            scalars["lost_mode_mass"] = ken_score(lost_found)[0]
            scalars["gained_mode_mass"] = ken_score(gained_found)[0]
        return ModeValues(scalars, modes, lost, gained)

    def _by_kernel(
        self,
        kernel: ResolvedKernel,
        everything: tuple[Tensor, Tensor],
        compare_to: ModeReference | None,
        device: torch.device,
    ) -> ModeValues:
        options = self.options
        rows, indices = everything
        matrix = kernel.matrix(rows)
        trace = torch.trace(matrix)
        values = torch.linalg.eigvalsh(matrix / trace)
        scalars = {"num_modes": float((values >= options.threshold).sum())}
        shares, loadings = kernel_modes(matrix, options.num_modes)
        modes = as_modes(shares, *top_samples(loadings, indices, options.samples))
        lost: list[Mode] = []
        gained: list[Mode] = []
        if compare_to is not None:
            then_rows = compare_to.embeddings.to(device)
            cross = kernel.matrix(then_rows, rows, "the reference's embeddings")
            then_matrix = kernel.matrix(then_rows, name="the reference's embeddings")
            found, then_loadings, _ = kernel_novelty(
                then_matrix, cross, matrix, options.eta, options.num_modes
            )
            then_indices = compare_to.indices.to(device)
            lost = as_modes(found, *top_samples(then_loadings, then_indices, options.samples))
            scalars["lost_mode_mass"] = ken_score(found)[0]
            found, now_loadings, _ = kernel_novelty(
                matrix, cross.T, then_matrix, options.eta, options.num_modes
            )
            gained = as_modes(found, *top_samples(now_loadings, indices, options.samples))
            scalars["gained_mode_mass"] = ken_score(found)[0]
        return ModeValues(scalars, modes, lost, gained)


def _local_moments(phi: Tensor, shared: SharedMoment | None) -> KernelMoments:
    """This rank's moments: the shared second moment when it holds these very samples (the
    D x D product is the largest cost after the eigenvalues), else computed from ``phi``."""
    dim = phi.shape[1]
    if shared is None or shared.count != phi.shape[0] or shared.second.shape != (dim, dim):
        return KernelMoments.of(phi)
    return KernelMoments(shared.second.to(phi.device, torch.float64), phi.to(torch.float64).sum(0))


def _all_reduced(moments: KernelMoments, device: torch.device) -> KernelMoments:
    """The moments summed over every rank (a collective)."""
    return KernelMoments(
        distributed.all_reduce_sum(moments.second, device),
        distributed.all_reduce_sum(moments.first, device),
    )


def _top_of_ranks(loadings: Tensor, indices: Tensor, top: int) -> tuple[Tensor, Tensor]:
    """The top samples of every rank's own loadings, gathered and merged (a collective)."""
    local = top_samples(loadings, indices, top)
    parts = distributed.all_gather_objects(tuple(part.cpu() for part in local))
    if len(parts) == 1:
        return local
    samples = torch.cat([part[0] for part in parts], 1)
    values = torch.cat([part[1] for part in parts], 1)
    return _merge_tops(samples.to(loadings.device), values.to(loadings.device), top)


def _merge_tops(samples: Tensor, values: Tensor, top: int) -> tuple[Tensor, Tensor]:
    """Per mode (row), the ``top`` largest of the gathered candidates (ties: lower index)."""
    rows = [top_samples(values[r : r + 1].T, samples[r], top) for r in range(samples.shape[0])]
    if not rows:
        return samples[:, :0], values[:, :0]
    return torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])


def _gathered(rows: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Every rank's rows and indices, in index order, on every rank (a collective)."""
    parts = distributed.all_gather_objects((rows.cpu(), indices.cpu()))
    all_rows = torch.cat([part[0] for part in parts])
    all_indices = torch.cat([part[1] for part in parts])
    order = torch.argsort(all_indices)
    return all_rows[order].to(rows.device), all_indices[order].to(rows.device)


def _shown(values: ModeValues) -> set[int]:
    """The samples whose current previews the media show: every mode's, and the lost modes'
    seeds now."""
    modes = [*values.modes, *values.lost_modes, *values.gained_modes]
    return {int(i) for mode in modes for i in mode.samples}


def _gathered_previews(
    previews: dict[int, Preview] | None, wanted: set[int] | None
) -> dict[int, Preview]:
    """This evaluation's previews of ``wanted`` samples (all when None), on rank 0."""
    if previews is None:
        return {}
    kept = previews if wanted is None else {i: p for i, p in previews.items() if i in wanted}
    return distributed.gather_to_rank_zero(kept)


def _previews(samples: Any, indices: range, size: int) -> dict[int, Preview]:
    """Small uint8 thumbnails of images in [0, 1], the text of strings, nothing otherwise."""
    if isinstance(samples, Tensor):
        if samples.ndim != 4:
            return {}
        pixels = thumbnails(samples, size)
        return {i: pixels[n] for n, i in enumerate(indices)}
    return {i: item for i, item in zip(indices, samples, strict=False) if isinstance(item, str)}
