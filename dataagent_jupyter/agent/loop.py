"""The agent step loop: ask, run the step in the child, show the model what came of it, repeat.

:class:`AgentLoop` is a generator of the same events as ``Session.ask`` plus the step
events, so the front ends only render. It runs inside the session's turn lifecycle (busy
lock, one ``Failed`` for any error it raises, remembering the turn), which is why it
raises errors instead of turning them into events. What it handles itself is what ends
a run *with* a result: the model's final answer, a budget running out, and Stop; all three
keep the steps that worked and end in a summary.

All steps of one run go to the same child kernel, so a step sees the variables of the
steps before it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from .. import errors
from ..events import (
    Delta,
    Event,
    Output,
    Phase,
    ProposedCell,
    Status,
    StepApproval,
    StepFinished,
    StepStarted,
    Usage,
)
from ..llm import ChatBackend, ChatRequest, ChatResponse
from ..sanitize import markdown_source
from .moves import TOOLS, BadMove, DescribeFrame, Finish, ListFrames, Move, RunStep, read_moves
from .prompts import agent_system_prompt, bad_move_message, budget_summary, step_result_message
from .steps import (
    Privacy,
    ReportError,
    StepOutcome,
    StepReport,
    parse_report,
    report_request,
    silent_failures,
    step_message,
)

log = logging.getLogger("dataagent_jupyter.agent")

T = TypeVar("T")
Decision = Literal["run", "skip", "stop"]
#: Characters of a step's printed output kept to summarise it (it is cut again for the model).
MAX_STDOUT_KEEP = 50_000
#: Name the child keeps the last good step's ``result`` under (for ``--into``).
LAST_RESULT = "_dataagent_last_result"


class Pump(Protocol):
    """Runs slow work on a thread, yielding its events and heartbeats (``Session._pump``)."""

    def __call__(
        self,
        work: Callable[[Callable[[Event], None]], T],
        cancel: threading.Event,
        phase: Phase,
        detail: str,
        attempt: int,
    ) -> Generator[Event, None, T]: ...


class StepSandbox(Protocol):
    """What the loop needs of the sandbox: run a step, evaluate the step report.

    A ``sandbox.Lease``: one fresh child for the whole run, so each step sees the
    variables of the steps before it and nothing of earlier questions.
    """

    def run(
        self,
        code: str,
        frames: Mapping[str, Any],
        *,
        attempt: int = 1,
        cancel: threading.Event | None = None,
    ) -> Iterator[Output]: ...

    def evaluate(
        self, code: str, expressions: dict[str, str], *, cancel: threading.Event | None = None
    ) -> dict[str, Any]: ...


class ToolSupport:
    """Endpoints (and models) known to refuse the ``tools`` parameter, for this session.

    Learned from the first refusal so that later runs go straight to plain messages
    instead of paying a failed request each time.
    """

    def __init__(self) -> None:
        self._refused: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def allowed(self, endpoint: str, model: str) -> bool:
        with self._lock:
            return (endpoint, model) not in self._refused

    def refuse(self, endpoint: str, model: str) -> None:
        with self._lock:
            self._refused.add((endpoint, model))


class StepGate:
    """Where an ``each-step`` approval waits for the user's Run / Skip / Stop.

    The front end calls :meth:`decide` (from the comm thread or a widget callback); the
    loop waits in :meth:`wait` on its worker thread, so Stop still acts at once.
    """

    def __init__(self) -> None:
        self._decision: Decision | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self.waiting: int | None = None  # the step waiting, for a front end that reopens

    def decide(self, decision: str) -> None:
        """Record the user's choice for the step that waits ("run", "skip" or "stop")."""
        if decision not in ("run", "skip", "stop"):
            raise errors.UsageError(f"a step is run, skipped or stopped, not {decision!r}.")
        with self._lock:
            self._decision = decision  # type: ignore[assignment]
            self._ready.set()

    def open(self, step: int) -> None:
        """Start waiting for step ``step``: before the front ends are asked, so that an
        answer given at once is not lost."""
        with self._lock:
            self._decision, self.waiting = None, step
            self._ready.clear()

    def wait(self, cancel: threading.Event) -> Decision:
        """The user's decision for the opened step; Cancelled when Stop is pressed instead."""
        try:
            while not self._ready.wait(0.05):
                if cancel.is_set():
                    raise errors.Cancelled("stopped while waiting for approval.")
            with self._lock:
                return self._decision or "stop"
        finally:
            self.waiting = None


