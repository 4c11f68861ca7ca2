"""The Vendi score as a torchmetrics metric that streams batches and syncs across DDP ranks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat

from diversity_callbacks.functional.kernels import (
    ROW_BLOCK,
    KernelArgument,
    as_kernel,
    empty_float64,
    normalize_rows,
    second_moment,
)
from diversity_callbacks.functional.spectrum import (
    Order,
    check_tolerance,
    parse_orders,
    vendi_orders,
)
from diversity_callbacks.functional.vendi import (
    _vendi_check_inputs,
    _vendi_compute,
    _vendi_update,
)
from diversity_callbacks.metrics.base import Dims, HoldsRowsBack, unsized_moment

# Bytes of kernel features a CPU VendiScore holds back at most: ROW_BLOCK rows at D = 512.
_HELD_BYTES = 32 * 2**20


def _rows_held_for(dim: int) -> int:
    """How many rows of ``dim`` float64 kernel features are held back: up to ROW_BLOCK."""
    return max(1, min(ROW_BLOCK, _HELD_BYTES // (8 * dim)))


class VendiScore(HoldsRowsBack):
    """Vendi score ``exp(H_q)`` of the eigenvalues of ``K / n`` over all samples seen.

    Two ways to hold the samples, chosen by the kernel:

    - kernels with an explicit feature map (``"cosine"``, ``"linear"``, ``"gaussian"`` with
      ``num_features``, or a ``feature_map``) keep the float64 D x D second moment
      ``sum phi(x) phi(x)^T`` and a count: exact for every order, state size independent of the
      number of samples, summed across ranks. On the CPU, batches' kernel features are held
      back, up to :data:`~diversity_callbacks.functional.kernels.ROW_BLOCK` rows and 32 MiB, and
      added in one rank-k update (on 1024-row batches BLAS runs 15% slower): ``compute``,
      ``sync``, ``state_dict``, ``merge_state``, ``forward`` and a move to another device add
      them first, but ``second_moment`` read between updates lacks them;
    - the exact ``"gaussian"`` kernel and kernel callables keep every row (float64, gathered
      across ranks) and build the n x n kernel in ``compute``.

    ``num_samples`` counts the rows this rank added (all ranks' rows inside
    ``metric.sync_context()``); :meth:`spectrum` gives the eigenvalues, whose number is the
    effective dimension.

    Args:
        q: order >= 0, ``"inf"``, or a sequence of orders (``compute`` then returns a dict keyed
            ``"q0.5"``, ``"q1"``, ``"q2"``, ``"qinf"``...).
        kernel: a :class:`~diversity_callbacks.Kernel`, its text (``"cosine"``, the default;
            ``"linear"``; ``"gaussian:sigma=3.5,features=2048"``) or a kernel callable
            ``k(X, Y) -> (N, M)``. With random features the score depends on the draw (a few
            percent between seeds): compare runs at the same seed.
        tolerance: relative eigenvalue tolerance (default ``size * eps(float64)``).
        kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ``process_group``...);
            the 0.1 kernel arguments ``sigma``, ``num_features``, ``seed``, ``feature_map``
            still work, with a ``FutureWarning``.

    Examples:
        >>> import torch
        >>> from diversity_callbacks import VendiScore
        >>> metric = VendiScore(q=[1, 2])
        >>> metric.update(torch.eye(3))
        >>> metric.update(torch.eye(3))
        >>> {k: round(v.item(), 6) for k, v in metric.compute().items()}
        {'q1': 3.0, 'q2': 3.0}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 1.0
    num_dims = 2  # the input dimension and the dimension of the kernel features held

    def __init__(
        self,
        q: Order | Sequence[Order] = 1.0,
        kernel: KernelArgument = None,
        *,
        tolerance: float | None = None,
        **kwargs: Any,
    ) -> None:
        self.kernel_value = as_kernel(kernel, kwargs, type(self).__name__, strict=False)
        """The :class:`~diversity_callbacks.Kernel` the states are built with."""
        super().__init__(**kwargs)
        self.orders, self._as_dict = parse_orders(q)
        self.kernel = self.kernel_value.resolve()
        """The resolved kernel (feature map or kernel function) that ``update`` applies."""
        check_tolerance(tolerance)
        self.tolerance = tolerance
        self.streams_moments = self.kernel.feature_map is not None
        self._held_rows: Tensor | None = None  # (_rows_held_for(D), D) kernel features held back
        self._held = 0  # how many of its rows hold samples
        if self.streams_moments:
            self.add_state("second_moment", default=unsized_moment(), dist_reduce_fx="sum")
            # A feature map hides the input dimension (random features map any d to 2m), so it
            # is kept to refuse other dimensions after load_state_dict or merge_state too.
            self.add_state("input_dim", default=torch.tensor(0), dist_reduce_fx="max")
        else:
            self.add_state("rows", default=[], dist_reduce_fx="cat")
        self.add_state(
            "num_samples", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, features: Tensor) -> None:
        """Add a batch of (N, D) features; D must stay the same across updates."""
        dims = self._dims_of(self.metric_state)
        _vendi_check_inputs(features, dim=None if dims is None else dims[0])
        if features.shape[0] == 0:
            return
        features = features.to(self.device)
        if not self.streams_moments:
            self.rows.append(_vendi_update(features, self.kernel))
        elif self._holds_back(features, dims):
            self._hold(features, dims)
        elif dims is None:
            moment = _vendi_update(features, self.kernel)
            self._allocate((features.shape[1], moment.shape[0]))
            self.second_moment.copy_(moment)
        else:
            _vendi_update(features, self.kernel, self.second_moment)
        self.num_samples += features.shape[0]

    def _holds_back(self, features: Tensor, dims: Dims | None) -> bool:
        """Whether the batch's kernel features go to the held-back rows: on the CPU only, where
        the moment is a SYRK, which runs 15% slower on 1024-row blocks than on 8192-row ones
        (measured at D = 512, one thread); for a batch that fits them; and for a feature map other
        than cosine (whose D is the input's) only once the first batch has told D."""
        if self.device.type != "cpu" or (
            dims is None and self.kernel.feature_map is not normalize_rows
        ):
            return False
        return features.shape[0] <= _rows_held_for(features.shape[1] if dims is None else dims[1])

    def _hold(self, features: Tensor, dims: Dims | None) -> None:
        """Write the batch's kernel features into the held-back rows, adding these first when
        the batch would not fit; the states are allocated (cosine's first batch) once it is."""
        rows = features.shape[0]
        dim = features.shape[1] if dims is None else dims[1]
        capacity = _rows_held_for(dim)
        if self._held + rows > capacity:
            self._flush()
        if self._held_rows is None or self._held_rows.shape != (capacity, dim):
            self._held_rows = empty_float64((capacity, dim), self.device)
        slot = self._held_rows[self._held : self._held + rows]
        if self.kernel.feature_map is normalize_rows:
            normalize_rows(features, out=slot)  # straight into the buffer: no copy
        else:
            phi = self.kernel.features(features)
            if phi.shape[1] != dim:
                raise ValueError(
                    f"`features` map to {phi.shape[1]} kernel features, but the moment they are "
                    f"added to holds {dim}: every update must use the same embedder and kernel"
                )
            slot.copy_(phi)
        if dims is None:
            self._allocate((dim, dim))
        self._held += rows

    def _flush(self) -> None:
        """Add the held-back rows' second moment to the state."""
        if self._held:
            second_moment(self._held_rows[: self._held], out=self.second_moment)
            self._held = 0

    def _drop_held(self) -> None:
        self._held = 0

    def compute(self) -> Tensor | dict[str, Tensor]:
        """Vendi score of every sample seen on every rank (a collective: call it on all ranks)."""
        return vendi_orders(self._spectrum(), self.orders, self._as_dict)

    def spectrum(self) -> Tensor:
        """Eigenvalues of ``K / n`` over all samples, descending (a collective, like compute).

        Its length is the effective dimension (the numerical rank, ``VS_0``); it sums to 1.
        """
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn,
            should_sync=self._to_sync,
            should_unsync=self._should_unsync,
        ):
            return self._spectrum()

    def _spectrum(self) -> Tensor:
        if int(self.num_samples) == 0:
            raise ValueError(
                f"{type(self).__name__}.compute() needs at least one sample, got none: call "
                "update() with (N, D) features first"
            )
        state = self.second_moment if self.streams_moments else dim_zero_cat(self.rows)
        return _vendi_compute(state, self.kernel, tolerance=self.tolerance)

    def plot(
        self,
        val: Tensor | dict[str, Tensor] | Sequence[Tensor | dict[str, Tensor]] | None = None,
        ax: Any = None,
    ) -> tuple[Any, Any]:
        """Plot one result of ``compute`` (a tensor or a dict of orders) or a sequence of them.

        Args:
            val: results to plot; ``compute()`` when omitted (a collective under DDP).
            ax: a matplotlib axis to draw on; a new figure when omitted.

        Returns:
            The matplotlib figure and axis (needs ``pip install diversity-callbacks[plot]``).
        """
        return self._plot(val, ax)

    def _state_settings(self) -> dict[str, Any]:
        return self.kernel_value.settings()

    def _dims_of(self, states: Mapping[str, Any]) -> Dims | None:
        """(input dimension, dimension of the kernel features held), None before any rows."""
        if self.streams_moments:
            moment = states["second_moment"]
            return None if moment.shape[0] == 0 else (int(states["input_dim"]), moment.shape[0])
        rows = states["rows"]
        rows = [rows] if isinstance(rows, Tensor) else rows
        return (rows[0].shape[1],) * 2 if rows else None

    def _zero_states(self, dims: Dims) -> dict[str, Any]:
        input_dim, dim = dims
        if self.streams_moments:
            moment = torch.zeros(dim, dim, dtype=torch.float64, device=self.device)
            return {
                "second_moment": moment,
                "input_dim": torch.tensor(input_dim, device=self.device),
            }
        return {"rows": [torch.zeros(0, dim, dtype=torch.float64, device=self.device)]}
