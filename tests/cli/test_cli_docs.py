"""docs/cli.md runs as written: every bash and python block, in order, in one scratch folder.

The folder holds a link to the repository's ``examples/`` (the page's commands run from a clone),
the installed ``diversity-callbacks`` and ``python`` come first on PATH. The table the page shows
must be the one the command prints, and the plots it shows must be the ones it writes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.helpers import docs

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "cli.md"
BENCHMARK_QUICK = ("--images 96 --workers 1 --repeats 3", "--images 4 --workers 1 --repeats 1")
"""The benchmark block runs on 4 images once here (the page's numbers take minutes)."""


def test_every_block_of_the_cli_page_runs_and_shows_what_it_prints(tmp_path, monkeypatch):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "benchmarks").symlink_to(ROOT / "benchmarks")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONWARNINGS": "ignore",
        "OMP_NUM_THREADS": "1",
    }
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    outputs = []
    devices_output = ""
    ran = {"bash": 0, "python": 0}
    for block in docs.blocks("docs/cli.md"):
        language, code = block.language, block.code
        if language == "bash":
            code = code.replace(*BENCHMARK_QUICK)
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", code],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, f"{code}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
            outputs.append(done.stdout)
            if "--devices 2" in code:
                devices_output = done.stdout
        elif language == "python":
            exec(compile(code, str(PAGE), "exec"), {"__name__": "__cli_docs__"})
        ran[language] = ran.get(language, 0) + 1
    assert ran["bash"] == 6 and ran["python"] == 2

    text = PAGE.read_text()
    shown = text.split("```text\nrun ")[1].split("```")[0]
    assert "run " + shown == outputs[1], "docs/cli.md's table is not what the command prints"
    two = devices_output.splitlines()
    start = next(i for i, line in enumerate(two) if line.startswith("run "))
    assert two[start : start + 4] == outputs[1].splitlines()[:4]  # --devices 2: the same table
    assert (tmp_path / "saved.csv").read_text().startswith("run,path,images,prompts,vendi_q1")
    for asset in re.findall(r"\]\((assets/cli-[^)]+\.png)\)", text):
        path = ROOT / "docs" / asset
        assert path.stat().st_size < 150_000, f"{asset} is over 150 KB"
        written = tmp_path / "report" / path.name.removeprefix("cli-")
        with Image.open(path) as committed, Image.open(written) as fresh:
            assert committed.size == fresh.size, f"{asset} is not the plot the command writes"


def test_every_relative_link_of_the_cli_page_exists():
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", PAGE.read_text())
    assert "metrics.md" in targets and "assets/cli-summary.png" in targets
    for target in targets:
        assert "://" in target or (PAGE.parent / target).exists(), target
