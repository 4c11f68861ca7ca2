"""DiversityCallback under Trainer(strategy="ddp", devices=2) on CPU gives what devices=1 gives.

Lightning's DDP launcher re-runs ``sys.argv`` in a child process per extra device, so the runs
happen in a script (tests/scripts/train_tiny.py), never inside the pytest process. One launch
per world size; every check of a launch is grouped in the one test that reads its output.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pytest

from tests.helpers.distributed import launch_script
from tests.helpers.trainer import PROMPTS, history_rows

pytestmark = pytest.mark.slow  # two launches of a DDP training run, one process per rank

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny.py"
REPO = Path(__file__).resolve().parents[1]


def launch(out: Path, devices: int, *flags: str) -> list[dict]:
    """Run the script with ``devices`` CPU ranks; return each rank's result and its folder."""
    return [{**result, "folder": out} for result in launch_script(SCRIPT, out, devices, *flags)]


def scores(row: dict) -> dict[str, float]:
    """The diversity values of a history row (timings left out)."""
    return {key: value for key, value in row.items() if not key.endswith("eval_seconds")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[dict]]:
    return {
        1: launch(tmp_path_factory.mktemp("devices1"), 1),
        2: launch(tmp_path_factory.mktemp("devices2"), 2, "--wandb"),
    }


def test_two_ranks_log_the_same_diversity_as_one(runs: dict[int, list[dict]]):
    (single,), (rank0, rank1) = runs[1], runs[2]
    for prefix in ("diversity", "single"):
        expected = [scores(row) for row in single["history"][prefix]]
        assert [row["global_step"] for row in expected] == [
            0,
            2,
            4,
        ]  # the baseline, then the cadence
        for got in (rank0, rank1):  # compute() runs on every rank, so both ranks agree
            rows = [scores(row) for row in got["history"][prefix]]
            assert [row.keys() for row in rows] == [row.keys() for row in expected]
            for row, ref in zip(rows, expected, strict=True):
                for key, value in ref.items():
                    assert math.isfinite(value), key
                    # The published prompt-aware scores are float64 throughout: 1e-9 (issue 22).
                    published = "cond_vendi" in key or "info_vendi" in key
                    rel = 1e-9 if published else 1e-6
                    assert row[key] == pytest.approx(value, rel=rel, abs=0), key
    assert {
        "diversity/sce",
        "diversity/sce_text",
        "diversity/per_prompt_vendi_qinf",
        "diversity/cond_vendi_q1",
        "diversity/info_vendi_qinf",
        "diversity/mean_norm",
        "diversity/calinski_harabasz",
    } <= set(single["history"]["diversity"][0])
    # rank 1 drew no sample for "single" (1 sample, 2 ranks) and still joined the sync
    assert single["history"]["single"][0]["single/vendi_q1"] == 1.0


def test_a_failure_on_one_rank_skips_the_evaluation_on_every_rank(runs: dict[int, list[dict]]):
    # "failing" breaks on a prompt that only rank 1 draws: no rank may hang in the sync
    for result in (*runs[1], *runs[2]):
        assert result["history"]["failing"] == []
        assert not any(key.startswith("failing/") for key in result["callback_metrics"])
        # it did run and fail at each evaluation, and every rank said so
        failed = [re.search(r"global step (\d+)", m).group(1) for m in result["warnings"]]
        assert failed == ["0", "2", "4"] and all(
            "the sampler broke" in m for m in result["warnings"]
        )
    # rank 0 drew nothing that failed, and still names rank 1 and its reason
    assert all("failed on rank 1" in m for m in runs[2][0]["warnings"])


def test_rank_zero_logs_each_evaluation_once_at_its_step(runs: dict[int, list[dict]]):
    path = runs[2][0]["folder"] / "csv" / "version_0" / "metrics.csv"
    with open(path, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["diversity/vendi_q1"]]
    assert [int(row["step"]) for row in rows] == [0, 1, 3]  # self.log's steps of those batches
    history = runs[2][0]["history"]["diversity"]
    for row, ref in zip(rows, history, strict=True):
        assert float(row["diversity/sce"]) == pytest.approx(ref["diversity/sce"], rel=1e-12)


def test_rank_zero_logs_every_prompt_grid_to_wandb(runs: dict[int, list[dict]]):
    import numpy as np
    from PIL import Image

    (run_dir,) = (runs[2][0]["folder"] / "wandb").glob("offline-run-*")
    rows = [row for row in history_rows(run_dir) if "diversity/vendi_q1" in row]
    assert [row["trainer/global_step"] for row in rows] == [0, 1, 3]
    for row in rows:
        # prompt 1's samples (3, 4, 5) were drawn on both ranks: its grid needs the gather
        assert row["diversity/samples/captions"] == [f"prompt: {p}" for p in PROMPTS]
        for name in row["diversity/samples/filenames"]:
            pixels = np.asarray(Image.open(run_dir / "files" / name))
            assert pixels.shape == (12, 32, 3) and pixels.max() > 50
