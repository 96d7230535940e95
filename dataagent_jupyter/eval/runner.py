"""Answering questions the way ``%%ask --run`` does, one sandbox per worker.

Each worker owns a :class:`~dataagent_jupyter.session.Session` with its own namespace,
history folder and sandbox, so ``--jobs N`` asks N questions at once without them seeing
each other. A question's table is read with the package's loader and bound as ``df``; the
session describes it, asks the model, runs the code in a sandbox child and fixes it when
it raises: the same pipeline, events and limits as in a notebook. The sandbox gives every
question a fresh child (started ahead) and the conversation is reset between questions,
so no question sees what an earlier one left behind.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from .. import errors
from ..config import DataAgent
from ..events import Done, Failed, Output, RunFailed
from ..loaders import read_frame
from ..options import AskOptions, as_mode
from ..session import Session
from .dabench import Question, score

Reason = Literal["wrong value", "missing answer", "code error", "timeout", "load error", "error"]

#: errors that will fail every question the same way: the run stops and says so
FATAL = (errors.MissingAPIKey, errors.AuthenticationFailed, errors.ModelNotFound)
#: characters of the run's printed output kept in the report per question
OUTPUT_KEPT = 2000


@dataclass(frozen=True)
class Settings:
    """How the questions are asked; written into the report and checked on ``--resume``."""

    model: str
    mode: str = "run"
    privacy: str = "sample"

    def as_dict(self) -> dict[str, str]:
        return {"model": self.model, "mode": self.mode, "privacy": self.privacy}


@dataclass(frozen=True)
class Result:
    """What happened to one question: right or not, why, and what it cost."""

    id: str
    level: str
    concepts: tuple[str, ...]
    expected: dict[str, str]
    sub_total: int
    right: bool = False
    reason: Reason | None = None  # None when right
    detail: str = ""
    got: dict[str, str] = field(default_factory=dict)
    sub_right: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    fix_attempts: int = 0
    code: str = ""
    output: str = ""

    @classmethod
    def of(cls, question: Question, **measures: Any) -> Result:
        """A not-yet-right result for ``question`` with its measures (tokens, seconds…)."""
        return cls(
            id=question.id,
            level=question.level,
            concepts=question.concepts,
            expected=dict(question.expected),
            sub_total=len(question.expected),
            **measures,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "level": self.level,
            "concepts": list(self.concepts),
            "right": self.right,
            "reason": self.reason,
            "detail": self.detail,
            "expected": self.expected,
            "got": self.got,
            "sub_right": self.sub_right,
            "sub_total": self.sub_total,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "seconds": round(self.seconds, 3),
            "fix_attempts": self.fix_attempts,
            "code": self.code,
            "output": self.output,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        return cls(
            id=str(data["id"]),
            level=str(data.get("level", "")),
            concepts=tuple(data.get("concepts", ())),
            right=bool(data["right"]),
            reason=data.get("reason"),
            detail=str(data.get("detail", "")),
            expected=dict(data.get("expected", {})),
            got=dict(data.get("got", {})),
            sub_right=int(data.get("sub_right", 0)),
            sub_total=int(data.get("sub_total", 0)),
            tokens_in=int(data.get("tokens_in", 0)),
            tokens_out=int(data.get("tokens_out", 0)),
            seconds=float(data.get("seconds", 0.0)),
            fix_attempts=int(data.get("fix_attempts", 0)),
            code=str(data.get("code", "")),
            output=str(data.get("output", "")),
        )


class Stopped(Exception):
    """The run cannot go on (a fatal endpoint error); carries the error to show."""

    def __init__(self, error: errors.DataAgentError) -> None:
        super().__init__(error.message)
        self.error = error


class StopSignal:
    """Stops every question in flight at once (Ctrl-C, a fatal error).

    Each question gets its own cancel event, because the session also sets the event it
    was given when a question fails, and one failure must not stop the others.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: set[threading.Event] = set()
        self._requested = False

    @property
    def requested(self) -> bool:
        return self._requested

    def request(self) -> None:
        with self._lock:
            self._requested = True
            for event in self._events:
                event.set()

    def event(self) -> threading.Event:
        """A cancel event for one question; already set when a stop was requested."""
        event = threading.Event()
        with self._lock:
            self._events.add(event)
            if self._requested:
                event.set()
        return event

    def forget(self, event: threading.Event) -> None:
        with self._lock:
            self._events.discard(event)


