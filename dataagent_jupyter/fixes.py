"""``%dataagent fix``: the user's last failing cell, as the model should hear about it.

A ``post_run_cell`` hook remembers how the last cell ended (IPython hands it the
exception object, so nothing is re-parsed from coloured traceback text). Asking for a
fix then sends that cell's source, the exception and where it was raised, and the
frames the cell names; the answer is an ordinary turn (proposed below, or run with
``--run``), so a fix goes through the same lifecycle, cache and history as ``%%ask``.

Privacy: the exception *message* and the traceback text may quote cell values
(``could not convert 'Alice'``). Under ``privacy="schema"`` the model gets the exception
types and the line numbers only.
"""

from __future__ import annotations

import ast
import re
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import DataAgentError
from .frames import is_frame
from .prompts import fix_cell_message

#: most characters of traceback text sent (the end of a traceback is what matters)
MAX_TRACEBACK_CHARS = 4000
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class CellFailure:
    """A cell that raised: its source, the exception, and where in the cell it was raised."""

    source: str
    ename: str
    evalue: str
    traceback: str  # plain text, no colour codes
    lines: tuple[int, ...]  # the cell's lines on the traceback, outermost first
    chain: tuple[str, ...]  # exception types, the one raised last first (with causes)

    @property
    def summary(self) -> str:
        """What the history and the proposed cell's comment call this question (the side
        panel names its fix turn the same way, so the two are recognised as one)."""
        return f"fix the {self.ename} in the last failing cell"

    def report(self, privacy: str) -> str:
        """The error as the model reads it; ``schema``: types and line numbers only."""
        where = (
            "line " + " → line ".join(str(n) for n in self.lines) + " of the cell"
            if self.lines
            else "the cell"
        )
        if privacy == "schema":
            chain = " (raised while handling " + ", ".join(self.chain[1:]) + ")"
            return (
                f"It raised {self.ename} at {where}"
                + (chain if len(self.chain) > 1 else "")
                + ". The error message is withheld (privacy='schema': it may quote data)."
            )
        text = self.traceback
        if len(text) > MAX_TRACEBACK_CHARS:
            text = "…" + text[-MAX_TRACEBACK_CHARS:]
        return f"It raised {self.ename} at {where}. The traceback:\n```\n{text.strip()}\n```"


def failure_from(source: str, error: BaseException) -> CellFailure:
    """The :class:`CellFailure` for a cell ``source`` that raised ``error``."""
    frames = traceback.extract_tb(error.__traceback__)
    # the cell is the first module-level frame; its file is IPython's name for the cell
    cell_file = next((f.filename for f in frames if f.name == "<module>"), None)
    lines = tuple(f.lineno or 0 for f in frames if cell_file and f.filename == cell_file)
    chain: list[str] = []
    seen: BaseException | None = error
    while seen is not None and len(chain) < 5:
        chain.append(type(seen).__name__)
        seen = seen.__cause__ or seen.__context__
    text = "".join(traceback.format_exception(error))
    return CellFailure(
        source=source,
        ename=type(error).__name__,
        evalue=str(error),
        traceback=_ANSI.sub("", text),
        lines=lines,
        chain=tuple(chain),
    )


class FailureWatcher:
    """Remembers how the last cell ended (a ``post_run_cell`` hook calls ``after_cell``)."""

    def __init__(self) -> None:
        self.last: CellFailure | None = None
        self.ran_any = False

    def after_cell(self, result: Any) -> None:
        info = getattr(result, "info", None)
        source = getattr(info, "raw_cell", None) or ""
        if _is_fix_request(source):
            return  # asking for a fix is not the cell to fix
        self.ran_any = True
        error = getattr(result, "error_in_exec", None)
        if error is None or isinstance(error, DataAgentError | KeyboardInterrupt):
            # a question that failed is the agent's to report, not a bug in the user's code
            self.last = None
            return
        self.last = failure_from(source, error)


def _is_fix_request(source: str) -> bool:
    return bool(re.match(r"\s*%dataagent\s+fix\b", source))


@dataclass(frozen=True)
class FixQuestion:
    """How a fix is asked: the question the user sees, what the model reads, the frames."""

    question: str
    task: str
    frames: list[str]


def fix_question(
    failure: CellFailure, *, privacy: str, namespace: Mapping[str, Any]
) -> FixQuestion:
    """The turn that asks for a corrected version of the failing cell."""
    return FixQuestion(
        question=failure.summary,
        task=fix_cell_message(failure.source, failure.report(privacy)),
        frames=frames_named(failure.source, namespace),
    )


def nothing_to_fix(watcher: FailureWatcher) -> str:
    """What to say when the last cell did not fail."""
    what = "ran without an error" if watcher.ran_any else "has not run yet"
    return f"The last cell {what}: there is nothing to fix."


def frames_named(source: str, namespace: Mapping[str, Any]) -> list[str]:
    """The DataFrames and Series the cell refers to by name."""
    try:
        tree = ast.parse(source)
        names = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name)]
    except SyntaxError:  # a cell with magics or a typo: fall back to identifiers
        names = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", source)
    found: list[str] = []
    for name in names:
        if name not in found and is_frame(namespace.get(name)):
            found.append(name)
    return found
