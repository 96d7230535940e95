"""Every question asked, kept in SQLite so a notebook's conversation outlives its kernel.

A turn is written once, when the question ends (answered, run, or failed), in one
transaction. Conversations are grouped per notebook: after a kernel restart
``current_conversation(notebook)`` hands back the same id, so the follow-up context comes
back; ``%dataagent reset`` calls ``new_conversation`` and the old turns stay on record.

In a notebook the conversation is the notebook itself: a turn asked from a cell carries
that cell's id, and running the cell again adds a newer version of the same turn.
:func:`current_versions` gives the conversation as it stands (each cell's latest turn,
at the place of its first), which is what follow-ups and exports read; every version
stays on record for ``%dataagent history`` and the statistics.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from ..errors import StoreError
from ..events import Done, Failed, Outcome, Usage
from .db import DB_NAME, Database

log = logging.getLogger("dataagent_jupyter.store")

OUTCOMES: tuple[str, ...] = get_args(Outcome)

SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,  -- creation order, immune to clock changes
    id       TEXT NOT NULL UNIQUE,
    notebook TEXT NOT NULL,
    created  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_by_notebook ON conversations (notebook, seq);
CREATE TABLE IF NOT EXISTS turns (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    time          REAL NOT NULL,
    notebook      TEXT NOT NULL,
    conversation  TEXT NOT NULL,
    frames        TEXT NOT NULL,      -- JSON {name: fingerprint}
    question      TEXT NOT NULL,
    model         TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,   -- estimated size of the prompt sent
    answer        TEXT NOT NULL,
    code          TEXT NOT NULL,
    result        TEXT NOT NULL,      -- short text of the result, as follow-ups quote it
    outcome       TEXT NOT NULL CHECK (outcome IN ('inserted', 'ran', 'failed', 'proposed')),
    error         TEXT,
    tokens_in     INTEGER NOT NULL,
    tokens_out    INTEGER NOT NULL,
    latency       REAL NOT NULL,
    cached        INTEGER NOT NULL,
    attempts      INTEGER NOT NULL,
    cell          TEXT,               -- notebook cell id the turn was asked from, or NULL
    turn_id       TEXT                -- as in Done.turn_id and inserted cells' metadata
);
CREATE INDEX IF NOT EXISTS turns_by_conversation ON turns (conversation, id);
CREATE INDEX IF NOT EXISTS turns_by_notebook ON turns (notebook, id);
"""
# Version 3: agent mode keeps each step of a run (the turn holds the summary and cells).
_STEPS_SCHEMA = """
CREATE TABLE IF NOT EXISTS steps (
    turn     INTEGER NOT NULL REFERENCES turns (id),
    step     INTEGER NOT NULL,
    code     TEXT NOT NULL,
    outcome  TEXT NOT NULL CHECK (outcome IN ('ok', 'failed', 'skipped')),
    message  TEXT NOT NULL,   -- what the model was told about the step
    error    TEXT NOT NULL,
    notes    TEXT NOT NULL,   -- JSON list of silent failures named
    elapsed  REAL NOT NULL,
    PRIMARY KEY (turn, step)
)
"""
#: schema changes from one version to the next, applied in order on open
_MIGRATIONS = {
    2: ("ALTER TABLE turns ADD COLUMN cell TEXT", "ALTER TABLE turns ADD COLUMN turn_id TEXT"),
    3: (_STEPS_SCHEMA,),
}

_COLUMNS = (
    "time",
    "notebook",
    "conversation",
    "frames",
    "question",
    "model",
    "prompt_tokens",
    "answer",
    "code",
    "result",
    "outcome",
    "error",
    "tokens_in",
    "tokens_out",
    "latency",
    "cached",
    "attempts",
    "cell",
    "turn_id",
)
_INSERT = f"INSERT INTO turns ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
_SELECT = f"SELECT id, {', '.join(_COLUMNS)} FROM turns"


