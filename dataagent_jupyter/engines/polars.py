"""polars DataFrame and LazyFrame.

An eager frame knows its height, so it is sampled at seeded random positions like a
pandas frame; a LazyFrame is never counted (that would run the whole query) and gives
its ``head``, which polars pushes down into scans.
"""

from __future__ import annotations

import sys
from typing import Any

import pandas as pd

from . import Engine


class PolarsEngine(Engine):
    name = "polars"
    title = "polars"
    module = "polars"
    local = True

    def types(self, module: Any) -> tuple[type, ...]:
        return (module.DataFrame, module.LazyFrame)

    def lazy(self, obj: Any) -> bool:
        return isinstance(obj, sys.modules["polars"].LazyFrame)

    def limit(self, obj: Any, n: int) -> Any:
        return obj.head(n)  # still a LazyFrame: polars pushes the slice into the scan

    def kind(self, obj: Any) -> str:
        return "polars LazyFrame" if self.lazy(obj) else "polars DataFrame"

    def columns(self, obj: Any) -> list[tuple[str, str]]:
        schema = obj.collect_schema() if self.lazy(obj) else obj.schema
        return [(str(name), str(dtype)) for name, dtype in schema.items()]

    def rows(self, obj: Any) -> int | None:
        return None if self.lazy(obj) else int(obj.height)

    def head(self, obj: Any, n: int) -> pd.DataFrame:
        if self.lazy(obj):
            return obj.head(n).collect().to_pandas()
        from ..frames import sample_positions

        positions = sample_positions(obj.height, n)
        part = obj if len(positions) == obj.height else obj[positions]
        return part.to_pandas().set_axis(positions, axis=0)

    def sample_note(self, obj: Any, n: int) -> str:
        if self.lazy(obj):
            return f"the first {n:,} rows (LazyFrame.head, the query is not run in full)"
        return f"a random sample of {n:,} rows"

    def rules(self) -> str:
        return (
            "Write polars code (`import polars as pl`; expressions such as `pl.col`, "
            "`group_by().agg()`, `filter`, `with_columns`), not pandas. A LazyFrame stays "
            "lazy: build the query, then `.collect()` only a small result (aggregated, "
            "filtered, or `.head(n)`). Never convert a whole frame to pandas; convert a "
            "small result with `.to_pandas()` only when a chart needs it."
        )

    def to_arrow(self, obj: Any) -> Any:
        return (obj.collect() if self.lazy(obj) else obj).to_arrow()
