"""The engine: one question in, a stream of events out, the same for every front end.

``Session.ask`` returns a stream of events. Slow work (the LLM stream, a run in the child
kernel) happens on a worker thread that hands events to the stream through a queue, so
the caller's thread can always react: it yields a ``Status`` heartbeat every second (the
elapsed-time line), and a Stop (``cancel``) or Ctrl-C ends the question at once.

Every kind of turn (a question, a run of existing code; later a fix, an agent's steps)
goes through one lifecycle, :meth:`Session.run_turn`: it takes the session's busy lock
(the one "one question at a time" rule), runs the turn's *body*, turns any exception
into one final ``Failed`` event, remembers the turn and releases the lock exactly once.
Errors never escape: a front end renders one clear message and the kernel never hangs.
A new kind of turn is a new body, a generator ``body(turn, cancel)`` that yields events
and returns the final ``Done``; the lifecycle does the rest.

A question's body reads as its steps: prepare (check, fill in the options' defaults, find
the frames) → prompt (describe the frames, fit the history) → answer (ask the model, ask
again if it gave no code) → run with fixes → bring back (``--into``).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from . import errors, store
from ._version import __version__
from .agent.loop import LAST_RESULT, AgentLoop, AgentResult, StepGate, ToolSupport
from .code import CodeProblem, ExtractedCode, extract_code, review_notes
from .config import DataAgent
from .engines.run import SampledFrame, child_frames, for_run
from .events import (
    CodeProposed,
    Delta,
    Done,
    Event,
    Failed,
    Mode,
    Output,
    Phase,
    RunFailed,
    Status,
    Usage,
)
from .fixes import FailureWatcher, FixQuestion
from .frames import (
    FrameInfo,
    FrameTracker,
    Privacy,
    describe_many,
    find_frames,
    frame_info,
    is_frame,
)
from .llm import ChatBackend, ChatRequest, ChatResponse, OpenAIChat, endpoint_host
from .options import AskOptions, configured_mode
from .prompts import (
    PastTurn,
    build_messages,
    engine_rules,
    fix_message,
    outcome_summary,
    retry_no_code_message,
    schema_traceback,
)
from .rules import RULES_SHARE, HouseRules, load_rules
from .tokens import estimate_message_tokens

if TYPE_CHECKING:
    from .sandbox import Lease, Sandbox

log = logging.getLogger("dataagent_jupyter.session")

T = TypeVar("T")
_END = object()
#: seconds between Status heartbeats while waiting, so front ends can tick elapsed time
HEARTBEAT = 1.0
#: share of max_prompt_tokens given to frame descriptions; the rest is for history
FRAMES_SHARE = 0.75


#: what kind of turn is being answered (an agent run is a question whose mode is "agent")
TurnKind = Literal["ask", "run", "fix"]
#: what the user calls each kind of turn in messages ("the question was interrupted")
_NOUN: dict[str, str] = {"ask": "question", "run": "run", "fix": "fix"}


@dataclass
class TurnState:
    """What is accumulated while one turn (a question, a run) is answered.

    A turn with a ``question`` is remembered when it ends (follow-ups, history, metrics);
    a run of existing code has none and leaves no record, as before it had a lifecycle.
    """

    kind: TurnKind
    question: str
    mode: Mode
    model: str
    privacy: Privacy = "sample"
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
    #: the fresh sandbox child of this turn (all its attempts, or an agent run's steps);
    #: discarded when it ends
    lease: Lease | None = None
    #: the notebook cell asking: a re-run replaces this cell's turn (None: appended)
    cell: str | None = None
    #: what the model is asked when it is not the question itself (a fix: the cell)
    task: str | None = None
    #: names the turn in the history and in the provenance of the cells it proposes
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    asked_at: float = field(default_factory=time.time)
    #: agent mode: each step, as the history stores it
    steps: list[store.StepRow] = field(default_factory=list)
    #: Dask/Spark frames replaced by an engine-side sample for this run (--sample)
    sampled: tuple[SampledFrame, ...] = ()
    #: what the child gets, made once a turn (polars/DuckDB frames as Arrow tables)
    child_frames: dict[str, Any] | None = None
    #: prompt sentences for this question's frames: their engines' API, a stand-in sample
    #: (agent mode writes its own system message and adds these to it)
    notes: tuple[str, ...] = ()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


@dataclass
class _Remembered:
    """One turn of the conversation as follow-ups and reopening front ends see it."""

    cell: str | None
    past: PastTurn | None  # None when the turn left no code to follow up on
    shown: dict[str, Any]


#: the work of one turn: yields its events and returns the final ``Done``; raising any
#: exception ends the turn in one ``Failed`` (see :meth:`Session.run_turn`)
TurnBody = Callable[[TurnState, threading.Event], Generator[Event, None, Done]]
#: builds the chat backend for one question (replay, cache, recorder or a test's own)
BackendFactory = Callable[[AskOptions], ChatBackend]
#: builds the child-kernel sandbox of a session, from the config and the session id
SandboxFactory = Callable[[DataAgent, str], "Sandbox"]


class Session:
    """One conversation with the data of one kernel; shared by magics, widget and panel.

    ``backend_factory`` and ``sandbox_factory`` replace how the chat backend and the
    sandbox are built (tests drive the engine through them); by default the backend is
    the configured endpoint behind the cache, the recorder or the replayer, and the
    sandbox a child kernel under ``DataAgent``'s limits.
    """

    def __init__(
        self,
        config: DataAgent,
        namespace: MutableMapping[str, Any],
        *,
        notebook: str | None = None,
        backend_factory: BackendFactory | None = None,
        sandbox_factory: SandboxFactory | None = None,
    ) -> None:
        self.config = config
        self.namespace = namespace
        self.notebook = notebook or _notebook_id()
        self.id = uuid.uuid4().hex[:12]
        self.tracker = FrameTracker()
        #: the last proposed cell (question comment and code), for ``%dataagent insert``
        self.pending_cell: str | None = None
        #: the user's last failing cell, for a fix (a post_run_cell hook keeps it)
        self.failures = FailureWatcher()
        # the conversation as it stands: a cell's turn is replaced where it stood on re-run
        self._memory: list[_Remembered] = []
        self._history_dir: str | None = None  # the data_dir the open history belongs to
        self._restored = False  # earlier turns of this notebook were read back
        self._backend_factory: BackendFactory = backend_factory or self._configured_backend
        self._sandbox_factory: SandboxFactory = sandbox_factory or _child_sandbox
        self._sandbox: Sandbox | None = None
        self._sandbox_lock = threading.Lock()
        # one turn at a time per session, whichever front end asks: the only such rule
        self._busy = threading.Lock()
        self._chat: tuple[tuple[Any, ...], OpenAIChat] | None = None
        self._history: store.History | None = None
        self._conversation: str | None = None
        self._recorder: store.TranscriptRecorder | None = None
        self._replayer: store.TranscriptReplayer | None = None
        self.metrics = store.Metrics(prices=lambda: config.prices)
        #: agent mode: where a step waits for Run / Skip / Stop (agent_approval="each-step")
        self.step_gate = StepGate()
        self._tool_support = ToolSupport()
        store.configure_logging(config.log_level)
        config.observe(lambda change: store.configure_logging(change["new"]), "log_level")

    # --- public API ------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """Whether a turn is being answered now (front ends show it; a second is refused)."""
        return self._busy.locked()

    def ask(
        self,
        question: str,
        options: AskOptions | None = None,
        *,
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        """Answer ``question`` as ``options`` say (default: the config's); yields events.

        Insert mode proposes code (``check`` runs it in the child first, fixing it if it
        fails); run mode runs it in the child and shows the outputs; ``into`` binds the
        child's ``result`` in the user's namespace. Setting ``cancel`` stops the question.
        """
        options = options or AskOptions()
        turn = TurnState(
            kind="ask",
            question=question.strip(),
            mode=options.mode or configured_mode(self.config),
            model=options.model or self.config.model,
            cell=options.cell_id,
        )
        return self.run_turn(turn, lambda t, stop: self._ask(t, options, stop), cancel=cancel)

    def fix(
        self,
        fix: FixQuestion,
        options: AskOptions | None = None,
        *,
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        """Propose a corrected version of the user's failing cell (``%dataagent fix``).

        A question like any other (same body, cache, history), whose prompt is the cell
        and its error (``fix.task``) and whose frames are the ones the cell names.
        """
        options = replace(options or AskOptions(), frames=tuple(fix.frames) or None)
        turn = TurnState(
            kind="fix",
            question=fix.question,
            mode=options.mode or configured_mode(self.config),
            model=options.model or self.config.model,
            cell=options.cell_id,
            task=fix.task,
        )
        return self.run_turn(turn, lambda t, stop: self._ask(t, options, stop), cancel=cancel)

    def run_code(
        self,
        code: str,
        *,
        frames: Sequence[str] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        """Run existing code (a "Run" button on an earlier answer) in the child kernel."""
        turn = TurnState(kind="run", question="", mode="run", model=self.config.model, code=code)
        return self.run_turn(turn, lambda t, stop: self._run(t, frames, stop), cancel=cancel)

    def run_turn(
        self, turn: TurnState, body: TurnBody, *, cancel: threading.Event | None = None
    ) -> Iterator[Event]:
        """The one lifecycle of every turn; ``body`` is the turn's own work.

        1. Take the session's busy lock, or yield one refusal and stop.
        2. Run ``body(turn, cancel)``, passing its events on; it returns the final ``Done``.
        3. Any exception ends the turn in one ``Failed``: Ctrl-C as ``Cancelled``, a
           ``DataAgentError`` as itself, anything else (a bug) as one clear message.
        4. Finish: remember the turn (follow-ups, history, metrics), release the lock,
           then yield the final event, so a front end that stops there loses nothing.
        5. The lock is released exactly once, however the stream ends (closed early too).

        Nothing is started until the first event is asked for; a front end that takes
        the first one on its own thread knows at once whether the turn was refused.
        """
        stop = cancel or threading.Event()
        if not self._busy.acquire(blocking=False):
            yield _busy_failure()
            return
        held = True
        try:
            final: Done | Failed
            try:
                final = yield from body(turn, stop)
            except KeyboardInterrupt:
                stop.set()
                noun = _NOUN.get(turn.kind, "turn")
                final = self._failed(turn, errors.Cancelled(f"the {noun} was interrupted."))
            except errors.DataAgentError as exc:
                stop.set()
                final = self._failed(turn, exc)
            except Exception as exc:  # a bug of ours must still end in one clear message
                stop.set()
                final = self._failed(turn, _internal(exc))
            _end_lease(turn)  # the turn's child goes with its work before the answer shows
            self._finish(turn, final)
            held = False
            self._busy.release()
            yield final
        finally:
            _end_lease(turn)
            if held:
                self._busy.release()

    def list_frames(self) -> list[FrameInfo]:
        """The DataFrames and Series in the namespace, most recently defined first."""
        self.tracker.update(self.namespace)
        order = self.tracker.order
        names = [n for n in order if n in self.namespace and is_frame(self.namespace[n])]
        return [frame_info(n, self.namespace[n]) for n in names]

    def house_rules(self) -> HouseRules:
        """The house rules a question asked now would send (read afresh: the file may change)."""
        return load_rules(
            self.config.instructions,
            budget_tokens=int(self.config.max_prompt_tokens * RULES_SHARE),
        )

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
            "house_rules": self.house_rules().describe(),
        }

    @property
    def turns(self) -> list[PastTurn]:
        """The turns a follow-up from a new question sees, oldest first."""
        return [m.past for m in self._memory if m.past is not None]

    def transcript(self) -> list[dict[str, Any]]:
        """Earlier turns of this conversation, for a front end that (re)opens."""
        self._restore()
        return [dict(m.shown) for m in self._memory]

    def reset(self) -> None:
        """Start a new conversation: follow-ups no longer see earlier turns (kept on record)."""
        self._memory.clear()
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
        if self._restored or self._memory:
            return
        self._restored = True
        history, conversation = self.history, self.conversation
        if history is None or conversation is None:
            return
        for t in history.current_turns(conversation):
            outcome = outcome_summary(
                t.result or None, error=t.error, inserted=t.outcome in ("inserted", "proposed")
            )
            self._remember(t.cell, t.question, t.answer, t.code, outcome)

    @property
    def sandbox(self) -> Sandbox:
        """The child-kernel sandbox, created on first use."""
        with self._sandbox_lock:
            if self._sandbox is None:
                self._sandbox = self._sandbox_factory(self.config, self.id)
            return self._sandbox

    def sandbox_if_started(self) -> Sandbox | None:
        """The sandbox if a run has started it (a status line must not start one)."""
        return self._sandbox

    def close(self) -> None:
        """Shut the child kernel down and close the history (extension unload)."""
        if self._sandbox is not None:
            self._sandbox.shutdown()
            self._sandbox = None
        if self._history is not None:
            self._history.close()
            self._history = None

    # --- the turns' bodies ----------------------------------------------------------
    def _ask(
        self, turn: TurnState, options: AskOptions, cancel: threading.Event
    ) -> Generator[Event, None, Done]:
        """A question: prepare → prompt → answer → run with fixes → bring back."""
        options, found = yield from self._prepare(turn, options)
        if turn.mode == "agent":
            return (yield from self._agent(turn, options, found, cancel))
        messages = self._prompt(turn, found)
        backend = self._backend_factory(options)
        response = yield from self._propose(backend, messages, turn, found, 1, cancel)
        if turn.mode == "insert" and not options.check:
            return self._done(turn)
        # run mode, or insert --check: run in the child, fixing failures
        messages = [*messages, {"role": "assistant", "content": response.text}]
        yield from self._run_with_fixes(backend, messages, turn, found, cancel)
        if options.into:
            yield from self._bring_back(turn, options.into, cancel)
        return self._done(turn, into=options.into)

    def _run(
        self, turn: TurnState, frames: Sequence[str] | None, cancel: threading.Event
    ) -> Generator[Event, None, Done]:
        """Existing code run as it is: no model, no fixes, no record."""
        found = find_frames(
            self.namespace, frames, limit=self.config.max_frames, order=self.tracker.order
        )
        # a cluster-backed frame cannot be run on
        found, _ = for_run(found, None, named=frames is not None)
        yield from self._run_once(turn, turn.code, found, 1, cancel, phase="running")
        return self._done(turn)

    def _agent(
        self,
        turn: TurnState,
        options: AskOptions,
        found: dict[str, Any],
        cancel: threading.Event,
    ) -> Generator[Event, None, Done]:
        """An agent run: steps in one child kernel, then a summary and the cells proposed."""
        cfg = self.config
        messages = self._prompt(turn, found)
        loop = AgentLoop(
            backend=self._backend_factory(options),
            sandbox=lambda: self._lease(turn),
            pump=self._pump,
            model=turn.model,
            endpoint=endpoint_host(cfg.base_url),
            temperature=cfg.temperature,
            privacy=turn.privacy,
            max_steps=cfg.agent_max_steps,
            max_tokens=cfg.agent_max_tokens,
            timeout=cfg.agent_timeout,
            result_chars=cfg.agent_result_chars,
            tool_support=self._tool_support,
            describe_frame=lambda name: self._describe_for_agent(name, found, turn.privacy),
            list_frames=lambda: _frame_list(found),
            gate=self.step_gate if cfg.agent_approval == "each-step" else None,
            notes=turn.notes,
        )
        # the child gets polars/DuckDB frames as Arrow, made once for all the steps
        turn.child_frames = child_frames(found)
        # the loop writes its own system message; the rest is the usual prompt
        result = yield from loop.run(messages[1:], list(found), turn.child_frames, cancel)
        self._take_agent_result(turn, result)
        if options.into and result.good_steps and result.ended_by != "stopped by the user":
            yield from self._bring_back(turn, options.into, cancel, name=LAST_RESULT)
        return replace(
            self._done(turn, into=options.into if result.good_steps else None),
            outcome="proposed",
            cells=result.cells(turn.question),
            steps=len(result.steps),
            ended_by=result.ended_by,
        )

    def _take_agent_result(self, turn: TurnState, result: AgentResult) -> None:
        turn.usage, turn.billed = result.usage, result.billed
        turn.cached, turn.replayed = result.cached, result.replayed
        turn.explanation = turn.answer = result.summary
        turn.code = "\n\n".join(s.code.rstrip() for s in result.good_steps)
        turn.steps = [
            store.StepRow(s.step, s.code, s.outcome, s.message, s.error, s.notes, s.elapsed)
            for s in result.steps
        ]
        self.metrics.record_runs(
            ok=sum(s.outcome == "ok" for s in result.steps),
            failed=sum(s.outcome == "failed" for s in result.steps),
        )

    def _describe_for_agent(self, name: str, found: dict[str, Any], privacy: Privacy) -> str:
        """The ``describe_frame`` tool: one frame of the question, at the turn's privacy."""
        if name not in found:
            return f"There is no frame {name[:80]!r}; the frames are: {', '.join(found)}."
        (description,) = describe_many(
            {name: found[name]},
            privacy=privacy,
            sample_rows=self.config.sample_rows,
            stats_sample=self.config.stats_sample,
            budget_tokens=self.config.max_prompt_tokens,
        )
        return description.text

    # --- the steps of a question -----------------------------------------------------
    def _prepare(
        self, turn: TurnState, options: AskOptions
    ) -> Generator[Event, None, tuple[AskOptions, dict[str, Any]]]:
        """Check the question, fill in the options' defaults, find the frames."""
        if not turn.question:
            raise errors.UsageError(
                "the question is empty.",
                hint="Write it in the cell body under %%ask, e.g.\n%%ask sales\n"
                "which region grew fastest last quarter?",
            )
        options = options.resolve(self.config)
        turn.mode = options.mode or turn.mode
        turn.model = options.model or turn.model
        turn.privacy = options.privacy or turn.privacy
        self.tracker.update(self.namespace)
        found = find_frames(
            self.namespace, options.frames, limit=self.config.max_frames, order=self.tracker.order
        )
        if turn.mode in ("run", "agent") or options.check:
            # Dask/Spark frames cannot reach the sandbox: refused, or sampled by the engine
            found, turn.sampled = for_run(
                found,
                options.sample,
                named=options.frames is not None,
                flag="--check" if options.check else f"--{turn.mode}",
            )
            for sampled in turn.sampled:
                yield Output("stream", {"text/plain": sampled.notice()}, name="stdout")
        yield Status("describing", f"{len(found)} frame(s)")
        self._restore()
        return options, found

    def _prompt(self, turn: TurnState, found: dict[str, Any]) -> list[dict[str, str]]:
        """The messages: house rules, frame descriptions within the budget, then what
        history fits: the turns before this cell's own (all turns for a new one)."""
        rules = self.house_rules()
        budget = max(self.config.max_prompt_tokens - rules.tokens, 0)
        descriptions = describe_many(
            found,
            privacy=turn.privacy,
            sample_rows=self.config.sample_rows,
            stats_sample=self.config.stats_sample,
            budget_tokens=int(budget * FRAMES_SHARE),
        )
        turn.frames = {d.name: d.fingerprint for d in descriptions}
        turn.notes = (*engine_rules(descriptions), *(s.rule() for s in turn.sampled))
        used = sum(d.tokens for d in descriptions)
        context = self._context(turn.cell)
        history = (
            context
            if turn.privacy != "schema"
            else [PastTurn(t.question, t.code, schema_outcome(t.outcome)) for t in context]
        )
        return build_messages(
            turn.task or turn.question,
            descriptions,
            history,
            mode=turn.mode,
            max_history_turns=self.config.max_history_turns,
            history_budget_tokens=max(budget - used, 200),
            rules=rules.text,
            notes=[s.rule() for s in turn.sampled],
        )

    def _propose(
        self,
        backend: ChatBackend,
        messages: list[dict[str, str]],
        turn: TurnState,
        found: dict[str, Any],
        attempt: int,
        cancel: threading.Event,
    ) -> Generator[Event, None, ChatResponse]:
        """Ask the model for code and propose it (``CodeProposed``); returns the answer."""
        extracted, response = yield from self._answer(backend, messages, turn, attempt, cancel)
        turn.code, turn.explanation = extracted.code, extracted.explanation
        yield CodeProposed(
            extracted.code,
            extracted.explanation,
            attempt=attempt,
            warnings=review_notes(extracted.code, found),
        )
        return response

    def _run_with_fixes(
        self,
        backend: ChatBackend,
        messages: list[dict[str, str]],
        turn: TurnState,
        found: dict[str, Any],
        cancel: threading.Event,
    ) -> Iterator[Event]:
        """Run the proposed code; while it raises and attempts remain, ask for a fix."""
        max_fix = self.config.max_fix_attempts
        phase: Phase = "running" if turn.mode == "run" else "checking"
        for attempt in range(1, max_fix + 2):
            try:
                yield from self._run_once(turn, turn.code, found, attempt, cancel, phase=phase)
                return
            except errors.ExecutionFailed as exc:
                will_retry = attempt <= max_fix
                yield RunFailed(attempt, exc.ename, exc.evalue, exc.traceback, will_retry)
                if not will_retry:
                    raise _still_failing(exc, attempt, max_fix) from None
                self.metrics.record_fix_attempt()
                fix = fix_message(self._traceback_for_model(turn, exc))
                messages = [*messages, {"role": "user", "content": fix}]
                response = yield from self._propose(
                    backend, messages, turn, found, attempt + 1, cancel
                )
                messages = [*messages, {"role": "assistant", "content": response.text}]

    def _bring_back(
        self, turn: TurnState, into: str, cancel: threading.Event, *, name: str = "result"
    ) -> Iterator[Event]:
        """Copy the child's ``result`` (or ``name``) into the user's namespace as ``into``."""
        detail = f"copying result into {into}"
        yield Status("running", detail, turn.attempts)
        value = yield from self._pump(
            lambda emit: self._lease(turn).fetch(name, cancel=cancel),
            cancel,
            "running",
            detail,
            turn.attempts,
        )
        self.namespace[into] = value
        self.tracker.update(self.namespace)

    def _answer(
        self,
        backend: ChatBackend,
        messages: list[dict[str, str]],
        turn: TurnState,
        attempt: int,
        cancel: threading.Event,
    ) -> Generator[Event, None, tuple[ExtractedCode, ChatResponse]]:
        """Ask the model; if the answer has no usable code, ask once more with the reason."""
        phase: Phase = "asking" if attempt == 1 else "fixing"
        for retry in (False, True):
            request = ChatRequest(
                model=turn.model, messages=tuple(messages), temperature=self.config.temperature
            )
            turn.prompt_tokens = max(turn.prompt_tokens, estimate_message_tokens(messages))
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

    def _lease(self, turn: TurnState) -> Lease:
        """The turn's own fresh child (taken at its first run, shared by its attempts)."""
        if turn.lease is None:
            turn.lease = self.sandbox.lease()
        return turn.lease

    def _run_once(
        self,
        turn: TurnState,
        code: str,
        found: dict[str, Any],
        attempt: int,
        cancel: threading.Event,
        *,
        phase: Phase,
    ) -> Iterator[Event]:
        turn.attempts = attempt
        lease = self._lease(turn)
        if not lease.ready:  # asked faster than a fresh child starts: say why it waits
            waiting = "waiting for a fresh analysis kernel to start"
            yield Status(phase, waiting, attempt)
            yield from self._pump(lambda emit: lease.wait(cancel), cancel, phase, waiting, attempt)
        yield Status(phase, "in the sandbox kernel", attempt)

        def run(emit: Callable[[Event], None]) -> None:
            shown: set[str] = set()
            if turn.child_frames is None:  # once a turn: fix attempts reuse what was sent
                turn.child_frames = child_frames(found)
            for output in lease.run(code, turn.child_frames, attempt=attempt, cancel=cancel):
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
    def _configured_backend(self, options: AskOptions) -> ChatBackend:
        """The chat backend for the current config (the default ``backend_factory``).

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
            cache = store.ResponseCache(
                history.database, cfg.cache_max_entries, endpoint=cfg.base_url
            )
            backend = store.CachingBackend(
                backend,
                cache,
                enabled=cfg.cache,
                refresh=not options.use_cache,
                metrics=self.metrics,
            )
        if cfg.record:
            if self._recorder is None or str(self._recorder.path) != _abs(cfg.record):
                self._recorder = store.TranscriptRecorder(
                    cfg.record, redact=lambda: [k] if (k := cfg.resolved_api_key()) else []
                )
            backend = store.RecordingBackend(backend, self._recorder)
        return backend

    def _done(self, turn: TurnState, *, into: str | None = None) -> Done:
        return Done(
            mode=turn.mode,
            outcome="ran" if turn.mode == "run" else "inserted",
            code=turn.code,
            explanation=turn.explanation,
            model=turn.model,
            usage=turn.usage,
            elapsed=turn.elapsed,
            attempts=max(turn.attempts, 1),
            cached=turn.cached,
            into=into,
            replayed=turn.replayed,
            turn_id=turn.id,
            asked_at=turn.asked_at,
        )

    def _failed(self, turn: TurnState, error: errors.DataAgentError) -> Failed:
        return Failed(error, code=turn.code, elapsed=turn.elapsed)

    def _finish(self, turn: TurnState, event: Done | Failed) -> None:
        """Record a finished turn that has a question: memory, history, metrics."""
        if not turn.question:
            return
        error = event.error.message if isinstance(event, Failed) else None
        inserted = isinstance(event, Done) and event.mode in ("insert", "agent")
        outcome = outcome_summary(turn.result_repr, error=error, inserted=inserted)
        if turn.privacy == "schema":
            outcome = schema_outcome(outcome)
        self._remember(turn.cell, turn.question, turn.explanation, turn.code, outcome)
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
            cell=turn.cell,
            turn_id=turn.id,
        )
        if history is not None:
            try:
                history.add(record, steps=turn.steps)
            except errors.StoreError as exc:
                log.warning("history not written: %s", exc.message)
        self.metrics.record_question(record)
        if turn.mode == "agent":
            self.metrics.record_agent_run(record, len(turn.steps))
        log.info(
            "turn: mode=%s attempts=%d tokens_in=%d tokens_out=%d seconds=%.2f cached=%s",
            turn.mode,
            turn.attempts,
            turn.billed.prompt_tokens,
            turn.billed.completion_tokens,
            turn.elapsed,
            turn.cached,
        )

    def _traceback_for_model(self, turn: TurnState, exc: errors.ExecutionFailed) -> str:
        """The traceback sent back for a fix; under privacy='schema' structure only."""
        if turn.privacy != "schema":
            return exc.traceback
        return schema_traceback(exc.traceback, turn.code, ename=exc.ename)

    def _remember(
        self, cell: str | None, question: str, explanation: str, code: str, outcome: str
    ) -> None:
        """Keep a turn for follow-ups (those with code) and for front ends that (re)open.

        A turn from a cell that already has one replaces it in place (a re-run).
        """
        entry = _Remembered(
            cell=cell,
            past=PastTurn(question, code, outcome) if code else None,
            shown={
                "question": question,
                "explanation": explanation,
                "code": code,
                "outcome": outcome,
            },
        )
        place = self._place(cell)
        if place < len(self._memory):
            self._memory[place] = entry
        else:
            self._memory.append(entry)

    def _place(self, cell: str | None) -> int:
        """Where ``cell``'s turn stands in the conversation (the end for a new turn)."""
        if cell is not None:
            for i, entry in enumerate(self._memory):
                if entry.cell == cell:
                    return i
        return len(self._memory)

    def _context(self, cell: str | None) -> list[PastTurn]:
        """The follow-up context of a question from ``cell``: the turns before its turn."""
        return [m.past for m in self._memory[: self._place(cell)] if m.past is not None]


def _end_lease(turn: TurnState) -> None:
    lease, turn.lease = turn.lease, None
    if lease is not None:
        lease.close()


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


def _still_failing(
    exc: errors.ExecutionFailed, attempt: int, max_fix: int
) -> errors.ExecutionFailed:
    """The error that ends a run whose last attempt failed too."""
    return errors.ExecutionFailed(
        f"the code still fails after {attempt} attempts: {exc.ename}: {exc.evalue}"
        if attempt > 1
        else f"the code failed: {exc.ename}: {exc.evalue}",
        traceback=exc.traceback,
        ename=exc.ename,
        evalue=exc.evalue,
        hint="The last version is offered as a new cell for you to review and fix."
        if attempt > 1 or max_fix == 0
        else None,
    )


def _frame_list(found: dict[str, Any]) -> str:
    """The ``list_frames`` tool: the question's frames and their shapes (no values).

    Read from the listing entry, which asks an engine frame only for what it knows
    cheaply: a row count a lazy frame does not know is said to be unknown, not computed.
    """
    if not found:
        return "No frames were given."
    lines = []
    for name, obj in found.items():
        info = frame_info(name, obj)
        shape = ", ".join("unknown" if n is None else str(n) for n in info.shape)
        lines.append(f"{name}: {info.kind} of shape ({shape}{',' * (len(info.shape) == 1)})")
    return "\n".join(lines)


def _child_sandbox(config: DataAgent, session_id: str) -> Sandbox:
    """The default sandbox: a child kernel (imported here: jupyter_client loads on first use)."""
    from .sandbox import Sandbox

    return Sandbox(config, session_id=session_id)


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
