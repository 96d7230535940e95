"""PySpark DataFrames in local mode: described from the plan and a limit, asked about in PySpark.

One SparkSession for the module (a JVM start costs seconds); Java comes from the system
packages (scripts/test.sh installs default-jre-headless when ``java`` is missing).
"""

from __future__ import annotations

import json
import shutil
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from IPython.utils.capture import capture_output
from llm_server import LLMServer, code_answer

from dataagent_jupyter.errors import UsageError
from dataagent_jupyter.frames import describe, frame_info

pytestmark = pytest.mark.engines


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("no Java runtime (scripts/test.sh installs default-jre-headless)")
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[1]")
        .appName("dataagent-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture
def F(spark: Any) -> Any:  # the name PySpark users write
    from pyspark.sql import functions

    return functions


def test_spark_frame_is_described_from_schema_partitions_and_a_limit(spark: Any, F: Any) -> None:
    sdf = spark.range(0, 5000, numPartitions=3).withColumn(
        "shop", F.concat(F.lit("s"), (F.col("id") % 4).cast("string"))
    )
    d = describe("sales", sdf, stats_sample=1000)
    assert d.text.startswith(f"### sales (PySpark DataFrame, PySpark {spark.version}:")
    assert "rows unknown (not counted) × 2 columns, 3 partitions" in d.text
    assert "limit(1000)" in d.text
    assert "- id: bigint;" in d.text and "- shop: string;" in d.text
    info = frame_info("sales", sdf)
    assert (info.kind, info.shape, info.engine) == ("PySpark DataFrame", (None, 2), "spark")


def test_describing_a_hundred_million_rows_collects_only_the_sample(spark: Any, F: Any) -> None:
    sdf = spark.range(10**8).withColumn("g", F.col("id") % 7)
    tracemalloc.start()
    try:
        text = describe("events", sdf).text
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # 10^8 collected rows would be gigabytes of Python objects; 10^4 rows are a few MB
    assert peak < 64 * 2**20, peak
    assert "rows unknown (not counted) × 2 columns" in text and "~10,000 distinct" in text


def test_ask_about_a_spark_frame_asks_for_pyspark_code(
    ip: Any, llm_env: LLMServer, spark: Any, F: Any
) -> None:
    sdf = spark.range(100).withColumn("amount", F.col("id") * 1.5)
    ip.user_ns["orders"] = sdf
    ip.run_cell("pass")
    code = "result = orders.agg(F.sum('amount')).toPandas()"
    llm_env.script(code_answer(code))
    ip.run_cell_magic("ask", "orders", "total amount?")
    assert code in ip.rl_next_input
    request = llm_env.chat_requests()[0]
    system, user = request.messages[0]["content"], request.messages[-1]["content"]
    assert f"`orders` is a PySpark DataFrame (PySpark {spark.version})" in system
    assert "never collect the whole frame" in system
    assert "- id: bigint;" in user and "- amount: double;" in user


def test_schema_privacy_sends_no_value_of_a_spark_frame(
    ip: Any, llm_env: LLMServer, spark: Any
) -> None:
    ip.user_ns["people"] = spark.createDataFrame(
        [("Qwxzt Vrmnpl", 91234.5, "Xanaduville")], ["name", "salary", "city"]
    )
    ip.run_cell("pass")
    llm_env.script(code_answer("result = people.count()"))
    ip.run_cell_magic("ask", "people --privacy schema", "how many?")
    sent = json.dumps(llm_env.chat_requests()[0].body)
    for value in ("Qwxzt", "Vrmnpl", "91234", "Xanaduville"):
        assert value not in sent
    assert "salary: double" in sent


@pytest.mark.kernel
def test_run_on_a_spark_frame_is_refused_or_runs_on_a_sample(
    ip: Any, llm_env: LLMServer, spark: Any
) -> None:
    ip.user_ns["events"] = spark.range(10**6).withColumnRenamed("id", "n")
    ip.run_cell("pass")
    with pytest.raises(UsageError) as refused:
        ip.run_cell_magic("ask", "events --run", "largest n?")
    assert str(refused.value.message) == (
        "events is a PySpark DataFrame in a cluster the sandbox cannot reach (it has no "
        "network), so --run cannot run code on it."
    )
    assert "Ask without --run" in (refused.value.hint or "")
    assert llm_env.chat_requests() == []  # refused before the model was asked

    llm_env.script(code_answer("print(type(events).__name__, len(events), events['n'].max())"))
    with capture_output() as shown:
        ip.run_cell_magic("ask", "events --run --sample 25", "largest n?")
    assert "Running on a sample: the first 25 rows of events (PySpark DataFrame)" in shown.stdout
    assert "DataFrame 25 24" in shown.stdout
    system = llm_env.chat_requests()[0].messages[0]["content"]
    assert "it is a pandas DataFrame holding its first 25 rows (pulled by PySpark" in system
