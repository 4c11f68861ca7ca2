"""The command line's entry point: options parsed once, ``python -m diversity_callbacks``, and
exit status 2 for the package's own input errors only (a defect keeps its traceback)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diversity_callbacks.cli import main
from diversity_callbacks.cli.errors import ImageReadError, InputError
from diversity_callbacks.cli.options import ScoreOptions
from tests.helpers.cli import CELLS, ROOT, cell_image, save

CLI = ROOT / "diversity_callbacks" / "cli"


def images(folder: Path, cells: int = 3) -> Path:
    for cell in range(cells):
        save(cell_image(cell), folder / f"{cell:02d}.png")
    return folder


def python_m(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m diversity_callbacks ...`` in a fresh interpreter, this checkout first."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(cwd)]),
        "PYTHONWARNINGS": "ignore",
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "diversity_callbacks", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_python_m_scores_a_folder_as_the_console_script_does(tmp_path):
    folder = images(tmp_path / "run")
    done = python_m("score", str(folder), *CELLS, "--json", str(tmp_path / "s.json"), cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[0].split() == [
        "run",
        "images",
        "prompts",
        "vendi_q1",
        "vendi_q2",
    ]
    (run,) = json.loads((tmp_path / "s.json").read_text())["runs"]
    assert run["images"] == 3 and run["metrics"]["vendi_q1"] == pytest.approx(3.0)


def test_python_m_gives_status_2_and_one_line_for_input_it_cannot_use(tmp_path):
    done = python_m("score", str(tmp_path / "nowhere"), "--no-progress", cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"diversity-callbacks score: error: run {str(tmp_path / 'nowhere')!r} must be a folder "
        "of images or an embeddings file; nothing exists there"
    ]


BUGGY_EMBEDDER = """
import diversity_callbacks.cli.output as output
from tests.helpers.cli import cell_pixels


def table(scores):  # a defect of the package, made to happen after the scoring
    raise {error}("a defect in the table")


output.table = table
embed = cell_pixels
"""


@pytest.mark.parametrize("error", ["ValueError", "RuntimeError"])
def test_python_m_keeps_the_traceback_of_a_defect(tmp_path, error):
    (tmp_path / "buggy.py").write_text(BUGGY_EMBEDDER.format(error=error))
    folder = images(tmp_path / "run")
    args = ["score", str(folder), "--embedder", "buggy.py:embed", "--workers", "0"]
    done = python_m(*args, "--no-progress", cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback (most recent call last)" in done.stderr
    assert f"{error}: a defect in the table" in done.stderr


@pytest.mark.parametrize("error", [ValueError, RuntimeError, ImportError, KeyError])
def test_an_error_that_is_not_about_the_input_propagates(tmp_path, monkeypatch, error):
    import diversity_callbacks.cli.output as output

    def broken(scores):
        raise error("a defect")

    monkeypatch.setattr(output, "table", broken)
    with pytest.raises(error, match="a defect"):
        main(["score", str(images(tmp_path / "run")), *CELLS])


def test_the_packages_input_errors_give_status_2(tmp_path, monkeypatch, capsys):
    import diversity_callbacks.cli.output as output

    for error in (InputError("--csv is bad"), ImageReadError("cannot read image 'x.png'")):

        def refused(scores, error=error):
            raise error

        monkeypatch.setattr(output, "table", refused)
        assert main(["score", str(images(tmp_path / "run")), *CELLS]) == 2
        assert capsys.readouterr().err == f"diversity-callbacks score: error: {error}\n"


def test_an_image_read_error_is_an_input_error_and_still_a_runtime_error():
    assert issubclass(ImageReadError, InputError) and issubclass(ImageReadError, RuntimeError)


def test_options_are_built_once_and_frozen(tmp_path, monkeypatch):
    import diversity_callbacks.cli.score as score

    built, received = [], []
    from_namespace = ScoreOptions.from_namespace.__func__

    def counting(cls, args):
        built.append(args)
        return from_namespace(cls, args)

    def spy(options):
        received.append(options)
        return 0

    monkeypatch.setattr(ScoreOptions, "from_namespace", classmethod(counting))
    monkeypatch.setattr(score, "run", spy)
    assert main(["score", str(tmp_path), "--vendi-orders", "1", "inf", "--sce", "off"]) == 0
    assert len(built) == 1 and len(received) == 1
    (options,) = received
    assert isinstance(options, ScoreOptions)
    assert options.metrics.vendi_orders == (1.0, float("inf")) and options.metrics.sce == "off"
    assert options.runs == (str(tmp_path),) and options.embedder.batch_size == 64
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.metrics.sce = "on"  # type: ignore[misc]


def test_only_the_entry_point_and_the_parser_see_the_namespace():
    """Everything below ``main`` takes typed option groups, never argparse's ``Namespace``."""
    readers = {"__init__.py", "parser.py", "options.py"}  # options.py: from_namespace, once
    for module in sorted(CLI.glob("*.py")):
        if module.name not in readers:
            text = module.read_text()
            assert "Namespace" not in text and "import argparse" not in text, module.name


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--grids"], "--grids needs --plot DIR"),
        (["--modes", "2"], "--modes needs --plot DIR"),
        (["--embedder", "m:f", "--model-config", "{}"], "--model-config configures"),
    ],
)
def test_options_that_cannot_work_together_are_refused_as_they_are_built(flags, message):
    import argparse

    from diversity_callbacks.cli import build_parser

    args = build_parser().parse_args(["score", "run", *flags])
    assert isinstance(args, argparse.Namespace)
    with pytest.raises(InputError, match=message):
        ScoreOptions.from_namespace(args)


