"""Describing polars, DuckDB, Dask and PySpark frames: time and peak memory by size.

Each engine generates a 3-column frame (int64 ``i``, ``i % 7``, ``i / 3``) lazily on its
own side at 10^4, 10^6 and 10^8 rows, so nothing exists in memory before it is asked for.
For each size the table shows the agent's describe (schema + a bounded engine-side head)
beside the engine's own full summary of the same frame (polars ``describe()``, DuckDB
``describe()``, Dask ``describe().compute()``, Spark ``summary().collect()``), with the
ratio between them and the describe time as a multiple of the 10^4-row one (the goal:
flat). Peak memory is the growth of this process's resident size while the step runs,
sampled every 2 ms (Spark's JVM is a separate process and is not counted).

Each engine runs in a fresh interpreter so one engine's caches do not weigh on another.

    python benchmarks/bench_engines.py [--quick]   (--quick: 10^4 and 10^6 rows only)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from benchkit import table

ENGINES = ("polars", "duckdb", "dask", "pyspark")
PART = 100_000  # rows per generated batch / partition


def generate(engine: str, n: int, spark: Any = None) -> Any:
    """A lazily generated frame of ``n`` rows; no row exists until the engine asks."""
    if engine == "polars":
        import polars as pl
        from polars.io.plugins import register_io_source

        def source(with_columns: Any, predicate: Any, n_rows: Any, batch_size: Any) -> Any:
            start, stop = 0, n if n_rows is None else min(n, n_rows)
            while start < stop:
                end = min(stop, start + PART)
                i = pl.int_range(start, end, eager=True, dtype=pl.Int64)
                frame = pl.DataFrame({"i": i, "g": i % 7, "f": i / 3})
                if predicate is not None:
                    frame = frame.filter(predicate)
                yield frame if with_columns is None else frame.select(with_columns)
                start = end

        return register_io_source(source, schema={"i": pl.Int64, "g": pl.Int64, "f": pl.Float64})
    if engine == "duckdb":
        import duckdb

        return duckdb.connect().sql(
            f"SELECT range AS i, range % 7 AS g, range / 3 AS f FROM range({n})"
        )
    if engine == "dask":
        import dask.dataframe as dd
        import numpy as np
        import pandas as pd

        size = min(n, PART)

        def part(k: int) -> pd.DataFrame:
            i = np.arange(k * size, (k + 1) * size)
            return pd.DataFrame({"i": i, "g": i % 7, "f": i / 3})

        return dd.from_map(part, range(max(n // size, 1)))
    from pyspark.sql import functions as F

    return spark.range(n).withColumn("g", F.col("id") % 7).withColumn("f", F.col("id") / 3)


def full_summary(engine: str, frame: Any) -> Any:
    """The engine's own summary of every row: what a user would run to look at the data."""
    if engine == "polars":
        return frame.describe()
    if engine == "duckdb":
        return frame.describe().fetchall()
    if engine == "dask":
        return frame.describe().compute()
    return frame.summary().collect()


def measure(fn: Callable[[], Any]) -> tuple[float, float]:
    """Wall time (ms) and peak resident-memory growth (MB) of one call."""
    import psutil

    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        fn()
    finally:
        elapsed = (time.perf_counter() - start) * 1000
        done.set()
        sampler.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    return elapsed, (peak[0] - base) / 2**20


def run_engine(engine: str, sizes: list[int]) -> None:
    """Child mode: measure one engine and print one JSON line per size."""
    from dataagent_jupyter.frames import describe

    spark = None
    if engine == "pyspark":
        from pyspark.sql import SparkSession

        spark = (
            SparkSession.builder.master("local[2]")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .getOrCreate()
        )
        spark.sparkContext.setLogLevel("ERROR")
    describe("warm", generate(engine, 1000, spark))  # imports and first-call costs
    ours = {n: measure(lambda n=n: describe("events", generate(engine, n, spark))) for n in sizes}
    for n in sizes:
        frame = generate(engine, n, spark)
        theirs = measure(lambda frame=frame: full_summary(engine, frame))
        print(json.dumps({"rows": n, "ours": ours[n], "theirs": theirs}), flush=True)
    if spark is not None:
        spark.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="10^4 and 10^6 rows only")
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--sizes", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        run_engine(args.engine, [int(s) for s in args.sizes.split(",")])
        return
    sizes = [10**4, 10**6] if args.quick else [10**4, 10**6, 10**8]
    rows: list[list[str]] = []
    for engine in ENGINES:
        if importlib.util.find_spec(engine) is None:
            missing = "not installed (pip install 'dataagent-jupyter[engines]')"
            rows.append([engine, missing, *[""] * 6])
            continue
        done = subprocess.run(
            [sys.executable, __file__, "--engine", engine, "--sizes", ",".join(map(str, sizes))],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        if done.returncode != 0:
            print(f"{engine} failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            sys.exit(1)
        measured = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        first = measured[0]["ours"][0]
        for row in measured:
            (ms, mb), (tms, tmb) = row["ours"], row["theirs"]
            rows.append(
                [
                    engine,
                    f"10^{len(str(row['rows'])) - 1}",
                    f"{ms:.1f}",
                    f"{ms / first:.1f}x",
                    f"{mb:.1f}",
                    f"{tms:.1f}",
                    f"{tmb:.1f}",
                    f"{tms / ms:.1f}x",
                ]
            )
    table(
        "Describing engine frames vs the engine's own full summary (same frame, same run)",
        [
            "engine",
            "rows",
            "describe ms",
            "vs 10^4",
            "peak MB",
            "summary ms",
            "peak MB",
            "summary/describe",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
