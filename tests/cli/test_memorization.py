"""``score --reference``: the memorization scores of a folder against training images, and the
side-by-side grid of the most-copied images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diversity_callbacks.cli import main
from diversity_callbacks.cli.options import DEFAULT_COPY_THRESHOLD
from diversity_callbacks.metrics.memorization import DEFAULT_COPY_THRESHOLD as METRIC_DEFAULT
from tests.helpers.cli import CELLS, copying_run


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_reference_adds_the_copy_rate_and_writes_the_copies_grid(tmp_path: Path):
    train, run = copying_run(tmp_path)
    out, plots = tmp_path / "scores.json", tmp_path / "plots"
    args = ["score", str(run), *CELLS, "--reference", str(train), "--json", str(out)]
    assert main([*args, "--plot", str(plots)]) == 0
    metrics = json.loads(out.read_text())["runs"][0]["metrics"]
    assert metrics["copy_rate"] == pytest.approx(3 / 12)
    assert metrics["l2_memorization"] == pytest.approx(3 / 12)
    assert 0 <= metrics["authenticity"] <= 9 / 12
    assert (plots / "copies-run.png").is_file()


def test_copy_threshold_decides_what_counts_as_a_copy(tmp_path: Path):
    train, run = copying_run(tmp_path)
    out = tmp_path / "scores.json"
    args = ["score", str(run), *CELLS, "--reference", str(train), "--json", str(out)]
    assert main([*args, "--copy-threshold", "0.5"]) == 0  # red on a white cell: 0.577
    assert json.loads(out.read_text())["runs"][0]["metrics"]["copy_rate"] == 1.0


def test_a_missing_reference_is_named(tmp_path: Path, capsys: pytest.CaptureFixture):
    _, run = copying_run(tmp_path)
    assert main(["score", str(run), *CELLS, "--reference", str(tmp_path / "nope")]) == 2
    assert "--reference" in capsys.readouterr().err


def test_the_cli_default_threshold_is_the_metrics():
    assert DEFAULT_COPY_THRESHOLD == METRIC_DEFAULT