def test_json_records_every_option_under_its_flag_name(tmp_path):
    from diversity_callbacks.cli import build_parser

    args = build_parser().parse_args(
        ["score", "a", "b", "--names", "x", "y", "--modes", "3", "--plot", "p"]
    )
    recorded = ScoreOptions.from_namespace(args).recorded()
    expected = {k: v for k, v in vars(args).items() if k not in ("command", "handler")}
    assert recorded == expected
    assert list(recorded)[:4] == ["runs", "names", "prompts", "manifest"]
    assert json.loads(json.dumps(recorded))["vendi_orders"] == [1.0, 2.0]


def test_importing_the_main_module_runs_nothing():
    """Docs tools and doctest collection import ``diversity_callbacks.__main__``."""
    code = "import diversity_callbacks.__main__; print('imported')"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout == "imported\n", done.stderr[-2000:]


# ------------------------------------------------------------------ kernels


def test_the_kernel_names_of_help_are_the_kernel_modules():
    from diversity_callbacks.cli import options
    from diversity_callbacks.functional import kernels

    assert options.KERNEL_NAMES == kernels.KERNEL_NAMES
    assert options.DEFAULT_KERNEL == kernels.DEFAULT_KERNEL


def scores(tmp_path: Path, *flags: str) -> dict:
    out = tmp_path / "s.json"
    folder = tmp_path / "run"
    if not folder.exists():
        images(folder, cells=5)
    assert main(["score", str(folder), *CELLS, *flags, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_a_kernel_is_given_as_its_text_and_recorded_as_it(tmp_path):
    document = scores(tmp_path, "--vendi-kernel", "gaussian:sigma=0.5,features=64,seed=3")
    options = document["options"]
    assert options["vendi_kernel"] == "gaussian:sigma=0.5,features=64,seed=3"
    assert (options["vendi_sigma"], options["vendi_num_features"]) == (0.5, 64)
    assert 1 < document["runs"][0]["metrics"]["vendi_q1"] <= 5
    other = scores(tmp_path, "--vendi-kernel", "gaussian:sigma=0.5,features=64,seed=4")
    assert other["runs"][0]["metrics"]["vendi_q1"] != document["runs"][0]["metrics"]["vendi_q1"]


def test_the_kernel_flags_of_0_1_still_work_with_a_future_warning(tmp_path):
    text = scores(tmp_path, "--vendi-kernel", "gaussian:sigma=0.5,features=64")
    with pytest.warns(FutureWarning, match="--vendi-sigma is deprecated") as caught:
        flags = scores(
            tmp_path, "--vendi-kernel", "gaussian", "--vendi-sigma", "0.5",
            "--vendi-num-features", "64",
        )  # fmt: skip
    assert any("--vendi-num-features is deprecated" in str(w.message) for w in caught)
    assert flags["runs"][0]["metrics"] == text["runs"][0]["metrics"]
    assert flags["options"]["vendi_kernel"] == "gaussian:sigma=0.5,features=64"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--vendi-kernel", "gaussian:sigma=x"], "--vendi-kernel: cannot read the kernel"),
        (["--vendi-kernel", "gaussian"], "needs a bandwidth `sigma`"),
        (["--sce-kernel", "cosine:sigma=2"], "--sce-kernel"),
        (["--vendi-kernel", "gaussian:sigma=2", "--vendi-sigma", "3"], "--vendi-sigma 3.0 needs"),
        (["--sce-sigma", "2"], "--sce-sigma 2.0 needs --sce-kernel gaussian"),
    ],
)
def test_a_kernel_that_cannot_be_read_is_refused_naming_the_flag(tmp_path, capsys, flags, message):
    folder = images(tmp_path / "run", cells=2)
    with (
        pytest.warns(FutureWarning)
        if any("sigma" in f and "--" in f for f in flags[1:])
        else _no_warning()
    ):
        assert main(["score", str(folder), *CELLS, *flags]) == 2
    assert message in capsys.readouterr().err


