"""``%dataagent export PATH``: a conversation as Markdown to read, or as a notebook to run.

The notebook form puts each question in a markdown cell and its code in a code cell below,
so a conversation becomes an ordinary, reviewable analysis notebook. The model's answers
and the error messages are untrusted: they are written through
``sanitize.markdown_source``, so they stay Markdown but carry no raw HTML or script links.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import DataAgentError, StoreError, UsageError
from ..sanitize import markdown_source
from .history import Turn

_FORMATS = (".md", ".ipynb")


def export_conversation(turns: Iterable[Turn], path: str | os.PathLike[str]) -> Path:
    """Write ``turns`` to ``path`` (``.md`` or ``.ipynb``); return the absolute path."""
    target = Path(path).expanduser().absolute()
    suffix = target.suffix.lower()
    if suffix not in _FORMATS:
        raise UsageError(
            f"cannot export to {target.name!r}: the format is chosen by the extension.",
            hint="Use a path ending in .md (Markdown) or .ipynb (notebook), e.g. "
            "%dataagent export analysis.ipynb",
        )
    turns = list(turns)
    if not turns:
        raise UsageError("nothing to export: this conversation has no questions yet.")
    text = _markdown(turns) if suffix == ".md" else _notebook(turns)
    _write_atomically(target, text)
    return target


def notebook_cell_ids(notebook: str) -> list[str]:
    """The cell ids of the saved notebook ``notebook`` (the kernel's JPY_SESSION_NAME), in
    order; empty when it is not a notebook file this kernel can read."""
    path = Path(notebook)
    for candidate in (path, Path.cwd() / path.name):
        if candidate.suffix == ".ipynb" and candidate.is_file():
            try:
                cells = json.loads(candidate.read_text(encoding="utf-8")).get("cells", [])
            except (OSError, ValueError, AttributeError):
                return []
            return [c["id"] for c in cells if isinstance(c, dict) and isinstance(c.get("id"), str)]
    return []


def in_notebook_order(turns: Sequence[Turn], cell_ids: Sequence[str]) -> list[Turn]:
    """``turns`` (one per cell, as they stand) in the order of the notebook's cells.

    A turn without a cell in the notebook (chat widget, side panel, a deleted cell) stays
    right after the turn it followed in the conversation.
    """
    position = {cell: i for i, cell in enumerate(cell_ids)}
    keyed = []
    anchor = -1
    for seq, turn in enumerate(turns):
        if turn.cell is not None and turn.cell in position:
            anchor = position[turn.cell]
            keyed.append(((anchor, 0, seq), turn))
        else:
            keyed.append(((anchor, 1, seq), turn))
    return [turn for _, turn in sorted(keyed, key=lambda item: item[0])]


def _when(turn: Turn) -> str:
    return _dt.datetime.fromtimestamp(turn.time).strftime("%Y-%m-%d %H:%M")


def _footer(turn: Turn) -> str:
    parts = [turn.outcome, turn.model, _when(turn)]
    if turn.frames:
        parts.insert(1, "frames: " + ", ".join(turn.frames))
    return "*" + " · ".join(p for p in parts if p) + "*"


def _fence(code: str) -> str:
    # A fence longer than any backtick run inside, so code holding ``` cannot end it.
    longest = max((len(m) for m in re.findall(r"`+", code)), default=0)
    return "`" * max(3, longest + 1)


def _quote(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.strip().splitlines())


def _markdown(turns: list[Turn]) -> str:
    notebook = turns[0].notebook
    out = [
        "# Data Agent conversation",
        "",
        f"*{notebook} · {len(turns)} question{'s' if len(turns) != 1 else ''} · "
        f"exported {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}*",
        "",
    ]
    for number, turn in enumerate(turns, start=1):
        out += [
            f"## {number}. {' '.join(turn.question.split())[:80]}",
            "",
            _quote(turn.question),
            "",
        ]
        if turn.answer.strip():
            out += [markdown_source(turn.answer.strip()), ""]
        if turn.code.strip():
            fence = _fence(turn.code)
            out += [f"{fence}python", turn.code.rstrip(), fence, ""]
        if turn.error:
            out += [f"**Failed:** {markdown_source(turn.error)}", ""]
        out += [_footer(turn), ""]
    return "\n".join(out)


def _notebook(turns: list[Turn]) -> str:
    try:
        import nbformat
        from nbformat import v4
    except ImportError:
        raise DataAgentError(
            "exporting a notebook needs the nbformat package.",
            hint="Install it (pip install nbformat), or export Markdown: "
            "%dataagent export conversation.md",
        ) from None
    cells = []
    for turn in turns:
        text = [f"**Question:** {turn.question.strip()}"]
        if turn.answer.strip():
            text.append(markdown_source(turn.answer.strip()))
        text.append(_footer(turn))
        cells.append(v4.new_markdown_cell("\n\n".join(text)))
        if turn.code.strip():
            cells.append(v4.new_code_cell(turn.code.rstrip()))
        if turn.error:
            cells.append(
                v4.new_markdown_cell(f"**This code failed:** {markdown_source(turn.error)}")
            )
    nb = v4.new_notebook(
        cells=cells,
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
    )
    nbformat.validate(nb)
    return nbformat.writes(nb)


def _write_atomically(target: Path, text: str) -> None:
    # Written beside the target and renamed over it: an interrupted export never leaves
    # half a notebook where the user expects a whole one.
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text if text.endswith("\n") else text + "\n")
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        raise StoreError(
            f"cannot write {target}: {exc.strerror or exc}.",
            hint="Choose a folder you can write to.",
        ) from None
