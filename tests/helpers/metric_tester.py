"""One harness for every metric class: functional == class == merge_state == 2-rank DDP.

As torchmetrics' ``MetricTester``: a metric registers one :class:`MetricCase` (how to build it,
its functional form, how to draw its inputs) and the harness checks that

- the functional form on all rows (float64 inputs: the reference),
- the class fed the rows in uneven batches,
- its ``forward`` on each batch (the batch's score) and its ``compute`` after them,
- ``merge_state`` of two metrics that each saw one half (and of a full and an empty one),
- two gloo ranks with uneven shares, and with one rank that has no rows

all give the same ``compute()`` result, within the case's tolerances. The inputs of a case are
columns (tensors or lists) of the same length, one per ``update`` argument, drawn from a seeded
generator so that every process draws the same rows.

The DDP check runs every case and every share in one 2-rank launch (process start-up dominates
the cost): :func:`ddp_run` launches :func:`ddp_results` on each rank.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from tests.helpers.distributed import run_distributed

Columns = tuple[Any, ...]
"""The ``update`` arguments of some rows: tensors or lists, all of the same length."""

NUM_ROWS = 24
BATCHES = (7, 0, 1, 12, 4)
"""Row counts of the class check's ``update`` calls (uneven, an empty one, one of one row)."""

SHARES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "uneven": ((5, 0, 4), (15,)),
    "rank1_empty": ((10, 14), ()),
    "rank0_empty": ((), (3, 21)),
    "rank1_empty_batch": ((24,), (0,)),
}
"""Row counts per ``update`` call, per rank: uneven shares with different numbers of calls (and
an empty batch between two others), a rank that never calls ``update`` and one whose only batch
is empty (rank 0's rows come first in the gathered order)."""

DDP_TIMEOUT = 60
"""Seconds a collective waits for the other rank (a broken metric can leave one rank waiting)."""

FORWARD_BATCHES = (7, 5, 12)
"""Row counts of the ``forward`` calls: each scored alone (none empty, which ``forward``
refuses, and none of one row, which self-BLEU refuses)."""

ONE_PROCESS_CHECKS = ("batched", "forward", "merged_halves", "merged_with_empty")
CHECKS = (*ONE_PROCESS_CHECKS, *(f"ddp_{share}" for share in SHARES))


@dataclass(frozen=True)
class MetricCase:
    """One metric configuration, as the harness runs it.

    Args:
        metric: builds a fresh metric (called once per check and per rank).
        functional: the functional form on all rows' (float64) columns, returning what
            ``metric.compute()`` returns.
        inputs: ``inputs(num_rows, generator)``: the columns of ``num_rows`` rows.
        rtol: relative tolerance of every comparison with the functional form.
        atol: absolute tolerance (for values that are 0 or near it).
        xfail: check name (one of :data:`CHECKS`) -> why the metric fails it today; the check
            is then a strict xfail: it must fail, with that reason, until someone fixes it.
    """

    metric: Callable[[], Metric]
    functional: Callable[..., Any]
    inputs: Callable[[int, torch.Generator], Columns]
    rtol: float = 1e-9
    atol: float = 1e-12
    xfail: Mapping[str, str] = field(default_factory=dict)


def draw(case: MetricCase, seed: int = 0) -> Columns:
    """The case's :data:`NUM_ROWS` rows, the same in every process."""
    columns = case.inputs(NUM_ROWS, torch.Generator().manual_seed(seed))
    lengths = {len(column) for column in columns}
    assert lengths == {NUM_ROWS}, f"the input columns have {lengths} rows, not {NUM_ROWS}"
    return columns


def as_float64(columns: Columns) -> Columns:
    """Floating tensors widened to float64 (the reference's inputs); the rest as they are."""
    return tuple(
        c.double() if isinstance(c, Tensor) and c.is_floating_point() else c for c in columns
    )


def rows(columns: Columns, start: int, stop: int) -> Columns:
    return tuple(column[start:stop] for column in columns)


def fed(case: MetricCase, columns: Columns, counts: Sequence[int], start: int = 0) -> Metric:
    """A fresh metric updated with consecutive batches of ``counts`` rows from row ``start``."""
    metric = case.metric()
    for count in counts:
        metric.update(*rows(columns, start, start + count))
        start += count
    return metric


def expected(case: MetricCase) -> Any:
    return case.functional(*as_float64(draw(case)))


def one_process(case: MetricCase, check: str) -> list[tuple[str, Any, Any]]:
    """``(what, result, reference)`` of the one-process check ``check``."""
    columns, reference = draw(case), expected(case)
    if check == "batched":
        return [("compute", fed(case, columns, BATCHES).compute(), reference)]
    if check == "forward":
        metric, start, found = case.metric(), 0, []
        for count in FORWARD_BATCHES:
            batch = rows(columns, start, start + count)
            alone = case.functional(*as_float64(batch))
            found.append((f"forward of rows {start}:{start + count}", metric(*batch), alone))
            start += count
        return [*found, ("compute after forward", metric.compute(), reference)]
    if check == "merged_halves":
        half = NUM_ROWS // 2
        first = fed(case, columns, (half,))
        first.merge_state(fed(case, columns, (NUM_ROWS - half,), start=half))
        return [("compute", first.compute(), reference)]
    assert check == "merged_with_empty", check
    into_empty, empty_into = case.metric(), fed(case, columns, (NUM_ROWS,))
    into_empty.merge_state(fed(case, columns, (NUM_ROWS,)))  # takes the full one's states
    empty_into.merge_state(case.metric())  # is left as it was
    return [
        ("empty.merge_state(full)", into_empty.compute(), reference),
        ("full.merge_state(empty)", empty_into.compute(), reference),
    ]


