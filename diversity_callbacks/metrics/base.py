"""Base class for metrics whose states are sized by a feature dimension seen only at update time.

The feature dimension of an embedder (or of a user's feature map) is known at the first
``update``, so the float64 D x D sums and the (0, D) row lists are allocated then. Two cases break
torchmetrics' default handling, and this class fixes both in one place:

- a DDP rank that saw no rows still holds the unsized default, which cannot be summed with or
  gathered beside the other ranks' states: before syncing, ranks agree on the dimensions with one
  all-reduce and empty ranks allocate zero states of that size;
- ``merge_state`` and ``forward`` add an unsized state to a sized one: the unsized side is
  allocated first.

It also keeps these metrics out of ``MetricCollection``'s compute groups (see
:class:`LazilySizedMetric`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn import Module
from torchmetrics import Metric
from torchmetrics.utilities.distributed import gather_all_tensors

Dims = tuple[int, ...]


class LazilySizedMetric(Metric):
    """A torchmetrics ``Metric`` whose states are allocated at the first ``update``.

    Subclasses implement :meth:`_dims_of` (the dimensions a state mapping was allocated with, or
    ``None`` before any update) and :meth:`_zero_states` (states of given dimensions holding no
    samples).

    Each instance holds a random ``instance_tag`` as its first state. ``MetricCollection``
    (``compute_groups=True`` by default) lets metrics whose states are equal after the first
    update share one state from then on; a cosine and a linear Vendi score have equal states
    whenever that first batch is unit-norm, and would report the same number ever after. Distinct
    tags keep every instance in its own group (sharing would only save one update per batch).
    The tag is first because some torchmetrics versions compare only the first state.
    """

    full_state_update = False
    num_dims: int = 1
    """How many dimensions ``_dims_of`` returns (VendiScore: input and kernel-feature dimension)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # From the OS's entropy, not torch's RNG: constructing a metric leaves seeded runs alone.
        tag = torch.tensor(secrets.randbits(62), dtype=torch.long)
        self.add_state("instance_tag", default=tag, dist_reduce_fx="max")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Score of this batch alone; its samples are also added to the states, as by ``update``.

        Raises:
            ValueError: for a batch without rows, whose score is undefined (as ``compute``'s
                before any update); the states are left as they were.
        """
        # torchmetrics' forward sets the states aside, scores the batch alone, then adds them
        # back: a batch score that raises would drop every sample seen so far.
        batch = next((a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)), None)
        if batch is not None and batch.ndim > 0 and batch.shape[0] == 0:
            raise ValueError(
                f"{type(self).__name__}.forward() needs at least one sample to score the batch, "
                f"got a batch of shape {tuple(batch.shape)}; the states are unchanged (use "
                "update() to add batches that may be empty)"
            )
        return super().forward(*args, **kwargs)

    def _dims_of(self, states: Mapping[str, Any]) -> Dims | None:
        raise NotImplementedError

    def _state_settings(self) -> dict[str, Any]:
        """The arguments that decide what ``update`` adds to the states (kernel, bandwidth...).

        ``merge_state`` refuses a metric whose settings differ; the default (no settings) lets
        the state names and dimensions decide.
        """
        return {}

    def merge_state(self, incoming_state: dict[str, Any] | Metric) -> None:
        """Add another metric's states (or a dict of states) to this one's.

        Raises:
            ValueError: if the other metric was built with other settings (e.g. another kernel)
                or the states have other names or feature dimensions.
        """
        if type(incoming_state) is type(self):
            mine, theirs = self._state_settings(), incoming_state._state_settings()
            if mine != theirs:
                raise ValueError(
                    f"{type(self).__name__}.merge_state: cannot merge the states of a metric "
                    f"with {_describe(theirs)} into one with {_describe(mine)}: states built "
                    "with different kernels cannot be added"
                )
        super().merge_state(incoming_state)

    def _zero_states(self, dims: Dims) -> dict[str, Any]:
        raise NotImplementedError

    def _allocate(self, dims: Dims) -> None:
        """Replace the unsized default states with zero states of ``dims``."""
        for name, value in self._zero_states(dims).items():
            setattr(self, name, value)

    def _sync_dist(self, dist_sync_fn: Any = gather_all_tensors, process_group: Any = None) -> None:
        dims = self._agree_on_dims(process_group)
        if dims is not None and self._dims_of(self.metric_state) is None:
            self._allocate(dims)
        super()._sync_dist(dist_sync_fn, process_group=process_group)

    def _agree_on_dims(self, process_group: Any) -> Dims | None:
        """All-reduce this rank's dimensions; raise on every rank if two ranks disagree."""
        local = self._dims_of(self.metric_state)
        size = self.num_dims
        known = torch.tensor(local if local is not None else [0] * size, dtype=torch.long)
        # max(d) and max(-d) over the ranks that saw rows give the largest and smallest dims.
        unseen = torch.full((size,), -(2**62), dtype=torch.long)
        packed = torch.cat([known, -known if local is not None else unseen]).to(self.device)
        dist.all_reduce(packed, op=dist.ReduceOp.MAX, group=process_group)
        largest, smallest = packed[:size].tolist(), (-packed[size:]).tolist()
        if largest == [0] * size:
            return None
        if largest != smallest:
            raise ValueError(
                f"{type(self).__name__}: the feature dimensions differ across ranks "
                f"(between {tuple(smallest)} and {tuple(largest)}); every rank must embed with "
                "the same model"
            )
        return tuple(largest)

    def _apply(self, fn: Callable, exclude_state: Sequence[str] = ()) -> Module:
        """Follow the module across devices, but never change the states' dtype.

        torchmetrics applies ``.to(dtype)`` to states, and Lightning calls it on a
        LightningModule's metrics under ``precision="bf16-true"``: the float64 sums would be
        rounded to bf16. States therefore only move to the device that ``fn`` moves tensors to.
        """
        this = super()._apply(fn, exclude_state=tuple(self._defaults))
        for name in self._defaults:
            if name not in exclude_state:
                this._defaults[name] = _to_device(this._defaults[name], this.device)
                setattr(this, name, _to_device(getattr(this, name), this.device))
        return this

    def _reduce_states(self, incoming_state: dict[str, Any]) -> None:
        # States saved before the tag existed lack it; the tag's value plays no part in merging.
        incoming_state = {"instance_tag": self.instance_tag, **incoming_state}
        missing = sorted(set(self.metric_state) - set(incoming_state))
        if missing:
            raise ValueError(
                f"{type(self).__name__}: cannot merge states without {missing} (got the states "
                f"{sorted(incoming_state)}, expected {sorted(self.metric_state)}): they come from "
                "a metric with other settings"
            )
        mine, theirs = self._dims_of(self.metric_state), self._dims_of(incoming_state)
        if mine is not None and theirs is not None and mine != theirs:
            raise ValueError(
                f"{type(self).__name__}: cannot merge states of feature dimensions {theirs} into "
                f"states of feature dimensions {mine}"
            )
        dims = mine or theirs
        if dims is not None:
            if mine is None:
                self._allocate(dims)
            if theirs is None:
                incoming_state = {**incoming_state, **self._zero_states(dims)}
        super()._reduce_states(incoming_state)