@dataclass(frozen=True)
class StepRecord:
    """One step as history keeps it."""

    step: int
    code: str
    outcome: Literal["ok", "failed", "skipped"]
    message: str  # what the model was told about it
    error: str = ""
    notes: tuple[str, ...] = ()
    elapsed: float = 0.0


@dataclass
class AgentResult:
    """What a finished run hands back to the session."""

    summary: str = ""
    steps: list[StepRecord] = field(default_factory=list)
    ended_by: str | None = None
    usage: Usage = field(default_factory=Usage)
    billed: Usage = field(default_factory=Usage)
    cached: bool = False
    replayed: bool = False
    model: str = ""

    @property
    def good_steps(self) -> list[StepRecord]:
        return [s for s in self.steps if s.outcome == "ok"]

    def cells(self, question: str) -> tuple[ProposedCell, ...]:
        """The analysis as notebook cells: question and summary, then each step that worked.

        The Markdown cell holds model text, so it goes through ``sanitize.markdown_source``.
        """
        quoted = "\n".join("> " + line for line in question.strip().splitlines())
        text = f"**Question**\n\n{quoted}\n\n**Findings**\n\n{self.summary.strip()}"
        return (
            ProposedCell("markdown", markdown_source(text)),
            *(ProposedCell("code", s.code.rstrip() + "\n") for s in self.good_steps),
        )


