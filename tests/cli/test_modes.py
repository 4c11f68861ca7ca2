"""``diversity-callbacks score --modes K``: each run's mode grids, and the first run's modes lost
in the others."""

from __future__ import annotations

import json

import pytest

from diversity_callbacks.cli import main
from tests.helpers.cli import CELLS, cell_image, save


def cells(folder, cells_of_images):
    for index, cell in enumerate(cells_of_images):
        save(cell_image(cell), folder / f"{index:02d}.png")
    return folder


def test_modes_write_grids_and_the_lost_modes_of_the_first_run(tmp_path):
    healthy = cells(tmp_path / "healthy", [c for c in range(6) for _ in range(2)])
    collapsed = cells(tmp_path / "collapsed", [c % 2 for c in range(12)])
    out = tmp_path / "out"
    args = ["score", str(healthy), str(collapsed), *CELLS, "--modes", "6", "--plot", str(out)]
    assert main([*args, "--json", str(out / "s.json")]) == 0
    assert len(list((out / "healthy" / "modes").glob("mode_*.png"))) == 6
    lost = sorted(p.name for p in (out / "collapsed" / "modes").glob("lost_*.png"))
    assert lost == ["lost_01.png", "lost_02.png", "lost_03.png", "lost_04.png"]
    captions = (out / "collapsed" / "modes" / "captions.txt").read_text()
    assert "lost 1: share 0.167" in captions
    runs = json.loads((out / "s.json").read_text())["runs"]
    assert runs[0]["metrics"]["num_modes"] == 6
    assert runs[1]["metrics"]["lost_mode_mass"] == pytest.approx(4 / 6, abs=1e-9)


def test_modes_need_a_plot_folder(tmp_path, capsys):
    folder = cells(tmp_path / "run", [0, 1])
    assert main(["score", str(folder), *CELLS, "--modes", "2"]) == 2
    assert "--modes needs --plot DIR" in capsys.readouterr().err
