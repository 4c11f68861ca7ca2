"""Which of the optional metrics apply to an evaluation: the one place that decides.

Five metrics are only defined for some evaluations: the per-condition Vendi score, the Schur
complement entropy, the CLIPScore and the Conditional- and Information-Vendi scores. Each takes a
switch: ``None`` (on where it applies), ``True`` (on, and an error where it does not) or
``False`` (off). :func:`applicable_metrics` decides from the conditions, the number of samples
per condition, the embedder and the Vendi kernel, and says for each metric which requirements
are unmet; :class:`~diversity_callbacks.DiversityEvaluator` and the ``score`` command both ask
it, each wording the unmet requirements in its own terms (:attr:`Requirement.code`).

==========================  ===============================================================
metric (switch)             applies with
==========================  ===============================================================
``per_condition``           prompts or class labels, 2+ samples in some condition
``sce``                     prompts, 2+ samples in some prompt, ``embed_texts``
``clip_score``              prompts, ``embed_texts``
``cond_vendi``,             class labels, or prompts with ``embed_texts``; a cosine or
``info_vendi``              Gaussian Vendi kernel
==========================  ===============================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from diversity_callbacks.evaluation.conditions import ConditionSet
from diversity_callbacks.functional.kernels import Kernel
from diversity_callbacks.utilities.checks import describe

SWITCHES = ("per_condition", "sce", "clip_score", "cond_vendi", "info_vendi")
"""The optional metrics, by the name of their switch, in the order they are decided."""

RequirementCode = Literal["conditions", "prompts", "repeated", "text_embedder", "kernel"]


@dataclass(frozen=True)
class Requirement:
    """One thing an optional metric needs and the evaluation lacks.

    Attributes:
        code: what is missing, for callers that word it their own way: ``"conditions"``
            (prompts or class labels), ``"prompts"`` (text prompts), ``"repeated"`` (a
            condition with 2 or more samples), ``"text_embedder"`` (an embedder with
            ``embed_texts``), ``"kernel"`` (a cosine or Gaussian Vendi kernel).
        text: what is missing in the evaluator's argument names (several requirements may
            share one text).
    """

    code: RequirementCode
    text: str


@dataclass(frozen=True)
class MetricChoice:
    """Whether one optional metric is on, and why not where it does not apply.

    Attributes:
        name: the metric's switch (``"sce"``...).
        requested: the switch as given: ``None`` (where it applies), ``True`` or ``False``.
        unmet: the requirements the evaluation lacks; empty where the metric applies.
    """

    name: str
    requested: bool | None
    unmet: tuple[Requirement, ...] = ()

    @property
    def applies(self) -> bool:
        """Whether the metric is defined for this evaluation."""
        return not self.unmet

    @property
    def on(self) -> bool:
        """Whether the metric is computed: it applies and was not switched off."""
        return self.applies and self.requested is not False

    @property
    def refused(self) -> bool:
        """Whether it was requested (``True``) where it does not apply."""
        return bool(self.requested) and not self.applies

    def error(self) -> str:
        """The evaluator's message for a refused metric: ``"`sce=True` needs ..."``."""
        needs = " and ".join(dict.fromkeys(requirement.text for requirement in self.unmet))
        return f"`{self.name}=True` needs {needs}"


def applicable_metrics(
    conditions: ConditionSet,
    samples_per_condition: int | Sequence[int],
    *,
    embedder: Any = None,
    vendi_kernel: Kernel | str = "cosine",
    requested: Mapping[str, bool | None] | None = None,
) -> dict[str, MetricChoice]:
    """Decide every optional metric (see the module table); nothing is raised here.

    Args:
        conditions: the evaluation's conditions.
        samples_per_condition: a generator's samples per condition, or the number of existing
            samples in each condition.
        embedder: the evaluator's embedder; ``None`` is the default
            :class:`~diversity_callbacks.CLIPEmbedder`, which embeds texts.
        vendi_kernel: the Vendi score's :class:`~diversity_callbacks.Kernel`, or its text.
        requested: the switches by name (:data:`SWITCHES`); a missing one is ``None``.

    Returns:
        A :class:`MetricChoice` per switch, in the order of :data:`SWITCHES`.

    Example:
        >>> conditions = ConditionSet.from_arguments(prompts=["a cat", "a dog"])
        >>> choices = applicable_metrics(conditions, [3, 1], embedder=lambda s: s)
        >>> [name for name, choice in choices.items() if choice.on]
        ['per_condition']
        >>> [r.code for r in choices["sce"].unmet]
        ['text_embedder']
    """
    requested = dict(requested or {})
    unknown = sorted(set(requested) - set(SWITCHES))
    if unknown:
        raise ValueError(f"`requested` takes the switches {list(SWITCHES)}, got {unknown}")
    unmet = _unmet(conditions, samples_per_condition, embedder, vendi_kernel)
    return {
        name: MetricChoice(
            name, requested.get(name), tuple(r for r, holds in unmet[name] if not holds)
        )
        for name in SWITCHES
    }


