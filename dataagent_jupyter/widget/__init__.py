"""The chat widget, a small package: the chat itself, one answer's view, an insert request.

``chat.py`` holds :class:`ChatWidget` (layout, callbacks, uploads, the background run),
``answer.py`` the view of one answer, ``insert.py`` one "Insert cell" request with its
fallback, ``parts.py`` the small building blocks they share.
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