@dataclass(frozen=True)
class Turn:
    """One question and what became of it.

    ``answer`` is the model's explanation (the prose around the code); ``code`` the code
    that was inserted or run; ``result`` a short text of what it computed, so that the
    follow-up context can be rebuilt after a kernel restart. ``tokens_in``/``tokens_out``
    are the tokens the endpoint billed for this turn, so a turn answered from the cache or
    a transcript counts zero.
    ``prompt_tokens`` is the estimated size of the prompt, whatever answered it.
    ``cell`` is the id of the notebook cell the question was asked from: a later turn
    with the same cell is a newer version of this one.
    """

    notebook: str
    conversation: str
    question: str
    model: str = ""
    frames: Mapping[str, str] = field(default_factory=dict)
    prompt_tokens: int = 0
    answer: str = ""
    code: str = ""
    result: str = ""
    outcome: Outcome = "proposed"
    error: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    latency: float = 0.0
    cached: bool = False
    attempts: int = 1
    cell: str | None = None  # the notebook cell asked from; None for widget/panel turns
    turn_id: str = ""  # Done.turn_id: how inserted cells' provenance names this turn
    time: float = field(default_factory=time.time)
    id: int | None = None  # set once stored

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {self.outcome!r}")

    @classmethod
    def from_event(
        cls,
        event: Done | Failed,
        *,
        notebook: str,
        conversation: str,
        question: str,
        model: str,
        frames: Mapping[str, str] | None = None,
        prompt_tokens: int = 0,
        billed: Usage | None = None,
        result: str = "",
        error: str | None = None,
        cell: str | None = None,
        turn_id: str = "",
    ) -> Turn:
        """The turn for a question that ended in ``event``.

        ``billed`` is the usage the endpoint reported for the question's calls (responses
        with ``source == "endpoint"``); ``Done.usage`` is used when it is not given.
        """
        if isinstance(event, Failed):
            usage = billed or Usage()
            return cls(
                notebook=notebook,
                conversation=conversation,
                question=question,
                model=model,
                frames=dict(frames or {}),
                prompt_tokens=prompt_tokens,
                code=event.code,
                outcome="failed",
                error=error or event.error.message,
                tokens_in=usage.prompt_tokens,
                tokens_out=usage.completion_tokens,
                latency=event.elapsed,
                cell=cell,
                turn_id=turn_id,
            )
        usage = billed if billed is not None else event.usage
        return cls(
            notebook=notebook,
            conversation=conversation,
            question=question,
            model=event.model or model,
            frames=dict(frames or {}),
            prompt_tokens=prompt_tokens,
            answer=event.explanation,
            code=event.code,
            result=result,
            outcome=event.outcome,
            error=error,
            tokens_in=usage.prompt_tokens,
            tokens_out=usage.completion_tokens,
            latency=event.elapsed,
            cached=event.cached,
            attempts=event.attempts,
            cell=cell,
            turn_id=turn_id or event.turn_id,
        )

    def _row(self) -> tuple[Any, ...]:
        return (
            self.time,
            self.notebook,
            self.conversation,
            json.dumps(dict(self.frames), sort_keys=True),
            self.question,
            self.model,
            int(self.prompt_tokens),
            self.answer,
            self.code,
            self.result,
            self.outcome,
            self.error,
            int(self.tokens_in),
            int(self.tokens_out),
            float(self.latency),
            int(bool(self.cached)),
            int(self.attempts),
            self.cell,
            self.turn_id,
        )

    @classmethod
    def _from_row(cls, row: tuple[Any, ...]) -> Turn:
        (
            id_,
            time_,
            notebook,
            conversation,
            frames,
            question,
            model,
            prompt_tokens,
            answer,
            code,
            result,
            outcome,
            error,
            tokens_in,
            tokens_out,
            latency,
            cached,
            attempts,
            cell,
            turn_id,
        ) = row
        return cls(
            id=id_,
            time=time_,
            notebook=notebook,
            conversation=conversation,
            frames=json.loads(frames),
            question=question,
            model=model,
            prompt_tokens=prompt_tokens,
            answer=answer,
            code=code,
            result=result,
            outcome=outcome,
            error=error,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            latency=latency,
            cached=bool(cached),
            attempts=attempts,
            cell=cell,
            turn_id=turn_id or "",
        )