@dataclass
class AgentLoop:
    """One agent run. Build it with what it needs, then ``yield from loop.run(...)``."""

    backend: ChatBackend
    sandbox: Callable[[], StepSandbox]
    pump: Pump
    model: str
    endpoint: str
    temperature: float | None
    privacy: Privacy
    max_steps: int
    max_tokens: int
    timeout: float
    result_chars: int
    tool_support: ToolSupport
    describe_frame: Callable[[str], str]
    list_frames: Callable[[], str]
    gate: StepGate | None = None
    #: prompt sentences about the frames (another engine's API, a sample standing in)
    notes: Sequence[str] = ()
    on_step: Callable[[StepRecord], None] = lambda record: None
    started: float = field(default_factory=time.perf_counter)
    _explanations: list[str] = field(default_factory=list)

    def run(
        self,
        context: Sequence[dict[str, Any]],
        names: Sequence[str],
        frames: Mapping[str, Any],
        cancel: threading.Event,
    ) -> Generator[Event, None, AgentResult]:
        """Work on the question in ``context`` (earlier turns, then the question message)."""
        result = AgentResult(model=self.model)
        timed_out = threading.Event()

        def out_of_time() -> None:
            timed_out.set()
            cancel.set()

        timer = threading.Timer(self.timeout, out_of_time)
        timer.daemon = True
        timer.start()
        try:
            yield from self._steps(result, context, names, frames, cancel)
        except (errors.Cancelled, KeyboardInterrupt):
            result.ended_by = (
                f"the time budget ({self.timeout:g} s) ran out"
                if timed_out.is_set()
                else "stopped by the user"
            )
        finally:
            timer.cancel()
        if result.ended_by is not None:
            result.summary = budget_summary(
                result.ended_by,
                self._explanations,
                [_step_line(s) for s in result.steps],
            )
        return result

    # --- the loop ----------------------------------------------------------------------

    def _steps(
        self,
        result: AgentResult,
        context: Sequence[dict[str, Any]],
        names: Sequence[str],
        frames: Mapping[str, Any],
        cancel: threading.Event,
    ) -> Generator[Event, None, None]:
        inputs = {name: len(obj) for name, obj in frames.items()}
        tools = self.tool_support.allowed(self.endpoint, self.model)
        messages: list[dict[str, Any]] = list(context)
        step = 0
        rounds = 0
        while True:
            if self.max_tokens and _total(result.usage) >= self.max_tokens:
                result.ended_by = f"the token budget ({self.max_tokens} tokens) ran out"
                return
            rounds += 1
            if rounds > 2 * self.max_steps + 2:  # answers that never become steps
                result.ended_by = f"the step budget ({self.max_steps} steps) ran out"
                return
            system = agent_system_prompt(
                names, tools=tools, max_steps=self.max_steps, notes=self.notes
            )
            request = ChatRequest(
                model=self.model,
                messages=({"role": "system", "content": system}, *messages),
                temperature=self.temperature,
                tools=TOOLS if tools else (),
            )
            try:
                response = yield from self._ask(request, step + 1, cancel)
            except errors.ToolsUnsupported:
                log.info("endpoint %s refuses tools; using plain messages", self.endpoint)
                self.tool_support.refuse(self.endpoint, self.model)
                tools = False
                continue
            _account(result, response)
            moves = read_moves(response)
            messages.append(_assistant_message(response))
            if response.text.strip() and not isinstance(moves[0], Finish):
                self._explanations.append(response.text)
            for move in moves:
                if isinstance(move, Finish):
                    result.summary = move.summary or "(The model ended without a summary.)"
                    return
                if isinstance(move, RunStep) and step >= self.max_steps:
                    result.ended_by = f"the step budget ({self.max_steps} steps) ran out"
                    return
                if isinstance(move, RunStep):
                    step += 1
                    reply = yield from self._step(result, step, move, frames, inputs, cancel)
                    if reply is None:  # Stop at the approval
                        result.ended_by = "stopped by the user"
                        return
                else:
                    reply = self._answer_without_running(move)
                messages.append(_feedback(move, reply))

    def _ask(
        self, request: ChatRequest, step: int, cancel: threading.Event
    ) -> Generator[Event, None, ChatResponse]:
        # the step number is in the detail; ``attempt`` stays 1 (a step is not a retry)
        detail = f"{self.model}: step {step} of at most {self.max_steps}"
        yield Status("asking", detail)

        def call(emit: Callable[[Event], None]) -> ChatResponse:
            return self.backend.complete(
                request, on_delta=lambda t: emit(Delta(t, step)), cancel=cancel
            )

        return (yield from self.pump(call, cancel, "asking", detail, 1))

    def _answer_without_running(self, move: Move) -> str:
        if isinstance(move, DescribeFrame):
            return self.describe_frame(move.name)
        if isinstance(move, ListFrames):
            return self.list_frames()
        assert isinstance(move, BadMove)
        return bad_move_message(move.reason)

    def _step(
        self,
        result: AgentResult,
        step: int,
        move: RunStep,
        frames: Mapping[str, Any],
        inputs: dict[str, int],
        cancel: threading.Event,
    ) -> Generator[Event, None, str | None]:
        """Run one step; the text for the model, or None when the user chose Stop."""
        started = time.perf_counter()
        yield StepStarted(step, move.code, move.explanation)
        if self.gate is not None:
            gate = self.gate
            gate.open(step)
            yield StepApproval(step, move.code)
            decision = yield from self.pump(
                lambda emit: gate.wait(cancel),
                cancel,
                "waiting",
                f"step {step}: Run, Skip or Stop?",
                1,
            )
            if decision == "stop":
                return None
            if decision == "skip":
                text = f"The user skipped step {step}; it did not run."
                self._record(result, StepRecord(step, move.code, "skipped", text), started)
                yield self._finished(result, step, "skipped", "", ())
                return text
        outcome = yield from self._run(step, move.code, frames, cancel)
        text = step_message(
            outcome, step=step, inputs=inputs, privacy=self.privacy, budget_chars=self.result_chars
        )
        notes = tuple(silent_failures(outcome, inputs))
        error = ": ".join(outcome.error) if outcome.error else ""
        if self.privacy == "schema" and outcome.error:
            error = outcome.error[0]
        ok = outcome.error is None
        self._record(
            result,
            StepRecord(step, move.code, "ok" if ok else "failed", text, error, notes),
            started,
        )
        yield self._finished(result, step, "ok" if ok else "failed", error, notes)
        return text

    def _run(
        self, step: int, code: str, frames: Mapping[str, Any], cancel: threading.Event
    ) -> Generator[Event, None, StepOutcome]:
        detail = f"step {step} in the sandbox kernel"
        yield Status("running", detail)
        sandbox = self.sandbox()
        box: dict[str, Any] = {"stdout": [], "size": 0, "charts": 0}

        def work(emit: Callable[[Event], None]) -> StepReport:
            shown: set[str] = set()
            for output in sandbox.run(code, frames, attempt=step, cancel=cancel):
                if output.kind == "stream" and box["size"] < MAX_STDOUT_KEEP:
                    text = str(output.data.get("text/plain", ""))
                    box["stdout"].append(text)
                    box["size"] += len(text)
                if "image/png" in output.data:
                    box["charts"] += 1
                text = str(output.data.get("text/plain", ""))
                if output.kind == "display":
                    shown.add(text)
                if output.kind == "result" and text in shown:
                    continue  # the step ended with `result`: already on screen
                emit(output)
            install, expressions = report_request()
            try:
                return parse_report(sandbox.evaluate(install, expressions, cancel=cancel))
            except (ReportError, errors.SandboxError) as exc:
                log.warning("step %d: the child's report was unusable: %s", step, exc)
                return StepReport()

        try:
            report = yield from self.pump(work, cancel, "running", detail, 1)
        except errors.ExecutionFailed as exc:
            return StepOutcome(code, "".join(box["stdout"]), (exc.ename or "Error", exc.evalue))
        except (errors.ExecutionTimeout, errors.ChildDied) as exc:
            return StepOutcome(code, "".join(box["stdout"]), (type(exc).__name__, exc.message))
        return StepOutcome(code, "".join(box["stdout"]), None, report, box["charts"])

    def _record(self, result: AgentResult, record: StepRecord, started: float) -> None:
        record = StepRecord(**{**record.__dict__, "elapsed": time.perf_counter() - started})
        result.steps.append(record)
        self.on_step(record)

    def _finished(
        self,
        result: AgentResult,
        step: int,
        outcome: Literal["ok", "failed", "skipped"],
        error: str,
        notes: tuple[str, ...],
    ) -> StepFinished:
        return StepFinished(
            step,
            outcome,
            error,
            notes,
            elapsed=time.perf_counter() - self.started,
            usage=result.usage,
        )


