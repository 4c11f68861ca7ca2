"""The reference set: every source kind, embedded once per fit, cached across a resume; the
evaluator's memorization scores, copies grid and DDP exactness."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from diversity_callbacks import DiversityCallback, DiversityEvaluator
from diversity_callbacks.evaluation.reference import ReferenceSet
from diversity_callbacks.media.render import render_media
from tests.helpers.distributed import run_distributed
from tests.helpers.trainer import QUIET, TinyGenerator, tiny_data

COPIED = (4, 17, 33)


class CountingEmbedder:
    """Flattened pixels, centred; counts the images it embedded."""

    def __init__(self) -> None:
        self.images = 0

    def embed_images(self, images: Tensor) -> Tensor:
        self.images += images.shape[0]
        return images.flatten(1) - 0.5


def training_images() -> Tensor:
    return torch.rand(50, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def copying_sampler(conditions: Any, generators: list[torch.Generator]) -> Tensor:
    """About a quarter of the draws are exact copies of training images 4, 17 and 33."""
    train, out = training_images(), []
    for g in generators:
        if torch.rand((), generator=g) < 0.25:
            out.append(train[COPIED[int(torch.randint(3, (), generator=g))]])
        else:
            out.append(torch.rand(3, 8, 8, generator=g))
    return torch.stack(out)


def novel_sampler(conditions: Any, generators: list[torch.Generator]) -> Tensor:
    return torch.stack([torch.rand(3, 8, 8, generator=g) for g in generators])


def true_copies(num_samples: int, seed: int = 0) -> Tensor:
    """Each sample's copied training row (-1: a new image), replaying copying_sampler."""
    from diversity_callbacks.evaluation.conditions import EvaluationSet

    evaluation_set = EvaluationSet.from_arguments(num_samples=num_samples, seed=seed)
    rows = []
    for g in evaluation_set.generators(range(num_samples), torch.device("cpu")):
        rows.append(
            COPIED[int(torch.randint(3, (), generator=g))]
            if torch.rand((), generator=g) < 0.25
            else -1
        )
    return torch.tensor(rows)


def evaluator(reference: Any = None, **kwargs: Any) -> DiversityEvaluator:
    options = {
        "num_samples": 120,
        "embedder": CountingEmbedder(),
        "value_range": "[0,1]",
        "vendi_kernel": "linear",
        "batch_size": 16,
        "reference": training_images() if reference is None else reference,
        "reference_cache_dir": False,
    }
    return DiversityEvaluator(**{**options, **kwargs})


def test_a_copying_generator_gets_the_true_copy_share_rows_and_grid():
    result = evaluator().evaluate(copying_sampler, progress=False)
    truth = true_copies(120)
    is_copy = truth >= 0
    assert 0.15 < float(is_copy.double().mean()) < 0.35
    assert result.scalars["diversity/copy_rate"] == float(is_copy.double().mean())
    assert result.copies is not None
    assert torch.equal(result.copies.nearest[is_copy], truth[is_copy])
    shown = result.copies.shown
    assert len(shown) == 16 and {c.reference_index for c in shown} <= set(COPIED)
    for copy in shown:  # the copy beside its training image, pixel for pixel
        assert torch.equal(copy.sample, copy.reference)
    media = render_media(evaluator(), result)
    assert media.copies is not None and len(media.copies.pairs) == 16
    assert media.copies.captions[0].startswith("similarity 1.0000 to training sample ")


def test_a_generator_of_new_images_copies_nothing():
    result = evaluator().evaluate(novel_sampler, progress=False)
    assert result.scalars["diversity/copy_rate"] == 0.0
    assert result.scalars["diversity/l2_memorization"] == 0.0


