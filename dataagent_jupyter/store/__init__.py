"""Persistence and accounting: history, response cache, record/replay, metrics, export, logs.

Everything here outlives a question: the history and cache in one SQLite file under
``DataAgent.data_dir`` (shared safely by every kernel), transcripts as JSON Lines beside
the notebook, and the per-session figures behind ``%dataagent stats``.
"""

from .cache import CachingBackend, ResponseCache
from .db import DB_NAME, Database
from .export import export_conversation, in_notebook_order, notebook_cell_ids
from .history import History, HistoryTable, StepRow, Turn
from .logs import configure_logging
from .metrics import DEFAULT_PRICES, Metrics, ModelUsage, Stats, price_table
from .transcript import (
    RecordingBackend,
    ReplayBackend,
    TranscriptRecorder,
    TranscriptReplayer,
)

__all__ = [
    "DB_NAME",
    "DEFAULT_PRICES",
    "CachingBackend",
    "Database",
    "History",
    "HistoryTable",
    "Metrics",
    "ModelUsage",
    "RecordingBackend",
    "ReplayBackend",
    "ResponseCache",
    "Stats",
    "StepRow",
    "TranscriptRecorder",
    "TranscriptReplayer",
    "Turn",
    "configure_logging",
    "export_conversation",
    "in_notebook_order",
    "notebook_cell_ids",
    "price_table",
]
