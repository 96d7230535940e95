"""Answers to identical requests, stored so the same question is neither paid for nor waited
for twice.

The key is the endpoint (base URL) plus :meth:`ChatRequest.key`: model, every message
(frame descriptions included) and temperature. The same model name on two endpoints (a
local server and a hosted one) is two different models. A changed frame changes its
description, so the prompt and the key change and the cache misses by construction; nothing
needs invalidating. Entries live in their own table of the history database and are
evicted least-recently-used beyond ``max_entries``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable

from .. import errors
from ..llm import DEFAULT_ENDPOINT, ChatBackend, ChatRequest, ChatResponse, OnDelta, iter_text
from .db import Database
from .metrics import Metrics

log = logging.getLogger("dataagent_jupyter.store")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS responses (
        key      TEXT PRIMARY KEY,
        model    TEXT NOT NULL,
        response TEXT NOT NULL,   -- ChatResponse.to_json()
        created  REAL NOT NULL,
        used     INTEGER NOT NULL -- recency counter for LRU eviction
    )""",
    "CREATE INDEX IF NOT EXISTS responses_by_use ON responses (used)",
)

#: finish reasons of answers that did not end normally: a cut (``length``) or withheld
#: (``content_filter``) answer must not be served again as if it were complete
_INCOMPLETE = frozenset({"length", "content_filter", "error"})


class ResponseCache:
    """A bounded, least-recently-used store of chat responses keyed by request."""

    def __init__(
        self,
        db: str | os.PathLike[str] | sqlite3.Connection | Database,
        max_entries: int = 2000,
        *,
        endpoint: str | None = None,
    ) -> None:
        self.database = Database.of(db)
        self.max_entries = max_entries
        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        exists = self.database.query(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'responses'"
        )
        if not exists:
            with self.database.write("create the cache table") as conn:
                for statement in _SCHEMA:
                    conn.execute(statement)

    def key(self, request: ChatRequest) -> str:
        """The cache key of ``request`` at this cache's endpoint."""
        return hashlib.sha256(f"{self.endpoint}\n{request.key()}".encode()).hexdigest()

    def get(self, request: ChatRequest) -> ChatResponse | None:
        """The stored answer for ``request`` (``source="cache"``), or None."""
        key = self.key(request)
        with self.database.write("read the response cache") as conn:
            row = conn.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE responses SET used = "
                "(SELECT coalesce(max(used), 0) + 1 FROM responses) WHERE key = ?",
                (key,),
            )
        return ChatResponse.from_json(json.loads(row[0]), source="cache")

    def put(self, request: ChatRequest, response: ChatResponse) -> bool:
        """Store a complete answer; return False (storing nothing) for an incomplete one."""
        if (
            self.max_entries <= 0
            or not (response.text.strip() or response.tool_calls)
            or response.finish_reason in _INCOMPLETE
        ):
            return False
        body = json.dumps(response.to_json(), ensure_ascii=False)
        with self.database.write("write the response cache") as conn:
            conn.execute(
                "INSERT INTO responses (key, model, response, created, used) VALUES "
                "(?, ?, ?, ?, (SELECT coalesce(max(used), 0) + 1 FROM responses)) "
                "ON CONFLICT (key) DO UPDATE SET response = excluded.response, "
                "model = excluded.model, created = excluded.created, used = excluded.used",
                (self.key(request), request.model, body, time.time()),
            )
            # Everything older than the max_entries most recently used goes.
            conn.execute(
                "DELETE FROM responses WHERE used <= (SELECT used FROM responses "
                "ORDER BY used DESC LIMIT 1 OFFSET ?)",
                (self.max_entries,),
            )
        return True

    def discard(self, request: ChatRequest) -> None:
        """Forget the answer to ``request`` (e.g. its code failed; ask afresh next time)."""
        with self.database.write("write the response cache") as conn:
            conn.execute("DELETE FROM responses WHERE key = ?", (self.key(request),))

    def clear(self) -> None:
        """Forget every stored answer."""
        with self.database.write("clear the response cache") as conn:
            conn.execute("DELETE FROM responses")

    def __len__(self) -> int:
        return int(self.database.query("SELECT count(*) FROM responses")[0][0])

    def close(self) -> None:
        """Close the database connection if this cache opened it."""
        self.database.close()


def _flag(value: Callable[[], bool] | bool) -> Callable[[], bool]:
    return value if callable(value) else (lambda: bool(value))


class CachingBackend:
    """A :class:`ChatBackend` that answers repeated requests from a :class:`ResponseCache`.

    ``enabled`` (``DataAgent.cache``) turns the cache off entirely: no lookup, nothing
    stored. ``refresh`` (``--no-cache`` on one question) skips the lookup but stores the
    fresh answer, so the next identical question gets the new one. Both are read on every
    request, so a callable sees ``%config`` changes at once.
    """

    def __init__(
        self,
        inner: ChatBackend,
        cache: ResponseCache,
        enabled: Callable[[], bool] | bool = True,
        *,
        refresh: Callable[[], bool] | bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self.inner = inner
        self.cache = cache
        self._enabled = _flag(enabled)
        self._refresh = _flag(refresh)
        self.metrics = metrics

    def complete(
        self, request: ChatRequest, *, on_delta: OnDelta, cancel: threading.Event | None = None
    ) -> ChatResponse:
        """The cached answer, streamed to ``on_delta``; else the inner backend's, stored."""
        enabled = self._enabled()
        if enabled and not self._refresh():
            started = time.perf_counter()
            hit = self._lookup(request)
            if hit is not None:
                for piece in iter_text(hit):
                    if cancel is not None and cancel.is_set():
                        raise errors.Cancelled("stopped while showing the cached answer.")
                    on_delta(piece)
                if self.metrics is not None:
                    self.metrics.record_cache_hit()
                log.info(
                    "cache hit: model=%s chars=%d ms=%.2f",
                    hit.model or request.model,
                    len(hit.text),
                    (time.perf_counter() - started) * 1000,
                )
                return hit
        response = self.inner.complete(request, on_delta=on_delta, cancel=cancel)
        if enabled:
            try:
                self.cache.put(request, response)
            except errors.StoreError as exc:
                # The answer is good; failing to remember it must not cost the user it.
                log.warning("response cache not updated: %s", exc.message)
        return response

    def _lookup(self, request: ChatRequest) -> ChatResponse | None:
        try:
            return self.cache.get(request)
        except errors.StoreError as exc:
            log.warning("response cache unreadable, asking the endpoint: %s", exc.message)
            return None
