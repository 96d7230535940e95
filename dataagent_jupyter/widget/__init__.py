"""The chat widget, a small package: the chat itself, one answer's view, an insert request.

``chat.py`` holds :class:`ChatWidget` (layout, callbacks, uploads, the background run),
``answer.py`` the view of one answer, ``insert.py`` one "Insert cell" request with its
fallback, ``parts.py`` the small building blocks they share. ``agent_cell.py`` shows an
``%%ask --agent`` run approved step by step in its own cell, with the same answer view
(the magic reaches it through the extension: front ends do not import each other).
"""

from __future__ import annotations

from .answer import REDRAW
from .chat import UPLOAD_ACCEPT, ChatWidget, close_all
from .insert import FALLBACK_INSERT, INSERT_ACK_TIMEOUT
from .parts import fenced

__all__ = [
    "FALLBACK_INSERT",
    "INSERT_ACK_TIMEOUT",
    "REDRAW",
    "UPLOAD_ACCEPT",
    "ChatWidget",
    "close_all",
    "fenced",
]