@dataclass(frozen=True)
class StepRow:
    """One step of an agent run as stored: its code, how it ended, what the model heard."""

    step: int
    code: str
    outcome: str  # ok | failed | skipped
    message: str
    error: str = ""
    notes: tuple[str, ...] = ()
    elapsed: float = 0.0

    def _row(self) -> tuple[Any, ...]:
        return (
            int(self.step),
            self.code,
            self.outcome,
            self.message,
            self.error,
            json.dumps(list(self.notes)),
            float(self.elapsed),
        )

    @classmethod
    def _from_row(cls, row: tuple[Any, ...]) -> StepRow:
        step, code, outcome, message, error, notes, elapsed = row
        return cls(step, code, outcome, message, error, tuple(json.loads(notes)), elapsed)


class History:
    """The turns of every notebook, in ``dataagent.sqlite3``; safe for several kernels."""

    def __init__(
        self, path: str | os.PathLike[str] | Database, *, busy_timeout: float = 5.0
    ) -> None:
        self.database = (
            path if isinstance(path, Database) else Database(path, busy_timeout=busy_timeout)
        )
        self.path = self.database.path
        # Opening must not wait for another kernel's write: only a new (or older) file
        # takes the write lock, to create the tables.
        if self._version(self.database.query("PRAGMA user_version")) == SCHEMA_VERSION:
            return
        with self.database.write("create the history tables") as conn:
            version = self._version(conn.execute("PRAGMA user_version").fetchall())
            if version == 0:
                # statement by statement: executescript() would commit the transaction
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(_STEPS_SCHEMA)
            else:  # an older file: bring it up to date, keeping every turn
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[step]:
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _version(self, rows: list[Any]) -> int:
        version = int(rows[0][0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the history database {self.path} was written by a newer version of "
                "dataagent-jupyter.",
                hint="Upgrade dataagent-jupyter, or point DataAgent.data_dir elsewhere.",
            )
        return version

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str]) -> History:
        """The history in ``data_dir`` (``DataAgent.data_dir``), created on first use."""
        return cls(Path(data_dir).expanduser() / DB_NAME)

    def add(self, turn: Turn, steps: Iterable[StepRow] = ()) -> int:
        """Store one turn (and an agent run's steps) in one transaction; return its id."""
        started = time.perf_counter()
        with self.database.write("save the turn") as conn:
            # A conversation id the caller made up itself is adopted, so that
            # current_conversation() can find it after a restart.
            conn.execute(
                "INSERT OR IGNORE INTO conversations (id, notebook, created) VALUES (?, ?, ?)",
                (turn.conversation, turn.notebook, turn.time),
            )
            turn_id = int(conn.execute(_INSERT, turn._row()).lastrowid or 0)
            conn.executemany(
                "INSERT INTO steps (turn, step, code, outcome, message, error, notes, elapsed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(turn_id, *step._row()) for step in steps],
            )
        log.debug(
            "history: turn %d saved in %.2f ms", turn_id, (time.perf_counter() - started) * 1000
        )
        return turn_id

    def recent(self, *, notebook: str | None = None, limit: int = 20) -> list[Turn]:
        """The last ``limit`` turns (of one notebook, or of all), oldest first."""
        if limit <= 0:
            return []
        if notebook is None:
            rows = self.database.query(f"{_SELECT} ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self.database.query(
                f"{_SELECT} WHERE notebook = ? ORDER BY id DESC LIMIT ?", (notebook, limit)
            )
        return [Turn._from_row(r) for r in reversed(rows)]

    def conversation(self, conversation_id: str) -> list[Turn]:
        """Every turn of one conversation, oldest first."""
        rows = self.database.query(
            f"{_SELECT} WHERE conversation = ? ORDER BY id", (conversation_id,)
        )
        return [Turn._from_row(r) for r in rows]

    def current_turns(self, conversation_id: str) -> list[Turn]:
        """The conversation as it stands: each cell's latest turn (see current_versions)."""
        return current_versions(self.conversation(conversation_id))

    def steps(self, turn_id: int) -> list[StepRow]:
        """The steps of an agent run, in order (none for other turns)."""
        rows = self.database.query(
            "SELECT step, code, outcome, message, error, notes, elapsed FROM steps "
            "WHERE turn = ? ORDER BY step",
            (turn_id,),
        )
        return [StepRow._from_row(r) for r in rows]

    def current_conversation(self, notebook: str) -> str:
        """The notebook's latest conversation id, creating one if it has none.

        This is how a conversation continues after a kernel restart: the new kernel asks
        for the same notebook and gets the same id back.
        """
        with self.database.write("find the conversation") as conn:
            row = conn.execute(
                "SELECT id FROM conversations WHERE notebook = ? ORDER BY seq DESC LIMIT 1",
                (notebook,),
            ).fetchone()
            if row is not None:
                return str(row[0])
            return self._insert_conversation(conn, notebook)

    def new_conversation(self, notebook: str) -> str:
        """Start a fresh conversation for the notebook (``%dataagent reset``); keep the old."""
        with self.database.write("start a conversation") as conn:
            return self._insert_conversation(conn, notebook)

    @staticmethod
    def _insert_conversation(conn: Any, notebook: str) -> str:
        conversation_id = uuid.uuid4().hex
        conn.execute(
            "INSERT INTO conversations (id, notebook, created) VALUES (?, ?, ?)",
            (conversation_id, notebook, time.time()),
        )
        return conversation_id

    def close(self) -> None:
        """Close the database connection."""
        self.database.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def current_versions(turns: Iterable[Turn]) -> list[Turn]:
    """Each cell's latest turn at the place of its first; turns without a cell in order.

    Re-running a cell replaces its turn where it stood, so the turns before it (its
    follow-up context) stay the same and a re-run sends the same request again.
    """
    current: list[Turn] = []
    place: dict[str, int] = {}
    for turn in turns:
        if turn.cell is None:
            current.append(turn)
        elif turn.cell in place:
            current[place[turn.cell]] = turn
        else:
            place[turn.cell] = len(current)
            current.append(turn)
    return current


