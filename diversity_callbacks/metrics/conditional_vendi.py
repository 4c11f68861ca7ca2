"""Conditional-Vendi and Information-Vendi as torchmetrics metrics (arXiv 2411.02817).

Two ways to hold the samples, as for ``VendiScore``:

- streaming (``num_features`` given): every kernel through its explicit feature map, so the
  states are float64 second moments summed batch by batch and across ranks: the conditions'
  (D' x D', or the count of each class label), the joint kernel's (D_joint x D_joint, or one
  D x D block per class label: the label kernel makes the joint kernel block-diagonal) and,
  for Information-Vendi, the samples'. Their size does not grow with the number of samples;
  ranks with uneven or no shares add up exactly;
- exact (default): every float64 embedding with its condition in "cat" list states, gathered
  once per ``compute`` (the joint kernel of all pairs needs them all).

Either way the result is that of the functional form on all ranks' rows. The kind of condition
(embeddings or integer labels) is fixed by the first ``update``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors

from diversity_callbacks.functional.conditional_vendi import (
    LEGACY_MESSAGE,
    check_conditions,
    conditional_vendi_score,
    information_vendi_score,
    paired_kernels,
    paired_scores,
    unpack_kernel,
)
from diversity_callbacks.functional.kernels import KernelArgument, ScratchBuffers, second_moment
from diversity_callbacks.functional.spectrum import Order, check_tolerance, parse_orders
from diversity_callbacks.metrics.base import Dims, HoldsRowsBack, unsized_moment
from diversity_callbacks.utilities.checks import check_features

_LABELS = 0
"""Condition dimension recorded for integer labels (condition embeddings have D' >= 1)."""

PENDING_LABELLED_ROWS = 8192
"""Labelled rows held back before they are added to their labels' D x D blocks: a batch of
1024 rows over 50 labels gives about 20 rows a label, too few for a GEMM to run at speed (each
block is read and written whole); 8192 give about 160. Bounded (8192 x D floats), whatever n."""


class _PairedVendiMetric(HoldsRowsBack):
    """Samples and their conditions, scored together by a functional form."""

    computes_from_held_rows = True  # a label whose rows are all held back: their small Gram
    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 1.0
    num_dims = 2  # the samples' feature dimension and the conditions' (0 for labels)
    _score: Callable[..., Tensor | dict[str, Tensor]]
    _needs_image: bool
    """Whether the score needs the samples' own kernel (Information-Vendi does)."""

    def __init__(
        self,
        *legacy: Any,
        q: Order | Sequence[Order] = 1.0,
        kernel: KernelArgument = "cosine",
        sigma: float | None = None,
        condition_kernel: str = "cosine",
        condition_sigma: float | None = None,
        num_features: int | None = None,
        seed: int = 0,
        tolerance: float | None = None,
        **kwargs: Any,
    ) -> None:
        self._refuse_legacy(legacy, kwargs)
        kernel, sigma, num_features, seed = unpack_kernel(kernel, sigma, num_features, seed)
        super().__init__(**kwargs)
        self.orders, self._as_dict = parse_orders(q)
        check_tolerance(tolerance)
        self.options = {
            "kernel": kernel,
            "sigma": sigma,
            "condition_kernel": condition_kernel,
            "condition_sigma": condition_sigma,
            "num_features": num_features,
            "seed": seed,
            "tolerance": tolerance,
        }
        # One tiny call checks every option now rather than at the first compute.
        type(self)._score(
            torch.eye(1, dtype=torch.float64),
            condition_features=torch.eye(1, dtype=torch.float64),
            **self._feature_options(),
        )
        self.streams_moments = num_features is not None
        self._classes = 0  # labels that zero states get while a sync or merge grows them
        self._pending: list[tuple[Tensor, Tensor]] = []  # labelled rows held back
        self._scratch = ScratchBuffers()  # each batch's temporaries, reused by the next
        if self.streams_moments:
            self._add_moment_states()
        else:
            self.add_state("rows", default=[], dist_reduce_fx="cat")
            self.add_state("conditions", default=[], dist_reduce_fx="cat")

    def _add_moment_states(self) -> None:
        """Sum states: the conditions' moment (or class counts), the joint's, the samples'."""
        self.add_state("condition_moment", default=unsized_moment(), dist_reduce_fx="sum")
        self.add_state(
            "label_counts", default=torch.zeros(0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("joint_moment", default=unsized_moment(), dist_reduce_fx="sum")
        if self._needs_image:
            self.add_state("image_moment", default=unsized_moment(), dist_reduce_fx="sum")
        # the feature maps hide the input dimensions: kept to refuse others after a merge
        self.add_state("input_dims", default=torch.zeros(2, dtype=torch.long), dist_reduce_fx="max")

    def update(self, features: Tensor, conditions: Tensor) -> None:
        """Add ``(N, D)`` sample features and their ``(N, D')`` condition features or ``(N,)``
        integer labels; the kind of condition and both dimensions stay as in the first update."""
        dims = self._dims_of(self.metric_state)
        labelled = isinstance(conditions, Tensor) and not conditions.is_floating_point()
        check_conditions(
            features,
            None if labelled else conditions,
            conditions if labelled else None,
        )
        if dims is not None and features.shape[1] != dims[0]:
            check_features(features, "features", dim=dims[0])  # raises, naming the dimension
        condition_dim = _LABELS if labelled else conditions.shape[1]
        if dims is not None and dims[1] != condition_dim:
            raise ValueError(
                f"`conditions` must be {_describe_kind(dims[1])} as in earlier updates, got "
                f"{_describe_kind(condition_dim)}"
            )
        if self.streams_moments:
            self._add_moments(features.to(self.device), conditions.to(self.device), dims)
            return
        self.rows.append(features.to(self.device, torch.float64, copy=True))
        dtype = torch.long if labelled else torch.float64
        self.conditions.append(conditions.to(self.device, dtype, copy=True))

    def _add_moments(self, features: Tensor, conditions: Tensor, dims: Dims | None) -> None:
        labelled = not conditions.is_floating_point()
        if labelled and conditions.numel() and int(conditions.min()) < 0:
            raise ValueError(
                "`conditions` must be class labels >= 0 with num_features= (each label indexes "
                f"its block of the joint kernel's moment), got {int(conditions.min())}"
            )
        if dims is None:
            self._allocate((features.shape[1], _LABELS if labelled else conditions.shape[1]))
        if features.shape[0] == 0:
            return
        kernels = self._kernels(labelled)
        if labelled:  # the blocks grow when rows are added to them (_flush)
            self.label_counts = _padded(self.label_counts, int(conditions.max()) + 1)
            phi = kernels.image.features(features)
            self.label_counts.index_add_(
                0, conditions, torch.ones_like(conditions, dtype=torch.float64)
            )
            self._pending.append((phi, conditions))
            if sum(rows.shape[0] for rows, _ in self._pending) >= PENDING_LABELLED_ROWS:
                self._flush()
        else:
            paired = kernels.features(
                features, conditions, need_image=self._needs_image, scratch=self._scratch
            )
            phi = paired.image
            second_moment(paired.condition, out=self.condition_moment)
            second_moment(paired.joint, out=self.joint_moment, scratch=self._scratch)
        if self._needs_image:
            second_moment(phi, out=self.image_moment, scratch=self._scratch)

    def _flush(self) -> None:
        """Add the labelled rows held back to their labels' blocks of the joint moment, grown
        here to every label counted (until then a label's rows may all be held back)."""
        if self._pending:
            phi, labels = _concatenated(self._pending, self._scratch)
            self._pending = []
            self.joint_moment = _blocks_for(self.joint_moment, labels, self.label_counts.numel())
            _add_label_moments(self.joint_moment, phi, labels, self.label_counts, self._scratch)

    def _drop_held(self) -> None:
        self._pending = []
        self._scratch.clear()  # up to a batch's temporaries; not kept across a reset

    def compute(self) -> Tensor | dict[str, Tensor]:
        """The score over every rank's samples (a collective: call it on all ranks)."""
        if self.streams_moments:
            return self._compute_from_moments()
        rows = dim_zero_cat(self.rows) if len(self.rows) else None
        if rows is None or rows.shape[0] == 0:
            raise ValueError(self._no_sample_message())
        conditions = dim_zero_cat(self.conditions)
        key = "condition_ids" if conditions.ndim == 1 else "condition_features"
        options = self._feature_options() if key == "condition_features" else self._label_options()
        return type(self)._score(rows, q=self.orders if self._as_dict else self.orders[0], **{
            key: conditions
        }, **options)  # fmt: skip

    def _compute_from_moments(self) -> Tensor | dict[str, Tensor]:
        dims = self._dims_of(self.metric_state)
        total = self.label_counts.sum() if dims is not None and dims[1] == _LABELS else None
        if total is None:
            total = 0 if dims is None else self.joint_moment.diagonal(dim1=-2, dim2=-1).sum()
        if not bool(total > 0):
            raise ValueError(self._no_sample_message())
        if dims[1] == _LABELS:  # an unseen label's block is zero: no eigenvalues
            grams = {
                "condition": torch.diag(self.label_counts[self.label_counts > 0]),
                "joint": _label_blocks(
                    self.joint_moment, self.label_counts, self._pending, self._scratch
                ),
            }
        else:
            grams = {"condition": self.condition_moment, "joint": self.joint_moment}
        if self._needs_image:
            grams["image"] = self.image_moment
        scores = paired_scores(grams, self.orders, self.options["tolerance"])
        return scores if self._as_dict else next(iter(scores.values()))

    def _no_sample_message(self) -> str:
        return (
            f"{type(self).__name__}.compute() needs at least one sample, got none: call "
            "update() with (N, D) features and their conditions first"
        )

    def _kernels(self, labelled: bool) -> Any:
        options = self._feature_options()
        return paired_kernels(
            options["kernel"], options["sigma"], options["condition_kernel"],
            options["condition_sigma"], options["num_features"], options["seed"],
            labelled=labelled,
        )  # fmt: skip

    def _grow(self, classes: int) -> None:
        """Room for labels below ``classes``: zero blocks and counts appended."""
        grown = _grown(
            {"label_counts": self.label_counts, "joint_moment": self.joint_moment}, classes
        )
        self.label_counts, self.joint_moment = grown["label_counts"], grown["joint_moment"]

    def _sync_dist(self, dist_sync_fn: Any = gather_all_tensors, process_group: Any = None) -> None:
        if not self.streams_moments:
            super()._sync_dist(dist_sync_fn, process_group=process_group)
            return
        # ranks that saw fewer (or no) labels grow to the most labels any rank saw, then sum
        classes = torch.tensor([self.label_counts.numel()], device=self.device)
        dist.all_reduce(classes, op=dist.ReduceOp.MAX, group=process_group or self.process_group)
        self._with_classes(int(classes), lambda: super(_PairedVendiMetric, self)._sync_dist(
            dist_sync_fn, process_group=process_group))  # fmt: skip

    def _reduce_states(self, incoming_state: dict[str, Any]) -> None:
        if not self.streams_moments:
            super()._reduce_states(incoming_state)
            return
        counts = incoming_state.get("label_counts", self.label_counts)
        classes = max(self.label_counts.numel(), counts.numel())
        if incoming_state.get("joint_moment", self.joint_moment).ndim == 3:
            incoming_state = _grown(incoming_state, classes)
        self._with_classes(classes, lambda: super(_PairedVendiMetric, self)._reduce_states(
            incoming_state))  # fmt: skip

    def _with_classes(self, classes: int, add: Callable[[], None]) -> None:
        """Run ``add`` (a sync or a merge) with labelled states, this one's and any zero ones
        allocated meanwhile, grown to ``classes`` labels."""
        self._classes = classes
        try:
            if self._dims_of(self.metric_state) is not None and self.joint_moment.ndim == 3:
                self._grow(classes)
            add()
        finally:
            self._classes = 0

    @classmethod
    def _refuse_legacy(cls, legacy: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if legacy:
            raise TypeError(
                f"{cls.__name__} takes keyword arguments only (q=, kernel=, ...), got "
                f"{len(legacy)} positional argument(s)"
            )

    def _feature_options(self) -> dict[str, Any]:
        return dict(self.options)

    def _label_options(self) -> dict[str, Any]:
        options = dict(self.options)
        del options["condition_kernel"], options["condition_sigma"]
        return options

    def _state_settings(self) -> dict[str, Any]:
        return dict(self.options)

    def _dims_of(self, states: Mapping[str, Any]) -> Dims | None:
        if self.streams_moments:
            if tuple(states["joint_moment"].shape) == (0, 0):
                return None
            return tuple(int(d) for d in states["input_dims"])
        rows, conditions = states["rows"], states["conditions"]
        rows = [rows] if isinstance(rows, Tensor) else rows
        conditions = [conditions] if isinstance(conditions, Tensor) else conditions
        if not rows:
            return None
        condition = conditions[0]
        return (rows[0].shape[1], _LABELS if condition.ndim == 1 else condition.shape[1])

    def _zero_states(self, dims: Dims) -> dict[str, Any]:
        dim, condition_dim = dims
        if self.streams_moments:
            return self._zero_moments(dim, condition_dim)
        if condition_dim == _LABELS:
            condition = torch.zeros(0, dtype=torch.long, device=self.device)
        else:
            condition = torch.zeros(0, condition_dim, dtype=torch.float64, device=self.device)
        return {
            "rows": [torch.zeros(0, dim, dtype=torch.float64, device=self.device)],
            "conditions": [condition],
        }

    def _zero_moments(self, dim: int, condition_dim: int) -> dict[str, Any]:
        """Zero moments of the feature dimensions that inputs of these dimensions map to."""
        labelled = condition_dim == _LABELS
        kernels = self._kernels(labelled)
        one = torch.ones(1, dim, dtype=torch.float64, device=self.device)

        def zeros(*shape: int) -> Tensor:
            return torch.zeros(*shape, dtype=torch.float64, device=self.device)

        image_dim = kernels.image.features(one).shape[1]
        classes = self._classes
        states = {"input_dims": torch.tensor([dim, condition_dim], device=self.device)}
        if labelled:
            states.update(
                condition_moment=zeros(0, 0), label_counts=zeros(classes),
                joint_moment=zeros(classes, image_dim, image_dim),
            )  # fmt: skip
        else:
            paired = kernels.features(one, torch.ones(1, condition_dim, dtype=torch.float64,
                                      device=self.device), need_image=False)  # fmt: skip
            states.update(
                condition_moment=zeros(paired.condition.shape[1], paired.condition.shape[1]),
                label_counts=zeros(0),
                joint_moment=zeros(paired.joint.shape[1], paired.joint.shape[1]),
            )
        if self._needs_image:
            states["image_moment"] = zeros(image_dim, image_dim)
        return states


def _grown(state: dict[str, Any], classes: int) -> dict[str, Any]:
    """A labelled state with zero blocks and counts appended up to ``classes`` labels."""
    counts, joint = state["label_counts"], state["joint_moment"]
    if counts.numel() >= classes and joint.shape[0] >= classes:
        return state
    return {
        **state,
        "label_counts": _padded(counts, classes),
        "joint_moment": _padded(joint, classes),
    }


def _padded(state: Tensor, classes: int) -> Tensor:
    """``state`` with zero entries (counts or blocks) appended up to ``classes`` labels; from
    none, the zeros themselves (a concatenation would copy 100 MiB of them for 50 blocks)."""
    missing = classes - state.shape[0]
    if missing <= 0:
        return state
    zeros = state.new_zeros(missing, *state.shape[1:])
    return zeros if state.shape[0] == 0 else torch.cat([state, zeros])


def _blocks_for(joint: Tensor, labels: Tensor, classes: int) -> Tensor:
    """``joint`` grown to ``classes`` blocks for the flush of rows with ``labels``: a new block
    of one of them is left unset (it is fresh, so the flush writes it whole: zeroing 100 MiB
    of blocks first costs a third of a 10k-row stream), the other new ones are zero."""
    grown = joint.shape[0]
    if grown >= classes:
        return joint
    new = joint.new_empty(classes - grown, *joint.shape[1:])
    unset = torch.zeros(classes - grown, dtype=torch.bool, device=joint.device)
    unset[labels[labels >= grown] - grown] = True
    new[~unset] = 0
    return new if grown == 0 else torch.cat([joint, new])


def _concatenated(pending: Sequence[tuple[Tensor, Tensor]], scratch: ScratchBuffers) -> Any:
    """The features (in ``scratch``) and labels of the rows held back, each in one tensor."""
    parts = [phi for phi, _ in pending]
    rows = sum(part.shape[0] for part in parts)
    phi = scratch.get("pending", rows, parts[0].shape[1], parts[0].device)
    return torch.cat(parts, out=phi), torch.cat([labels for _, labels in pending])


def _grouped(phi: Tensor, labels: Tensor, scratch: ScratchBuffers) -> tuple[list[int], Any]:
    """The labels present and their rows of ``phi``, one block each, grouped once."""
    present, index, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    grouped = scratch.get("grouped", *phi.shape, phi.device)
    rows = torch.index_select(phi, 0, torch.argsort(index, stable=True), out=grouped)
    return present.tolist(), rows.split(counts.tolist())


def _add_label_moments(
    out: Tensor, phi: Tensor, labels: Tensor, counts: Tensor, scratch: ScratchBuffers
) -> None:
    """Add each label's rows' second moment to its (D, D) block of ``out``. A label counted
    (``counts``, the held-back rows included) only by these rows has a zero block: written."""
    for label, block in zip(*_grouped(phi, labels, scratch), strict=True):
        fresh = bool(counts[label] == block.shape[0])
        second_moment(block, out=out[label], scratch=scratch, overwrite=fresh)


def _label_blocks(
    joint: Tensor,
    counts: Tensor,
    pending: Sequence[tuple[Tensor, Tensor]],
    scratch: ScratchBuffers,
) -> list[Tensor]:
    """Each counted label's block of the joint moment with its held-back rows, none added to
    the states. A label whose rows are all held back, fewer than the feature dimension, gives
    their Gram matrix instead (the same nonzero eigenvalues; at 20 rows a label, a 20 x 20
    eigendecomposition instead of a 512 x 512 one)."""
    held = {}
    if pending:
        held = dict(zip(*_grouped(*_concatenated(pending, scratch), scratch), strict=True))
    blocks = []
    for label in torch.nonzero(counts > 0).flatten().tolist():
        rows = held.get(label)
        if rows is None:
            blocks.append(joint[label])
        elif bool(counts[label] == rows.shape[0]):  # its block is zero, or not grown yet
            blocks.append(second_moment(rows.T if rows.shape[0] < rows.shape[1] else rows))
        else:
            blocks.append(second_moment(rows, out=joint[label].clone()))
    return blocks


class ConditionalVendiScore(_PairedVendiMetric):
    """Conditional-Vendi score (Jalali, Ospanov, Gohari & Farnia, arXiv 2411.02817).

    ``exp(H_q(K_X o K_T / n) - H_q(K_T / n))``: the effective number of different samples per
    condition, with ``K_X`` the samples' kernel and ``K_T`` the conditions' (a cosine or
    Gaussian kernel of prompt embeddings, or the label kernel of class labels). See
    :func:`~diversity_callbacks.functional.conditional_vendi_score`.

    Args:
        q: order >= 0, ``"inf"``, or a sequence of orders (``compute`` then returns a dict keyed
            ``"q1"``, ``"q2"``...); order 2 is the Conditional-RKE.
        kernel: the samples' kernel, ``"cosine"`` or ``"gaussian"``, or a
            :class:`~diversity_callbacks.Kernel` of either (or its text), which then also gives
            ``sigma``, ``num_features`` and ``seed``.
        sigma: the samples' Gaussian bandwidth.
        condition_kernel: the condition embeddings' kernel, ``"cosine"`` or ``"gaussian"``
            (integer labels always use the label kernel).
        condition_sigma: the conditions' Gaussian bandwidth.
        num_features: random Fourier frequencies per Gaussian kernel: the streaming path.
        seed: seed of the random Fourier frequencies (identical on every rank).
        tolerance: relative eigenvalue tolerance.
        kwargs: torchmetrics ``Metric`` options.

    ``update(features, conditions)`` takes ``(N, D)`` sample features and either ``(N, D')``
    condition features or ``(N,)`` integer labels.

    Raises:
        TypeError: for the 0.1 signature (``num_conditions``): that score, the mean of each
            condition's own Vendi score, is now ``PerConditionVendiScore``.

    Examples:
        >>> import torch
        >>> from diversity_callbacks import ConditionalVendiScore
        >>> metric = ConditionalVendiScore(q=[1, 2])
        >>> images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
        >>> metric.update(images[:2], torch.tensor([0, 0]))  # class 0: two different images
        >>> metric.update(images[2:], torch.tensor([1, 1]))  # class 1: one image twice
        >>> {k: round(v.item(), 6) for k, v in metric.compute().items()}
        {'q1': 1.414214, 'q2': 1.333333}
    """

    _score = staticmethod(conditional_vendi_score)
    _needs_image = False

    @classmethod
    def _refuse_legacy(cls, legacy: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """The 0.1 signature ``(num_conditions, q, kernel_kwargs)`` is refused, naming its new
        class: no 0.1 call may silently change meaning."""
        old = sorted({"num_conditions", "kernel_kwargs"} & set(kwargs))
        if legacy or old:
            message = LEGACY_MESSAGE.format(
                name=cls.__name__,
                how="takes its options as keywords and its conditions in update()",
                new="PerConditionVendiScore",
            )
            given = f"{len(legacy)} positional argument(s)" if legacy else ", ".join(old)
            raise TypeError(f"{message} Got {given}.")


class InformationVendiScore(_PairedVendiMetric):
    """Information-Vendi score (Jalali, Ospanov, Gohari & Farnia, arXiv 2411.02817).

    ``exp(H_q(K_X / n) + H_q(K_T / n) - H_q(K_X o K_T / n))``: how many distinct modes the
    conditions explain (1 when the samples ignore the condition). Same arguments and ``update``
    as :class:`ConditionalVendiScore`; see
    :func:`~diversity_callbacks.functional.information_vendi_score`.

    Examples:
        >>> import torch
        >>> from diversity_callbacks import InformationVendiScore
        >>> metric = InformationVendiScore()
        >>> images = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
        >>> metric.update(images, torch.tensor([0, 0, 1, 1]))  # each class its own image
        >>> round(metric.compute().item(), 6)
        2.0
    """

    _score = staticmethod(information_vendi_score)
    _needs_image = True


def _describe_kind(condition_dim: int) -> str:
    if condition_dim == _LABELS:
        return "(N,) integer labels"
    return f"(N, {condition_dim}) condition features"
