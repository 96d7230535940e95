"""Dask DataFrames.

Dtypes come from Dask's metadata (``_meta``, no compute), ``npartitions`` is known, the
row count is not (counting computes every partition). The sample is ``head`` of the
first partition only.
"""

from __future__ import annotations

import warnings
from typing import Any

import pandas as pd

from . import Engine


class DaskEngine(Engine):
    name = "dask"
    title = "Dask"
    module = "dask.dataframe"
    has_index = True

    def types(self, module: Any) -> tuple[type, ...]:
        return (module.DataFrame,)

    def kind(self, obj: Any) -> str:
        return "Dask DataFrame"

    def columns(self, obj: Any) -> list[tuple[str, str]]:
        return [(str(c), str(t)) for c, t in obj.dtypes.items()]

    def partitions(self, obj: Any) -> int | None:
        return int(obj.npartitions)

    def head(self, obj: Any, n: int) -> pd.DataFrame:
        with warnings.catch_warnings():  # "insufficient elements": a short first partition
            warnings.simplefilter("ignore")
            return obj.head(n, npartitions=1, compute=True)

    def head_is_whole(self, obj: Any, got: int, asked: int) -> bool:
        # the head read the first partition only: a short one says nothing of the others
        return got < asked and obj.npartitions == 1

    def sample_note(self, obj: Any, n: int) -> str:
        return f"the first {n:,} rows of the first partition (head; nothing else computed)"

    def rules(self) -> str:
        return (
            "Write Dask code (`import dask.dataframe as dd`; the pandas-like API on the Dask "
            "DataFrame). Everything stays lazy until `.compute()`; call `.compute()` only on a "
            "small result (an aggregate, a filtered and limited frame, or `.head(n)`), never "
            "on the whole frame, and compute several results together with `dask.compute(...)`."
        )
