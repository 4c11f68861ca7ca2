"""What an evaluation's samples are conditioned on, and how a generator is sampled on them.

Two parts: the :class:`ConditionSet` (the prompts, class labels or nothing, their names and
digest), which every evaluation has whatever the source of its samples, and the
:class:`SamplingPlan` (samples per condition, seeds, each rank's share, batches, generators),
which only a generator's evaluation has. A plan draws ``num_conditions x samples_per_condition``
samples. Sample ``i`` belongs to condition ``i // samples_per_condition``
(:meth:`SamplingPlan.condition_index`, the one place that says so) and is drawn from a generator
seeded with :func:`sample_seed` ``(seed, i)`` alone, so two evaluations differ only because the
model changed, whatever the number of ranks. :class:`EvaluationSet` is the plan as 0.1 knew it.

Three kinds of condition, one class each:

=====================  ======================================  ===============================
kind                   the generator receives, per batch        built from
=====================  ======================================  ===============================
``"prompt"``           ``list[str]``, one prompt per sample     ``prompts=``
``"class"``            ``(B,)`` ``torch.long`` labels on the    ``class_labels=``
                       device, one per sample
``"none"``             ``None`` (the batch size is              ``num_samples=``
                       ``len(generators)``)
=====================  ======================================  ===============================
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from diversity_callbacks.utilities.checks import check_positive_int

ConditionKind = Literal["prompt", "class", "none"]
Conditions = list[str] | torch.Tensor | None
"""What the generator receives for one batch: prompts, class labels, or None."""


def sample_seed(seed: int, index: int) -> int:
    """Seed of sample ``index`` of the evaluation set drawn with ``seed``: a 63-bit hash.

    A hash rather than ``seed + index`` so that sets drawn with nearby seeds share no sample.

    Example:
        >>> sample_seed(0, 0)
        5857645148978988075
    """
    digest = hashlib.blake2b(f"{seed}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


@dataclass(frozen=True)
class ConditionSet:
    """What an evaluation's samples are conditioned on: prompts, class labels or nothing.

    Whatever the source of the samples (a generator drawing them from a :class:`SamplingPlan`,
    or existing samples read from files), condition number ``c`` is ``values[c]``, shown as
    ``names[c]``. Build it with :meth:`from_arguments` (which checks the arguments).

    Attributes:
        kind: ``"prompt"``, ``"class"`` or ``"none"``.
        values: the prompts (``str``), the class labels (``int``), or ``(None,)`` for an
            unconditional generator.
        names: how each condition is shown in captions and tables.

    Example:
        >>> conditions = ConditionSet.from_arguments(prompts=["a cat", "a dog"])
        >>> conditions.kind, conditions.num_conditions, conditions.digest()
        ('prompt', 2, '73af250b14d2')
        >>> ConditionSet.from_arguments().kind  # neither: unconditional
        'none'
    """

    kind: ConditionKind
    values: tuple[Any, ...]
    names: tuple[str, ...]

    @classmethod
    def from_arguments(
        cls,
        *,
        prompts: Sequence[str] | str | os.PathLike | None = None,
        class_labels: Sequence[int] | Mapping[str, int] | None = None,
    ) -> ConditionSet:
        """The conditions of at most one of ``prompts`` or ``class_labels``; neither:
        unconditional.

        Args:
            prompts: a list of prompts, or the path of a UTF-8 text file with one prompt per
                line (blank lines skipped, a byte-order mark ignored).
            class_labels: a list of integer labels, or a mapping of names to labels
                (``{"goldfish": 1, "tabby cat": 281}``).
        """
        if prompts is not None and class_labels is not None:
            raise ValueError(
                "give at most one of `prompts` (text-conditional) or `class_labels` "
                "(class-conditional), got both"
            )
        if prompts is not None:
            loaded = tuple(load_prompts(prompts))
            return cls("prompt", loaded, loaded)
        if class_labels is not None:
            return cls("class", *_class_labels(class_labels))
        return cls("none", (None,), ("all samples",))

    @property
    def num_conditions(self) -> int:
        """Number of prompts or classes; 1 for an unconditional generator."""
        return len(self.values)

    @property
    def is_conditional(self) -> bool:
        """Whether samples belong to prompts or classes."""
        return self.kind != "none"

    def checked_counts(self, counts: Sequence[int]) -> list[int]:
        """``counts`` of existing samples, one integer >= 0 per condition, checked."""
        counts = list(counts)
        if len(counts) != self.num_conditions:
            raise ValueError(
                f"`counts` must hold one count per condition, {self.num_conditions} in all, got "
                f"{len(counts)}"
            )
        for count in counts:
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"`counts` must hold integers >= 0, got {count!r}")
        return counts

    def values_for(self, condition_ids: Sequence[int], device: torch.device) -> Conditions:
        """What a generator receives for samples of these condition numbers (module table)."""
        if self.kind == "none":
            return None
        values = [self.values[c] for c in condition_ids]
        if self.kind == "class":
            return torch.tensor(values, dtype=torch.long, device=device)
        return values

    def describe(self, condition_ids: Sequence[int], limit: int = 3) -> str:
        """Some conditions, for error messages: ``prompts 'a', 'b' and 2 more``."""
        if self.kind == "none":
            return "unconditional"
        unique = list(dict.fromkeys(self.names[c] for c in condition_ids))
        shown = ", ".join(repr(name) for name in unique[:limit])
        more = f" and {len(unique) - limit} more" if len(unique) > limit else ""
        return f"{'prompts' if self.kind == 'prompt' else 'classes'} {shown}{more}"

    def digest(self) -> str:
        """A short hash of the conditions, to tell evaluations apart in checkpoints.

        Computed once per set: the set is frozen, and Lightning reads the callback's
        ``state_key`` (which holds it) several times a training step.
        """
        return self._digest

    @functools.cached_property
    def _digest(self) -> str:
        if self.kind == "prompt" and not any("\n" in p for p in self.values):
            text = "\n".join(self.values)  # the form of 0.1.0 checkpoints: kept, they resume
        else:
            text = json.dumps([self.kind, list(self.values), list(self.names)])
        return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SamplingPlan:
    """How a generator is sampled on some conditions: samples per condition, seeds, shards.

    Sample ``i`` belongs to condition ``i // samples_per_condition`` (:meth:`condition_index`,
    the one place that says so) and is drawn from a generator seeded with :func:`sample_seed`
    ``(seed, i)`` alone. Build it with :meth:`EvaluationSet.from_arguments`.

    Attributes:
        condition_set: the conditions.
        samples_per_condition: samples drawn for each condition.
        seed: seed of the plan.
    """

    condition_set: ConditionSet
    samples_per_condition: int
    seed: int = 0

    @property
    def num_samples(self) -> int:
        """Size of the plan: ``num_conditions * samples_per_condition``."""
        return self.condition_set.num_conditions * self.samples_per_condition

    def condition_index(self, index: int) -> int:
        """The condition that sample ``index`` is drawn for."""
        return index // self.samples_per_condition

    def sample_indices(self, condition: int) -> range:
        """The samples drawn for condition number ``condition``."""
        start = condition * self.samples_per_condition
        return range(start, start + self.samples_per_condition)

    def shard(self, rank: int, world_size: int) -> range:
        """This rank's contiguous share of the samples; no padding, possibly empty."""
        return share_of(self.num_samples, rank, world_size)

    def batches(self, rank: int, world_size: int, batch_size: int) -> list[range]:
        """This rank's share in batches of at most ``batch_size`` samples."""
        share = self.shard(rank, world_size)
        return [share[i : i + batch_size] for i in range(0, len(share), batch_size)]

    def generators(self, indices: Sequence[int], device: torch.device) -> list[torch.Generator]:
        """One generator per sample, on ``device``, seeded for that sample alone."""
        return [
            torch.Generator(device=device).manual_seed(sample_seed(self.seed, i)) for i in indices
        ]

    def conditions_for(self, indices: Sequence[int], device: torch.device) -> Conditions:
        """What the generator receives for these samples (see the module table)."""
        return self.condition_set.values_for([self.condition_index(i) for i in indices], device)

    def condition_ids(self, indices: Sequence[int], device: torch.device) -> torch.Tensor:
        """``(len(indices),)`` long tensor: the condition number of each sample."""
        return torch.tensor([self.condition_index(i) for i in indices], device=device)

    def describe(self, indices: Sequence[int], limit: int = 3) -> str:
        """The conditions of some samples, for error messages: ``prompts 'a', 'b' and 2 more``."""
        return self.condition_set.describe([self.condition_index(i) for i in indices], limit)


