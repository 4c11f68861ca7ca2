"""The package's shape, read from its sources (nothing is imported): issue 20's Done-when.

- no module imports a private (``_name``) name or module of another package module, except
  the fixed private interface of each functional metric (``_<x>_check_inputs``, ``_<x>_update``,
  ``_<x>_compute`` of ``functional/``, for ``metrics/`` and ``prompt_removal.py``);
- no import circle among the modules (a package ``__init__``'s re-exports and imports under
  ``if TYPE_CHECKING:`` do not count);
- no class longer than 300 lines, no function longer than 60 (def line to last line, the
  docstring included);
- every package folder has its folder of tests, and the tests import no private package name.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "diversity_callbacks"
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 60
FUNCTIONAL_INTERFACE = re.compile(r"_[a-z0-9]+(?:_[a-z0-9]+)*?_(?:check_inputs|update|compute)")
"""The private names a functional module offers its metric class (as torchmetrics' ``_ssim_*``)."""
IN_PROGRESS = pytest.mark.xfail(strict=False, reason="issue 20 in progress")


@dataclass(frozen=True)
class Import:
    """One imported name: ``from module import name`` (``name`` None for ``import module``)."""

    importer: str
    module: str
    name: str | None
    line: int
    type_checking: bool
    top_level: bool


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def module_files(root: Path, folder: str) -> dict[str, Path]:
    """Dotted module name -> source file, for every module under ``root / folder``."""
    found = {}
    for path in sorted((root / folder).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


class Package:
    """The package's modules under ``root``, read once."""

    def __init__(self, root: Path = ROOT) -> None:
        self.root = root
        self.files = module_files(root, PACKAGE)
        self.trees = {name: parse(path) for name, path in self.files.items()}

    def is_package(self, name: str) -> bool:
        return self.files[name].name == "__init__.py"

    def imports(self, name: str, module: ast.Module, is_package: bool) -> Iterator[Import]:
        """Every import of a package module in ``module`` (named ``name``), relative ones
        resolved."""
        hidden = _type_checking_lines(module)
        top = {id(node) for node in module.body}
        top |= {id(n) for node in module.body if isinstance(node, ast.If) for n in node.body}
        here = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(module):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            flags = {"type_checking": node.lineno in hidden, "top_level": id(node) in top}
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == PACKAGE:
                        yield Import(name, alias.name, None, node.lineno, **flags)
                continue
            target = node.module or ""
            if node.level:
                base = here.split(".")[: len(here.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            if target.split(".")[0] == PACKAGE:
                for alias in node.names:
                    yield Import(name, target, alias.name, node.lineno, **flags)

    def all_imports(self) -> list[Import]:
        return [
            found
            for name, module in self.trees.items()
            for found in self.imports(name, module, self.is_package(name))
        ]

    def reached(self, found: Import) -> str:
        """The module an import reaches: ``from pkg import submodule`` reaches the submodule."""
        if found.name is not None and f"{found.module}.{found.name}" in self.files:
            return f"{found.module}.{found.name}"
        return found.module

    def private_parts(self, found: Import) -> list[str]:
        """The private names an import reaches into: module path components and the name."""
        target = self.reached(found)
        names = target.split(".")[1:]
        if found.name is not None and target == found.module:
            names.append(found.name)
        return [part for part in names if is_private(part)]

    def private_uses(self, name: str, module: ast.Module, is_package: bool) -> list[str]:
        """Imports of private names of other modules, their ``module._name`` attributes, and
        ``setattr(module, "_name", ...)``-style uses (``monkeypatch.setattr`` included)."""
        found = []
        for item in self.imports(name, module, is_package):
            if self.reached(item) != name and self.private_parts(item) and not allowed(item):
                imported = ".".join(filter(None, [item.module, item.name]))
                found.append(f"{name}:{item.line} imports {imported}")
        aliases = self.module_aliases(name, module, is_package)
        for node in ast.walk(module):
            for owner, attribute in _attributes_used(node):
                owner = aliases.get(owner, owner if owner.split(".")[0] == PACKAGE else None)
                if (
                    owner is not None
                    and owner != name
                    and is_private(attribute)
                    and not interface_use(name, owner, attribute)
                ):
                    found.append(f"{name}:{node.lineno} uses {owner}.{attribute}")
        return found

    def module_aliases(self, name: str, module: ast.Module, is_package: bool) -> dict[str, str]:
        """The names under which ``module`` holds package modules: ``import a.b as c``,
        ``from a import b [as c]`` where ``b`` is a module."""
        aliases = {}
        for item in self.imports(name, module, is_package):
            if self.reached(item) != item.module:
                aliases[item.name] = self.reached(item)
        for node in ast.walk(module):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    if isinstance(node, ast.Import) and alias.name.split(".")[0] == PACKAGE:
                        aliases[alias.asname or alias.name] = alias.name
                    elif alias.asname and alias.name in aliases:
                        aliases[alias.asname] = aliases[alias.name]
        return aliases

    # ------------------------------------------------------------ import circles

    def reexports(self, package: str) -> dict[str, str]:
        """Name -> the module a package ``__init__`` takes it from (TYPE_CHECKING imports too:
        the lazy ``__getattr__`` of the top-level package lists its sources there)."""
        items = self.imports(package, self.trees[package], is_package=True)
        return {i.name: self.reached(i) for i in items if i.name and i.module != package}

    def defining(self, module: str, name: str | None, seen: frozenset[str] = frozenset()) -> str:
        """The module that defines ``name`` imported from ``module``: a package's re-export
        is followed to its source."""
        if name is None or module not in self.files or module in seen:
            return module
        if f"{module}.{name}" in self.files:
            return f"{module}.{name}"
        source = self.reexports(module).get(name) if self.is_package(module) else None
        return module if source is None else self.defining(source, name, seen | {module})

    def graph(self) -> dict[str, set[str]]:
        """Module -> the modules it imports; a package ``__init__``'s re-exports (its
        top-level imports) and ``if TYPE_CHECKING:`` imports left out."""
        edges: dict[str, set[str]] = {name: set() for name in self.files}
        for found in self.all_imports():
            if found.type_checking or (self.is_package(found.importer) and found.top_level):
                continue
            target = self.defining(found.module, found.name)
            if target != found.importer and target in edges:
                edges[found.importer].add(target)
        return edges


def _attributes_used(node: ast.AST) -> list[tuple[str, str]]:
    """``(owner, attribute)`` for ``owner.attribute``, ``setattr(owner, "attribute", ...)`` (and
    ``getattr``, ``delattr``, ``monkeypatch.setattr``) and ``monkeypatch.setattr("a.b.attr")``."""
    if isinstance(node, ast.Attribute):
        return [(ast.unparse(node.value), node.attr)]
    if not isinstance(node, ast.Call) or not node.args:
        return []
    function = ast.unparse(node.func).rsplit(".", 1)[-1]
    if function not in ("setattr", "getattr", "delattr"):
        return []
    first, rest = node.args[0], node.args[1:]
    if rest and isinstance(rest[0], ast.Constant) and isinstance(rest[0].value, str):
        return [(ast.unparse(first), rest[0].value)]
    if isinstance(first, ast.Constant) and isinstance(first.value, str) and "." in first.value:
        return [tuple(first.value.rsplit(".", 1))]  # monkeypatch.setattr("module.name", value)
    return []


def _type_checking_lines(module: ast.Module) -> set[int]:
    """Lines of the bodies of ``if TYPE_CHECKING:`` blocks."""
    lines: set[int] = set()
    for node in ast.walk(module):
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            for child in node.body:
                lines.update(range(child.lineno, child.end_lineno + 1))
    return lines


def allowed(found: Import) -> bool:
    """The functional interface: ``metrics/`` and prompt_removal.py import it from functional/."""
    return found.name is not None and interface_use(found.importer, found.module, found.name)


def interface_use(user: str, owner: str, name: str) -> bool:
    """Whether ``user`` may use ``owner``'s private ``name``: the fixed functional interface, by
    ``metrics/`` and prompt_removal.py from ``functional/``, and by the tests from anywhere (they
    check that a metric's ``compute`` runs its functional form's code)."""
    if FUNCTIONAL_INTERFACE.fullmatch(name) is None:
        return False
    if user.split(".")[0] == "tests":
        return True
    return owner.startswith(f"{PACKAGE}.functional.") and (
        user.startswith(f"{PACKAGE}.metrics.") or user == f"{PACKAGE}.prompt_removal"
    )


def private_imports(package: Package, folder: str = PACKAGE) -> list[str]:
    """Every use of another module's private name by the modules under ``folder``."""
    found = []
    for name, path in module_files(package.root, folder).items():
        module = package.trees.get(name) or parse(path)
        found.extend(package.private_uses(name, module, path.name == "__init__.py"))
    return sorted(found)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = [stack.pop()]
            while component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def oversized(package: Package) -> list[str]:
    """Classes over MAX_CLASS_LINES and functions over MAX_FUNCTION_LINES, def line to end."""
    limits = {
        ast.ClassDef: MAX_CLASS_LINES,
        ast.FunctionDef: MAX_FUNCTION_LINES,
        ast.AsyncFunctionDef: MAX_FUNCTION_LINES,
    }
    found = []
    for name, module in package.trees.items():
        for node in ast.walk(module):
            limit = limits.get(type(node))
            lines = node.end_lineno - node.lineno + 1 if limit else 0
            if limit and lines > limit:
                found.append(f"{name}:{node.lineno} {node.name} has {lines} lines (> {limit})")
    return sorted(found)


@pytest.fixture(scope="module")
def package() -> Package:
    return Package()


# ---------------------------------------------------------------- the checks


@IN_PROGRESS
def test_no_module_imports_a_private_name_of_another_module(package: Package):
    found = private_imports(package)
    assert not found, "\n".join(found)


@IN_PROGRESS
def test_no_import_circle(package: Package):
    found = circles(package.graph())
    assert not found, "\n".join(" <-> ".join(circle) for circle in found)


@IN_PROGRESS
def test_no_class_over_300_lines_and_no_function_over_60(package: Package):
    found = oversized(package)
    assert not found, "\n".join(found)


def test_every_package_folder_has_its_folder_of_tests():
    folders = sorted(
        path.parent.relative_to(ROOT / PACKAGE)
        for path in (ROOT / PACKAGE).rglob("__init__.py")
        if path.parent != ROOT / PACKAGE
    )
    missing = [str(f) for f in folders if not any((ROOT / "tests" / f).glob("test_*.py"))]
    assert not missing, f"no tests/<folder>/test_*.py for {missing}"


@IN_PROGRESS
def test_the_tests_import_no_private_name_of_the_package(package: Package):
    found = private_imports(package, "tests")
    assert not found, "\n".join(found)


# ---------------------------------------------------------------- the checks, checked

MADE_UP = {
    "__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
    "    from diversity_callbacks.metrics.vendi import Vendi\n",
    "functional/__init__.py": "from diversity_callbacks.functional.vendi import vendi\n",
    "functional/vendi.py": "def _vendi_compute(): ...\ndef _helper(): ...\ndef vendi(): ...\n",
    "metrics/__init__.py": "from .vendi import Vendi\n",
    "metrics/vendi.py": "from diversity_callbacks.functional.vendi import _vendi_compute, _helper\n"
    "from diversity_callbacks import functional as f\nf._other\n"
    "from ..functional import vendi\nclass Vendi: ...\n",
    "evaluation/__init__.py": "",
    "evaluation/a.py": "from diversity_callbacks.evaluation.b import B\n"
    "from diversity_callbacks.functional.vendi import _vendi_compute\n",
    "evaluation/b.py": "def b():\n    from diversity_callbacks.evaluation import a\n"
    "from diversity_callbacks.metrics import Vendi\n",
    "evaluation/_private.py": "",
    "evaluation/d.py": "from diversity_callbacks.functional import vendi as module\n"
    "def f(monkeypatch):\n    monkeypatch.setattr(module, '_helper', 1)\n"
    "    monkeypatch.setattr('diversity_callbacks.functional.vendi._helper', 1)\n"
    "    getattr(module, 'vendi')\n",
    "evaluation/c.py": "from diversity_callbacks.evaluation import _private\n"
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
    "    from diversity_callbacks.metrics.vendi import Vendi\n",
    "long.py": "class Long:\n" + "    x = 1\n" * MAX_CLASS_LINES + "@decorator\ndef fits():\n"
    '    """Doc."""\n'
    + "    x = 1\n" * (MAX_FUNCTION_LINES - 2)
    + "def over():\n"
    + "    x = 1\n" * MAX_FUNCTION_LINES,
}
"""A made-up package: what each check must find in it, and what it must leave alone."""


@pytest.fixture
def made_up(tmp_path: Path) -> Package:
    tests = {"tests/test_vendi.py": "from diversity_callbacks.metrics import vendi\n"
             "from diversity_callbacks.functional.vendi import _vendi_compute, _helper\n"
             "vendi._vendi_compute\n"}  # fmt: skip
    for relative, text in {**{f"{PACKAGE}/{k}": v for k, v in MADE_UP.items()}, **tests}.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return Package(tmp_path)


def test_private_imports_are_found_and_the_functional_interface_is_spared(made_up: Package):
    assert private_imports(made_up) == [
        # the interface, but outside metrics/ and prompt_removal.py
        "diversity_callbacks.evaluation.a:2 imports diversity_callbacks.functional.vendi._vendi_compute",
        "diversity_callbacks.evaluation.c:1 imports diversity_callbacks.evaluation._private",
        "diversity_callbacks.evaluation.d:3 uses diversity_callbacks.functional.vendi._helper",
        "diversity_callbacks.evaluation.d:4 uses diversity_callbacks.functional.vendi._helper",
        "diversity_callbacks.metrics.vendi:1 imports diversity_callbacks.functional.vendi._helper",
        "diversity_callbacks.metrics.vendi:3 uses diversity_callbacks.functional._other",
    ]
    # the tests may use the interface (to check that compute runs it), and nothing else
    assert private_imports(made_up, "tests") == [
        "tests.test_vendi:2 imports diversity_callbacks.functional.vendi._helper"
    ]


def test_circles_count_lazy_imports_but_not_reexports_or_type_checking(made_up: Package):
    assert circles(made_up.graph()) == [
        ["diversity_callbacks.evaluation.a", "diversity_callbacks.evaluation.b"]
    ]
    # a re-exported name is followed to its module (the top package's through TYPE_CHECKING)
    assert made_up.defining("diversity_callbacks", "Vendi") == "diversity_callbacks.metrics.vendi"
    assert made_up.defining("diversity_callbacks.metrics", "Vendi") == (
        "diversity_callbacks.metrics.vendi"
    )
    assert made_up.defining("diversity_callbacks.evaluation", "a") == (
        "diversity_callbacks.evaluation.a"
    )


def test_sizes_count_from_the_def_line_to_the_last_docstring_included(made_up: Package):
    assert oversized(made_up) == [
        f"diversity_callbacks.long:1 Long has {MAX_CLASS_LINES + 1} lines (> {MAX_CLASS_LINES})",
        f"diversity_callbacks.long:{MAX_CLASS_LINES + MAX_FUNCTION_LINES + 3} over has "
        f"{MAX_FUNCTION_LINES + 1} lines (> {MAX_FUNCTION_LINES})",
    ]