class Tables:
    """Tables read once per file and shared read-only (frames travel to children by copy)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._frames: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, file_name: str) -> Any:
        """The frame of ``file_name`` (relative to the tables folder); raises LoadError."""
        with self._lock:
            if file_name in self._frames:
                return self._frames[file_name]
        path = self.folder / file_name
        if not path.is_file():
            raise errors.LoadError(f"'{file_name}' is not in the tables folder {self.folder}.")
        frame, _info = read_frame(path)
        with self._lock:
            self._frames.setdefault(file_name, frame)
            return self._frames[file_name]


class Worker:
    """One session, one sandbox child, one private history folder: asks one question at a time."""

    def __init__(self, settings: Settings, charts: Path) -> None:
        self.settings = settings
        self._data_dir = tempfile.mkdtemp(prefix="dataagent-eval-")
        config = DataAgent()
        config.model = settings.model
        config.privacy = settings.privacy
        config.data_dir = self._data_dir
        config.cache = False  # every question is measured against the endpoint
        config.warm_child = True
        config.output_dir = str(charts)  # charts the runs draw land beside the report
        self.namespace: dict[str, Any] = {}
        self.session = Session(config, self.namespace, notebook="dataagent-eval")
        self.session.sandbox.start_warm()  # the child starts while the first table loads

    def ask(self, question: Question, tables: Tables, stop: StopSignal) -> Result | None:
        """Ask ``question`` through the session and score what the run printed.

        None when the run was cancelled before the question finished (it is not a miss:
        ``--resume`` asks it again). Raises :class:`Stopped` on an error that would fail
        every question alike (no key, key refused, unknown model).
        """
        started = time.perf_counter()
        before = self.session.metrics.snapshot()
        self.session.reset()
        self.namespace.clear()
        try:
            self.namespace["df"] = tables.get(question.file_name)
        except errors.LoadError as exc:
            seconds = time.perf_counter() - started
            return replace(
                Result.of(question, seconds=seconds), reason="load error", detail=exc.message
            )
        outputs: list[Output] = []
        final: Done | Failed | None = None
        fixes = 0
        cancel = stop.event()
        try:
            options = AskOptions(frames=("df",), mode=as_mode(self.settings.mode))
            for event in self.session.ask(question.prompt(), options, cancel=cancel):
                if isinstance(event, Output):
                    outputs.append(event)
                elif isinstance(event, RunFailed) and event.will_retry:
                    fixes += 1
                elif isinstance(event, Done | Failed):
                    final = event
        finally:
            stop.forget(cancel)
        seconds = time.perf_counter() - started
        after = self.session.metrics.snapshot()
        spent = (after.tokens_in - before.tokens_in, after.tokens_out - before.tokens_out)
        if isinstance(final, Failed) and isinstance(final.error, FATAL):
            raise Stopped(final.error)
        if stop.requested:
            return None
        if self.settings.mode == "agent":
            # An agent works in steps and sums up in words: every step's output counts,
            # the summary last (a name answered twice keeps its last value).
            summary = final.explanation if isinstance(final, Done) else ""
            text = f"{visible_text(outputs)}\n{summary}"
        else:  # run mode: what the version that finally ran printed, not failed attempts
            last = max((o.attempt for o in outputs), default=1)
            text = visible_text(o for o in outputs if o.attempt == last)
        base = Result.of(
            question,
            tokens_in=spent[0],
            tokens_out=spent[1],
            seconds=seconds,
            fix_attempts=fixes,
            code=final.code if final is not None else "",
            output=text[:OUTPUT_KEPT],
        )
        if not isinstance(final, Done):
            error = final.error if final is not None else errors.DataAgentError("no answer")
            return replace(base, reason=_reason(error), detail=f"{error.title}: {error.message}")
        marks = score(text, question.expected)
        reason: Reason | None = None
        details = []
        if marks.wrong:
            reason = "wrong value"
            details += [
                f"{n}: got {marks.got[n]!r}, expected {base.expected[n]!r}" for n in marks.wrong
            ]
        if marks.missing:
            reason = reason or "missing answer"
            details.append(f"no {', '.join(f'@{n}[...]' for n in marks.missing)} in the output")
        return replace(
            base,
            right=marks.all_right,
            reason=reason,
            detail="; ".join(details),
            got=marks.got,
            sub_right=len(marks.right),
        )

    def close(self) -> None:
        """Stop the child kernel and delete the private history folder."""
        self.session.close()
        shutil.rmtree(self._data_dir, ignore_errors=True)


@dataclass
class Pool:
    """``jobs`` workers, created as threads need them and closed together."""

    settings: Settings
    charts: Path
    _local: threading.local = field(default_factory=threading.local)
    _workers: list[Worker] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def worker(self) -> Worker:
        """The calling thread's worker (each thread gets its own session and child)."""
        worker = getattr(self._local, "worker", None)
        if worker is None:
            worker = Worker(self.settings, self.charts)
            self._local.worker = worker
            with self._lock:
                self._workers.append(worker)
        return worker

    def close(self) -> None:
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.close()


def visible_text(outputs: Iterable[Output]) -> str:
    """What a user reads in the cell: printed text and the plain-text form of results.

    Stream chunks are joined as they came (a kernel may split one print anywhere, even
    inside ``@name[value]``); displays and results stand on lines of their own.
    """
    parts: list[str] = []
    for output in outputs:
        text = output.data.get("text/plain")
        if isinstance(text, list):
            text = "".join(text)
        if not isinstance(text, str) or not text:
            continue
        parts.append(text if output.kind == "stream" else f"\n{text}\n")
    return "".join(parts)


def _reason(error: errors.DataAgentError) -> Reason:
    if isinstance(error, errors.ExecutionTimeout | errors.LLMTimeout):
        return "timeout"
    if isinstance(error, errors.ExecutionFailed | errors.ChildDied):
        return "code error"
    if isinstance(error, errors.LoadError):
        return "load error"
    return "error"


def results_in_order(results: Iterable[Result], order: list[str]) -> list[Result]:
    """``results`` sorted as the questions file lists them."""
    rank = {qid: i for i, qid in enumerate(order)}
    return sorted(results, key=lambda r: rank.get(r.id, len(rank)))
