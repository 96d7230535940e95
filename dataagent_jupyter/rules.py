"""House rules: the user's standing instructions, added to every system prompt.

A team's data has conventions that no frame description shows ("the fiscal year starts
in April", "amounts are in EUR thousands", "never drop rows silently"). They come from
two places, both the user's own: ``DataAgent.instructions`` (text) and a ``DATAAGENT.md``
file in the kernel's working folder or the nearest parent folder up to the home folder,
the way ``.editorconfig`` or ``pyproject.toml`` are found.

They are part of the prompt, so they count against ``max_prompt_tokens``: at most
``RULES_SHARE`` of it. Rules larger than that are cut and the prompt says so, rather than
silently squeezing out the frame descriptions the answer depends on. The file is read
with a bounded read, so a huge file costs no more than a small one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .tokens import estimate_tokens

#: the file looked for in the working folder and its parents
RULES_FILE = "DATAAGENT.md"
#: share of max_prompt_tokens the house rules may take
RULES_SHARE = 0.25
#: what the model reads after rules that were cut
CUT_NOTE = "[… the rest of the house rules was cut to fit the prompt budget]"


@dataclass(frozen=True)
class HouseRules:
    """The standing instructions for one question, and where they came from."""

    text: str = ""  # as sent to the model (possibly cut), "" when there are none
    file: Path | None = None  # the DATAAGENT.md that was read
    file_bytes: int = 0  # its size on disk
    cut: bool = False  # the rules did not fit and were cut

    @property
    def tokens(self) -> int:
        return estimate_tokens(self.text) if self.text else 0

    def describe(self) -> str:
        """One line for ``%dataagent status``."""
        if self.file is None and not self.text:
            return f"none (set DataAgent.instructions or add a {RULES_FILE})"
        parts = []
        if self.file is not None:
            parts.append(f"{self.file} ({self.file_bytes} bytes)")
        else:
            parts.append(f"no {RULES_FILE} found")
        parts.append(f"~{self.tokens} tokens in the prompt")
        if self.cut:
            parts.append("cut to fit the prompt budget")
        return "; ".join(parts)


def find_rules_file(start: Path, home: Path) -> Path | None:
    """``DATAAGENT.md`` in ``start`` or the nearest parent up to ``home``.

    The walk stops at the home folder so a file in ``/`` or another user's folder is
    never picked up; a working folder outside home is searched alone.
    """
    start, home = start.resolve(), home.resolve()
    folders = [start]
    if start.is_relative_to(home):
        folders += [p for p in start.parents if p.is_relative_to(home)]
    for folder in folders:
        candidate = folder / RULES_FILE
        if candidate.is_file():
            return candidate
    return None


def load_rules(
    instructions: str,
    *,
    budget_tokens: int,
    start: Path | None = None,
    home: Path | None = None,
) -> HouseRules:
    """The house rules for a prompt with ``budget_tokens`` to spend on them.

    ``instructions`` (``DataAgent.instructions``) come first, then the file. An unreadable
    file is skipped (it is the user's, a question must not fail on it).
    """
    path = find_rules_file(start or Path(os.getcwd()), home or Path.home())
    limit = max(budget_tokens, 0) * 4  # characters, at the estimate's 4 per token
    file_text, size = "", 0
    if path is not None:
        try:
            size = path.stat().st_size
            with path.open("r", encoding="utf-8", errors="replace") as fh:
                file_text = fh.read(limit + 1)  # one more than fits tells us it was cut
        except OSError:
            path, size = None, 0
    pieces = [p.strip() for p in (instructions, file_text) if p and p.strip()]
    text = "\n\n".join(pieces)
    cut = len(text) > limit
    if cut:
        keep = max(limit - len(CUT_NOTE) - 1, 0)
        text = (text[:keep].rstrip() + "\n" + CUT_NOTE) if keep else ""
    return HouseRules(text=text, file=path, file_bytes=size, cut=cut)
