"""PySpark DataFrames (classic and Spark Connect).

The schema is known to the driver; partitions come from the plan where the API exposes
it (not under Spark Connect); the row count is not known without a job. The sample is
``limit(n)``, which Spark runs as a collect-limit that stops early.
"""

from __future__ import annotations

import warnings
from typing import Any

import pandas as pd

from . import Engine


class SparkEngine(Engine):
    name = "spark"
    title = "PySpark"
    module = "pyspark.sql"

    def types(self, module: Any) -> tuple[type, ...]:
        return (module.DataFrame,)

    def kind(self, obj: Any) -> str:
        return "PySpark DataFrame"

    def columns(self, obj: Any) -> list[tuple[str, str]]:
        return [(str(c), str(t)) for c, t in obj.dtypes]

    def partitions(self, obj: Any) -> int | None:
        try:
            return int(obj.rdd.getNumPartitions())
        except Exception:  # Spark Connect has no .rdd; any failure means "not known"
            return None

    def head(self, obj: Any, n: int) -> pd.DataFrame:
        with warnings.catch_warnings():  # pyspark's pandas-version notices: not the user's concern
            warnings.simplefilter("ignore")
            return obj.limit(n).toPandas()

    def sample_note(self, obj: Any, n: int) -> str:
        return f"the first {n:,} rows (limit({n}); nothing else computed)"

    def rules(self) -> str:
        return (
            "Write PySpark code (`from pyspark.sql import functions as F`; the DataFrame API: "
            "`filter`, `groupBy().agg()`, `withColumn`, `orderBy`), not pandas. Bring back "
            "only a small result: aggregate or `limit(n)` before `.toPandas()` or `.collect()`, "
            "never collect the whole frame."
        )
