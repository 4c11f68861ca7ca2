"""Every Python block of the README and of docs/ runs as written (see tests/helpers/docs.py for how).

One test per page runs its blocks in order in one namespace, in a temporary directory. Pages
whose blocks use names they do not define (a user's ``model``, ``prompts``...) get them from
``SETUPS``; ``CHECKS`` then asserts what the blocks claim. A page whose blocks need a fixture
of another test module runs there, listed in ``ELSEWHERE``.
"""

from __future__ import annotations

import ast
import csv
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import docs
from tests.helpers.trainer import PROMPTS, PixelEmbedder, TinyGenerator, tiny_data

Namespace = dict[str, Any]

ELSEWHERE = {
    # the tiny Stable Diffusion pipeline is a module-scoped fixture of that file
    "docs/integrations/diffusers.md": (
        "tests/samplers/test_diffusers.py",
        "test_the_readme_snippet_runs_as_written",
    ),
    # the tiny GPT-2, its tokenizer and the random sentence embedder are built there
    "docs/text.md": ("tests/integrations/test_hf.py", "test_the_text_page_runs_as_written"),
    # its shell commands make the files its Python blocks read, and the output is compared
    "docs/cli.md": (
        "tests/cli/test_cli_docs.py",
        "test_every_block_of_the_cli_page_runs_and_shows_what_it_prints",
    ),
}
"""Page -> (test file, test function) that runs all of the page's blocks, its own way."""


# ---------------------------------------------------------------- setups: names a page assumes


def _user_script(tmp_path: Path) -> Namespace:
    """A user's training script: prompts, a LightningModule with generate(), data loaders."""
    return {
        "prompts": PROMPTS,
        "model": TinyGenerator(),
        "train_loader": tiny_data(),  # 8 steps per epoch: shorter than any cadence
        "val_loader": tiny_data(shuffle=False),
    }


SETUPS: dict[str, Callable[[Path], Namespace]] = {
    "docs/callback.md": _user_script,
    "docs/integrations/loggers.md": _user_script,
}


# ---------------------------------------------------------------- checks: what the blocks claim


def _check_readme(ns: Namespace, tmp_path: Path) -> None:
    collapse = ns["collapse"]
    diversity = collapse.diversity  # the snippet's callback (getting-started rebinds the name)
    assert collapse.collapse_step is None  # a healthy run: 200 steps, an evaluation every 50
    assert [row["global_step"] for row in diversity.history] == [0, 50, 100, 150, 200]
    assert all(1.0 < row["diversity/vendi_q1"] <= 24.0 for row in diversity.history)
    (metrics_csv,) = (tmp_path / "logs").rglob("metrics.csv")
    with metrics_csv.open() as file:
        logged = [row for row in csv.DictReader(file) if row.get("diversity/vendi_q1")]
    assert len(logged) == len(diversity.history)


def _check_getting_started(ns: Namespace, tmp_path: Path) -> None:
    _check_readme(ns, tmp_path)  # the same snippet
    # the real-run block builds its callback for CLIP and W&B; its fit is the user's
    assert ns["diversity"].every_n_train_steps == 1000
    assert type(ns["trainer"].logger).__name__ == "WandbLogger"


def _check_callback(ns: Namespace, tmp_path: Path) -> None:
    diversity, trainer = ns["diversity"], ns["trainer"]
    # the baseline, then one evaluation per validation: each EarlyStopping check saw a fresh value
    assert [row["global_step"] for row in diversity.history] == [0, 8, 16, 24]
    # at the step of val_loss: validation runs before the epoch's last batch counts as stepped
    assert [row["step"] for row in diversity.history] == [0, 7, 15, 23]
    assert (
        trainer.callback_metrics["diversity/vendi_q1"]
        == diversity.history[-1]["diversity/vendi_q1"]
    )
    (checkpoint,) = Path(trainer.checkpoint_callback.dirpath).iterdir()  # no "diversity/" folder
    assert re.fullmatch(r"step\d+-vendi\d+\.\d\d\.ckpt", checkpoint.name)


def _check_evaluator(ns: Namespace, tmp_path: Path) -> None:
    result, scalars = ns["result"], ns["scalars"]
    prompted = ns["sample_prompts"](["a blue plum"], [torch.Generator().manual_seed(0)])
    assert prompted.shape == (1, 3, 16, 16)
    assert set(result.per_condition) == {"vendi_q1", "vendi_q2"}
    assert result.per_condition["vendi_q1"].shape == (2,)
    assert 1.0 < scalars["diversity/per_class_vendi_q1"] <= 16.0
    assert {"diversity/linear_vendi_q2", "diversity/calinski_harabasz"} <= scalars.keys()
    texts = ns["generate_text"](["a poem"], [torch.Generator().manual_seed(0)])
    assert texts[0].startswith("a poem: ") and len(texts[0]) == len("a poem: ") + 12