@dataclass(frozen=True)
class EvaluationSet(SamplingPlan):
    """A :class:`SamplingPlan` that also answers for its conditions, as 0.1's evaluation set did
    (``kind``, ``conditions``, ``names``, ``num_conditions``, ``is_conditional``, ``digest``).

    Example:
        >>> evaluation_set = EvaluationSet.from_arguments(prompts=["a cat", "a dog"],
        ...                                               samples_per_condition=3)
        >>> evaluation_set.num_samples, evaluation_set.condition_index(4)
        (6, 1)
        >>> evaluation_set.conditions_for([2, 3], torch.device("cpu"))
        ['a cat', 'a dog']
    """

    @classmethod
    def from_arguments(
        cls,
        *,
        prompts: Sequence[str] | str | os.PathLike | None = None,
        class_labels: Sequence[int] | Mapping[str, int] | None = None,
        num_samples: int | None = None,
        samples_per_condition: int = 8,
        seed: int = 0,
    ) -> EvaluationSet:
        """Build the plan from exactly one of ``prompts``, ``class_labels`` or ``num_samples``.

        Args:
            prompts: a list of prompts, or the path of a UTF-8 text file with one prompt per
                line (blank lines skipped, a byte-order mark ignored).
            class_labels: a list of integer labels, or a mapping of names to labels.
            num_samples: an unconditional generator: draw this many samples.
            samples_per_condition: samples drawn per prompt or class (ignored with
                ``num_samples``).
            seed: seed of the plan, an integer >= 0.
        """
        given = [
            name
            for name, value in (
                ("prompts", prompts),
                ("class_labels", class_labels),
                ("num_samples", num_samples),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of `prompts` (text-conditional), `class_labels` "
                f"(class-conditional) or `num_samples` (unconditional), got {given or 'none'}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"`seed` must be an integer >= 0, got {seed!r}")
        if num_samples is not None:
            total = check_positive_int(num_samples, "num_samples")
            return cls(ConditionSet.from_arguments(), total, seed)
        per_condition = check_positive_int(samples_per_condition, "samples_per_condition")
        conditions = ConditionSet.from_arguments(prompts=prompts, class_labels=class_labels)
        return cls(conditions, per_condition, seed)

    @property
    def kind(self) -> ConditionKind:
        """The conditions' kind: ``"prompt"``, ``"class"`` or ``"none"``."""
        return self.condition_set.kind

    @property
    def conditions(self) -> tuple[Any, ...]:
        """The conditions' values (``ConditionSet.values``)."""
        return self.condition_set.values

    @property
    def names(self) -> tuple[str, ...]:
        """How each condition is shown."""
        return self.condition_set.names

    @property
    def num_conditions(self) -> int:
        """Number of prompts or classes; 1 for an unconditional generator."""
        return self.condition_set.num_conditions

    @property
    def is_conditional(self) -> bool:
        """Whether samples are drawn for prompts or classes."""
        return self.condition_set.is_conditional

    def digest(self) -> str:
        """The conditions' digest (:meth:`ConditionSet.digest`)."""
        return self.condition_set.digest()


def share_of(total: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous share of ``total`` items; no padding, possibly empty.

    Example:
        >>> [share_of(5, rank, 2) for rank in range(2)]
        [range(0, 2), range(2, 5)]
    """
    return range(rank * total // world_size, (rank + 1) * total // world_size)


def load_prompts(prompts: Sequence[str] | str | os.PathLike) -> list[str]:
    """A list of prompts, or a UTF-8 file's non-blank lines (byte-order mark ignored)."""
    if isinstance(prompts, (str, os.PathLike)):
        path = os.fspath(prompts)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"`prompts` must be a list of strings or the path of a text file with one prompt "
                f"per line; no file at {path!r}"
            )
        try:
            with open(path, encoding="utf-8-sig") as handle:
                loaded = [line.strip() for line in handle if line.strip()]
        except UnicodeDecodeError as error:
            raise ValueError(
                f"`prompts` file {path!r} must be UTF-8 text, got a byte {error.object[error.start]:#x} "
                f"at offset {error.start} that is not UTF-8: save it as UTF-8"
            ) from None
        if not loaded:
            raise ValueError(f"`prompts` file {path!r} holds no prompt (it is empty or blank)")
        return loaded
    loaded = list(prompts)
    if not loaded:
        raise ValueError("`prompts` must hold at least one prompt, got an empty sequence")
    bad = [p for p in loaded if not isinstance(p, str)]
    if bad:
        raise TypeError(f"`prompts` must hold strings, got {type(bad[0]).__name__} {bad[0]!r}")
    return loaded


def _class_labels(
    class_labels: Sequence[int] | Mapping[str, int],
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Labels and their display names from a list of ints or a mapping of names to ints."""
    if isinstance(class_labels, Mapping):
        names = [str(name) for name in class_labels]
        labels = list(class_labels.values())
    elif isinstance(class_labels, (str, bytes)) or not isinstance(class_labels, Sequence):
        raise TypeError(
            "`class_labels` must be a list of integer labels or a mapping of names to labels, "
            f"got {type(class_labels).__name__}"
        )
    else:
        labels = list(class_labels)
        names = [str(label) for label in labels]
    if not labels:
        raise ValueError("`class_labels` must hold at least one label, got none")
    for label in labels:
        if isinstance(label, bool) or not isinstance(label, int) or label < 0:
            raise ValueError(f"`class_labels` must be integers >= 0, got {label!r}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"`class_labels` must be distinct, got {labels}")
    return tuple(labels), tuple(names)