# --- display -----------------------------------------------------------------------------


class HistoryTable:
    """Recent turns as a table, for ``%dataagent history [N]``."""

    HEADERS = (
        "#",
        "cell",
        "when",
        "question",
        "frames",
        "model",
        "outcome",
        "tokens in/out",
        "seconds",
        "cached",
    )

    def __init__(self, turns: Iterable[Turn]) -> None:
        self.turns = list(turns)

    def __len__(self) -> int:
        return len(self.turns)

    def __iter__(self) -> Iterator[Turn]:
        return iter(self.turns)

    def _cells(self, turn: Turn) -> tuple[str, ...]:
        when = _dt.datetime.fromtimestamp(turn.time).strftime("%Y-%m-%d %H:%M")
        outcome: str = turn.outcome
        if turn.error:
            outcome += f": {_short(turn.error, 60)}"
        return (
            str(turn.id if turn.id is not None else ""),
            turn.cell[:8] if turn.cell else "chat",
            when,
            _short(turn.question, 80),
            ", ".join(turn.frames) or "—",
            turn.model or "—",
            outcome,
            f"{turn.tokens_in}/{turn.tokens_out}",
            f"{turn.latency:.1f}",
            "yes" if turn.cached else "",
        )

    def _repr_html_(self) -> str:
        if not self.turns:
            return "<p><i>No questions asked yet.</i></p>"
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.HEADERS)
        rows = []
        for turn in self.turns:
            cells = self._cells(turn)
            tds = "".join(
                f'<td style="text-align:left" title="{html.escape(turn.question)}">'
                f"{html.escape(c)}</td>"
                if i == 3
                else f'<td style="text-align:left">{html.escape(c)}</td>'
                for i, c in enumerate(cells)
            )
            rows.append(f"<tr>{tds}</tr>")
        return (
            f'<table class="dataagent-history"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>"
        )

    def _repr_markdown_(self) -> str:
        if not self.turns:
            return "*No questions asked yet.*"
        lines = [
            "| " + " | ".join(self.HEADERS) + " |",
            "|" + "|".join("---" for _ in self.HEADERS) + "|",
        ]
        lines += ["| " + " | ".join(_md_cell(c) for c in self._cells(t)) + " |" for t in self.turns]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<HistoryTable: {len(self.turns)} turns>"


def _short(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _md_cell(text: str) -> str:
    # questions and outcomes quote data and model text: no markup, no broken table
    return "".join("\\" + ch if ch in "\\`*_[]<>|" else ch for ch in text)
