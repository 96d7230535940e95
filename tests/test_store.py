"""History, export, metrics and logging, on real SQLite files and real processes."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from dataagent_jupyter import errors
from dataagent_jupyter.events import Done, Failed, Usage
from dataagent_jupyter.store import (
    DB_NAME,
    History,
    HistoryTable,
    Metrics,
    Turn,
    configure_logging,
    export_conversation,
    in_notebook_order,
    notebook_cell_ids,
    price_table,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "analysis.ipynb"


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def run(code: str, *args: str) -> str:
    done = subprocess.run(
        [*python(code), *args],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


# --- history -----------------------------------------------------------------------------

KERNEL = """
    import sys
    from dataagent_jupyter.store import History, Turn
    history = History.open(sys.argv[1])
    conversation = history.current_conversation("analysis.ipynb")
    for question in sys.argv[2:]:
        history.add(Turn(notebook="analysis.ipynb", conversation=conversation,
                         question=question, code="result = df.x.sum()", outcome="ran",
                         result="42"))
    history.close()
    print(conversation)
"""


def test_conversation_continues_after_kernel_restart(tmp_path: Path) -> None:
    first = run(KERNEL, str(tmp_path), "total of x?", "and its mean?")
    # The kernel restarted: a new process for the same notebook picks the conversation up.
    again = run(KERNEL, str(tmp_path), "per group?")
    assert again == first

    history = History.open(tmp_path)
    assert history.path == tmp_path / DB_NAME
    turns = history.conversation(first)
    assert [t.question for t in turns] == ["total of x?", "and its mean?", "per group?"]
    assert all(t.result == "42" and t.outcome == "ran" for t in turns)
    assert history.current_conversation(NOTEBOOK) == first
    assert history.current_conversation("other.ipynb") != first

    # %dataagent reset: a new conversation, the record kept, and the next kernel uses it.
    fresh = history.new_conversation(NOTEBOOK)
    assert fresh != first
    assert run(KERNEL, str(tmp_path), "start over") == fresh
    assert [t.question for t in history.conversation(fresh)] == ["start over"]
    assert len(history.recent(notebook=NOTEBOOK)) == 4
    history.close()


def test_turn_round_trips_every_field(tmp_path: Path) -> None:
    with History.open(tmp_path) as history:
        conversation = history.current_conversation(NOTEBOOK)
        turn = Turn(
            notebook=NOTEBOOK,
            conversation=conversation,
            question="Which region sells most?\nBy revenue.",
            model="gpt-4o-mini",
            frames={"sales": "fp-1", "regions": "fp-2"},
            prompt_tokens=812,
            answer="Group by region and sum.",
            code="result = sales.groupby('region').revenue.sum().idxmax()",
            result="'north'",
            outcome="failed",
            error="KeyError: 'revenue'",
            tokens_in=900,
            tokens_out=64,
            latency=1.25,
            cached=True,
            attempts=3,
            cell="c0ffee-cell",
            turn_id="0123456789abcdef",
            time=1_700_000_000.5,
        )
        turn_id = history.add(turn)
        [stored] = history.recent()
    assert stored.id == turn_id
    assert stored == Turn(**{**turn.__dict__, "id": turn_id})


def test_a_rerun_cell_replaces_its_turn_where_it_stood(tmp_path: Path) -> None:
    with History.open(tmp_path) as history:
        conversation = history.current_conversation(NOTEBOOK)

        def add(question: str, cell: str | None) -> None:
            history.add(
                Turn(notebook=NOTEBOOK, conversation=conversation, question=question, cell=cell)
            )

        add("a?", "cell-a")
        add("b?", "cell-b")
        add("from the chat", None)
        add("a again?", "cell-a")  # the user re-ran the first cell
        add("c?", "cell-c")
        current = history.current_turns(conversation)
        assert [t.question for t in current] == ["a again?", "b?", "from the chat", "c?"]
        # every version stays on record for %dataagent history
        assert len(history.conversation(conversation)) == 5


def test_an_older_history_file_is_upgraded_keeping_its_turns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / DB_NAME
    conversation = "conv-1"
    # a file as version 1 wrote it: turns without a cell
    conn = sqlite3.connect(path)
    conn.executescript(_V1_SCHEMA)
    conn.execute(
        "INSERT INTO turns (time, notebook, conversation, frames, question, model, "
        "prompt_tokens, answer, code, result, outcome, error, tokens_in, tokens_out, latency, "
        "cached, attempts) VALUES (1, ?, ?, '{}', 'old one?', 'm', 0, '', '', '', 'proposed', "
        "NULL, 0, 0, 0, 0, 1)",
        (NOTEBOOK, conversation),
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with History(path) as history:
        [old] = history.conversation(conversation)
        assert old.question == "old one?" and old.cell is None
        history.add(
            Turn(notebook=NOTEBOOK, conversation=conversation, question="new?", cell="cell-1")
        )
        assert [t.cell for t in history.conversation(conversation)] == [None, "cell-1"]


_V1_SCHEMA = """
CREATE TABLE conversations (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    notebook TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE turns (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL,
    notebook TEXT NOT NULL, conversation TEXT NOT NULL, frames TEXT NOT NULL,
    question TEXT NOT NULL, model TEXT NOT NULL, prompt_tokens INTEGER NOT NULL,
    answer TEXT NOT NULL, code TEXT NOT NULL, result TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('inserted', 'ran', 'failed', 'proposed')),
    error TEXT, tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL, latency REAL NOT NULL,
    cached INTEGER NOT NULL, attempts INTEGER NOT NULL);