@pytest.mark.parametrize("kind", ["tensor", "dataset", "dataloader", "folder", "npy", "pt"])
def test_every_kind_of_reference_gives_the_same_scores(tmp_path: Path, kind: str):
    train = training_images()
    pixels = (train * 255).round() / 255  # what a folder of PNGs holds
    if kind == "folder":
        from PIL import Image

        for i, image in enumerate(pixels):
            array = (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(array).save(tmp_path / f"{i:03d}.png")
        source: Any = tmp_path
    elif kind in ("npy", "pt"):
        embeddings = pixels.flatten(1) - 0.5
        source = tmp_path / f"train.{kind}"
        if kind == "npy":
            np.save(source, embeddings.numpy())
        else:
            torch.save(embeddings, source)
    elif kind == "tensor":
        source = pixels
    else:
        dataset = TensorDataset(pixels, torch.zeros(50))
        source = dataset if kind == "dataset" else DataLoader(dataset, batch_size=7)
    expected = evaluator(pixels).evaluate(copying_sampler, progress=False).scalars
    scores = evaluator(source).evaluate(copying_sampler, progress=False).scalars
    for key in ("copy_rate", "nn_similarity_mean", "authenticity", "l2_memorization"):
        assert scores[f"diversity/{key}"] == pytest.approx(expected[f"diversity/{key}"], abs=1e-6)


def test_the_cache_is_keyed_by_the_embedder_and_the_data(tmp_path: Path):
    def embed(reference: Tensor, embedder: CountingEmbedder) -> Tensor:
        ReferenceSet(reference, cache_dir=tmp_path)  # a set that only reads
        evaluator(
            reference, embedder=embedder, reference_cache_dir=tmp_path, num_samples=2
        ).prepare()
        return embedder

    train = training_images()
    assert embed(train, CountingEmbedder()).images == 50
    assert embed(train, CountingEmbedder()).images == 0  # read back from the cache
    assert embed(train.flip(0), CountingEmbedder()).images == 50  # other data

    class OtherEmbedder(CountingEmbedder):
        pass

    assert embed(train, OtherEmbedder()).images == 50  # another embedder


def test_bad_references_name_what_was_given(tmp_path: Path):
    with pytest.raises(ValueError, match="holds no image"):
        ReferenceSet(tmp_path)
    with pytest.raises(ValueError, match="neither"):
        ReferenceSet(tmp_path / "missing.pt")
    with pytest.raises(TypeError, match="got list"):
        ReferenceSet([1, 2])
    with pytest.raises(ValueError, match="`memorization_kwargs` need a `reference`"):
        DiversityEvaluator(num_samples=2, memorization_kwargs={"threshold": 0.9})


# ---------------------------------------------------------------- the callback


class CopyingModule(TinyGenerator):
    """Trains like TinyGenerator; its samples are those of copying_sampler (unconditional)."""

    def generate(self, conditions: None, generators: list[torch.Generator]) -> Tensor:
        return copying_sampler(conditions, generators) * 2 - 1


def make_callback(embedder: CountingEmbedder, cache: Path, **kwargs: Any) -> DiversityCallback:
    return DiversityCallback(
        num_samples=40,
        embedder=embedder,
        vendi_kernel="linear",
        every_n_train_steps=2,
        reference=training_images() * 2 - 1,
        reference_cache_dir=cache,
        **kwargs,
    )


def test_the_reference_is_embedded_once_per_fit_and_not_again_on_resume(tmp_path: Path):
    embedder = CountingEmbedder()
    callback = make_callback(embedder, tmp_path / "cache")
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(**{**QUIET, "max_steps": 4, "callbacks": [callback]})
    trainer.fit(CopyingModule(), tiny_data())
    evaluations = len(callback.history)
    assert evaluations == 3  # the baseline, steps 2 and 4
    assert embedder.images == 50 + 40 * evaluations  # the reference once, the samples each time
    assert callback.history[-1]["diversity/copy_rate"] > 0
    trainer.save_checkpoint(tmp_path / "step4.ckpt")

    resumed_embedder = CountingEmbedder()
    resumed = make_callback(resumed_embedder, tmp_path / "cache")
    trainer = L.Trainer(**{**QUIET, "max_steps": 6, "callbacks": [resumed]})
    trainer.fit(CopyingModule(), tiny_data(), ckpt_path=tmp_path / "step4.ckpt")
    assert resumed_embedder.images == 40 * (len(resumed.history) - evaluations)


def test_tensorboard_gets_the_copies_grid_and_the_similarity_histogram(tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    callback = make_callback(CountingEmbedder(), tmp_path / "cache", media_dir=tmp_path / "media")
    logger = TensorBoardLogger(tmp_path, name="tb")
    L.seed_everything(0, verbose=False)
    options = {**QUIET, "logger": logger, "max_steps": 2, "callbacks": [callback]}
    L.Trainer(**options).fit(CopyingModule(), tiny_data())
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "histograms": 0})
    events.Reload()
    assert "diversity/copies" in events.Tags()["images"]
    assert "diversity/nn_similarity" in events.Tags()["histograms"]
    steps = sorted(p.name for p in (tmp_path / "media").iterdir())
    assert (tmp_path / "media" / steps[-1] / "copies.png").is_file()
    assert "training_index" in (tmp_path / "media" / steps[-1] / "copies.csv").read_text()


# ---------------------------------------------------------------- DDP


def _evaluate_on_ranks(rank: int, world_size: int, folder: str) -> dict:
    result = evaluator(reference_cache_dir=folder).evaluate(copying_sampler, progress=False)
    return {
        "scalars": {k: v for k, v in result.scalars.items() if not k.endswith("eval_seconds")},
        "nearest": result.copies.nearest.tolist(),
        "shown": [c.reference_index for c in result.copies.shown] if rank == 0 else None,
    }


@pytest.mark.timeout(240)
def test_one_and_two_gloo_ranks_give_the_same_scores_to_1e_12(tmp_path: Path):
    single = _evaluate_on_ranks(0, 1, str(tmp_path / "one"))
    ranks = run_distributed(_evaluate_on_ranks, str(tmp_path / "two"))
    for result in ranks:
        assert result["scalars"] == pytest.approx(single["scalars"], rel=1e-12, abs=1e-12)
        assert result["nearest"] == single["nearest"]
    assert ranks[0]["shown"] == single["shown"]


class NovelModule(TinyGenerator):
    def generate(self, conditions: None, generators: list[torch.Generator]) -> Tensor:
        return novel_sampler(conditions, generators) * 2 - 1


@pytest.mark.parametrize(("module", "fires"), [(CopyingModule, True), (NovelModule, False)])
def test_copy_rate_monitor_stops_a_copying_run_and_leaves_a_novel_one(
    tmp_path: Path, module: type, fires: bool
):
    from diversity_callbacks import CopyRateMonitor

    callback = make_callback(CountingEmbedder(), tmp_path / "cache")
    monitor = CopyRateMonitor(callback, max_value=0.1)
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(**{**QUIET, "max_steps": 6, "callbacks": [callback, monitor]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module(), tiny_data())
    alerts = [w for w in caught if "Memorization: diversity/copy_rate" in str(w.message)]
    assert (monitor.collapse_step == 0) is fires and bool(alerts) is fires
    assert trainer.global_step == (0 if fires else 6)


def test_copy_rate_monitor_names_its_own_argument():
    from diversity_callbacks import CopyRateMonitor

    with pytest.raises(ValueError, match="`max_value` must be finite"):
        CopyRateMonitor(make_callback(CountingEmbedder(), Path(".")), max_value=float("nan"))