def _check_loggers(ns: Namespace, tmp_path: Path) -> None:
    from diversity_callbacks.media import loggers

    assert loggers.WRITERS[ns["MyLogger"]] is ns["log_diversity"]
    trainer, collapse, diversity = (ns[k] for k in ("trainer", "collapse", "diversity"))
    assert trainer.global_step == 100 and collapse.collapse_step is None  # healthy training
    folders = sorted((tmp_path / "diversity_media").iterdir())
    assert len(folders) == len(diversity.history) >= 2  # one per evaluation, every 50 steps
    for folder in folders:
        assert len(list((folder / "samples").iterdir())) == len(PROMPTS)
    assert list((tmp_path / "logs").rglob("events.out.tfevents.*"))
    assert list((tmp_path / "logs").rglob("metrics.csv"))


def _check_large_models(ns: Namespace, tmp_path: Path) -> None:
    ema, decoder = ns["ema"], ns["decoder"]
    assert ema.model is not decoder
    with torch.no_grad():
        decoder.linear.weight.add_(1.0)
    before = ema.model.linear.weight.clone()
    ema.update(decoder)  # moves a thousandth of the way to the changed weights
    expected = before + 0.001 * (decoder.linear.weight - before)
    assert torch.allclose(ema.model.linear.weight, expected)
    # the callback's call samples the copy, not the trained module
    sampled = ema(None, None, [torch.Generator().manual_seed(0)])
    assert torch.equal(sampled, ema.model.generate(None, [torch.Generator().manual_seed(0)]))
    assert not torch.equal(sampled, decoder.generate(None, [torch.Generator().manual_seed(0)]))


CHECKS: dict[str, Callable[[Namespace, Path], None]] = {
    "README.md": _check_readme,
    "docs/getting-started.md": _check_getting_started,
    "docs/callback.md": _check_callback,
    "docs/evaluator.md": _check_evaluator,
    "docs/integrations/loggers.md": _check_loggers,
    "docs/integrations/large-models.md": _check_large_models,
}


# ---------------------------------------------------------------- the runner


def _pages_with_python() -> list[str]:
    return [
        page
        for page in docs.pages()
        if any(block.language == "python" for block in docs.blocks(page))
    ]


