"""The engine on its own: the turn lifecycle, the options record, the fix loop.

Most engine behaviour is tested through the front ends against ``llm_server.py`` (HTTP).
Here the model is a scripted in-process ``ChatBackend`` given to the session through its
``backend_factory`` seam: the fix loop reads more plainly as "this answer, this run, this
fix" without a server in between. The child kernel is real.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from pathlib import Path

import pandas as pd
import pytest
from llm_server import code_answer

from dataagent_jupyter import errors
from dataagent_jupyter.config import DataAgent
from dataagent_jupyter.events import (
    CodeProposed,
    Done,
    Event,
    Failed,
    Output,
    RunFailed,
    Status,
    Usage,
)
from dataagent_jupyter.llm import ChatRequest, ChatResponse, OnDelta
from dataagent_jupyter.options import AskOptions
from dataagent_jupyter.session import Session, TurnState


class ScriptedModel:
    """A chat backend answering from a list, recording every request it was sent."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.requests: list[ChatRequest] = []

    def complete(
        self, request: ChatRequest, *, on_delta: OnDelta, cancel: threading.Event | None = None
    ) -> ChatResponse:
        self.requests.append(request)
        text = self.answers.pop(0)
        on_delta(text)
        return ChatResponse(text=text, usage=Usage(10, 5), model=request.model)


@pytest.fixture
def config(tmp_path: Path) -> DataAgent:
    return DataAgent(
        data_dir=str(tmp_path / "data"),
        output_dir=str(tmp_path / "charts"),
        warm_child=False,
        memory_limit="2G",
        exec_timeout=30.0,
    )


@pytest.fixture
def namespace() -> dict[str, object]:
    return {"sales": pd.DataFrame({"region": ["N", "S", "N"], "revenue": [10.0, 20.0, 30.0]})}


# --- the options record ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mode": "explode"}, "mode must be 'insert', 'run' or 'agent'"),
        ({"privacy": "everything"}, "--privacy must be 'schema' or 'sample'"),
        ({"into": "1bad", "mode": "run"}, "--into needs a valid variable name"),
        ({"into": "out", "mode": "insert"}, "--into brings back the result of a run"),
        ({"check": True, "mode": "run"}, "--check goes with --insert"),
        ({"frames": "sales"}, "frames must be a list of names"),
    ],
)
def test_options_refuse_what_cannot_work(fields: dict[str, object], message: str) -> None:
    with pytest.raises(errors.UsageError, match=message):
        AskOptions(**fields)  # type: ignore[arg-type]


def test_options_fill_in_the_config_and_check_again(config: DataAgent) -> None:
    config.mode = "run"
    options = AskOptions(frames=["sales"], into="out").resolve(config)  # type: ignore[arg-type]
    assert (options.mode, options.model, options.privacy) == ("run", config.model, "sample")
    assert options.frames == ("sales",)
    with pytest.raises(errors.UsageError, match="--check goes with --insert"):
        AskOptions(check=True).resolve(config)


# --- the lifecycle ---------------------------------------------------------------------------


def _turn(question: str = "q?") -> TurnState:
    return TurnState(kind="ask", question=question, mode="insert", model="m")


def test_any_exception_ends_the_turn_in_one_failed_event(config, namespace) -> None:
    session = Session(config, namespace, notebook="nb")

    def body(turn: TurnState, cancel: threading.Event) -> Generator[Event, None, Done]:
        yield Status("describing")
        turn.code = "x = 1"
        raise RuntimeError("boom")

    events = list(session.run_turn(_turn(), body))
    assert [type(e) for e in events] == [Status, Failed]
    failed = events[-1]
    assert isinstance(failed, Failed)
    assert "something went wrong inside the Data Agent: RuntimeError: boom" in failed.error.message
    assert failed.code == "x = 1"  # the work is kept
    assert not session.busy
    assert session.transcript()[-1]["outcome"].startswith("failed")  # remembered
    session.close()


def test_one_turn_at_a_time_and_the_lock_is_released_however_it_ends(config, namespace) -> None:
    session = Session(config, namespace, notebook="nb")
    gate = threading.Event()

    def slow(turn: TurnState, cancel: threading.Event) -> Generator[Event, None, Done]:
        while not gate.is_set():
            yield Status("asking")
        raise AssertionError("closed before this")  # pragma: no cover

    first = session.run_turn(_turn("first?"), slow)
    assert isinstance(next(first), Status)  # the first event takes the lock
    assert session.busy
    refused = list(session.ask("second?"))
    assert len(refused) == 1 and isinstance(refused[0], Failed)
    assert "another question is still being answered" in refused[0].error.message
    first.close()  # the front end went away mid-turn
    assert not session.busy

    # and the session answers again
    def quick(turn: TurnState, cancel: threading.Event) -> Generator[Event, None, Done]:
        yield Status("asking")
        return Done("insert", "inserted", "x = 1", "", "m", Usage(), turn.elapsed)

    events = list(session.run_turn(_turn("third?"), quick))
    assert isinstance(events[-1], Done) and events[-1].code == "x = 1"
    assert session.transcript()[-1]["question"] == "third?"
    session.close()


# --- the fix loop, through the backend seam --------------------------------------------------


@pytest.mark.kernel
def test_fix_loop_sends_the_traceback_and_runs_the_fix(config, namespace) -> None:
    model = ScriptedModel(
        code_answer("result = sales['price'].sum()", "Sum the price."),
        code_answer("result = sales['revenue'].sum()", "The column is revenue."),
    )
    session = Session(config, namespace, notebook="nb", backend_factory=lambda options: model)
    try:
        events = list(session.ask("total revenue?", AskOptions(mode="run", into="total")))
    finally:
        session.close()
    proposed = [e for e in events if isinstance(e, CodeProposed)]
    assert [p.attempt for p in proposed] == [1, 2]
    failures = [e for e in events if isinstance(e, RunFailed)]
    assert len(failures) == 1 and failures[0].ename == "KeyError" and failures[0].will_retry
    results = [e for e in events if isinstance(e, Output) and e.kind == "result"]
    assert results and "60" in str(results[-1].data["text/plain"])
    done = events[-1]
    assert isinstance(done, Done)
    assert (done.outcome, done.attempts, done.into) == ("ran", 2, "total")
    assert namespace["total"] == 60.0
    # the fix request carried the failure back to the model, after the first answer
    fix = model.requests[1].messages
    assert [m["role"] for m in fix[-3:]] == ["user", "assistant", "user"]
    assert "KeyError" in fix[-1]["content"] and "price" in fix[-1]["content"]
    assert done.usage == Usage(20, 10)
