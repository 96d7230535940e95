"""Agent steps summarised for the model: reports, silent failures, privacy, budgets, moves."""

from __future__ import annotations

import json
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from dataagent_jupyter.agent import child_report
from dataagent_jupyter.agent.moves import (
    BadMove,
    DescribeFrame,
    Finish,
    ListFrames,
    RunStep,
    read_moves,
)
from dataagent_jupyter.agent.steps import (
    MAX_REPORT_CHARS,
    ReportError,
    StepOutcome,
    parse_report,
    report_request,
    silent_failures,
    step_message,
)
from dataagent_jupyter.llm import ChatResponse, ToolCall


def reply_of(text: str) -> dict[str, Any]:
    """What a kernel's user_expressions reply holds for an expression returning ``text``."""
    return {"report": {"status": "ok", "data": {"text/plain": text}, "metadata": {}}}


def outcome_of(code: str, namespace: dict[str, Any], stdout: str = "") -> StepOutcome:
    """Run ``code`` for real in ``namespace``, then report on it as the child would."""
    exec(code, namespace)
    text = repr(child_report.report(namespace))
    return StepOutcome(code, stdout, None, parse_report(reply_of(text)))


@pytest.fixture(autouse=True)
def _close_figures() -> Any:
    yield
    plt.close("all")


SALES = pd.DataFrame(
    {"region": ["N", "S", "N", "E"], "amount": [10.0, 20.0, 30.0, 40.0], "secret": ["Alice"] * 4}
)


def test_a_frame_result_is_summarised_with_shape_dtypes_and_first_rows() -> None:
    ns = {"sales": SALES.copy()}
    outcome = outcome_of("result = sales.groupby('region', as_index=False)['amount'].sum()", ns)
    text = step_message(outcome, step=2, inputs={"sales": 4}, privacy="sample", budget_chars=2000)
    assert text.startswith("Step 2 ran without error.")
    assert "DataFrame of shape (3 x 2)" in text
    assert "amount: float64" in text
    assert "40.0" in text  # the first rows are there
    assert "Warning" not in text


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("result = sales[sales['amount'] > 1000]", "`result` is empty (0 rows)"),
        (
            "result = sales.assign(ratio=np.nan)",
            "column(s) 'ratio' are all missing",
        ),
        ("result = sales['amount'].where(sales['amount'] < 0)", "`result` is all missing"),
        ("result = float('nan')", "`result` is missing"),
        (
            "lookup = pd.DataFrame({'region': ['N', 'N', 'S'], 'm': [1, 2, 3]})\n"
            "joined = sales.merge(lookup, on='region')\n"
            "joined2 = joined.merge(lookup, on='region')\nresult = joined2['m_x'].sum()",
            "more than any input frame (4)",
        ),
        (
            "fig, ax = plt.subplots()\nax.set_title('Margin by month')\nresult = 1",
            "the chart 'Margin by month' has nothing drawn on it",
        ),
    ],
)
def test_silent_failures_are_named(code: str, expected: str) -> None:
    ns: dict[str, Any] = {"sales": SALES.copy(), "np": np, "pd": pd, "plt": plt}
    outcome = outcome_of(code, ns)
    notes = silent_failures(outcome, {"sales": 4})
    assert len(notes) == 1 and expected in notes[0], notes
    text = step_message(outcome, step=1, inputs={"sales": 4}, privacy="sample", budget_chars=2000)
    assert "Warning: " + notes[0] in text


def test_a_chart_is_described_not_sent() -> None:
    ns: dict[str, Any] = {"sales": SALES.copy(), "plt": plt}
    outcome = outcome_of(
        "fig, ax = plt.subplots()\nax.bar(sales['region'], sales['amount'])\n"
        "ax.set_title('Sales by region')\nax.set_xlabel('region')\nax.set_ylabel('EUR')\n"
        "result = fig",
        ns,
    )
    text = step_message(outcome, step=1, inputs={"sales": 4}, privacy="sample", budget_chars=2000)
    assert "title 'Sales by region', x label 'region', y label 'EUR', 4 artists" in text
    assert "image/png" not in text and "Warning" not in text


def test_schema_privacy_sends_shapes_dtypes_and_error_types_only() -> None:
    ns: dict[str, Any] = {"sales": SALES.copy(), "plt": plt}
    code = "print(sales['secret'][0])\nfig, ax = plt.subplots()\nax.set_title('Alice')\n"
    code += "ax.plot([1, 2])\nresult = sales"
    outcome = outcome_of(code, ns, stdout="Alice\n")
    text = step_message(outcome, step=1, inputs={"sales": 4}, privacy="schema", budget_chars=2000)
    assert "Alice" not in text and "40.0" not in text
    assert "DataFrame of shape (4 x 3)" in text and "secret: " in text
    assert "printed 1 line(s) (not sent" in text
    failed = StepOutcome("x", "", ("ValueError", "could not convert 'Alice' to float"))
    text = step_message(failed, step=3, inputs={}, privacy="schema", budget_chars=2000)
    assert "ValueError" in text and "Alice" not in text