"""


def test_recent_is_newest_last_and_per_notebook(tmp_path: Path) -> None:
    with History.open(tmp_path) as history:
        for n in range(5):
            history.add(
                Turn(notebook=f"nb{n % 2}.ipynb", conversation=f"c{n % 2}", question=f"q{n}")
            )
        assert [t.question for t in history.recent(limit=3)] == ["q2", "q3", "q4"]
        assert [t.question for t in history.recent(notebook="nb0.ipynb")] == ["q0", "q2", "q4"]
        assert history.recent(limit=0) == []
        # a conversation id made up by the caller is adopted for that notebook
        assert history.current_conversation("nb1.ipynb") == "c1"


def test_turn_from_events() -> None:
    done = Done(
        mode="run",
        outcome="ran",
        code="result = 1",
        explanation="One.",
        model="gpt-4o-mini-2024-07-18",
        usage=Usage(10, 5),
        elapsed=2.0,
        attempts=2,
        cached=False,
    )
    turn = Turn.from_event(
        done,
        notebook=NOTEBOOK,
        conversation="c",
        question="q",
        model="gpt-4o-mini",
        frames={"df": "f"},
        billed=Usage(7, 3),
        result="1",
    )
    assert (turn.model, turn.tokens_in, turn.tokens_out, turn.attempts) == (
        "gpt-4o-mini-2024-07-18",
        7,
        3,
        2,
    )
    failed = Failed(errors.LLMTimeout("no answer in 60 s."), code="", elapsed=60.0)
    turn = Turn.from_event(failed, notebook=NOTEBOOK, conversation="c", question="q", model="m")
    assert (turn.outcome, turn.error, turn.latency) == ("failed", "no answer in 60 s.", 60.0)
    with pytest.raises(ValueError):
        Turn(notebook=NOTEBOOK, conversation="c", question="q", outcome="exploded")  # type: ignore[arg-type]


CRASHING_KERNEL = """
    import sys, time
    from dataagent_jupyter.store import History, Turn
    history = History.open(sys.argv[1])
    conversation = history.current_conversation("analysis.ipynb")
    for n in range(3):
        history.add(Turn(notebook="analysis.ipynb", conversation=conversation, question=f"q{n}"))

    def stall(statement):
        # The INSERT has run; the kernel dies before COMMIT does.
        if statement.strip().upper() == "COMMIT":
            print("inside the transaction", flush=True)
            time.sleep(120)

    history.database._conn.set_trace_callback(stall)
    # Big enough that SQLite spills uncommitted pages into the WAL before COMMIT.
    history.add(Turn(notebook="analysis.ipynb", conversation=conversation,
                     question="never stored", answer="x" * 5_000_000))
