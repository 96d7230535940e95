"""Bounds on what one answer shows, and terminal control sequences out of the child's text.

The child decides how much it displays and what its text contains; the user's kernel
decides what it passes on. Three rules, applied where the child's messages become
``Output`` events (:mod:`.executor`), so every front end gets the same bounded, clean
events:

- **Per output and per answer** (:class:`OutputBudget`): one output larger than
  ``DataAgent.max_output_mb`` is replaced by a one-line note; once the outputs of an
  answer (all its attempts) together pass :data:`ANSWER_OUTPUTS` times that, one line
  says so and the rest is not shown. A chart is saved only when it is shown.
- **Saved charts** (:class:`ChartFolder`): the PNGs saved to ``.dataagent/`` are kept to
  ``DataAgent.max_saved_charts_mb`` per session, the oldest removed first (0: saving off).
- **Control sequences** (:func:`strip_controls`): stream and error text keep newlines,
  tabs and SGR colour codes; every other escape sequence (OSC 52 clipboard writes, window
  titles, screen clears, cursor moves, device queries) and control character goes, so
  the child cannot reach the user's terminal or browser through its text.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ANSWER_OUTPUTS", "ChartFolder", "OutputBudget", "bundle_size", "strip_controls"]

#: The outputs of one answer together may be this many times ``max_output_mb``.
ANSWER_OUTPUTS = 5

# An escape sequence of any kind (CSI, OSC, DCS/SOS/PM/APC strings, two-byte escapes, a
# lone ESC), or a control character other than tab and newline (C0, DEL, C1).
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"
    r"|\x1b[ -/]*[0-~]?"
    r"|\x9b[0-?]*[ -/]*[@-~]?"  # the same, introduced by 8-bit C1 codes
    r"|\x9d[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|[\x90\x98\x9e\x9f][^\x1b\x9c]*(?:\x1b\\|\x9c)?"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)
_SGR = re.compile(r"\x1b\[[0-9;]{0,32}m")


def strip_controls(text: str) -> str:
    """``text`` without terminal control sequences; newlines, tabs and colours stay."""
    if not _CONTROL.search(text):
        return text
    text = text.replace("\r\n", "\n")
    return _CONTROL.sub(lambda m: m.group(0) if _SGR.fullmatch(m.group(0)) else "", text)


def bundle_size(data: Any) -> int:
    """Characters in a MIME bundle (what the user's kernel would pass on or decode)."""
    if not isinstance(data, dict):
        return 0
    total = 0
    for value in data.values():
        if isinstance(value, str):
            total += len(value)
        elif isinstance(value, list):
            total += sum(len(v) if isinstance(v, str) else 64 for v in value)
        else:
            total += 64  # JSON values: their size was bounded by the message itself
    return total


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB" if n < 10e6 else f"{n / 1e6:,.0f} MB"


@dataclass
class OutputBudget:
    """What one answer (all its attempts, or an agent run's steps) may still show."""

    per_output: int
    total: int
    used: int = 0
    closed: bool = False  # the total was reached (and said once)

    @classmethod
    def from_config(cls, config: Any) -> OutputBudget:
        per_output = max(int(float(config.max_output_mb) * 1e6), 1)
        return cls(per_output=per_output, total=per_output * ANSWER_OUTPUTS)

    def admit(self, data: dict[str, Any], size: int | None = None) -> tuple[dict, bool] | None:
        """(bundle to show, shown as sent?) for one output, or None once the total is spent.

        An output too large becomes a note in its place; the one that would pass the
        answer's total becomes the note that says the rest is not shown.
        """
        if self.closed:
            return None
        size = bundle_size(data) if size is None else size
        if size > self.per_output:
            note = (
                f"[Data Agent: an output of {_mb(size)} is not shown: one output may be at "
                f"most {_mb(self.per_output)} (DataAgent.max_output_mb).]"
            )
            self.used += len(note)
            return {"text/plain": note}, False
        if self.used + size > self.total:
            self.closed = True
            note = (
                f"[Data Agent: the rest of this answer's output is not shown: together it "
                f"passed {_mb(self.total)} ({ANSWER_OUTPUTS} x DataAgent.max_output_mb).]"
            )
            return {"text/plain": note}, False
        self.used += size
        return data, True


@dataclass
class ChartFolder:
    """The charts one session saved, kept to a total size (oldest removed first)."""

    folder: Path
    limit: int  # bytes; 0 turns saving off
    _saved: list[tuple[Path, int]] = field(default_factory=list)
    _count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def save(self, data: bytes) -> str | None:
        """Save one PNG; its path, or None when saving is off, it is too big or it failed."""
        if self.limit <= 0 or len(data) > self.limit:
            return None
        with self._lock:
            while self._saved and sum(n for _, n in self._saved) + len(data) > self.limit:
                oldest, _ = self._saved.pop(0)
                try:
                    oldest.unlink()
                except OSError:
                    pass
            self._count += 1
            path = self.folder / f"chart-{self._count:03d}.png"
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
            except OSError:
                return None  # a chart that cannot be saved is still shown
            self._saved.append((path, len(data)))
            return str(path)