def ddp_runs(names: Sequence[str]) -> list[str]:
    """The 2-rank runs of the cases ``names``: ``"name/share"`` for every share."""
    return [f"{name}/{share}" for name in names for share in SHARES]


def ddp_results(
    rank: int, world_size: int, cases: Mapping[str, MetricCase], runs: Sequence[str], folder: str
) -> None:
    """What one rank computes in each run of :func:`ddp_runs`, saved run by run in ``folder``.

    An error is saved as its message, then ends the launch: after it the ranks may wait in
    different collectives, so :func:`ddp_run` starts a new launch for the runs after it.
    """
    assert world_size == 2, world_size
    for run in runs:
        name, share = run.rsplit("/", 1)
        counts = SHARES[share]
        start = 0 if rank == 0 else sum(counts[0])
        try:
            result = fed(cases[name], draw(cases[name]), counts[rank], start).compute()
        except Exception as error:
            _save(f"{type(error).__name__}: {error}", _saved(folder, run, rank))
            raise
        _save(result, _saved(folder, run, rank))


def ddp_run(on_ranks: Callable[..., None], runs: Sequence[str]) -> dict[str, Any]:
    """``{run: [rank 0's result, rank 1's]}``, or ``{run: why it failed}``, of
    ``on_ranks(rank, world_size, runs, folder)`` (which calls :func:`ddp_results`).

    One launch does every run while all goes well. A run that fails ends its launch, whether
    by an error or by a collective mismatch (one rank gathering other sizes than the other
    aborts the processes inside gloo, where no ``except`` reaches); the runs after it go to a
    new launch, so that each broken run is reported on its own.
    """
    results: dict[str, Any] = {}
    remaining = list(runs)
    with tempfile.TemporaryDirectory() as folder:
        while remaining:
            try:
                run_distributed(on_ranks, remaining, folder, timeout=DDP_TIMEOUT)
                died = ""
            except Exception as error:
                died = f"the 2-rank launch died in this run ({error}; its stderr says why)"
            done = 0
            for run in remaining:
                done += 1
                paths = [_saved(folder, run, rank) for rank in range(2)]
                saved = [torch.load(path, weights_only=False) for path in paths if path.exists()]
                errors = [value for value in saved if isinstance(value, str)]
                if len(saved) == 2 and not errors:
                    results[run] = saved
                    continue
                assert died, f"{run}: the launch ended without both ranks' results"
                results[run] = errors[0] if errors else died
                break
            remaining = remaining[done:]
    return results


def _saved(folder: str, run: str, rank: int) -> Path:
    return Path(folder, f"{run.replace('/', '--')}.{rank}.pt")


def _save(result: Any, path: Path) -> None:
    """Whole or not at all: the other rank's failure may kill this process mid-write."""
    partial = path.with_suffix(".partial")
    torch.save(result, partial)
    os.replace(partial, path)


def assert_close(actual: Any, reference: Any, rtol: float, atol: float, where: str = "") -> None:
    """Equal structure (dicts of the same keys in the same order) and values within the
    tolerances; NaN equals NaN."""
    if isinstance(actual, str):  # an error recorded by a rank
        raise AssertionError(f"{where}: raised {actual}")
    if isinstance(reference, Mapping):
        assert isinstance(actual, Mapping), f"{where}: got {type(actual).__name__}, not a dict"
        assert list(actual) == list(reference), f"{where}: keys {list(actual)} != {list(reference)}"
        for key in reference:
            assert_close(actual[key], reference[key], rtol, atol, f"{where}[{key!r}]")
        return
    if isinstance(reference, Tensor) or isinstance(actual, Tensor):
        actual, reference = torch.as_tensor(actual), torch.as_tensor(reference)
        torch.testing.assert_close(
            actual.double().cpu(),
            reference.double().cpu(),
            rtol=rtol,
            atol=atol,
            equal_nan=True,
            msg=lambda message: f"{where}: {message}",
        )
        return
    if isinstance(reference, float) and math.isnan(reference):
        assert math.isnan(actual), f"{where}: {actual} is not NaN"
        return
    assert actual == reference or math.isclose(actual, reference, rel_tol=rtol, abs_tol=atol), (
        f"{where}: {actual!r} != {reference!r}"
    )


def public_metric_classes(package: str = "diversity_callbacks") -> set[type[Metric]]:
    """Every public, concrete ``Metric`` subclass defined in the package.

    Candidates are found by reading the sources (a class with a base named ``Metric``, or a
    base that is such a class), so that only the modules defining them are imported: importing
    every module would pull in Lightning, diffusers and open_clip.
    """
    root = Path(importlib.import_module(package).__file__).parent
    classes: dict[tuple[str, str], list[str]] = {}  # (module, class name) -> base names
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases]
                classes[module, node.name] = bases
    metric_like = {"Metric"}
    while True:  # names of classes with a Metric-like base, until no new one appears
        grown = metric_like | {
            name for (_, name), bases in classes.items() if metric_like & set(bases)
        }
        if grown == metric_like:
            break
        metric_like = grown
    found = set()
    for module, name in classes:
        if name in metric_like and not name.startswith("_"):
            cls = getattr(importlib.import_module(module), name)
            if issubclass(cls, Metric) and not inspect.isabstract(cls):
                found.add(cls)
    return found