"""


def test_crash_mid_write_leaves_earlier_turns(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [*python(CRASHING_KERNEL), str(tmp_path)],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "inside the transaction", child.stderr
        # While the writer holds its transaction, another kernel still opens and reads.
        with History.open(tmp_path) as reader:
            assert [t.question for t in reader.recent()] == ["q0", "q1", "q2"]
        assert (tmp_path / f"{DB_NAME}-wal").stat().st_size > 1_000_000
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()  # type: ignore[union-attr]
        child.stderr.close()  # type: ignore[union-attr]
    assert child.returncode == -signal.SIGKILL

    with History.open(tmp_path) as history:
        turns = history.recent()
        assert [t.question for t in turns] == ["q0", "q1", "q2"]
        # the dead writer's lock is gone: the next kernel writes at once
        history.add(Turn(notebook=NOTEBOOK, conversation=turns[0].conversation, question="q3"))
        assert len(history.conversation(turns[0].conversation)) == 4
    assert integrity(tmp_path / DB_NAME) == "ok"


WRITER = """
    import sys
    sys.stdin.readline()  # both writers start together, before the database exists
    from dataagent_jupyter.store import History, Turn
    history = History.open(sys.argv[1])
    conversation = history.current_conversation("shared.ipynb")
    for n in range(int(sys.argv[3])):
        history.add(Turn(notebook="shared.ipynb", conversation=conversation,
                         question=f"{sys.argv[2]}-{n}", tokens_in=n))
    print(conversation)
