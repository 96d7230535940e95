"""The one SQLite file shared by the history and the response cache.

Several kernels (one per open notebook) write the same file at once, and a kernel can die
at any moment. So: WAL journal (readers never block the writer; a killed writer leaves
only an uncommitted tail that SQLite discards on the next open), a busy timeout (a second
writer waits its turn instead of failing), and every write one ``BEGIN IMMEDIATE``
transaction (it takes the write lock up front, so two writers never deadlock upgrading a
read lock). ``synchronous=NORMAL`` is the WAL setting that stays atomic and consistent
through a process crash; it gives up only the last commits on a power cut, which is the
right price for a history write under a millisecond.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StoreError

log = logging.getLogger("dataagent_jupyter.store")

#: file name of the database inside ``DataAgent.data_dir``
DB_NAME = "dataagent.sqlite3"


class Database:
    """A thread-safe SQLite connection with the settings every store table relies on.

    The kernel asks questions from a background thread (the side panel's comm) as well as
    from the main one, so the single connection is guarded by a lock and each write is one
    transaction held under it.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        self.path = Path(path).expanduser()
        self._owned = True
        self._lock = threading.RLock()
        created = not self.path.exists()
        try:
            if created:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            conn = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"cannot open the history database {self.path}: {exc}.",
                hint="Check that the folder is writable, or choose another one: "
                "%config DataAgent.data_dir = '...'",
            ) from None
        if created:
            # Questions and sampled values end up here: keep the file private.
            try:
                os.chmod(self.path, 0o600)
            except OSError:
                pass
        self._conn: sqlite3.Connection | None = conn
        try:
            with self._errors("open"):
                self._configure(busy_timeout)
        except StoreError:
            conn.close()
            raise

    @classmethod
    def wrap(cls, conn: sqlite3.Connection, *, busy_timeout: float = 5.0) -> Database:
        """Use a connection someone else opened (and will close)."""
        self = cls.__new__(cls)
        rows = conn.execute("PRAGMA database_list").fetchall()
        self.path = Path(rows[0][2]) if rows and rows[0][2] else Path(":memory:")
        self._owned = False
        self._lock = threading.RLock()
        self._conn = conn
        with self._errors("open"):
            self._configure(busy_timeout)
        return self

    @classmethod
    def of(cls, target: str | os.PathLike[str] | sqlite3.Connection | Database) -> Database:
        """A ``Database`` for a path, an open connection, or an existing ``Database``."""
        if isinstance(target, Database):
            return target
        if isinstance(target, sqlite3.Connection):
            return cls.wrap(target)
        return cls(target)

    def _configure(self, busy_timeout: float) -> None:
        conn = self._connection()
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal" and str(self.path) != ":memory:":
            # Network filesystems cannot share WAL's memory index; rollback journal still
            # keeps writes atomic, only readers wait for writers.
            log.warning("history database %s: WAL journal unavailable, using %s", self.path, mode)
        conn.execute("PRAGMA synchronous = NORMAL")

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreError(
                    f"the history database {self.path} stayed locked by another kernel "
                    f"while trying to {action}.",
                    hint="Another notebook is writing to it; try again. If it persists, "
                    "a stuck process holds it open.",
                ) from None
            raise StoreError(f"history database {self.path}: cannot {action}: {exc}.") from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"the history database {self.path} is damaged ({exc}).",
                hint="Move the file away (the history and cache start afresh), or point "
                "DataAgent.data_dir at another folder.",
            ) from None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"the history database {self.path} was closed.")
        return self._conn

    @contextmanager
    def write(self, action: str = "write") -> Iterator[sqlite3.Connection]:
        """One atomic write transaction: all of the block's statements or none."""
        with self._lock, self._errors(action):
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (disk full); a second ROLLBACK would
                # hide the real error, and a failed COMMIT must not leave it half-open.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def query(
        self, sql: str, params: Sequence[Any] = (), *, action: str = "read"
    ) -> list[tuple[Any, ...]]:
        """All rows of one read statement."""
        with self._lock, self._errors(action):
            return self._connection().execute(sql, params).fetchall()

    def close(self) -> None:
        """Close the connection if this object opened it (SQLite then checkpoints the WAL)."""
        with self._lock:
            if self._owned and self._conn is not None:
                self._conn.close()
            self._conn = None