class HoldsRowsBack(LazilySizedMetric):
    """A metric that holds rows back from its states, to add them in blocks big enough for
    BLAS to run at speed: every way the states leave the metric (``sync``, also inside
    ``compute``; ``forward``; ``merge_state``; ``state_dict``; a move to another device) first
    adds them, and ``reset`` and ``load_state_dict`` drop them.

    Subclasses implement :meth:`_flush` (add the held-back rows to the states) and
    :meth:`_drop_held` (forget them). One whose ``compute`` reads the held-back rows itself
    sets ``computes_from_held_rows``: a ``sync`` that will not gather (one process) then leaves
    them where they are.
    """

    computes_from_held_rows = False

    def _flush(self) -> None:
        raise NotImplementedError

    def _drop_held(self) -> None:
        raise NotImplementedError

    def sync(
        self,
        dist_sync_fn: Callable | None = None,
        process_group: Any = None,
        should_sync: bool = True,
        distributed_available: Callable | None = None,
    ) -> None:
        """torchmetrics' ``sync`` (also inside ``compute``), the held-back rows added first
        (only when it will gather, torchmetrics' test, if ``computes_from_held_rows``)."""
        available = distributed_available or self.distributed_available_fn
        if not self.computes_from_held_rows or (
            should_sync and callable(available) and available()
        ):
            self._flush()
        super().sync(dist_sync_fn, process_group, should_sync, distributed_available)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Score of this batch alone; its samples are also added to the states."""
        self._flush()  # forward sets the states aside and resets: held-back rows would be lost
        return super().forward(*args, **kwargs)

    def merge_state(self, incoming_state: dict[str, Any] | Metric) -> None:
        """Add another metric's states (or a dict of states) to this one's."""
        if isinstance(incoming_state, HoldsRowsBack):
            incoming_state._flush()
        self._flush()
        super().merge_state(incoming_state)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """The module's state dict, the held-back rows added to the states first."""
        self._flush()
        return super().state_dict(*args, **kwargs)

    def reset(self) -> None:
        """Forget every sample, the held-back ones too."""
        self._drop_held()
        super().reset()

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._drop_held()  # the loaded states replace the ones the held-back rows belonged to
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn: Callable, exclude_state: Sequence[str] = ()) -> Module:
        self._flush()
        return super()._apply(fn, exclude_state=exclude_state)


def _describe(settings: Mapping[str, Any]) -> str:
    """``kernel='gaussian', sigma=3.0`` for a message."""
    return ", ".join(f"{name}={value!r}" for name, value in settings.items()) or "no settings"


def _to_device(state: Tensor | list[Tensor], device: torch.device) -> Tensor | list[Tensor]:
    if isinstance(state, Tensor):
        return state.to(device)
    return [item.to(device) for item in state]


def unsized_moment() -> Tensor:
    """Default of a D x D float64 sum state before the first update."""
    return torch.zeros(0, 0, dtype=torch.float64)