def test_a_kernel_name_that_is_not_a_kernel_is_refused_by_argparse(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["score", str(tmp_path), "--vendi-kernel", "gausian:sigma=1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --vendi-kernel" in err and "cosine, linear, gaussian" in err


def _no_warning():
    import contextlib

    return contextlib.nullcontext()


# ------------------------------------------------------------------ the evaluation core


def test_runs_are_scored_without_a_sampling_plan(tmp_path, monkeypatch):
    """The evaluator of existing images comes from ``for_existing``, not from a fake
    ``samples_per_condition=2`` / ``num_samples=1`` generator evaluation."""
    from diversity_callbacks import DiversityEvaluator
    from tests.helpers.cli import write_prompted

    def no_plan(*args, **kwargs):
        raise AssertionError("a DiversityEvaluator with a sampling plan was built")

    monkeypatch.setattr(DiversityEvaluator, "__init__", no_plan)
    prompted = write_prompted(tmp_path / "prompted", "folders")
    plain = images(tmp_path / "plain")
    out = tmp_path / "s.json"
    pixels = ["--embedder", "tests.helpers.trainer:PixelEmbedder", "--workers", "0"]
    args = ["score", str(prompted), str(plain), *pixels, "--no-progress", "--json", str(out)]
    assert main(args) == 0
    prompted_run, plain_run = json.loads(out.read_text())["runs"]
    assert {"per_prompt_vendi_q1", "sce"} <= set(prompted_run["metrics"])
    assert set(plain_run["metrics"]) == {"vendi_q1", "vendi_q2"}


def test_the_columns_follow_the_order_the_metrics_declare(tmp_path, capsys):
    healthy = images(tmp_path / "healthy", cells=4)
    collapsed = images(tmp_path / "collapsed", cells=2)
    args = ["score", str(healthy), str(collapsed), *CELLS, "--modes", "2"]
    assert main([*args, "--plot", str(tmp_path / "plots")]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header[3:] == ["vendi_q1", "vendi_q2", "num_modes", "lost_mode_mass", "gained_mode_mass"]


def test_a_prompt_aware_metric_on_says_what_it_lacks_in_flags(tmp_path, capsys):
    from tests.helpers.cli import write_prompted

    folder = write_prompted(tmp_path / "run", "folders")
    flags = ["--cond-vendi", "on", "--vendi-kernel", "linear"]
    assert main(["score", str(folder), *CELLS, *flags]) == 2
    err = capsys.readouterr().err
    assert "--cond-vendi on needs" in err and "--vendi-kernel cosine or gaussian" in err
