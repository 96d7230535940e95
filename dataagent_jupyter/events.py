"""The events a question produces, the one language between the engine and its front ends.

``Session.ask`` yields these; the magic renders them into a live cell output, the widget
into its message list, the comm sends ``event_to_json(event)`` to the side panel. Front ends
hold no logic beyond rendering them, so every front end shows the same thing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .errors import DataAgentError
from .sanitize import clean_output

#: what the engine is doing; front ends name each phase on their status line
Phase = Literal["describing", "asking", "running", "fixing", "checking", "loading", "waiting"]
#: insert: propose the code as a cell to review; run: run it in the child kernel;
#: agent: a loop of steps run in the child, ending in a summary and proposed cells
Mode = Literal["insert", "run", "agent"]
#: how a question ended, as the history records it
Outcome = Literal["inserted", "ran", "failed", "proposed"]
#: the modes a question can be asked in
MODES: tuple[Mode, ...] = ("insert", "run", "agent")


@dataclass(frozen=True)
class Status:
    """The engine moved to a new phase; front ends show it on the status line."""

    phase: Phase
    message: str = ""
    attempt: int = 1


@dataclass(frozen=True)
class Delta:
    """A piece of streamed model text (explanation and code fences, as the model writes)."""

    text: str
    attempt: int = 1


@dataclass(frozen=True)
class CodeProposed:
    """The model's answer was parsed: the code to insert or run, and its explanation."""

    code: str
    explanation: str
    attempt: int = 1
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Output:
    """One output of code run in the child kernel, as a Jupyter MIME bundle.

    ``kind`` is ``stream`` (``text/plain`` only, ``name`` is stdout/stderr), ``display``
    (display_data), or ``result`` (the rich rendering of the variable ``result``).
    ``saved`` is the path a chart was also saved to, when it was.

    The bundle comes from the child kernel, so it is untrusted: it is cleaned here, when
    the event is made (``sanitize.clean_output``), and no front end ever sees it raw.
    """

    kind: Literal["stream", "display", "result"]
    data: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    attempt: int = 1
    saved: str | None = None

    def __post_init__(self) -> None:
        data, metadata = clean_output(self.data, self.metadata)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "metadata", metadata)


@dataclass(frozen=True)
class RunFailed:
    """An attempt's code raised in the child; the fix loop may try again."""

    attempt: int
    ename: str
    evalue: str
    traceback: str
    will_retry: bool


@dataclass(frozen=True)
class Usage:
    """Tokens spent by one LLM call (or summed over a question's calls)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )


@dataclass(frozen=True)
class StepStarted:
    """Agent mode: step ``step`` is about to run ``code`` in the child kernel."""

    step: int
    code: str
    explanation: str = ""


@dataclass(frozen=True)
class StepApproval:
    """Agent mode with ``agent_approval="each-step"``: step ``step`` waits for Run/Skip/Stop."""

    step: int
    code: str


@dataclass(frozen=True)
class StepFinished:
    """Agent mode: a step ended. ``notes`` name silent failures (an empty result, ...).

    ``usage`` and ``elapsed`` are the run's totals so far, for the progress line.
    """

    step: int
    outcome: Literal["ok", "failed", "skipped"]
    error: str = ""
    notes: tuple[str, ...] = ()
    elapsed: float = 0.0
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class ProposedCell:
    """A notebook cell offered at the end of an agent run, for the user to review."""

    cell_type: Literal["markdown", "code"]
    source: str


@dataclass(frozen=True)
class Done:
    """The question is answered. ``code`` is the code that produced the answer.

    In agent mode ``explanation`` is the Markdown summary, ``cells`` the analysis proposed
    as notebook cells (question and summary, then one code cell per step that worked),
    ``steps`` how many steps ran and ``ended_by`` which budget or Stop ended the run early.
    """

    mode: Mode
    outcome: Outcome
    code: str
    explanation: str
    model: str
    usage: Usage
    elapsed: float
    attempts: int = 1
    cached: bool = False
    into: str | None = None
    replayed: bool = False
    cells: tuple[ProposedCell, ...] = ()
    steps: int = 0
    ended_by: str | None = None
    turn_id: str = ""  # names the turn in the history and in inserted cells' metadata
    asked_at: float = 0.0  # when the question was asked (seconds since the epoch)


@dataclass(frozen=True)
class Failed:
    """The question ended in an error the user must see; ``code`` is kept when there is one."""

    error: DataAgentError
    code: str = ""
    elapsed: float = 0.0


Event = (
    Status
    | Delta
    | CodeProposed
    | Output
    | RunFailed
    | StepStarted
    | StepApproval
    | StepFinished
    | Done
    | Failed
)


def event_to_json(event: Event) -> dict[str, Any]:
    """A JSON-ready dict with a ``type`` field, as the comm protocol sends events."""
    if isinstance(event, Failed):
        body: dict[str, Any] = {
            "error": event.error.to_json(),
            "code": event.code,
            "elapsed": event.elapsed,
        }
    else:
        body = asdict(event)
    body["type"] = type(event).__name__
    return body