def test_step_message_fits_the_budget_and_keeps_the_warnings() -> None:
    ns = {"sales": SALES.copy()}
    outcome = outcome_of("result = sales[sales['amount'] > 1000]", ns, stdout="x" * 50_000)
    text = step_message(outcome, step=1, inputs={"sales": 4}, privacy="sample", budget_chars=600)
    assert len(text) <= 600
    assert "Warning: `result` is empty" in text and "characters cut" in text


def test_an_error_goes_back_as_type_and_message() -> None:
    failed = StepOutcome("x", "partial\n", ("KeyError", "'regionn'"))
    text = step_message(failed, step=4, inputs={}, privacy="sample", budget_chars=2000)
    assert text.startswith("Step 4 failed: KeyError: 'regionn'")
    assert "partial" in text


@pytest.mark.parametrize(
    "reply",
    [
        None,
        {"report": {"status": "error", "ename": "NameError"}},
        reply_of("not json"),
        reply_of(json.dumps([1, 2])),
        reply_of(json.dumps({"result": {"type": 3}})),
        reply_of(json.dumps({"result": {"type": "DataFrame", "shape": [-1, 2]}})),
        reply_of(json.dumps({"figures": [{"artists": True}]})),
        reply_of(json.dumps({"frames": {"a": "many"}})),
        reply_of(json.dumps({"result": {"type": "str", "repr": "x" * MAX_REPORT_CHARS}})),
        reply_of("__import__('os').getcwd()"),
        reply_of(repr(json.dumps({"result": None}))),  # a quoted literal is not evaluated
    ],
)
def test_a_malformed_or_hostile_report_is_refused(reply: Any) -> None:
    with pytest.raises(ReportError):
        parse_report(reply)


def test_report_strings_are_cut_to_size() -> None:
    report = parse_report(reply_of(json.dumps({"result": {"type": "str", "repr": "y" * 10_000}})))
    assert report.result is not None and len(report.result.repr) < 2_100


def test_report_request_installs_the_reporter_once_per_child() -> None:
    import sys

    install, expressions = report_request()
    namespace: dict[str, Any] = {"result": 41}
    sys.modules.pop("_dataagent_step", None)
    try:
        exec(install, namespace)
        first = sys.modules["_dataagent_step"]
        exec(install, namespace)
        assert sys.modules["_dataagent_step"] is first
        value = repr(eval(expressions["report"], namespace))
        assert parse_report(reply_of(value)).result.repr == "41"  # type: ignore[union-attr]
        assert "_dataagent_install_step" not in namespace
    finally:
        sys.modules.pop("_dataagent_step", None)


# --- reading the model's moves ---------------------------------------------------------------


def call(name: str, arguments: str) -> ToolCall:
    return ToolCall(id=f"id-{name}", name=name, arguments=arguments)


def test_tool_calls_become_moves() -> None:
    response = ChatResponse(
        text="",
        tool_calls=(
            call("run_python", json.dumps({"code": "result = 1"})),
            call("describe_frame", '{"name": "sales"}'),
            call("list_frames", ""),
        ),
    )
    run, describe, listing = read_moves(response)
    assert isinstance(run, RunStep) and run.code == "result = 1\n"
    assert isinstance(describe, DescribeFrame) and describe.name == "sales"
    assert isinstance(listing, ListFrames)


@pytest.mark.parametrize(
    ("name", "arguments", "reason"),
    [
        ("run_python", "{not json", "not valid JSON"),
        ("run_python", "[1]", "JSON object"),
        ("run_python", '{"code": ""}', "non-empty 'code'"),
        ("run_python", '{"code": "def f(:"}', "does not parse"),
        ("rm_rf", "{}", "there is no tool 'rm_rf'"),
        ("describe_frame", "{}", "needs a 'name'"),
    ],
)
def test_bad_tool_calls_are_explained_to_the_model(name: str, arguments: str, reason: str) -> None:
    (move,) = read_moves(ChatResponse(text="", tool_calls=(call(name, arguments),)))
    assert isinstance(move, BadMove) and reason in move.reason and move.call is not None


def test_plain_messages_a_code_block_is_a_step_and_prose_is_the_summary() -> None:
    (step,) = read_moves(ChatResponse(text="First the totals.\n```python\nresult = 1\n```"))
    assert isinstance(step, RunStep) and step.explanation == "First the totals."
    (final,) = read_moves(ChatResponse(text="## Findings\nMargins fell in the **North**."))
    assert isinstance(final, Finish) and final.summary.startswith("## Findings")
    (broken,) = read_moves(ChatResponse(text="```python\nresult = (\n```"))
    assert isinstance(broken, BadMove) and "does not parse" in broken.reason


# --- engine frames: the same report, read through each engine's own cheap operations ------