def refuse_unmet(choices: Mapping[str, MetricChoice]) -> None:
    """Raise for the first metric requested where it does not apply.

    Raises:
        ValueError: ``"`sce=True` needs ..."``, naming what is missing.
    """
    for choice in choices.values():
        if choice.refused:
            raise ValueError(choice.error())


def embeds_texts(embedder: Any) -> bool:
    """Whether ``embedder`` can embed prompts (a FunctionEmbedder only with a ``text_fn``);
    ``None``, the default CLIP embedder, can."""
    from diversity_callbacks.embedders.base import FunctionEmbedder

    if embedder is None:
        return True
    if isinstance(embedder, FunctionEmbedder):
        return embedder.text_fn is not None
    return callable(getattr(embedder, "embed_texts", None))


def _unmet(
    conditions: ConditionSet,
    samples_per_condition: int | Sequence[int],
    embedder: Any,
    vendi_kernel: Kernel | str,
) -> dict[str, list[tuple[Requirement, bool]]]:
    """Every requirement of every switch, with whether the evaluation meets it."""
    kind = conditions.kind
    kernel = vendi_kernel.name if isinstance(vendi_kernel, Kernel) else vendi_kernel.split(":")[0]
    repeated, counted = _repetition(samples_per_condition)
    texts = embeds_texts(embedder)
    embedder_text = f"an embedder with embed_texts(prompts) (got {describe(embedder)})"
    prompts = Requirement("prompts", f"text prompts (got {kind!r} conditions)")
    text_embedder = Requirement("text_embedder", embedder_text)
    within = (
        "prompts or class labels with "
        f"{counted} (the within-condition diversity of one sample is always 1), got {kind!r} "
        f"conditions with {_counts_text(samples_per_condition)}"
    )
    embeddable = (
        "class labels, or text prompts with an embedder that has embed_texts(prompts) (got "
        f"{kind!r} conditions and {describe(embedder)})"
    )
    prompt_aware = [
        (Requirement("conditions", embeddable), kind != "none"),
        (Requirement("text_embedder", embeddable), kind == "class" or texts),
        (
            Requirement("kernel", f"a cosine or Gaussian vendi_kernel (got {kernel!r})"),
            kernel in ("cosine", "gaussian"),
        ),
    ]
    return {
        "per_condition": [
            (Requirement("conditions", within), conditions.is_conditional),
            (Requirement("repeated", within), repeated),
        ],
        "sce": [
            (prompts, kind == "prompt"),
            (
                Requirement(
                    "repeated",
                    f"{counted} (with one sample per prompt the prompts explain every sample; "
                    f"got {_counts_text(samples_per_condition)})",
                ),
                repeated,
            ),
            (text_embedder, texts),
        ],
        "clip_score": [(prompts, kind == "prompt"), (text_embedder, texts)],
        "cond_vendi": prompt_aware,
        "info_vendi": prompt_aware,
    }


def _repetition(samples_per_condition: int | Sequence[int]) -> tuple[bool, str]:
    """Whether some condition holds 2+ samples, and that requirement's words."""
    if isinstance(samples_per_condition, int):
        return samples_per_condition > 1, "`samples_per_condition` >= 2"
    return any(count > 1 for count in samples_per_condition), "2 or more samples in a condition"


def _counts_text(samples_per_condition: int | Sequence[int]) -> str:
    if isinstance(samples_per_condition, int):
        return str(samples_per_condition)
    return f"at most {max(samples_per_condition, default=0)} samples per condition"
