"""DuckDB relations (``duckdb.sql(...)``, ``con.table(...)``, ``con.read_parquet(...)``).

Columns and types come from the relation itself; a row count would run the query, so it
is "unknown". The sample is a ``LIMIT``, which DuckDB streams without scanning the rest.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from . import Engine


class DuckDBEngine(Engine):
    name = "duckdb"
    title = "DuckDB"
    module = "duckdb"
    local = True

    def types(self, module: Any) -> tuple[type, ...]:
        return (module.DuckDBPyRelation,)

    def kind(self, obj: Any) -> str:
        return "DuckDB relation"

    def columns(self, obj: Any) -> list[tuple[str, str]]:
        return [(str(c), str(t)) for c, t in zip(obj.columns, obj.types, strict=True)]

    def head(self, obj: Any, n: int) -> pd.DataFrame:
        return obj.limit(n).df()

    def lazy(self, obj: Any) -> bool:
        return True  # a relation is a query: its rows are made when it is fetched

    def limit(self, obj: Any, n: int) -> Any:
        return obj.limit(n)

    def sample_note(self, obj: Any, n: int) -> str:
        return f"the first {n:,} rows (LIMIT {n}; the query is not run in full)"

    def rules(self) -> str:
        return (
            "Write DuckDB code (`import duckdb`): the relational API (`rel.filter`, "
            "`rel.aggregate`, `rel.order`, `rel.limit`) or SQL over the relation with "
            "`duckdb.sql('SELECT … FROM rel')`, where a relation variable is referred to by "
            "its Python name. Let DuckDB aggregate and limit; fetch only a small result "
            "(`.df()` or `.pl()` of at most a few thousand rows), never the whole relation."
        )

    def to_arrow(self, obj: Any) -> Any:
        table = obj.arrow()
        # newer duckdb returns a RecordBatchReader from .arrow(); read it into a table
        return table.read_all() if hasattr(table, "read_all") else table