@pytest.mark.parametrize("page", [p for p in _pages_with_python() if p not in ELSEWHERE])
def test_page_blocks_run(page: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if page == "docs/integrations/loggers.md":
        pytest.importorskip("tensorboard")
    monkeypatch.chdir(tmp_path)
    namespace = SETUPS[page](tmp_path) if page in SETUPS else {}
    namespace["__name__"] = "__docs__"  # a block's `if __name__ == "__main__":` stays off
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the blocks' models are tiny: threads only contend
    try:
        docs.run_blocks(page, namespace, monkeypatch)
    finally:
        torch.set_num_threads(threads)
        _finish_wandb()
    if page in CHECKS:
        CHECKS[page](namespace, tmp_path)


def _finish_wandb() -> None:
    """A W&B run a block left open would be joined by the next test's run."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


# ---------------------------------------------------------------- nothing escapes the runner


def coverage_problems() -> list[str]:
    """What would leave a Python block of the README or the docs unrun, one line per problem."""
    problems = []
    for page in docs.pages():
        text = (docs.ROOT / page).read_text()
        seen = len(PYTHON_LOOKING_FENCE.findall(text))
        parsed = [block for block in docs.blocks(page) if block.language == "python"]
        if len(parsed) != seen:
            problems.append(
                f"{page}: {seen} fences look like Python, {len(parsed)} are ```python blocks: "
                "write ```python (the tests run it), or ```text for output"
            )
        problems += [
            f"{page}:{block.line - 1}: unknown test directive {block.directive!r}"
            for block in parsed
            if block.directive is not None and not block.stand_in
        ]
        if page in ELSEWHERE and parsed:
            path, name = ELSEWHERE[page]
            file = docs.ROOT / path
            code = _function_source(file, name) if file.exists() else None
            if code is None:
                problems.append(f"{page} is said to run in {path}::{name}, which is not there")
            elif page not in file.read_text():
                problems.append(f"{path} does not name {page}")
            elif re.search(rf'python_blocks\("{re.escape(page)}",', code):
                problems.append(f"{path}::{name} runs one section of {page}, not all of it")
    return problems


PYTHON_LOOKING_FENCE = re.compile(r"^[ \t]*(?:```|~~~)[ \t]*(?:python3?|py|pycon)\b", re.I | re.M)


def _function_source(path: Path, name: str) -> str | None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_source_segment(path.read_text(), node)
    return None


def test_every_python_block_is_run_by_a_test() -> None:
    """Each page is run whole, here (every page with a Python block is a case of
    test_page_blocks_run) or by the test named in ELSEWHERE; the parser finds every block a
    reader sees as Python (```py, ```python3, indented fences)."""
    assert coverage_problems() == []
    assert set(SETUPS) | set(CHECKS) <= set(_pages_with_python()), "a setup for a page gone"


def test_the_coverage_check_reports_blocks_no_test_would_run(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "docs" / "integrations").mkdir(parents=True)
    (tmp_path / "README.md").write_text("```python\nx = 1\n```\n")
    (tmp_path / "docs" / "a.md").write_text("```py\nx = 1\n```\n\n  ```Python\n  y = 2\n  ```\n")
    (tmp_path / "docs" / "b.md").write_text("<!-- test: skip -->\n```python\nx = 1\n```\n")
    (tmp_path / "docs" / "integrations" / "diffusers.md").write_text("```python\nx = 1\n```\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "samplers").mkdir()
    (tmp_path / "tests" / "samplers" / "test_diffusers.py").write_text(
        "def test_the_readme_snippet_runs_as_written():\n"
        '    python_blocks("docs/integrations/diffusers.md", "a section")\n'
    )
    monkeypatch.setattr(docs, "ROOT", tmp_path)
    problems = coverage_problems()
    assert len(problems) == 3, problems
    assert problems[0].startswith("docs/a.md: 2 fences look like Python, 1 are")
    assert problems[1] == "docs/b.md:1: unknown test directive 'skip'"
    assert problems[2].endswith("runs one section of docs/integrations/diffusers.md, not all of it")


def test_the_api_reference_documents_every_public_name() -> None:
    import diversity_callbacks
    import diversity_callbacks.functional

    reference = "\n".join(p.read_text() for p in (docs.ROOT / "docs" / "api").glob("*.md"))
    directives = set(re.findall(r"^::: (\S+)", reference, re.M))
    # the package's public names, each documented at the module that defines it
    missing = [
        name
        for name in diversity_callbacks.__all__
        if name != "__version__" and not any(_defines(d, name) for d in directives)
    ]
    functional = reference[reference.index("::: diversity_callbacks.functional\n") :]
    missing += [
        f"diversity_callbacks.functional.{name}"
        for name in diversity_callbacks.functional.__all__
        if f"- {name}\n" not in functional
    ]
    assert missing == [], "add to docs/api/*.md: " + ", ".join(missing)


def _defines(directive: str, name: str) -> bool:
    """Whether ``::: directive`` documents ``name`` where it is defined: its module's source
    (read, not imported, so optional dependencies stay unneeded) has it at the top level."""
    module, _, last = directive.rpartition(".")
    path = docs.ROOT / Path(*module.split(".")).with_suffix(".py")
    if last != name or not path.is_file():
        return False
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(
        getattr(node, "name", None) == name
        or any(getattr(t, "id", None) == name for t in getattr(node, "targets", []))
        or getattr(getattr(node, "target", None), "id", None) == name
        for node in tree.body
    )


def _github_anchors(page: Path) -> set[str]:
    """The anchors GitHub (and MkDocs' toc) give the headings of ``page``."""
    headings = re.findall(r"^#{1,6}\s+(.*?)\s*$", page.read_text(), re.M)
    return {
        re.sub(r"[^\w\- ]", "", h.replace("`", "")).strip().lower().replace(" ", "-")
        for h in headings
    }


def test_the_readme_links_to_files_and_headings_that_exist() -> None:
    """The README is not part of the site, so mkdocs --strict does not check its links."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", (docs.ROOT / "README.md").read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        file = docs.ROOT / (path or "README.md")
        if not file.exists() or (anchor and anchor not in _github_anchors(file)):
            broken.append(target)
    assert broken == []


CPU_WHEELS = "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu"


@pytest.mark.parametrize(
    ("page", "section"),
    [("README.md", "Quick start"), ("docs/getting-started.md", "Try it on a fresh machine")],
)
def test_the_quick_start_takes_cpu_wheels_before_anything_else(page: str, section: str) -> None:
    # its text promises a CPU run; a plain first install used to pull GBs of CUDA wheels
    commands = [b.code for b in docs.blocks(page) if b.section == section and b.language == "bash"]
    assert CPU_WHEELS in commands[0].splitlines()[0]


def test_the_readmes_test_command_is_what_ci_runs() -> None:
    (command,) = [
        b.code.strip()
        for b in docs.blocks("README.md")
        if "pytest" in b.code and b.language == "bash"
    ]
    assert command in (docs.ROOT / ".ci" / "run").read_text().splitlines()


def test_sphinx_roles_in_docstrings_show_as_sphinx_would_show_them() -> None:
    spec = importlib.util.spec_from_file_location(
        "sphinx_roles", docs.ROOT / "docs" / "_griffe" / "sphinx_roles.py"
    )
    roles = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(roles)
    text = (
        "one :class:`~diversity_callbacks.DiversityEvaluator`, its :meth:`evaluate\n"
        "    <diversity_callbacks.DiversityEvaluator.evaluate>` and :mod:`diversity_callbacks.media`"
    )
    assert roles.plain_roles(text) == (
        "one `DiversityEvaluator`, its `evaluate` and `diversity_callbacks.media`"
    )


def test_the_parser_reads_fences_sections_and_directives(tmp_path: Path, monkeypatch) -> None:
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    page.write_text(
        "# Title\n\n```python\n# not a heading\nx = 1\n```\n\n## Second\n\n"
        "<!-- test: stand-in: needs a GPU -->\n```python\ny = x + 1\n```\n\n"
        "- a list\n\n  ```python\n  z = y\n  ```\n\n```text\nprinted\n```\n"
    )
    monkeypatch.setattr(docs, "ROOT", tmp_path)
    found = docs.blocks("docs/page.md")
    assert [(b.language, b.section, b.stand_in) for b in found] == [
        ("python", "Title", False),
        ("python", "Second", True),
        ("python", "Second", False),
        ("text", "Second", False),
    ]
    assert found[2].code == "z = y\n" and found[0].line == 3
    assert docs.python_blocks("docs/page.md", "Second") == ["y = x + 1\n", "z = y\n"]
    namespace: Namespace = {}
    docs.run_blocks("docs/page.md", namespace, monkeypatch)
    assert namespace["z"] == 2


def test_a_failing_block_names_its_page_and_line(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "page.md").write_text("text\n\n```python\nx = 1\nraise KeyError(x)\n```\n")
    monkeypatch.setattr(docs, "ROOT", tmp_path)
    with pytest.raises(KeyError) as error:
        docs.run_blocks("page.md", {}, monkeypatch)
    frame = error.traceback[-1]
    assert frame.path == tmp_path / "page.md" and frame.lineno + 1 == 5


def test_stand_ins_hold_only_for_the_marked_block(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "page.md").write_text(
        "<!-- test: stand-in -->\n```python\nfrom diversity_callbacks import CLIPEmbedder\n"
        'e = CLIPEmbedder("ViT-B-32", pretrained="laion2b_s34b_b79k")\n'
        'd = "cuda"\n```\n\n```python\nfrom diversity_callbacks import CLIPEmbedder as Real\n```\n'
    )
    monkeypatch.setattr(docs, "ROOT", tmp_path)
    namespace: Namespace = {}
    docs.run_blocks("page.md", namespace, monkeypatch)
    assert isinstance(namespace["e"], docs.StandInCLIP)
    assert namespace["d"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert namespace["Real"] is not docs.StandInCLIP
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    assert namespace["e"].embed_images(images, value_range="[-1,1]").shape == (2, 48)
    assert PixelEmbedder.dim == docs.StandInCLIP.dim


def test_a_block_prints_what_the_page_says_it_prints(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "page.md").write_text(
        "```python\nprint(1 + 1)\n```\n\nprints\n\n```text\n2\n```\n\n"
        "```python\nprint(2 + 2)\n```\n\nprints\n\n```text\n5\n```\n"
    )
    monkeypatch.setattr(docs, "ROOT", tmp_path)
    assert [block.output for block in docs.blocks("page.md")] == ["2\n", None, "5\n", None]
    with pytest.raises(AssertionError, match=r"page\.md:11: the block printed\n4\n"):
        docs.run_blocks("page.md", {}, monkeypatch)


def test_an_unknown_directive_is_refused(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "page.md").write_text("<!-- test: skip -->\n```python\nx = 1\n```\n")
    monkeypatch.setattr(docs, "ROOT", tmp_path)
    with pytest.raises(ValueError, match="unknown test directive 'skip'"):
        docs.run_blocks("page.md", {}, monkeypatch)
