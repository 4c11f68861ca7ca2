"""The callback's modes: lost modes since the baseline in the history and media_dir, the
comparison's reference kept across a resume, and the default number of modes."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from diversity_callbacks import DiversityCallback, FunctionEmbedder
from tests.helpers.modes import WEIGHTS, mode_generator
from tests.helpers.trainer import QUIET

DIM = 3 * 8 * 8


class ModeModule(L.LightningModule):
    """Images of the six synthetic modes; from training step 2 on, modes 1 and 4 are gone."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.full, self.collapsed = mode_generator(dim=DIM), mode_generator((1, 4), dim=DIM)

    def generate(self, labels: torch.Tensor, generators: list) -> torch.Tensor:
        sample = self.collapsed if self.global_step >= 2 else self.full
        return (0.5 + 2 * sample(labels, generators)).clamp(0, 1).float().view(-1, 3, 8, 8)

    def training_step(self, batch, batch_idx):
        return (self.weight * batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def callback(**options) -> DiversityCallback:
    return DiversityCallback(
        class_labels=list(range(100)),
        samples_per_condition=3,
        embedder=FunctionEmbedder(lambda images: images.flatten(1) - 0.5),
        value_range="[0,1]",
        batch_size=100,
        per_condition=False,
        cond_vendi=False,
        info_vendi=False,
        every_n_train_steps=3,
        **options,
    )


def fit(diversity: DiversityCallback, steps: int = 3) -> None:
    data = DataLoader(TensorDataset(torch.ones(8, 1)), batch_size=1)
    trainer = L.Trainer(max_steps=steps, callbacks=[diversity], **QUIET)
    trainer.fit(ModeModule(), data)


def test_the_lost_modes_since_the_baseline_reach_the_history_and_media_dir(tmp_path: Path) -> None:
    diversity = callback(media_dir=tmp_path)
    fit(diversity)
    first, last = diversity.history
    assert first["diversity/num_modes"] == 6 and first["diversity/lost_mode_mass"] == 0.0
    assert last["diversity/lost_mode_mass"] == pytest.approx(WEIGHTS[1] + WEIGHTS[4], abs=0.03)
    folder = tmp_path / "step_000002" / "modes"  # the logger's step of global step 3
    assert sorted(p.name for p in folder.glob("lost_*.png")) == ["lost_01.png", "lost_02.png"]
    assert len(list(folder.glob("mode_*.png"))) == 4  # the survivors (noise modes left out)
    assert len(list((tmp_path / "step_000000" / "modes").glob("mode_*.png"))) == 6
    captions = (folder / "captions.txt").read_text()
    assert "lost 1: share 0.2" in captions and "lost since step 0" in captions


def test_the_reference_survives_a_checkpoint() -> None:
    diversity = callback()
    fit(diversity, steps=1)
    state = diversity.state_dict()
    resumed = callback()
    resumed.load_state_dict(state)
    torch.testing.assert_close(
        resumed.mode_reference.embeddings, diversity.mode_reference.embeddings
    )
    assert resumed.mode_reference.step == 0
    other = callback(compare_to="best")  # another reference: not taken for this one
    other.load_state_dict(state)
    assert other.mode_reference is None


def test_modes_default_to_eight_with_images_and_off_without() -> None:
    assert callback().evaluator.mode_options.num_modes == 8
    assert callback(log_images=False).evaluator.mode_options is None
    assert callback(modes=3).evaluator.mode_options.num_modes == 3


@pytest.mark.parametrize("compare_to", ["first", -1, True, 1.5])
def test_a_bad_compare_to_is_named(compare_to) -> None:
    with pytest.raises(
        ValueError, match='`compare_to` must be "baseline", "best" or a training step'
    ):
        callback(compare_to=compare_to)