def _total(usage: Usage) -> int:
    return usage.prompt_tokens + usage.completion_tokens


def _account(result: AgentResult, response: ChatResponse) -> None:
    result.usage = result.usage + response.usage
    if response.source == "endpoint":
        result.billed = result.billed + response.usage
    result.cached = result.cached or response.source == "cache"
    result.replayed = result.replayed or response.source == "replay"
    result.model = response.model or result.model


def _assistant_message(response: ChatResponse) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": response.text}
    if response.tool_calls:
        message["tool_calls"] = [call.to_json() for call in response.tool_calls]
    return message


def _feedback(move: Move, text: str) -> dict[str, Any]:
    """The message answering ``move``: a tool result for a call, else a user message."""
    call = getattr(move, "call", None)
    if call is not None:
        return {"role": "tool", "tool_call_id": call.id, "content": text}
    return {"role": "user", "content": step_result_message(text)}


def _step_line(record: StepRecord) -> str:
    first = record.code.strip().splitlines()[0] if record.code.strip() else ""
    if record.outcome == "ok":
        notes = f" ({'; '.join(record.notes)})" if record.notes else ""
        return f"step {record.step} worked: `{first[:80]}`{notes}"
    if record.outcome == "skipped":
        return f"step {record.step} was skipped"
    return f"step {record.step} failed ({record.error})"
