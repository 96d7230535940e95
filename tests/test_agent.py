"""Agent mode end to end in the engine: the scripted server, the real openai client, a real
child kernel. Each test reads like the run a user would watch: the steps, what the model
was told after each, and the cells proposed at the end."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from llm_server import LLMServer, Reply, Request, tool_call

from dataagent_jupyter import store
from dataagent_jupyter.config import DataAgent
from dataagent_jupyter.events import (
    Done,
    Event,
    Failed,
    Output,
    StepApproval,
    StepFinished,
    StepStarted,
)
from dataagent_jupyter.options import AskOptions
from dataagent_jupyter.session import Session

pytestmark = pytest.mark.kernel

SALES = pd.DataFrame(
    {
        "region": ["North", "South", "North", "East"],
        "quarter": ["Q2", "Q3", "Q3", "Q3"],
        "margin": [0.31, 0.12, 0.18, 0.25],
        "customer": ["Alice Jones", "Bob Smith", "Carla Diaz", "Dan Wu"],
    }
)


@pytest.fixture
def session(llm: LLMServer, tmp_path: Path) -> Iterator[Session]:
    config = DataAgent(
        base_url=llm.url,
        api_key=llm.api_key,
        max_retries=0,
        data_dir=str(tmp_path / "data"),
        output_dir=str(tmp_path / "charts"),
        warm_child=False,
        mode="agent",
        exec_timeout=30.0,
    )
    s = Session(config, {"sales": SALES.copy()})
    yield s
    s.close()


def run(session: Session, question: str = "what drives the drop in margin in Q3?", **kw: Any):
    events = list(session.ask(question, AskOptions(frames=("sales",), **kw)))
    return events, events[-1]


def steps(events: list[Event]) -> list[str]:
    return [e.code.strip() for e in events if isinstance(e, StepStarted)]


def tool_messages(request: Request) -> list[str]:
    return [m["content"] for m in request.messages if m.get("role") == "tool"]


STEP_1 = "q3 = sales[sales['quarter'] == 'Q3']\nresult = q3.groupby('region')['margin'].mean()"
STEP_2_BROKEN = "result = q3.groupby('regionn')['margin'].mean()"
STEP_2_FIXED = "result = q3['margin'].describe()\nprint('rows in Q3:', len(q3))"
SUMMARY = "## Findings\nSouth drives the drop: its Q3 margin is **0.12**."


def test_tool_calls_steps_run_in_order_and_errors_are_repaired(
    session: Session, llm: LLMServer
) -> None:
    llm.script(
        Reply(
            text="Plan: 1. margin by region in Q3 2. spread.",
            tool_calls=[tool_call("run_python", "c1", code=STEP_1)],
        ),
        Reply(tool_calls=[tool_call("run_python", "c2", code=STEP_2_BROKEN)]),
        Reply(tool_calls=[tool_call("run_python", "c3", code=STEP_2_FIXED)]),
        Reply(text=SUMMARY),
    )
    events, done = run(session)
    assert isinstance(done, Done), done
    assert steps(events) == [STEP_1, STEP_2_BROKEN, STEP_2_FIXED]
    finished = [e for e in events if isinstance(e, StepFinished)]
    assert [f.outcome for f in finished] == ["ok", "failed", "ok"]
    assert finished[1].error.startswith("KeyError")
    requests = llm.chat_requests()
    assert len(requests) == 4 and all(r.body.get("tools") for r in requests)
    # step 1's outcome reached the model, as a tool result for its call
    (told,) = tool_messages(requests[1])
    assert "Series of shape (3)" in told and "0.12" in told
    assert requests[1].messages[-2]["tool_calls"][0]["id"] == "c1"
    # the error went back, and the repaired step used step 1's variable: one child
    assert "Step 2 failed: KeyError" in tool_messages(requests[2])[-1]
    assert "rows in Q3: 3" in tool_messages(requests[3])[-1]
    # the end: the summary, and the working steps (not the failed one) as cells
    assert done.mode == "agent" and done.explanation == SUMMARY and done.steps == 3
    assert [c.cell_type for c in done.cells] == ["markdown", "code", "code"]
    assert "what drives the drop in margin in Q3?" in done.cells[0].source
    assert SUMMARY in done.cells[0].source
    assert [c.source.strip() for c in done.cells[1:]] == [STEP_1, STEP_2_FIXED]
    assert done.ended_by is None
    # the user's frame is untouched; stdout of a step is shown as it ran
    assert session.namespace["sales"].equals(SALES)
    assert any(isinstance(e, Output) and "rows in Q3: 3" in str(e.data) for e in events)


def test_endpoint_without_tools_falls_back_to_plain_messages_and_remembers(
    tmp_path: Path,
) -> None:
    with LLMServer(reject_tools=True) as llm:
        config = DataAgent(
            base_url=llm.url,
            api_key=llm.api_key,
            max_retries=0,
            data_dir=str(tmp_path / "data"),
            warm_child=False,
            mode="agent",
        )
        session = Session(config, {"sales": SALES.copy()})
        try:
            llm.script(
                f"First, margins by region.\n```python\n{STEP_1}\n```",
                SUMMARY,
            )
            events, done = run(session)
            assert isinstance(done, Done), done
            assert steps(events) == [STEP_1]
            sent = llm.chat_requests()
            assert [bool(r.body.get("tools")) for r in sent] == [True, False, False]
            assert "reply WITHOUT any code block" in sent[1].messages[0]["content"]
            last = sent[2].messages[-1]
            assert last["role"] == "user" and "Step 1 ran without error" in last["content"]
            assert [c.source.strip() for c in done.cells[1:]] == [STEP_1]
            # the next run goes straight to plain messages
            llm.script(SUMMARY)
            run(session, "and in Q2?")
            assert "tools" not in llm.chat_requests()[-1].body
        finally:
            session.close()


def test_a_code_block_without_a_tool_call_is_a_step_anyway(
    session: Session, llm: LLMServer
) -> None:
    llm.script(f"Let me check.\n```python\n{STEP_1}\n```", SUMMARY)
    events, done = run(session)
    assert steps(events) == [STEP_1] and isinstance(done, Done)


def test_silent_failure_is_named_to_the_model(session: Session, llm: LLMServer) -> None:
    empty = "result = sales[sales['quarter'] == 'Q4']"
    llm.script(Reply(tool_calls=[tool_call("run_python", code=empty)]), SUMMARY)
    events, _done = run(session)
    (finished,) = [e for e in events if isinstance(e, StepFinished)]
    assert finished.outcome == "ok" and "empty (0 rows)" in finished.notes[0]
    assert "Warning: `result` is empty (0 rows)" in tool_messages(llm.chat_requests()[1])[0]


def test_describe_and_list_frames_run_no_code(session: Session, llm: LLMServer) -> None:
    llm.script(
        Reply(tool_calls=[tool_call("list_frames"), tool_call("describe_frame", name="sales")]),
        SUMMARY,
    )
    events, done = run(session)
    assert steps(events) == [] and isinstance(done, Done)
    listed, described = tool_messages(llm.chat_requests()[1])
    assert "sales: DataFrame of shape (4, 4)" in listed
    assert "margin" in described
    assert [c.cell_type for c in done.cells] == ["markdown"]


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"agent_max_steps": 2}, "the step budget (2 steps) ran out"),
        ({"agent_max_tokens": 50}, "the token budget (50 tokens) ran out"),
    ],
)
def test_budgets_end_the_run_with_the_summary_so_far(
    session: Session, llm: LLMServer, settings: dict[str, int], said: str
) -> None:
    for name, value in settings.items():
        setattr(session.config, name, value)
    llm.script(
        *[
            Reply(
                text=f"Looking at part {i}.",
                tool_calls=[tool_call("run_python", code=f"result = {i}")],
                completion_tokens=30,
            )
            for i in range(1, 5)
        ]
    )
    events, done = run(session)
    assert isinstance(done, Done), done
    assert done.ended_by == said
    assert said in done.explanation and "step 1 worked" in done.explanation
    assert [c.source.strip() for c in done.cells[1:]] == [
        f"result = {i}" for i in range(1, len(steps(events)) + 1)
    ]
    assert len(steps(events)) == (2 if "step" in said else 1)


def test_time_budget_stops_a_slow_step_and_keeps_what_was_done(
    session: Session, llm: LLMServer
) -> None:
    session.config.agent_timeout = 4.0
    llm.script(
        Reply(tool_calls=[tool_call("run_python", code="result = 1")]),
        Reply(tool_calls=[tool_call("run_python", code="import time\ntime.sleep(60)")]),
    )
    _events, done = run(session)
    assert isinstance(done, Done), done
    assert done.ended_by == "the time budget (4 s) ran out"
    assert done.elapsed < 20
    assert [c.source.strip() for c in done.cells[1:]] == ["result = 1"]


def test_stop_in_the_middle_keeps_the_steps_done(session: Session, llm: LLMServer) -> None:
    llm.script(
        Reply(tool_calls=[tool_call("run_python", code=STEP_1)]),
        Reply(text="Next step", chunk_size=4, chunk_delay=0.5),  # slow: Stop lands here
    )
    cancel = threading.Event()
    events: list[Event] = []
    for event in session.ask("q?", AskOptions(frames=("sales",)), cancel=cancel):
        events.append(event)
        if isinstance(event, StepFinished):
            cancel.set()
    done = events[-1]
    assert isinstance(done, Done), done
    assert done.ended_by == "stopped by the user"
    assert [c.source.strip() for c in done.cells[1:]] == [STEP_1]
    assert done.elapsed < 5  # not the 10 s the slow answer would take
    assert not session.busy


def test_each_step_approval_run_skip_stop(session: Session, llm: LLMServer) -> None:
    session.config.agent_approval = "each-step"
    llm.script(
        Reply(tool_calls=[tool_call("run_python", code="print('step one ran')\nresult = 1")]),
        Reply(tool_calls=[tool_call("run_python", code="print('step two ran')\nresult = 2")]),
        Reply(tool_calls=[tool_call("run_python", code="print('step three ran')")]),
    )
    choices = iter(["run", "skip", "stop"])
    events: list[Event] = []
    for event in session.ask("q?", AskOptions(frames=("sales",))):
        events.append(event)
        if isinstance(event, StepApproval):
            session.step_gate.decide(next(choices))
    done = events[-1]
    assert isinstance(done, Done) and done.ended_by == "stopped by the user"
    printed = "".join(str(e.data) for e in events if isinstance(e, Output))
    assert "step one ran" in printed
    assert "step two ran" not in printed and "step three ran" not in printed
    finished = [e.outcome for e in events if isinstance(e, StepFinished)]
    assert finished == ["ok", "skipped"]
    assert "skipped step 2" in tool_messages(llm.chat_requests()[2])[-1]
    assert [c.source.strip() for c in done.cells[1:]] == ["print('step one ran')\nresult = 1"]


def test_schema_privacy_sends_no_values(session: Session, llm: LLMServer) -> None:
    llm.script(
        Reply(
            tool_calls=[
                tool_call(
                    "run_python",
                    code="print(sales['customer'].tolist())\nresult = sales.head(2)",
                )
            ]
        ),
        Reply(tool_calls=[tool_call("run_python", code="float(sales['customer'][0])")]),
        Reply(tool_calls=[tool_call("describe_frame", name="sales")]),
        SUMMARY,
    )
    _events, done = run(session, "why did margins fall?", privacy="schema")
    assert isinstance(done, Done), done
    sent = json.dumps([r.body for r in llm.chat_requests()])
    for value in ("Alice", "Bob Smith", "0.31", "0.12", "North", "Q3"):
        assert value not in sent, value
    assert "DataFrame of shape (2 x 4)" in sent and "ValueError" in sent


def test_into_binds_the_last_working_steps_result(session: Session, llm: LLMServer) -> None:
    llm.script(
        Reply(tool_calls=[tool_call("run_python", code=STEP_1)]),
        Reply(tool_calls=[tool_call("run_python", code="result = undefined_name")]),
        SUMMARY,
    )
    _events, done = run(session, into="by_region")
    assert isinstance(done, Done) and done.into == "by_region"
    assert session.namespace["by_region"].round(3).to_dict() == {
        "East": 0.25,
        "North": 0.18,
        "South": 0.12,
    }


def test_history_keeps_each_step_and_stats_count_the_run(session: Session, llm: LLMServer) -> None:
    llm.script(
        Reply(tool_calls=[tool_call("run_python", code=STEP_1)], completion_tokens=7),
        Reply(tool_calls=[tool_call("run_python", code=STEP_2_BROKEN)], completion_tokens=7),
        Reply(text=SUMMARY, completion_tokens=7),
    )
    _, done = run(session)
    assert isinstance(done, Done)
    history = session.history
    assert history is not None
    (turn,) = history.recent()
    assert turn.outcome == "proposed" and turn.answer == SUMMARY
    rows = history.steps(turn.id or 0)
    assert [(r.step, r.outcome) for r in rows] == [(1, "ok"), (2, "failed")]
    assert rows[0].code.strip() == STEP_1 and "KeyError" in rows[1].error
    stats = session.metrics.snapshot()
    assert (stats.agent_runs, stats.agent_steps) == (1, 2)
    assert stats.agent_tokens_out == 21 and stats.agent_cost_usd is not None
    assert "| agent runs / steps | 1 / 2 |" in stats._repr_markdown_()


def test_a_broken_endpoint_ends_in_one_clear_failure(session: Session, llm: LLMServer) -> None:
    llm.script(Reply(status=500, error_message="overloaded"))
    _events, failed = run(session)
    assert isinstance(failed, Failed) and "overloaded" in failed.error.message
    assert not session.busy


def test_history_database_of_version_2_gains_the_steps_table(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite3"
    store.History(path).close()
    with sqlite3.connect(path) as conn:  # make it look like a version-2 file
        conn.execute("DROP TABLE steps")
        conn.execute("PRAGMA user_version = 2")
    history = store.History(path)
    assert history.steps(1) == []
    history.close()
