"""The engine: one question in, a stream of events out, the same for every front end.

``Session.ask`` is a generator. Slow work (the LLM stream, a run in the child kernel)
happens on a worker thread that hands events to the generator through a queue, so the
caller's thread can always react: it yields a ``Status`` heartbeat every second (the
elapsed-time line), and a Stop (``cancel``) or Ctrl-C ends the question at once.

Errors never escape ``ask``: every ``DataAgentError`` becomes a final ``Failed`` event,
so a front end renders one clear message and the kernel never hangs.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import errors, store
from ._version import __version__
from .code import CodeProblem, ExtractedCode, extract_code, review_notes
from .config import DataAgent
from .events import (
    CodeProposed,
    Delta,
    Done,
    Event,
    Failed,
    Phase,
    RunFailed,
    Status,
    Usage,
)
from .frames import FrameInfo, FrameTracker, describe_many, find_frames, frame_info, is_frame
from .llm import ChatBackend, ChatRequest, ChatResponse, OpenAIChat, endpoint_host
from .prompts import (
    PastTurn,
    build_messages,
    fix_message,
    outcome_summary,
    retry_no_code_message,
)

log = logging.getLogger("dataagent_jupyter.session")

T = TypeVar("T")
_END = object()
#: seconds between Status heartbeats while waiting, so front ends can tick elapsed time
HEARTBEAT = 1.0
#: share of max_prompt_tokens given to frame descriptions; the rest is for history
FRAMES_SHARE = 0.75


@dataclass
class _Turn:
    """What is accumulated while one question is answered."""

    question: str
    mode: str
    model: str
    started: float = field(default_factory=time.perf_counter)
    usage: Usage = field(default_factory=Usage)
    billed: Usage = field(default_factory=Usage)
    code: str = ""
    explanation: str = ""
    answer: str = ""
    attempts: int = 0
    cached: bool = False
    replayed: bool = False
    result_repr: str | None = None
    frames: dict[str, str] = field(default_factory=dict)
    prompt_tokens: int = 0
    holds_lock: bool = False
    privacy: str = "sample"

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


class Session:
    """One conversation with the data of one kernel; shared by magics, widget and panel."""

    def __init__(
        self, config: DataAgent, namespace: MutableMapping[str, Any], *, notebook: str | None = None
    ) -> None:
        self.config = config
        self.namespace = namespace
        self.notebook = notebook or _notebook_id()
        self.id = uuid.uuid4().hex[:12]
        self.tracker = FrameTracker()
        self.turns: list[PastTurn] = []
        self._transcript: list[dict[str, Any]] = []
        self._history_dir: str | None = None  # the data_dir the open history belongs to
        self._restored = False  # earlier turns of this notebook were read back
        self._sandbox: Any = None
        self._sandbox_lock = threading.Lock()
        # one question or run at a time per session, whichever front end asks
        self._busy = threading.Lock()
        self._chat: tuple[tuple[Any, ...], OpenAIChat] | None = None
        self._history: store.History | None = None
        self._conversation: str | None = None
        self._recorder: store.TranscriptRecorder | None = None
        self._replayer: store.TranscriptReplayer | None = None
        self.metrics = store.Metrics(prices=lambda: config.prices)
        store.configure_logging(config.log_level)
        config.observe(lambda change: store.configure_logging(change["new"]), "log_level")

    # --- public API ------------------------------------------------------------------
    def ask(
        self,
        question: str,
        *,
        frames: Sequence[str] | None = None,
        mode: str | None = None,
        model: str | None = None,
        privacy: str | None = None,
        use_cache: bool = True,
        check: bool = False,
        into: str | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        """Answer ``question`` about ``frames`` (all frames when None); yields events.

        ``mode`` "insert" proposes code (``check`` runs it in the child first, fixing it
        if it fails); "run" runs it in the child and shows the outputs; ``into`` binds the
        child's ``result`` in the user's namespace.
        """
        cancel = cancel or threading.Event()
        run_mode = mode or self.config.mode
        turn = _Turn(question=question.strip(), mode=run_mode, model=model or self.config.model)
        if not self._busy.acquire(blocking=False):
            yield _busy_failure()
            return
        turn.holds_lock = True
        try:
            yield from self._ask(turn, frames, run_mode, privacy, use_cache, check, into, cancel)
        except KeyboardInterrupt:
            cancel.set()
            failed = Failed(
                errors.Cancelled("the question was interrupted."),
                code=turn.code,
                elapsed=turn.elapsed,
            )
            yield self._finish(turn, failed)
        except errors.DataAgentError as exc:
            cancel.set()
            yield self._finish(turn, Failed(exc, code=turn.code, elapsed=turn.elapsed))
        except Exception as exc:  # a bug of ours must still end in one clear message
            cancel.set()
            yield self._finish(turn, Failed(_internal(exc), code=turn.code, elapsed=turn.elapsed))
        finally:
            self._release(turn)

    def run_code(
        self,
        code: str,
        *,
        frames: Sequence[str] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        """Run existing code (a "Run" button on an earlier answer) in the child kernel."""
        cancel = cancel or threading.Event()
        turn = _Turn(question="(run code)", mode="run", model=self.config.model, code=code)
        if not self._busy.acquire(blocking=False):
            yield _busy_failure()
            return
        turn.holds_lock = True
        try:
            found = find_frames(
                self.namespace, frames, limit=self.config.max_frames, order=self.tracker.order
            )
            yield from self._run_once(turn, code, found, 1, cancel, phase="running")
            self._release(turn)
            yield Done(
                mode="run",
                outcome="ran",
                code=code,
                explanation="",
                model=turn.model,
                usage=Usage(),
                elapsed=turn.elapsed,
            )
        except KeyboardInterrupt:
            cancel.set()
            self._release(turn)
            yield Failed(
                errors.Cancelled("the run was interrupted."), code=code, elapsed=turn.elapsed
            )
        except errors.DataAgentError as exc:
            cancel.set()
            self._release(turn)
            yield Failed(exc, code=code, elapsed=turn.elapsed)
        except Exception as exc:  # a bug of ours must still end in one clear message
            cancel.set()
            self._release(turn)
            yield Failed(_internal(exc), code=code, elapsed=turn.elapsed)
        finally:
            self._release(turn)

    def list_frames(self) -> list[FrameInfo]:
        """The DataFrames and Series in the namespace, most recently defined first."""
        self.tracker.update(self.namespace)
        order = self.tracker.order
        names = [n for n in order if n in self.namespace and is_frame(self.namespace[n])]
        return [frame_info(n, self.namespace[n]) for n in names]

    def status_info(self) -> dict[str, Any]:
        """What a status line shows: never the key itself."""
        sandbox = None
        if self._sandbox is not None:
            st = self._sandbox.status()
            sandbox = {"state": st.state, "protections": list(st.protections)}
        return {
            "version": __version__,
            "model": self.config.model,
            "endpoint": endpoint_host(self.config.base_url),
            "key_set": bool(self.config.resolved_api_key()) or bool(self.config.replay),
            "privacy": self.config.privacy,
            "mode": self.config.mode,
            "replay": self.config.replay,
            "record": self.config.record,
            "sandbox": sandbox,
        }

    def transcript(self) -> list[dict[str, Any]]:
        """Earlier turns of this conversation, for a front end that (re)opens."""
        self._restore()
        return list(self._transcript)

    def reset(self) -> None:
        """Start a new conversation: follow-ups no longer see earlier turns (kept on record)."""
        self.turns.clear()
        self._transcript.clear()
        history = self.history
        if history is not None:
            self._conversation = history.new_conversation(self.notebook)

    @property
    def history(self) -> store.History | None:
        """The SQLite history under ``DataAgent.data_dir`` (None if it cannot be opened)."""
        path = self.config.data_dir
        if self._history is not None and self._history_dir == path:
            return self._history
        if self._history is not None:
            self._history.close()
        try:
            self._history = store.History.open(path)
        except errors.DataAgentError as exc:
            if self._history_dir != path:  # say it once per folder
                log.warning("history unavailable: %s", exc.message)
            self._history = None
        self._history_dir = path
        self._conversation = None
        self._restored = False
        return self._history

    @property
    def conversation(self) -> str | None:
        """This notebook's current conversation id (continues across kernel restarts)."""
        history = self.history
        if history is not None and self._conversation is None:
            self._conversation = history.current_conversation(self.notebook)
        return self._conversation

    def _restore(self) -> None:
        """After a kernel restart, bring back the follow-up context of this notebook."""
        if self._restored or self.turns:
            return
        self._restored = True
        history, conversation = self.history, self.conversation
        if history is None or conversation is None:
            return
        for t in history.conversation(conversation):
            outcome = outcome_summary(
                t.result or None, error=t.error, inserted=t.outcome in ("inserted", "proposed")
            )
            self._remember(t.question, t.answer, t.code, outcome)

    @property
    def sandbox(self) -> Any:
        """The child-kernel sandbox, created on first use."""
        with self._sandbox_lock:
            if self._sandbox is None:
                from .sandbox import Sandbox

                self._sandbox = Sandbox(self.config, session_id=self.id)
            return self._sandbox

    def sandbox_if_started(self) -> Any:
        return self._sandbox

    def close(self) -> None:
        """Shut the child kernel down and close the history (extension unload)."""
        if self._sandbox is not None:
            self._sandbox.shutdown()
            self._sandbox = None
        if self._history is not None:
            self._history.close()
            self._history = None

    # --- the pipeline ----------------------------------------------------------------
    def _ask(
        self,
        turn: _Turn,
        frames: Sequence[str] | None,
        mode: str,
        privacy: str | None,
        use_cache: bool,
        check: bool,
        into: str | None,
        cancel: threading.Event,
    ) -> Iterator[Event]:
        if not turn.question:
            raise errors.UsageError(
                "the question is empty.",
                hint="Write it in the cell body under %%ask, e.g.\n%%ask sales\n"
                "which region grew fastest last quarter?",
            )
        if into is not None and not into.isidentifier():
            raise errors.UsageError(f"--into needs a valid variable name, not {into!r}.")
        if mode not in ("insert", "run"):
            raise errors.UsageError(f"mode must be 'insert' or 'run', not {mode!r}.")
        if into is not None and mode != "run":
            raise errors.UsageError(
                "--into brings back the result of a run; add --run.",
                hint="In insert mode the proposed cell leaves `result` in your namespace when "
                "you run it.",
            )
        self.tracker.update(self.namespace)
        found = find_frames(
            self.namespace, frames, limit=self.config.max_frames, order=self.tracker.order
        )
        yield Status("describing", f"{len(found)} frame(s)")
        self._restore()
        turn.privacy = privacy or self.config.privacy
        budget = self.config.max_prompt_tokens
        descriptions = describe_many(
            found,
            privacy=turn.privacy,  # type: ignore[arg-type]
            sample_rows=self.config.sample_rows,
            stats_sample=self.config.stats_sample,
            budget_tokens=int(budget * FRAMES_SHARE),
        )
        turn.frames = {d.name: d.fingerprint for d in descriptions}
        used = sum(d.tokens for d in descriptions)
        history = (
            self.turns
            if turn.privacy != "schema"
            else [PastTurn(t.question, t.code, schema_outcome(t.outcome)) for t in self.turns]
        )
        messages = build_messages(
            turn.question,
            descriptions,
            history,
            mode=mode,  # type: ignore[arg-type]
            max_history_turns=self.config.max_history_turns,
            history_budget_tokens=max(budget - used, 200),
        )
        backend = self._backend(use_cache=use_cache)
        extracted, response = yield from self._answer(backend, messages, turn, 1, cancel)
        turn.code, turn.explanation = extracted.code, extracted.explanation
        yield CodeProposed(
            extracted.code,
            extracted.explanation,
            attempt=1,
            warnings=review_notes(extracted.code, found),
        )
        if mode == "insert" and not check:
            yield self._finish(turn, self._done(turn, "insert", "inserted"))
            return
        # run mode, or insert --check: run in the child, fixing failures
        messages = [*messages, {"role": "assistant", "content": response.text}]
        max_fix = self.config.max_fix_attempts
        phase: Phase = "running" if mode == "run" else "checking"
        for attempt in range(1, max_fix + 2):
            try:
                yield from self._run_once(turn, turn.code, found, attempt, cancel, phase=phase)
                break
            except errors.ExecutionFailed as exc:
                will_retry = attempt <= max_fix
                yield RunFailed(attempt, exc.ename, exc.evalue, exc.traceback, will_retry)
                if not will_retry:
                    tried = f" after {attempt} attempts" if attempt > 1 else ""
                    raise errors.ExecutionFailed(
                        f"the code still fails{tried}: {exc.ename}: {exc.evalue}"
                        if attempt > 1
                        else f"the code failed: {exc.ename}: {exc.evalue}",
                        traceback=exc.traceback,
                        ename=exc.ename,
                        evalue=exc.evalue,
                        hint="The last version is offered as a new cell for you to review and fix."
                        if attempt > 1 or max_fix == 0
                        else None,
                    ) from None
                self.metrics.record_fix_attempt()
                fix = fix_message(self._traceback_for_model(turn, exc))
                messages = [*messages, {"role": "user", "content": fix}]
                extracted, response = yield from self._answer(
                    backend, messages, turn, attempt + 1, cancel
                )
                messages = [*messages, {"role": "assistant", "content": response.text}]
                turn.code, turn.explanation = extracted.code, extracted.explanation
                yield CodeProposed(
                    extracted.code,
                    extracted.explanation,
                    attempt=attempt + 1,
                    warnings=review_notes(extracted.code, found),
                )
        if into:
            yield Status("running", f"copying result into {into}", turn.attempts)
            value = yield from self._pump(
                lambda emit: self.sandbox.fetch("result", cancel=cancel),
                cancel,
                "running",
                f"copying result into {into}",
                turn.attempts,
            )
            self.namespace[into] = value
            self.tracker.update(self.namespace)
        done = self._done(
            turn,
            "run" if mode == "run" else "insert",
            "ran" if mode == "run" else "inserted",
            into=into,
        )
        yield self._finish(turn, done)

    def _answer(
        self,
        backend: ChatBackend,
        messages: list[dict[str, str]],
        turn: _Turn,
        attempt: int,
        cancel: threading.Event,
    ) -> Generator[Event, None, tuple[ExtractedCode, ChatResponse]]:
        """Ask the model; if the answer has no usable code, ask once more with the reason."""
        phase: Phase = "asking" if attempt == 1 else "fixing"
        for retry in (False, True):
            request = ChatRequest(
                model=turn.model, messages=tuple(messages), temperature=self.config.temperature
            )
            turn.prompt_tokens = max(
                turn.prompt_tokens, sum(len(m["content"]) for m in messages) // 4
            )
            detail = (
                f"{turn.model} (replaying {os.path.basename(self.config.replay)})"
                if self.config.replay
                else f"{turn.model} at {endpoint_host(self.config.base_url)}"
            )
            yield Status(phase, detail, attempt)

            def call(emit: Callable[[Event], None], request: ChatRequest = request) -> ChatResponse:
                return backend.complete(
                    request, on_delta=lambda t: emit(Delta(t, attempt)), cancel=cancel
                )

            response = yield from self._pump(call, cancel, phase, detail, attempt)
            turn.usage = turn.usage + response.usage
            if response.source == "endpoint":
                turn.billed = turn.billed + response.usage
            turn.cached = turn.cached or response.source == "cache"
            turn.replayed = turn.replayed or response.source == "replay"
            turn.answer = response.text
            try:
                return extract_code(response.text), response
            except CodeProblem as problem:
                if retry:
                    said = response.text.strip() or "(an empty answer)"
                    raise errors.NoCodeInAnswer(
                        f"the model's answer has no usable Python code ({problem}), even after "
                        "asking again.",
                        hint="The model said: " + (said[:600] + " …" if len(said) > 600 else said),
                    ) from None
                messages = [
                    *messages,
                    {"role": "assistant", "content": response.text},
                    {"role": "user", "content": retry_no_code_message(str(problem))},
                ]
        raise AssertionError("unreachable")  # pragma: no cover

    def _run_once(
        self,
        turn: _Turn,
        code: str,
        found: dict[str, Any],
        attempt: int,
        cancel: threading.Event,
        *,
        phase: Phase,
    ) -> Iterator[Event]:
        turn.attempts = attempt
        yield Status(phase, "in the sandbox kernel", attempt)
        sandbox = self.sandbox

        def run(emit: Callable[[Event], None]) -> None:
            shown: set[str] = set()
            for output in sandbox.run(code, found, attempt=attempt, cancel=cancel):
                text = str(output.data.get("text/plain", ""))
                if output.kind == "display":
                    shown.add(text)
                if output.kind == "result":
                    turn.result_repr = text[:300]
                    if text in shown:  # the code ended with `result`: already on screen
                        continue
                emit(output)

        try:
            yield from self._pump(run, cancel, phase, "in the sandbox kernel", attempt)
        except errors.DataAgentError:
            self.metrics.record_run(False)
            raise
        self.metrics.record_run(True)

    def _pump(
        self,
        work: Callable[[Callable[[Event], None]], T],
        cancel: threading.Event,
        phase: Phase,
        detail: str,
        attempt: int,
    ) -> Generator[Event, None, T]:
        """Run ``work`` on a thread, yielding the events it emits plus heartbeats."""
        events: queue.Queue[Any] = queue.Queue()
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = work(events.put)
            except BaseException as exc:  # re-raised on the caller's thread below
                box["error"] = exc
            finally:
                events.put(_END)

        worker = threading.Thread(target=target, daemon=True, name="dataagent-work")
        worker.start()
        beat = time.monotonic()
        try:
            while True:
                try:
                    item = events.get(timeout=0.1)
                except queue.Empty:
                    if time.monotonic() - beat >= HEARTBEAT:
                        beat = time.monotonic()
                        yield Status(phase, detail, attempt)
                    continue
                if item is _END:
                    break
                yield item
        except BaseException:
            cancel.set()  # Ctrl-C or a closed generator: stop the worker too
            raise
        if "error" in box:
            raise box["error"]
        return box["value"]

    # --- helpers ---------------------------------------------------------------------
    def _backend(self, *, use_cache: bool) -> ChatBackend:
        """The chat backend for the current config.

        Replay answers from a transcript (no endpoint, no key). Otherwise the endpoint,
        behind the response cache, with the recorder outermost so cached answers are
        recorded too (a transcript must hold every exchange the notebook saw).
        """
        cfg = self.config
        if cfg.replay:
            if self._replayer is None or str(self._replayer.path) != _abs(cfg.replay):
                self._replayer = store.TranscriptReplayer(cfg.replay)
            return store.ReplayBackend(self._replayer)
        settings = (cfg.resolved_api_key(), cfg.base_url, cfg.timeout, cfg.max_retries)
        if self._chat is None or self._chat[0] != settings:
            chat = OpenAIChat(
                api_key=settings[0],
                base_url=cfg.base_url,
                timeout=cfg.timeout,
                max_retries=cfg.max_retries,
            )
            self._chat = (settings, chat)
        backend: ChatBackend = self._chat[1]
        history = self.history
        if history is not None:
            cache = store.ResponseCache(history.database, cfg.cache_max_entries)
            backend = store.CachingBackend(
                backend, cache, enabled=cfg.cache, refresh=not use_cache, metrics=self.metrics
            )
        if cfg.record:
            if self._recorder is None or str(self._recorder.path) != _abs(cfg.record):
                self._recorder = store.TranscriptRecorder(
                    cfg.record, redact=lambda: [k] if (k := cfg.resolved_api_key()) else []
                )
            backend = store.RecordingBackend(backend, self._recorder)
        return backend

    def _done(self, turn: _Turn, mode: str, outcome: str, into: str | None = None) -> Done:
        return Done(
            mode=mode,
            outcome=outcome,
            code=turn.code,  # type: ignore[arg-type]
            explanation=turn.explanation,
            model=turn.model,
            usage=turn.usage,
            elapsed=turn.elapsed,
            attempts=max(turn.attempts, 1),
            cached=turn.cached,
            into=into,
            replayed=turn.replayed,
        )

    def _finish(self, turn: _Turn, event: Done | Failed) -> Done | Failed:
        """Record the finished question (memory, history, metrics); returns ``event``.

        Called before the final event is yielded: a front end may stop iterating there.
        """
        self._release(turn)
        if not turn.question:
            return event
        error = event.error.message if isinstance(event, Failed) else None
        inserted = isinstance(event, Done) and event.mode == "insert"
        outcome = outcome_summary(turn.result_repr, error=error, inserted=inserted)
        if turn.privacy == "schema":
            outcome = schema_outcome(outcome)
        self._remember(turn.question, turn.explanation, turn.code, outcome)
        history = self.history
        record = store.Turn.from_event(
            event,
            notebook=self.notebook,
            conversation=self.conversation or "",
            question=turn.question,
            model=turn.model,
            frames=turn.frames,
            prompt_tokens=turn.prompt_tokens,
            billed=turn.billed,
            result=turn.result_repr or "",
        )
        if history is not None:
            try:
                history.add(record)
            except errors.StoreError as exc:
                log.warning("history not written: %s", exc.message)
        self.metrics.record_question(record)
        log.info(
            "turn: mode=%s attempts=%d tokens_in=%d tokens_out=%d seconds=%.2f cached=%s",
            turn.mode,
            turn.attempts,
            turn.billed.prompt_tokens,
            turn.billed.completion_tokens,
            turn.elapsed,
            turn.cached,
        )
        return event

    def _traceback_for_model(self, turn: _Turn, exc: errors.ExecutionFailed) -> str:
        """The traceback sent back for a fix. Under privacy='schema' the error message is
        withheld (it may quote a cell value, "could not convert 'Alice'"); the exception
        type and the failing lines of the model's own code are enough to fix most code."""
        if turn.privacy != "schema":
            return exc.traceback
        marker = f"{exc.ename}:" if exc.ename else None
        return "\n".join(
            f"{exc.ename}: (message withheld: privacy='schema')"
            if marker and ln.lstrip().startswith(marker)
            else ln
            for ln in exc.traceback.splitlines()
        )

    def _remember(self, question: str, explanation: str, code: str, outcome: str) -> None:
        """Keep a turn for follow-ups (those with code) and for front ends that (re)open."""
        if code:
            self.turns.append(PastTurn(question, code, outcome))
        self._transcript.append(
            {"question": question, "explanation": explanation, "code": code, "outcome": outcome}
        )

    def _release(self, turn: _Turn) -> None:
        if turn.holds_lock:
            turn.holds_lock = False
            self._busy.release()


def _internal(exc: Exception) -> errors.DataAgentError:
    """One clear message for an unexpected exception (a bug); details go to the log."""
    log.debug("unexpected error in the Data Agent", exc_info=exc)
    return errors.DataAgentError(
        f"something went wrong inside the Data Agent: {type(exc).__name__}: {exc}",
        hint="Your data is unchanged. Please report this; set "
        "%config DataAgent.log_level = 'DEBUG' to see the details.",
    )


def schema_outcome(outcome: str) -> str:
    """An outcome line without values, for privacy='schema' (no cell value leaves)."""
    if outcome.startswith("ran ok"):
        return "ran ok"
    if outcome.startswith("failed"):
        return "failed"
    return outcome


def _busy_failure() -> Failed:
    return Failed(
        errors.UsageError(
            "another question is still being answered in this notebook.",
            hint="Wait for it to finish, or press Stop (or interrupt the kernel).",
        )
    )


def _abs(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _notebook_id() -> str:
    """The notebook's path when JupyterLab/Notebook tell the kernel, else the folder."""
    return os.environ.get("JPY_SESSION_NAME") or f"ipython:{os.getcwd()}"
