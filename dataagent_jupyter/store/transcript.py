"""Record every LLM exchange of a notebook, and replay them later with no endpoint and no key.

A transcript is JSON Lines, one exchange a line::

    {"key": "...", "time": "2025-01-31T12:00:00+00:00", "request": {...}, "response": {...}}

so it diffs well, can be read and even corrected by hand, and is safe to commit: the
request holds the model, the messages and the temperature, never the API key. This is how
a notebook that uses ``%%ask`` is re-run in CI or by a colleague without a key.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import errors
from ..llm import ChatBackend, ChatRequest, ChatResponse, OnDelta, iter_text

log = logging.getLogger("dataagent_jupyter.store")

REDACTED = "[redacted]"


class TranscriptRecorder:
    """Appends exchanges to a JSON Lines file, one ``write`` per line.

    Each line goes to the OS in one append before ``append`` returns, so a kernel that
    dies afterwards loses nothing and one that dies during it leaves at most a torn last
    line, which the next recorder cuts off and the replayer ignores. ``redact`` lists
    secrets (the API key) that must never reach the file even if they turn up in a prompt.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        redact: Iterable[str] | Callable[[], Iterable[str]] = (),
    ) -> None:
        # Absolute now: a later os.chdir() in the notebook must not move the transcript.
        self.path = Path(path).expanduser().absolute()
        self._redact = redact
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._cut_torn_tail()
        except OSError as exc:
            raise errors.StoreError(
                f"cannot write the transcript {self.path}: {exc.strerror or exc}.",
                hint="Choose a writable path: %config DataAgent.record = 'transcript.jsonl'",
            ) from None

    def _cut_torn_tail(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return
            f.seek(0)
            keep = f.read().rfind(b"\n") + 1
            f.truncate(keep)
        log.warning(
            "transcript %s ended in a torn line (a crash while recording); it was cut off",
            self.path.name,
        )

    def append(self, request: ChatRequest, response: ChatResponse) -> None:
        """Write one exchange as one line."""
        record = {
            "key": request.key(),
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "request": request.to_json(),
            "response": response.to_json(),
        }
        line = json.dumps(record, ensure_ascii=False)
        secrets = self._redact() if callable(self._redact) else self._redact
        for secret in secrets:
            if secret:
                line = line.replace(secret, REDACTED)
        data = (line + "\n").encode()
        with self._lock:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                finally:
                    os.close(fd)
            except OSError as exc:
                raise errors.StoreError(
                    f"cannot append to the transcript {self.path}: {exc.strerror or exc}.",
                    hint="Check the disk and the path, or stop recording: "
                    "%config DataAgent.record = None",
                ) from None


@dataclass(frozen=True)
class Exchange:
    """One recorded request and its answer, with the line it came from."""

    line: int
    key: str
    model: str
    question: str
    response: ChatResponse


#: what precedes the question in the last user message (``prompts.question_message``)
QUESTION_MARKER = "Question: "


def question_of(messages: Iterable[dict[str, Any]]) -> str:
    """The question of a request: its last user message, without the frame descriptions.

    The engine sends the frames as they are now and then the question in one message;
    comparing only the question is what lets a re-run whose frame sample drifted replay.
    A fix-loop request's last user message (the traceback) has no marker and is compared
    whole.
    """
    text = ""
    for message in messages:
        if message.get("role") == "user":
            text = str(message.get("content", ""))
    _, marker, question = text.rpartition(QUESTION_MARKER)
    return question.strip() if marker else text.strip()


class TranscriptReplayer:
    """Answers requests from a recorded transcript, in the order they were recorded."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser().absolute()
        self.exchanges = _load(self.path)
        self._by_key: dict[str, list[int]] = {}
        for index, exchange in enumerate(self.exchanges):
            self._by_key.setdefault(exchange.key, []).append(index)
        self._used: set[int] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.exchanges)

    def lookup(self, request: ChatRequest) -> ChatResponse:
        """The recorded answer to ``request`` (``source="replay"``); ``ReplayMiss`` if none.

        An exact match comes first (the same request asked twice gets its recorded answers
        in order). Failing that, the next unused exchange with the same model and the same
        question (:func:`question_of`): a re-run notebook whose frame sample drifted a
        little still replays, with a warning.
        """
        with self._lock:
            index = self._exact(request.key())
            if index is None:
                index = self._similar(request)
                if index is not None:
                    log.warning(
                        "replay: no exact match in %s; using the exchange on line %d, which "
                        "has the same question but a different prompt (frames changed?)",
                        self.path.name,
                        self.exchanges[index].line,
                    )
            if index is None:
                raise self._miss(request)
            self._used.add(index)
        exchange = self.exchanges[index]
        log.info("replay: answered from %s line %d", self.path.name, exchange.line)
        return exchange.response

    def _exact(self, key: str) -> int | None:
        candidates = self._by_key.get(key)
        if not candidates:
            return None
        unused = [i for i in candidates if i not in self._used]
        # Asked more often than recorded: the answer is still the recorded one.
        return unused[0] if unused else candidates[-1]

    def _similar(self, request: ChatRequest) -> int | None:
        question = question_of(request.messages)
        matches = [
            index
            for index, exchange in enumerate(self.exchanges)
            if exchange.model == request.model and exchange.question == question
        ]
        unused = [i for i in matches if i not in self._used]
        # Re-running the notebook in the same kernel asks again: the last recorded answer.
        return unused[0] if unused else (matches[-1] if matches else None)

    def _miss(self, request: ChatRequest) -> errors.ReplayMiss:
        question = " ".join(question_of(request.messages).split())
        head = question if len(question) <= 80 else question[:79] + "…"
        count = len(self.exchanges)
        return errors.ReplayMiss(
            f"the transcript {self.path.name} has no answer for “{head}” "
            f"(model {request.model}); it holds {count} exchange{'s' if count != 1 else ''} "
            f"({self.path}).",
            hint="Record it against an endpoint first (%config DataAgent.record = '...'), "
            "or turn replay off: %config DataAgent.replay = None",
        )


def _load(path: Path) -> list[Exchange]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise errors.StoreError(
            f"cannot replay: the transcript {path} does not exist.",
            hint="Check the path (relative paths start in the notebook's folder), or record "
            "one first: %config DataAgent.record = 'transcript.jsonl'",
        ) from None
    except OSError as exc:
        raise errors.StoreError(
            f"cannot read the transcript {path}: {exc.strerror or exc}."
        ) from None
    lines = raw.split(b"\n")
    torn = not raw.endswith(b"\n") and bool(raw)
    exchanges = []
    for number, data in enumerate(lines, start=1):
        if not data.strip():
            continue
        try:
            exchanges.append(_parse(number, json.loads(data)))
        except (ValueError, KeyError, TypeError) as exc:
            if torn and number == len(lines):
                log.warning(
                    "transcript %s: ignoring a torn last line %d (a crash while recording)",
                    path.name,
                    number,
                )
                continue
            detail = str(exc) if isinstance(exc, ValueError) else f"missing or bad {exc}"
            raise errors.StoreError(
                f"line {number} of the transcript {path} is not a recorded exchange ({detail}).",
                hint="Fix or delete that line, or record the transcript again.",
            ) from None
    return exchanges


def _parse(number: int, data: Any) -> Exchange:
    if not isinstance(data, dict):
        raise TypeError("line is not a JSON object")
    request = data["request"]
    messages = request["messages"]
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise TypeError("'messages'")
    response = data["response"]
    if not isinstance(response, dict) or not isinstance(response["text"], str):
        raise TypeError("'response'")
    key = (
        data.get("key")
        or ChatRequest(
            model=request["model"], messages=tuple(messages), temperature=request.get("temperature")
        ).key()
    )
    return Exchange(
        line=number,
        key=str(key),
        model=str(request["model"]),
        question=question_of(messages),
        response=ChatResponse.from_json(response, source="replay"),
    )


class RecordingBackend:
    """A :class:`ChatBackend` that writes every exchange of ``inner`` to a transcript.

    Put it outermost (around the cache) so that answers served from the cache are
    recorded too: the transcript must hold every exchange a re-run will ask for.
    """

    def __init__(self, inner: ChatBackend, recorder: TranscriptRecorder) -> None:
        self.inner = inner
        self.recorder = recorder

    def complete(
        self, request: ChatRequest, *, on_delta: OnDelta, cancel: threading.Event | None = None
    ) -> ChatResponse:
        """The inner backend's answer, recorded once it is complete."""
        response = self.inner.complete(request, on_delta=on_delta, cancel=cancel)
        self.recorder.append(request, response)
        return response


class ReplayBackend:
    """A :class:`ChatBackend` answering from a transcript: no endpoint, no key."""

    def __init__(self, replayer: TranscriptReplayer) -> None:
        self.replayer = replayer

    def complete(
        self, request: ChatRequest, *, on_delta: OnDelta, cancel: threading.Event | None = None
    ) -> ChatResponse:
        """The recorded answer, streamed to ``on_delta`` like a live one."""
        started = time.perf_counter()
        response = self.replayer.lookup(request)
        for piece in iter_text(response):
            if cancel is not None and cancel.is_set():
                raise errors.Cancelled("stopped while showing the recorded answer.")
            on_delta(piece)
        log.debug(
            "replay: %d chars in %.2f ms",
            len(response.text),
            (time.perf_counter() - started) * 1000,
        )
        return response
