"""The shapes example (examples/shapes_collapse.py): a reduced run end to end, and its parts."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from diversity_callbacks import DiversityCallback, DiversityEvaluator
from diversity_callbacks.functional import vendi_score
from tests.helpers.trainer import history_rows

wandb = pytest.importorskip("wandb")
Image = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DIVERSITY_KEYS = ("diversity/vendi_q1", "diversity/per_prompt_vendi_q1", "diversity/sce")


def _load_example() -> ModuleType:
    """Import the example script as a module (it puts examples/ on sys.path for `shapes`)."""
    spec = importlib.util.spec_from_file_location(
        "shapes_collapse", EXAMPLES / "shapes_collapse.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _load_example()
from shapes.data import COLOURS, PROMPTS, canonical_images, draw_shapes, parse_prompt, render  # noqa: E402
from shapes.embedder import PixelEmbedder  # noqa: E402
from shapes.model import ShapesVAE  # noqa: E402
from shapes.plot import LABEL_WIDTH  # noqa: E402


@pytest.fixture
def restore_process_state(monkeypatch: pytest.MonkeyPatch):
    """The example sets the thread count and environment variables of the process: undo it."""
    threads = torch.get_num_threads()
    for name in ("OMP_NUM_THREADS", "PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        monkeypatch.setenv(name, "0")  # recorded now, restored (or removed) at teardown
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow  # a whole training run of the example
def test_reduced_run_writes_wandb_run_plot_grids_and_summary(
    tmp_path: Path, restore_process_state: None
):
    args = ["--pretrain-steps", "20", "--finetune-steps", "10", "--eval-every", "10"]
    args += ["--dataset-size", "256", "--batch-size", "16", "--samples-per-prompt", "4"]
    args += ["--threads", str(torch.get_num_threads()), "--output-dir", str(tmp_path)]
    summary = example.main(args)
    wandb.teardown()  # flushes the offline run file

    assert summary["steps"] == {"start": 0, "before_finetune": 20, "after_finetune": 30}
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    embedder, seeds = PixelEmbedder(), range(9 * 4)
    prompts = [PROMPTS[i // 4] for i in seeds]
    generators = [torch.Generator().manual_seed(DiversityCallback.sample_seed(0, i)) for i in seeds]
    real = vendi_score(embedder.embed_images(draw_shapes(prompts, generators)), q=1)
    assert summary["diversity"]["diversity/vendi_q1"]["real_data"] == pytest.approx(float(real))
    assert set(summary["diversity"]) == set(
        example.SUMMARY_KEYS
    )  # the rows of docs/example.md's table
    for values in summary["diversity"].values():
        assert set(values) == {"start", "before_finetune", "after_finetune", "real_data"}
    printed = example.format_summary(summary, str(tmp_path))
    assert all(label in printed for label in example.SUMMARY_KEYS.values())
    for key in DIVERSITY_KEYS:
        values = summary["diversity"][key]
        # the untrained decoder draws the same grey blur for every seed; real data varies
        assert values["start"] == pytest.approx(1.0, abs=0.05)
        assert values["real_data"] > 2.5

    with Image.open(tmp_path / "diversity_vs_step.png") as plot:
        plot.verify()
        assert plot.format == "PNG" and min(plot.size) >= 400
    grid_size = (LABEL_WIDTH + 4 * (8 * 34 + 2), 4 * (9 * 34 + 2))  # 8 seeds x 9 prompts
    for moment in ("start", "before_finetune", "after_finetune"):
        with Image.open(tmp_path / f"samples_{moment}.png") as grid:
            assert grid.size == grid_size
            # the prompt column holds dark text in each row, left of the samples
            labels = torch.from_numpy(np.asarray(grid.convert("L"))[:, :LABEL_WIDTH].copy())
            row_height = grid_size[1] // 9
            assert all(
                (labels[r * row_height : (r + 1) * row_height] < 128).any() for r in range(9)
            )
    with Image.open(tmp_path / "samples_before_after.png") as pair:
        assert pair.width > 2 * grid_size[0] and pair.height > grid_size[1]
    with Image.open(tmp_path / "modes_before_after.png") as modes:  # docs/modes.md's picture
        assert modes.width > 900 and modes.height > 200

    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    rows = history_rows(run_dir)
    # at the self.log step of the batch that made global_step 10, 20, 30: 9, 19, 29
    assert [r["trainer/global_step"] for r in rows if "diversity/vendi_q1" in r] == [0, 9, 19, 29]
    logged = set().union(*rows)
    assert {*DIVERSITY_KEYS, "train/vae_loss", "train/reward_loss"} <= logged
    media = ("diversity/samples", "samples/start", "samples/before_finetune")
    media += ("samples/after_finetune", "summary/diversity_vs_step")
    assert {f"{key}/_type" for key in media} <= logged
    images = run_dir / "files" / "media" / "images"
    counts = {folder.name: len(list(folder.glob("*.png"))) for folder in images.iterdir()}
    # one grid per prompt per evaluation (4) and the mode grids, three milestone grids, the plot
    assert counts["samples"] == 3 and counts["summary"] == 1
    assert counts["diversity"] >= 4 * 9 + 4  # at least one mode grid per evaluation


@pytest.mark.slow  # a whole training run of the example
def test_reward_fine_tuning_collapses_and_the_monitor_stops_it_but_not_pretraining_noise(
    tmp_path: Path, restore_process_state: None
):
    args = ["--pretrain-steps", "300", "--finetune-steps", "200", "--eval-every", "25"]
    args += ["--dataset-size", "2048", "--batch-size", "32", "--samples-per-prompt", "4"]
    args += ["--wandb-mode", "disabled", "--stop-on-collapse", "--output-dir", str(tmp_path)]
    summary = example.main([*args, "--threads", str(torch.get_num_threads())])
    vendi = summary["diversity"]["diversity/vendi_q1"]
    # pretraining gains diversity (with dips of sampling noise that must not fire) ...
    assert vendi["before_finetune"] > 2 * vendi["start"]
    # ... fine-tuning loses it, and the monitor stops the run well before its 500 steps
    assert 300 < summary["collapse_step"] < 500
    assert summary["steps"]["after_finetune"] <= summary["collapse_step"] + 1
    assert vendi["after_finetune"] < 0.75 * vendi["before_finetune"]


def _evaluate(collapsed: bool) -> dict[str, float]:
    """Scores of a stand-in generator: fresh random shapes (diverse) or each prompt's one look
    (collapsed: it ignores its noise)."""
    evaluator = DiversityEvaluator(
        list(PROMPTS), samples_per_condition=8, embedder=PixelEmbedder(), value_range="[0,1]"
    )
    sample = (lambda prompts, generators: canonical_images(prompts)) if collapsed else draw_shapes
    return evaluator.evaluate(sample, progress=False).scalars


def test_pixel_embedder_scores_a_collapsed_generator_below_a_diverse_one():
    diverse, collapsed = _evaluate(collapsed=False), _evaluate(collapsed=True)
    # one picture per prompt: nothing left within a prompt
    assert collapsed["diversity/per_prompt_vendi_q1"] == pytest.approx(1.0, abs=1e-6)
    assert collapsed["diversity/sce"] == pytest.approx(1.0, abs=1e-3)
    assert diverse["diversity/per_prompt_vendi_q1"] > 2.0
    assert diverse["diversity/sce"] > 2.0
    # across prompts, position and size variety adds to the nine distinct looks
    assert diverse["diversity/vendi_q1"] > 1.5 * collapsed["diversity/vendi_q1"]
    assert collapsed["diversity/vendi_q1"] <= len(PROMPTS)


def test_render_draws_the_prompted_colour_where_asked():
    colour, shape = parse_prompt("a green square")
    image = render(
        torch.tensor([colour]),
        torch.tensor([shape]),
        centre=torch.tensor([[10.0, 20.0]]),
        radius=torch.tensor([4.0]),
        shade=torch.tensor([1.0]),
    )[0]
    mask = image.sum(dim=0)
    ys, xs = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    centroid = ((mask * xs).sum() / mask.sum(), (mask * ys).sum() / mask.sum())
    assert torch.allclose(torch.stack(centroid), torch.tensor([10.0, 20.0]), atol=0.05)
    assert mask.sum() / sum(COLOURS["green"]) == pytest.approx(64.0, rel=0.02)  # 8 x 8 pixels
    assert image[1].sum() > 3 * max(image[0].sum(), image[2].sum())  # green dominates


def test_parse_prompt_names_the_bad_prompt():
    with pytest.raises(ValueError, match=r"one colour .* got 'a purple circle'"):
        parse_prompt("a purple circle")


def test_generate_follows_the_sampling_contract():
    model = ShapesVAE(pretrain_steps=10)
    prompts = ["a red circle", "a red circle", "a blue triangle"]

    def seeded(*seeds: int) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(s) for s in seeds]

    first = model.generate(prompts, seeded(0, 1, 2))
    assert first.shape == (3, 3, 32, 32)
    assert first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, model.generate(prompts, seeded(0, 1, 2)))
    assert not torch.equal(first[0], first[1])  # same prompt, other seed
    # a sample depends on its own generator only, not on its batch
    assert torch.allclose(model.generate(prompts[1:2], seeded(1))[0], first[1], atol=1e-6)
    with pytest.raises(ValueError, match="one generator per prompt"):
        model.generate(prompts, seeded(0))


def test_the_summary_holds_every_measure_of_the_example_page_table():
    page = (EXAMPLES.parent / "docs" / "example.md").read_text()
    table = page.split("## What the run shows")[1].split("\n\n")[2]
    assert re.findall(r"`(diversity/[a-z_0-9]+)`", table) == list(example.SUMMARY_KEYS)