@pytest.mark.engines
def test_a_polars_result_is_summarised_with_shape_and_polars_dtypes(pl: Any) -> None:
    ns = {"orders": pl.DataFrame({"city": ["Oslo", "Lima", "Oslo"], "amount": [3.0, 4.5, 1.0]})}
    outcome = outcome_of(
        "result = orders.group_by('city').agg(pl.col('amount').sum())", ns | {"pl": pl}
    )
    text = step_message(outcome, step=1, inputs={"orders": 3}, privacy="sample", budget_chars=2000)
    assert (
        "`result` is a polars DataFrame of shape (2 x 2); dtypes: city: String, amount: Float64."
        in text
    )
    assert "Lima" in text and "4.5" in text  # the first rows, as polars prints them
    assert "Warning" not in text
    schema = step_message(
        outcome, step=1, inputs={"orders": 3}, privacy="schema", budget_chars=2000
    )
    assert "polars DataFrame of shape (2 x 2)" in schema
    assert "Lima" not in schema and "4.5" not in schema


@pytest.mark.engines
@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("result = orders.filter(pl.col('amount') > 100)", "`result` is empty (0 rows)"),
        (
            "result = orders.with_columns(pl.lit(None, dtype=pl.Float64).alias('ratio'))",
            "column(s) 'ratio' are all missing",
        ),
        ("result = orders['amount'].shift(5)", "`result` is all missing"),
        (
            "lookup = pl.DataFrame({'city': ['Oslo', 'Oslo', 'Lima'], 'm': [1, 2, 3]})\n"
            "joined = orders.join(lookup, on='city')\nresult = joined.height",
            "after the merge `joined` has 5 rows, more than any input frame (3)",
        ),
    ],
)
def test_silent_failures_are_named_on_polars_results(pl: Any, code: str, expected: str) -> None:
    ns = {
        "pl": pl,
        "orders": pl.DataFrame({"city": ["Oslo", "Lima", "Oslo"], "amount": [3.0, 4.5, 1.0]}),
    }
    notes = silent_failures(outcome_of(code, ns), {"orders": 3})
    assert len(notes) == 1 and expected in notes[0], notes


@pytest.mark.engines
def test_a_lazy_result_is_reported_from_its_schema_and_never_collected(
    pl: Any, tmp_path: Any
) -> None:
    path = tmp_path / "orders.parquet"
    pl.DataFrame({"city": ["Oslo", "Lima"], "amount": [3.0, 4.5]}).write_parquet(path)
    ns = {"pl": pl, "path": str(path)}
    outcome = outcome_of("result = pl.scan_parquet(path).filter(pl.col('amount') > 100)", ns)
    path.unlink()  # collecting the plan now would fail: the report must not try
    text = step_message(outcome, step=1, inputs={}, privacy="sample", budget_chars=2000)
    assert (
        "`result` is a polars LazyFrame of shape (unknown x 2) (lazy: not collected); "
        "dtypes: city: String, amount: Float64." in text
    )
    assert "Warning" not in text and "Oslo" not in text


@pytest.mark.engines
def test_a_duckdb_relation_is_summarised_from_a_limited_fetch(duckdb: Any) -> None:
    con = duckdb.connect()
    ns = {"con": con}
    outcome = outcome_of(
        "result = con.sql(\"SELECT range AS id, 'shop ' || (range % 4) AS shop, NULL::DOUBLE AS x "
        'FROM range(10000000000)")',  # ten billion rows: only a LIMIT can finish here
        ns,
    )
    text = step_message(outcome, step=1, inputs={}, privacy="sample", budget_chars=2000)
    assert (
        "`result` is a DuckDB relation of shape (unknown x 3); "
        "dtypes: id: BIGINT, shop: VARCHAR, x: DOUBLE." in text
    )
    assert "shop 3" in text  # first rows
    assert "Warning" not in text  # the NULL column is not known to be all NULL past the fetch
    empty = outcome_of(
        "result = con.sql('SELECT 1 AS n, NULL AS x FROM range(3) WHERE range < 2')", ns
    )
    text = step_message(empty, step=2, inputs={}, privacy="schema", budget_chars=2000)
    assert "DuckDB relation of shape (2 x 2)" in text
    assert "Warning: in `result`, column(s) 'x' are all missing" in text
    none = outcome_of("result = con.sql('SELECT 1 AS n FROM range(3) WHERE range > 5')", ns)
    assert silent_failures(none, {})[0].startswith("`result` is empty (0 rows)")


def test_the_report_imports_no_engine_the_step_did_not_import() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, types\n"
        f"src = open({child_report.__file__!r}).read()\n"
        "m = types.ModuleType('r'); exec(compile(src, 'r', 'exec'), m.__dict__)\n"
        "print(m.report({'result': [1, 2]}))\n"
        "print(sorted({'pandas', 'polars', 'duckdb', 'matplotlib'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    report, imported = out.stdout.splitlines()
    assert json.loads(report)["result"]["repr"] == "[1, 2]"
    assert imported == "[]"
