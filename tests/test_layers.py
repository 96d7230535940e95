"""The package's modules import only downwards, and front ends never import each other.

The layers (docs/architecture.md), top to bottom::

    extension                               builds, registers, unregisters
    magics+commands | widget | comm | eval  the front ends (eval: the benchmark CLI)
    cell_output, frontend, provenance       rendering into a cell; asking for a cell
    session, prompts, code, options, background, agent, fixes
    llm, frames, engines, sandbox, store, loaders, rules
    events, errors, config, tokens, sanitize

Every ``import`` in the package is read (also those inside functions and under
``TYPE_CHECKING``: a lazy import is still a dependency). A new module must be given a
layer here, which is the point: where it goes is a decision, not an accident.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dataagent_jupyter"

#: top-level module or subpackage -> layer (higher imports lower, never the reverse)
LAYERS: dict[str, int] = {
    "_version": 0,
    "events": 0,
    "errors": 0,
    "config": 0,
    "tokens": 0,
    "sanitize": 0,
    "llm": 1,
    "frames": 1,
    "engines": 1,
    "sandbox": 1,
    "store": 1,
    "loaders": 1,
    "rules": 1,
    "session": 2,
    "prompts": 2,
    "code": 2,
    "options": 2,
    "background": 2,
    "agent": 2,
    "fixes": 2,
    "cell_output": 3,
    "frontend": 3,
    "provenance": 3,
    "magics": 4,
    "commands": 4,
    "widget": 4,
    "comm": 4,
    "eval": 4,
    "extension": 5,
    "__init__": 5,
}

#: the front ends: modules of one may import each other, never those of another
FRONT_ENDS: dict[str, str] = {
    "magics": "magics",
    "commands": "magics",
    "widget": "widget",
    "comm": "comm",
    "eval": "eval",
}


def _unit(path: Path) -> str:
    """The top-level unit a file belongs to: ``widget/chat.py`` -> ``widget``."""
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def _package_of(path: Path) -> list[str]:
    """The package a file's relative imports start from: ``widget/chat.py`` -> widget."""
    return ["dataagent_jupyter", *path.relative_to(PACKAGE).parts[:-1]]


def imported_units(source: str, package: list[str]) -> set[tuple[str, int]]:
    """The package's units imported by ``source`` (a file of ``package``), with lines."""
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(source)):
        targets: list[list[str]] = []
        if isinstance(node, ast.Import):
            targets = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = [*base, *(node.module.split(".") if node.module else [])]
            # `from . import errors` names modules; `from .events import Done` names things
            targets = [module] if node.module else [[*module, a.name] for a in node.names]
        for target in targets:
            if target[:1] == ["dataagent_jupyter"]:
                found.add((target[1] if len(target) > 1 else "__init__", node.lineno))
    return found


def _files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "labextension" not in p.parts)


def test_every_module_has_a_layer() -> None:
    units = {_unit(path) for path in _files()}
    assert units <= set(LAYERS), f"give these a layer in LAYERS: {sorted(units - set(LAYERS))}"


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_only_downwards(path: Path) -> None:
    unit = _unit(path)
    source = path.read_text(encoding="utf-8")
    wrong = []
    for target, line in sorted(imported_units(source, _package_of(path))):
        if target == unit:
            continue
        if LAYERS.get(target, -1) > LAYERS[unit]:
            wrong.append(f"line {line}: {unit} imports {target}, a layer above it")
        mine, theirs = FRONT_ENDS.get(unit), FRONT_ENDS.get(target)
        if mine and theirs and mine != theirs:
            wrong.append(f"line {line}: the {mine} front end imports the {theirs} front end")
    assert not wrong, "\n".join(wrong)


def test_the_reader_sees_lazy_relative_and_absolute_imports() -> None:
    """An upward import hidden in a function must be seen, or the check guards nothing."""
    source = (
        "from __future__ import annotations\n"
        "from .. import errors\n"
        "def later():\n"
        "    from ..comm import TARGET\n"
        "    import dataagent_jupyter.magics\n"
        "    from . import chat\n"
    )
    found = imported_units(source, ["dataagent_jupyter", "widget"])
    assert found == {("errors", 2), ("comm", 4), ("magics", 5), ("widget", 6)}
    assert imported_units("from .session import Session\n", ["dataagent_jupyter"]) == {
        ("session", 1)
    }