"""


def test_two_processes_write_at_once(tmp_path: Path) -> None:
    per_writer = 150
    writers = [
        subprocess.Popen(
            [*python(WRITER), str(tmp_path), name, str(per_writer)],
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    outputs = [w.communicate("go\n", timeout=60) for w in writers]
    assert [w.returncode for w in writers] == [0, 0], [err for _, err in outputs]
    conversations = {out.strip() for out, _ in outputs}
    assert len(conversations) == 1  # both found (or made) the same conversation

    with History.open(tmp_path) as history:
        turns = history.conversation(conversations.pop())
    assert len(turns) == 2 * per_writer
    for name in ("a", "b"):
        mine = [t.question for t in turns if t.question.startswith(f"{name}-")]
        assert mine == [f"{name}-{n}" for n in range(per_writer)]  # all there, in order
    assert integrity(tmp_path / DB_NAME) == "ok"


def test_damaged_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(errors.StoreError) as caught:
        History.open(tmp_path)
    assert str(tmp_path / DB_NAME) in caught.value.message
    assert "Move the file away" in (caught.value.hint or "")


def test_history_table_renders_and_escapes() -> None:
    turn = Turn(
        notebook=NOTEBOOK,
        conversation="c",
        question="a | b <script>alert(1)</script>",
        frames={"sales": "f"},
        model="gpt-4o-mini",
        outcome="failed",
        error="KeyError: 'x'",
        tokens_in=10,
        tokens_out=2,
        latency=1.5,
        id=7,
    )
    table = HistoryTable([turn])
    page = table._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "failed: KeyError" in page and "sales" in page
    markdown = table._repr_markdown_()
    assert "a \\| b" in markdown and "| 7 |" in markdown and "10/2" in markdown
    assert "No questions" in HistoryTable([])._repr_markdown_()


# --- export ------------------------------------------------------------------------------


def _conversation() -> list[Turn]:
    return [
        Turn(
            notebook=NOTEBOOK,
            conversation="c",
            question="Total revenue per region?",
            answer="Group and sum.",
            code="result = sales.groupby('region').revenue.sum()",
            outcome="ran",
            model="gpt-4o-mini",
        ),
        Turn(
            notebook=NOTEBOOK,
            conversation="c",
            question="Show it as a bar chart",
            answer="A bar chart.",
            code="ax = result.plot.bar()\ns = '''```'''",
            outcome="failed",
            error="NameError: name 'result' is not defined",
        ),
        Turn(
            notebook=NOTEBOOK, conversation="c", question="What is a quantile?", outcome="proposed"
        ),
    ]


def test_export_notebook_round_trip(tmp_path: Path) -> None:
    turns = _conversation()
    path = export_conversation(turns, tmp_path / "out" / "conversation.ipynb")
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert code == [turns[0].code, turns[1].code]
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert markdown[0].startswith("**Question:** Total revenue per region?")
    assert any("This code failed" in m and "NameError" in m for m in markdown)
    assert any("What is a quantile?" in m for m in markdown)
    assert nb.metadata.kernelspec.name == "python3"


def test_export_follows_notebook_order(tmp_path: Path, monkeypatch) -> None:
    # the user asked in cells a, b, then in the chat, then in c, which sits above a
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"%%ask\n{q}?") for q in "cab"]
    for cell, cell_id in zip(nb.cells, ("cell-c", "cell-a", "cell-b"), strict=True):
        cell.id = cell_id
    nbformat.write(nb, tmp_path / NOTEBOOK)
    monkeypatch.chdir(tmp_path)
    assert notebook_cell_ids(NOTEBOOK) == ["cell-c", "cell-a", "cell-b"]
    assert notebook_cell_ids("ipython:/somewhere") == []

    with History.open(tmp_path / "data") as history:
        conversation = history.current_conversation(NOTEBOOK)
        for question, cell in (("a?", "cell-a"), ("b?", "cell-b"), ("chat", None)):
            history.add(
                Turn(
                    notebook=NOTEBOOK,
                    conversation=conversation,
                    question=question,
                    code="x",
                    cell=cell,
                )
            )
        history.add(
            Turn(
                notebook=NOTEBOOK, conversation=conversation, question="c?", code="x", cell="cell-c"
            )
        )
        history.add(
            Turn(
                notebook=NOTEBOOK,
                conversation=conversation,
                question="a again?",
                code="x",
                cell="cell-a",
            )
        )
        turns = in_notebook_order(history.current_turns(conversation), notebook_cell_ids(NOTEBOOK))
    assert [t.question for t in turns] == ["c?", "a again?", "b?", "chat"]
    text = export_conversation(turns, tmp_path / "conversation.md").read_text()
    assert text.index("## 1. c?") < text.index("## 2. a again?") < text.index("## 4. chat")
    assert "## 1. a?" not in text and "a?\n" not in text.split("## 2.")[0]


def test_export_markdown(tmp_path: Path) -> None:
    path = export_conversation(_conversation(), tmp_path / "conversation.md")
    text = path.read_text()
    assert "## 1. Total revenue per region?" in text
    assert "```python\nresult = sales.groupby('region').revenue.sum()\n```" in text
    # code that itself holds ``` gets a longer fence, so the block stays whole
    assert "````python\nax = result.plot.bar()\ns = '''```'''\n````" in text
    assert "**Failed:** NameError" in text


def test_export_refuses_unknown_format_and_empty(tmp_path: Path) -> None:
    with pytest.raises(errors.UsageError, match=r"\.md .*\.ipynb|\.ipynb"):
        export_conversation(_conversation(), tmp_path / "conversation.txt")
    with pytest.raises(errors.UsageError, match="nothing to export"):
        export_conversation([], tmp_path / "conversation.md")
    assert list(tmp_path.iterdir()) == []


# --- metrics -----------------------------------------------------------------------------


def test_metrics_figures_and_prices() -> None:
    metrics = Metrics(prices=lambda: {"local-llama": [0, 0]})
    for model, tokens_in, tokens_out, latency in [
        ("gpt-4o-mini-2024-07-18", 1000, 200, 1.0),
        ("gpt-4o-mini", 3000, 400, 3.0),
        ("local-llama", 500, 50, 2.0),
        ("gpt-4o-mini", 0, 0, 0.01),  # answered from the cache: nothing billed
    ]:
        metrics.record_question(
            Turn(
                notebook=NOTEBOOK,
                conversation="c",
                question="q",
                model=model,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                latency=latency,
            )
        )
    metrics.record_cache_hit()
    metrics.record_run(True)
    metrics.record_run(False)
    metrics.record_fix_attempt()
    stats = metrics.snapshot()
    assert (stats.questions, stats.cache_hits, stats.tokens_in, stats.tokens_out) == (
        4,
        1,
        4500,
        650,
    )
    assert (stats.runs, stats.run_failures, stats.fix_attempts) == (2, 1, 1)
    assert stats.latency_median == pytest.approx(1.5)
    assert stats.latency_p95 == 3.0
    # the dated snapshot name costs what gpt-4o-mini costs; the local model is free by config
    assert stats.cost_usd == pytest.approx((4000 * 0.15 + 600 * 0.60) / 1e6)
    assert stats.unpriced == ()
    assert "Approximate list prices" in stats._repr_markdown_()


def test_unknown_model_cost_is_unknown_not_zero() -> None:
    metrics = Metrics()
    metrics.record_question(
        Turn(notebook=NOTEBOOK, conversation="c", question="q", model="llama3.1", tokens_in=9)
    )
    stats = metrics.snapshot()
    assert stats.cost_usd is None and stats.unpriced == ("llama3.1",)
    assert "unknown (no price for llama3.1)" in stats._repr_markdown_()
    assert "unknown" in stats._repr_html_()
    assert "$0.0000" not in stats._repr_markdown_()
    empty = Metrics().snapshot()
    assert (empty.questions, empty.latency_median, empty.cost_usd) == (0, None, 0.0)


def test_bad_price_table_is_a_config_error() -> None:
    with pytest.raises(errors.ConfigError, match="two numbers"):
        price_table({"gpt-4o": "cheap"})
    with pytest.raises(errors.ConfigError):
        price_table({"gpt-4o": [1, -2]})
    assert price_table({"gpt-4o": (1, 2)})["gpt-4o"] == (1.0, 2.0)


# --- logging -----------------------------------------------------------------------------


def bare_logging(monkeypatch: pytest.MonkeyPatch) -> logging.Logger:
    """No handlers anywhere, as in a fresh kernel.

    Called inside the test: pytest puts its capture handlers on the root logger when the
    test body starts, after fixtures ran.
    """
    logger = logging.getLogger("dataagent_jupyter")
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "level", logger.level)
    return logger


def test_configure_logging_is_idempotent_and_follows_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    logger = bare_logging(monkeypatch)
    configure_logging("INFO")
    configure_logging("info")
    assert len(logger.handlers) == 1
    logging.getLogger("dataagent_jupyter.store").info("cache hit: ms=%.2f", 0.4)
    logging.getLogger("dataagent_jupyter.store").debug("not shown")
    err = capsys.readouterr().err
    assert "cache hit: ms=0.40" in err and "not shown" not in err
    configure_logging("WARNING")
    assert logger.level == logging.WARNING and len(logger.handlers) == 1
    with pytest.raises(errors.ConfigError, match="log level"):
        configure_logging("LOUD")


def test_configure_logging_leaves_an_app_configured_root_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logger = bare_logging(monkeypatch)
    logging.getLogger().addHandler(logging.NullHandler())
    configure_logging("DEBUG")
    assert logger.handlers == [] and logger.level == logging.DEBUG


def test_stored_frames_are_json(tmp_path: Path) -> None:
    with History.open(tmp_path) as history:
        history.add(Turn(notebook=NOTEBOOK, conversation="c", question="q", frames={"a": "1"}))
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        assert json.loads(conn.execute("SELECT frames FROM turns").fetchone()[0]) == {"a": "1"}
