"""The modes of an evaluation and the modes lost or gained since an earlier one, on 1 and 2 ranks."""

from __future__ import annotations

import pytest
import torch

from diversity_callbacks import DiversityEvaluator, Kernel
from tests.helpers.distributed import run_distributed
from tests.helpers.modes import MODE_OF_CLASS, WEIGHTS, mode_generator

SAMPLES_PER_CLASS = 6
FEWER = {"samples_per_condition": 3}  # n = 300: for the n x n kernel and the spawned ranks


def evaluator(samples_per_condition: int = SAMPLES_PER_CLASS, **options) -> DiversityEvaluator:
    return DiversityEvaluator(
        class_labels=list(range(100)),
        samples_per_condition=samples_per_condition,
        embedder=lambda x: x,
        value_range=None,
        batch_size=64,
        per_condition=False,
        cond_vendi=False,
        info_vendi=False,
        modes=6,
        **options,
    )


def true_mode(samples: torch.Tensor, per_class: int = SAMPLES_PER_CLASS) -> set[int]:
    """The baseline's modes of these sample indices."""
    return set(MODE_OF_CLASS[samples // per_class].tolist())


def baseline_and_dropped(**options):
    scorer = evaluator(**options)
    before = scorer.evaluate(mode_generator(), progress=False)
    after = scorer.evaluate(mode_generator(dropped=(1, 4)), progress=False, compare_to=before)
    return before, after


def summary(before, after) -> dict:
    """What must agree between 1 and 2 ranks."""
    return {
        "shares": [m.share for m in before.modes],
        "samples": [m.samples.tolist() for m in before.modes],
        "lost": [(m.share, m.samples.tolist()) for m in after.lost_modes],
        "gained": [(m.share, m.samples.tolist()) for m in after.gained_modes],
        "scalars": {k: v for k, v in after.scalars.items() if "seconds" not in k},
    }


def test_six_leading_modes_are_pure_with_their_true_shares() -> None:
    before, _ = baseline_and_dropped()
    assert len(before.modes) == 6
    for mode, share in zip(before.modes, WEIGHTS, strict=True):
        assert len(true_mode(mode.samples)) == 1
        assert mode.share == pytest.approx(share, abs=0.02)
    assert before.scalars["diversity/num_modes"] == 6
    assert "diversity/lost_mode_mass" not in before.scalars


def test_the_lost_modes_are_the_two_dropped_ones_with_their_mass() -> None:
    _, after = baseline_and_dropped()
    assert [true_mode(m.samples) for m in after.lost_modes] == [{1}, {4}]
    mass = after.scalars["diversity/lost_mode_mass"]
    assert mass == pytest.approx(WEIGHTS[1] + WEIGHTS[4], abs=0.03)
    # The survivors' shares grew by as much: gained mass on modes that were there already
    assert after.scalars["diversity/gained_mode_mass"] == pytest.approx(mass, abs=1e-9)


def test_the_gaussian_kernel_without_features_finds_the_same_lost_modes() -> None:
    _, after = baseline_and_dropped(vendi_kernel=Kernel("gaussian", sigma=0.5), **FEWER)
    assert [true_mode(m.samples, 3) for m in after.lost_modes] == [{1}, {4}]
    assert after.scalars["diversity/lost_mode_mass"] == pytest.approx(0.32, abs=0.03)


def _ranks(rank: int, world_size: int, options: dict) -> dict:
    return summary(*baseline_and_dropped(**options))


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "options",
    [FEWER, {"vendi_kernel": Kernel("gaussian", sigma=0.5), **FEWER}],
    ids=["cosine", "exact"],
)
def test_two_gloo_ranks_find_the_modes_of_one(options: dict) -> None:
    alone = summary(*baseline_and_dropped(**options))
    ranks = run_distributed(_ranks, options)
    for found in ranks:
        assert found["samples"] == alone["samples"]
        assert [s for s, _ in found["lost"]] == pytest.approx(
            [s for s, _ in alone["lost"]], abs=1e-9
        )
        assert [t for _, t in found["lost"]] == [t for _, t in alone["lost"]]
        assert [t for _, t in found["gained"]] == [t for _, t in alone["gained"]]
        assert found["shares"] == pytest.approx(alone["shares"], abs=1e-9)
        assert found["scalars"] == pytest.approx(alone["scalars"], abs=1e-9)


def test_text_samples_keep_their_strings_as_previews() -> None:
    words = ["apple", "apple", "pear", "pear", "plum", "plum"]
    table = {
        w: torch.eye(3, dtype=torch.float64)[i] for i, w in enumerate(["apple", "pear", "plum"])
    }
    scorer = DiversityEvaluator(
        num_samples=6,
        embedder=lambda s: torch.stack([table[w] for w in s]),
        value_range=None,
        modes=2,
    )

    def sample(_, generators):
        return [words[int(torch.randint(6, (1,), generator=g))] for g in generators]

    result = scorer.evaluate(sample, progress=False, thumbnails=True)
    shown = {int(i) for m in result.modes for i in m.samples}
    assert shown <= set(result.mode_previews)
    assert all(isinstance(result.mode_previews[i], str) for i in shown)


def test_compare_to_needs_modes_and_a_result_that_has_them() -> None:
    plain = DiversityEvaluator(num_samples=4, embedder=lambda x: x, value_range=None)
    sample = mode_generator()
    with pytest.raises(ValueError, match="`compare_to` needs the evaluator's `modes` >= 1"):
        plain.evaluate(
            lambda c, g: sample(torch.zeros(len(g), dtype=torch.long), g), compare_to=object()
        )
    with_modes = evaluator()
    earlier = plain.evaluate(
        lambda c, g: sample(torch.zeros(len(g), dtype=torch.long), g), progress=False
    )
    with pytest.raises(ValueError, match="got a result without `mode_reference`"):
        with_modes.evaluate(sample, compare_to=earlier, progress=False)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"modes": -1}, "`modes` must be an integer >= 0"),
        ({"modes": 2, "mode_options": {"top": 3}}, "`mode_options` takes samples"),
        ({"modes": 2, "mode_options": {"threshold": 2}}, r"`mode_threshold` must be in \(0, 1\]"),
        ({"modes": 2, "mode_options": {"eta": 0}}, "`eta` must be a finite number > 0"),
    ],
)
def test_bad_mode_settings_are_named(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DiversityEvaluator(num_samples=4, embedder=lambda x: x, value_range=None, **options)


def test_the_modes_take_the_vendi_scores_second_moment(monkeypatch) -> None:
    from diversity_callbacks.evaluation import modes

    expected, _ = baseline_and_dropped()
    own = modes.KernelMoments.of

    def only_the_reference(phi: torch.Tensor) -> modes.KernelMoments:
        assert phi.shape[0] != 600, "the current samples' moment was computed again"
        return own(phi)

    monkeypatch.setattr(modes.KernelMoments, "of", staticmethod(only_the_reference))
    before, _ = baseline_and_dropped()
    assert [m.share for m in before.modes] == pytest.approx([m.share for m in expected.modes])
    assert [m.samples.tolist() for m in before.modes] == [
        m.samples.tolist() for m in expected.modes
    ]
