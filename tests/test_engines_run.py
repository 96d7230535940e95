"""Run mode with engine frames, in a real kernel and a real sandbox child.

polars and DuckDB frames go to the child as Arrow and come back to life there as the same
kind of object, so the code written for the engine runs; Dask and Spark frames cannot
reach the sandbox: ``--run`` says so, ``--sample N`` runs on N rows the engine pulled.
Agent mode's steps run in the same child on the same objects, refused or sampled alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from kernel_helpers import Kernel, extension_kernel
from llm_server import LLMServer, Reply, code_answer, tool_call

pytestmark = [pytest.mark.kernel, pytest.mark.engines]


@pytest.fixture(scope="module")
def kernel(server: LLMServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    for engine in ("polars", "duckdb", "dask"):
        pytest.importorskip(engine)
    setup = (
        "%load_ext dataagent\n"
        "import pandas as pd, polars as pl, duckdb, dask.dataframe as dd\n"
        "orders = pl.DataFrame({'city': ['Oslo', 'Lima', 'Oslo'], 'amount': [3.0, 4.5, 1.0]})\n"
        "lazy_orders = orders.lazy().filter(pl.col('amount') > 2)\n"
        "con = duckdb.connect()\n"
        "visits = con.sql('SELECT range AS id, range % 4 AS shop FROM range(1000)')\n"
        "logs = dd.from_pandas(pd.DataFrame({'ms': [float(i) for i in range(100)]}),"
        " npartitions=4)"
    )
    with extension_kernel(server, setup, cwd=str(tmp_path_factory.mktemp("notebook"))) as k:
        yield k


def test_polars_frames_run_in_the_child_as_polars(kernel: Kernel, server: LLMServer) -> None:
    server.script(
        code_answer(
            "import polars as pl\n"
            "print(type(orders).__name__, type(lazy_orders).__name__)\n"
            "result = orders.group_by('city').agg(pl.col('amount').sum()).sort('city')\n"
            "print(result.to_dicts())\n"
            "print(lazy_orders.collect().height)"
        )
    )
    ex = kernel.execute("%%ask orders lazy_orders --run\namount per city?")
    assert ex.ok, ex.error
    assert "DataFrame LazyFrame" in ex.stdout
    assert "[{'city': 'Lima', 'amount': 4.5}, {'city': 'Oslo', 'amount': 4.0}]" in ex.stdout
    assert "\n2\n" in ex.stdout
    assert kernel.eval("'result' in globals()") == "False"


def test_duckdb_relation_runs_in_the_child_as_a_relation(kernel: Kernel, server: LLMServer) -> None:
    server.script(
        code_answer(
            "import duckdb\n"
            "print(type(visits).__name__)\n"
            "result = duckdb.sql('SELECT shop, count(*) AS n FROM visits GROUP BY shop "
            "ORDER BY shop').fetchall()\nprint(result)"
        )
    )
    ex = kernel.execute("%%ask visits --run\nvisits per shop?")
    assert ex.ok, ex.error
    assert "DuckDBPyRelation" in ex.stdout
    assert "[(0, 250), (1, 250), (2, 250), (3, 250)]" in ex.stdout


def test_run_on_a_dask_frame_says_the_cluster_is_unreachable(
    kernel: Kernel, server: LLMServer
) -> None:
    before = len(server.chat_requests())
    ex = kernel.execute("%%ask logs --run\nmean latency?")
    assert not ex.ok
    message = "\n".join(ex.error["traceback"])
    assert "logs is a Dask DataFrame in a cluster the sandbox cannot reach" in message
    assert "Ask without --run" in message and "--sample N" in message
    assert "Traceback" not in message
    assert len(server.chat_requests()) == before  # refused before asking the model


def test_sample_runs_on_rows_pulled_by_dask_and_says_so(kernel: Kernel, server: LLMServer) -> None:
    server.script(code_answer("print(type(logs).__name__, len(logs), logs['ms'].max())"))
    ex = kernel.execute("%%ask logs --run --sample 30\nmean latency?")
    assert ex.ok, ex.error
    assert "DataFrame 30 29.0" in ex.stdout
    assert "Running on a sample: the first 30 rows of logs (Dask DataFrame)" in ex.stdout
    system = server.chat_requests()[-1].messages[0]["content"]
    assert "it is a pandas DataFrame holding its first 30 rows" in system


def test_run_without_names_leaves_the_dask_frame_out(kernel: Kernel, server: LLMServer) -> None:
    server.script(code_answer("print('orders:', orders.height)"))
    ex = kernel.execute("%%ask --run\nhow many orders?")
    assert ex.ok, ex.error
    assert "orders: 3" in ex.stdout
    system = server.chat_requests()[-1].messages[0]["content"]
    assert "orders" in system and "logs" not in system


def test_a_lazy_frame_too_big_to_copy_is_refused_and_sample_limits_it(
    kernel: Kernel, server: LLMServer
) -> None:
    # five billion rows: were the relation run in full, this test would never end
    setup = kernel.execute(
        "huge = con.sql('SELECT range AS i, range % 7 AS k FROM range(5000000000)')\n"
        "pl.select(i=pl.int_range(0, 1_200_000)).write_parquet('big.parquet')\n"
        "scan = pl.scan_parquet('big.parquet')"
    )
    assert setup.ok, setup.error
    server.script(code_answer("print(duckdb.sql('SELECT count(*) FROM huge').fetchall())"))
    ex = kernel.execute("%%ask huge --run\nhow many rows?")
    assert not ex.ok
    message = "\n".join(ex.error["traceback"])
    assert "huge is a DuckDB relation whose result has more than 1,000,000 rows" in message
    assert "--sample N" in message and "Traceback" not in message
    server.script(code_answer("print(type(scan).__name__, scan.collect().height)"))
    ex = kernel.execute("%%ask scan --run\nhow many rows?")
    assert not ex.ok
    assert "scan is a polars LazyFrame whose result has more than 1,000,000 rows" in "\n".join(
        ex.error["traceback"]
    )

    # --sample N: the same kind of object in the child, limited to N rows, and said so
    server.script(
        code_answer(
            "import duckdb\n"
            "counted = duckdb.sql('SELECT count(*), max(i) FROM huge').fetchall()\n"
            "print(type(huge).__name__, counted)\n"
            "print(type(scan).__name__, scan.collect().height)"
        )
    )
    ex = kernel.execute("%%ask huge scan --run --sample 1000\nhow many rows?")
    assert ex.ok, server.chat_requests()[-1].messages[-1]["content"]
    assert "DuckDBPyRelation [(1000, 999)]" in ex.stdout
    assert "LazyFrame 1000" in ex.stdout
    assert "Running on a sample: the first 1,000 rows of huge (DuckDB relation)" in ex.stdout
    system = server.chat_requests()[-1].messages[0]["content"]
    assert "`scan` is the user's polars LazyFrame limited to its first 1,000 rows" in system
    # nothing of it stayed in the user's kernel: the frames are unchanged
    assert kernel.eval("type(huge).__name__, type(scan).__name__") == (
        "('DuckDBPyRelation', 'LazyFrame')"
    )


def test_into_brings_a_polars_result_back_as_pandas(kernel: Kernel, server: LLMServer) -> None:
    server.script(
        code_answer(
            "import polars as pl\n"
            "result = orders.group_by('city').agg(pl.col('amount').sum()).sort('city')"
        )
    )
    ex = kernel.execute("%%ask orders --run --into by_city\namount per city?")
    assert ex.ok, ex.error
    assert kernel.eval("type(by_city).__module__.split('.')[0], type(by_city).__name__") == (
        "('pandas', 'DataFrame')"
    )
    assert kernel.eval("by_city.to_dict('list')") == (
        "{'city': ['Lima', 'Oslo'], 'amount': [4.5, 4.0]}"
    )


# --- agent mode: the same child, the same objects, the same refusal -------------------------


def _tool_replies(request_messages: list[dict]) -> list[str]:
    return [str(m["content"]) for m in request_messages if m.get("role") == "tool"]


def test_agent_steps_run_on_polars_and_duckdb_frames(kernel: Kernel, server: LLMServer) -> None:
    step = (
        "import polars as pl\n"
        "print(type(orders).__name__, type(lazy_orders).__name__, type(visits).__name__)\n"
        "result = orders.group_by('city').agg(pl.col('amount').sum()).sort('city')\n"
        "print(result.to_dicts())"
    )
    server.script(
        Reply(tool_calls=[tool_call("list_frames"), tool_call("run_python", code=step)]),
        "Oslo has the larger total (4.0).",
    )
    before = len(server.chat_requests())
    ex = kernel.execute("%%ask orders lazy_orders visits --agent --into by_city\ntotals?")
    assert ex.ok, ex.error
    assert "DataFrame LazyFrame DuckDBPyRelation" in ex.stdout
    assert "[{'city': 'Lima', 'amount': 4.5}, {'city': 'Oslo', 'amount': 4.0}]" in ex.stdout
    first, second = server.chat_requests()[before:]
    system = first.messages[0]["content"]
    assert "Work in steps" in system  # agent mode's own system message...
    assert "`orders` is a polars DataFrame" in system  # ...with the engines' rules
    assert "`visits` is a DuckDB relation" in system
    listed = _tool_replies(second.messages)[0]
    assert "lazy_orders: polars LazyFrame of shape (unknown, 2)" in listed
    assert "orders: polars DataFrame of shape (3, 2)" in listed
    assert kernel.eval("type(by_city).__name__, by_city.to_dict('list')") == (
        "('DataFrame', {'city': ['Lima', 'Oslo'], 'amount': [4.5, 4.0]})"
    )


def test_agent_on_a_dask_frame_is_refused_like_run(kernel: Kernel, server: LLMServer) -> None:
    before = len(server.chat_requests())
    ex = kernel.execute("%%ask logs --agent\nmean latency?")
    assert not ex.ok
    message = "\n".join(ex.error["traceback"])
    assert (
        "logs is a Dask DataFrame in a cluster the sandbox cannot reach (it has no network), "
        "so --agent cannot run code on it." in message
    )
    assert "Ask without --agent" in message and "--sample N" in message
    assert "Traceback" not in message
    assert len(server.chat_requests()) == before


def test_agent_sample_steps_run_on_rows_pulled_by_dask(kernel: Kernel, server: LLMServer) -> None:
    server.script(
        Reply(tool_calls=[tool_call("run_python", code="print(type(logs).__name__, len(logs))")]),
        "The sample has 20 rows.",
    )
    before = len(server.chat_requests())
    ex = kernel.execute("%%ask logs --agent --sample 20\nhow many rows?")
    assert ex.ok, ex.error
    assert "Running on a sample: the first 20 rows of logs (Dask DataFrame)" in ex.stdout
    assert "DataFrame 20" in ex.stdout
    system = server.chat_requests()[before].messages[0]["content"]
    assert "Work in steps" in system
    assert "it is a pandas DataFrame holding its first 20 rows" in system


def test_agent_steps_send_engine_results_as_shape_and_dtypes(
    kernel: Kernel, server: LLMServer
) -> None:
    steps = [
        "import polars as pl\nresult = orders.group_by('city').agg(pl.col('amount').sum())",
        "result = lazy_orders.with_columns(double=pl.col('amount') * 2)",
        "import duckdb\n"
        "result = duckdb.sql('SELECT shop, count(*) AS n FROM visits GROUP BY shop')",
        "result = orders.filter(pl.col('amount') > 100)",
    ]
    server.script(
        Reply(tool_calls=[tool_call("run_python", code=code) for code in steps]),
        "Nothing is above 100.",
    )
    ex = kernel.execute("%%ask orders lazy_orders visits --agent\nwhich orders are over 100?")
    assert ex.ok, ex.error
    eager, lazy, relation, empty = _tool_replies(server.chat_requests()[-1].messages)
    assert (
        "`result` is a polars DataFrame of shape (2 x 2); dtypes: city: String, amount: Float64"
        in eager
    )
    assert "| Oslo | 4.0" in eager or "| Lima | 4.5" in eager  # first rows, printed by polars
    assert (
        "`result` is a polars LazyFrame of shape (unknown x 3) (lazy: not collected); "
        "dtypes: city: String, amount: Float64, double: Float64" in lazy
    )
    assert (
        "`result` is a DuckDB relation of shape (4 x 2); dtypes: shop: BIGINT, n: BIGINT"
        in relation
    )
    assert "250" in relation
    assert "Warning: `result` is empty (0 rows)" in empty
    assert "Warning" not in eager + lazy + relation


def test_agent_schema_privacy_sends_engine_shapes_and_no_values(
    kernel: Kernel, server: LLMServer
) -> None:
    steps = [
        "import polars as pl\nprint(orders['city'].to_list())\n"
        "result = orders.with_columns(pl.col('amount') * 1013)",
        "import duckdb\nresult = duckdb.sql('SELECT id * 7919 + 100003 AS code, shop FROM visits')",
        "result = orders.filter(pl.col('city') == 'Nowhere')",
    ]
    server.script(
        Reply(tool_calls=[tool_call("run_python", code=code) for code in steps]),
        "Done.",
    )
    before = len(server.chat_requests())
    ex = kernel.execute("%%ask orders visits --agent --privacy schema\namounts?")
    assert ex.ok, ex.error
    sent = json.dumps([r.body for r in server.chat_requests()[before:]])
    # the frames' values and the values the steps made (the code itself is the model's)
    for value in ("Oslo", "Lima", "3039", "4558.5", "107922", "115841"):
        assert value not in sent, value
    assert "polars DataFrame of shape (3 x 2); dtypes: city: String, amount: Float64" in sent
    assert "DuckDB relation of shape (unknown x 2); dtypes: code: BIGINT, shop: BIGINT" in sent
    assert "Warning: `result` is empty (0 rows)" in sent
