"""The model's text for a polars, DuckDB, Dask or PySpark frame, at a cost that ignores size.

Exact: the engine's schema (names and its own dtype names), a row count only where the
engine already holds it, partitions of a distributed frame. Everything else (nulls,
distinct counts, ranges, top values, example rows) comes from at most ``stats_sample``
rows that the engine itself takes (``head``/``limit``; a seeded random gather for an eager
polars frame) and is marked ``~`` unless those rows are the whole frame. The same column
lines, budget and privacy rules as pandas frames apply (:mod:`..frames`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd

from ..frames import (
    TABLE_COLUMNS,
    FrameDescription,
    Privacy,
    _column_stats,
    _label,
    _sample_table,
    fit_columns,
)
from . import Engine


def describe_engine_frame(
    name: str,
    obj: Any,
    engine: Engine,
    *,
    privacy: Privacy = "sample",
    sample_rows: int = 5,
    stats_sample: int = 10_000,
    budget_tokens: int = 1500,
) -> FrameDescription:
    """Describe ``obj`` from the engine's cheap operations only, within ``budget_tokens``."""
    columns = engine.columns(obj)
    rows = engine.rows(obj)
    partitions = engine.partitions(obj)
    want = max(stats_sample, 1)
    problem = ""
    try:
        sample: pd.DataFrame | None = engine.head(obj, want)
    except Exception as exc:  # a failing query must not sink the question: schema still helps
        sample, problem = None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    if sample is not None and rows is None and engine.head_is_whole(obj, len(sample), want):
        rows = len(sample)  # a short head is the whole frame: its count is now known, free
    whole = sample is not None and rows is not None and len(sample) >= rows
    est = "" if whole else "~"

    size = f"{rows:,} rows" if rows is not None else "rows unknown (not counted)"
    parts = (
        f", {partitions:,} partition{'s' if partitions != 1 else ''}"
        if partitions is not None
        else ""
    )
    head = [
        f"### {name} ({engine.kind(obj)}, {engine.title} {engine.version()}: "
        f"{size} × {len(columns):,} columns{parts})"
    ]
    if sample is None:
        head.append(f"no rows could be sampled ({problem}); only the schema is known")
    elif not whole:
        head.append(
            f"statistics below are estimates (~) from {engine.sample_note(obj, len(sample))}"
        )
    budget_chars = max(budget_tokens, 50) * 4
    with_table = privacy != "schema" and sample_rows > 0 and sample is not None and len(sample)
    text, shown, used = fit_columns(
        "\n".join(head),
        _column_lines(columns, sample, privacy, est),
        [_label(c) for c, _ in columns],
        budget_chars=budget_chars,
        reserve=min(budget_chars // 3, 180 * (sample_rows + 2)) if with_table else 0,
        title=f"columns (name: {engine.title} dtype, nulls, statistics):",
    )
    if with_table and sample is not None:
        table = _sample_table(
            sample, sample_rows, min(shown, TABLE_COLUMNS), max(budget_chars - used, 200)
        )
        if table:
            # engines other than Dask have no index: the first column is a row number
            text += "\n" + (table if engine.has_index else table.replace("(index)", "(row)", 1))
    if sample is not None and len(sample) == 0:
        text += "\n(the frame is empty: no rows)"
    return FrameDescription(
        name=name,
        text=text,
        fingerprint=_fingerprint(engine, obj, columns, rows, sample),
        columns_total=len(columns),
        columns_shown=shown,
        sampled=not whole,
        engine=engine.name,
        kind=engine.kind(obj),
    )


def _column_lines(
    columns: Sequence[tuple[str, str]], sample: pd.DataFrame | None, privacy: Privacy, est: str
) -> Iterator[str]:
    """One line per column with the engine's dtype; statistics from the sample's column."""
    for i, (column, dtype) in enumerate(columns):
        label = _label(column)
        if sample is None or i >= sample.shape[1]:
            yield f"- {label}: {dtype}"
            continue
        try:
            stats = _column_stats(sample.iloc[:, i], privacy, est)
        except Exception as exc:  # one odd column must not sink the whole description
            stats = f"statistics unavailable ({type(exc).__name__})"
        yield f"- {label}: {dtype}; {stats}"


def _fingerprint(
    engine: Engine,
    obj: Any,
    columns: Sequence[tuple[str, str]],
    rows: int | None,
    sample: pd.DataFrame | None,
) -> str:
    """A version tag from what was already read: kind, schema, known rows, sampled rows.

    A change beyond the sampled rows of a lazy frame is not seen; the description would
    not show it either.
    """
    h = hashlib.blake2b(digest_size=12)
    h.update(repr((engine.kind(obj), list(columns)[:5000], rows)).encode())
    if sample is not None and len(sample):
        try:
            h.update(pd.util.hash_pandas_object(sample, index=False).to_numpy().tobytes())
        except (TypeError, ValueError):  # unhashable cells (lists, structs)
            h.update(repr(sample.to_numpy().tolist()).encode(errors="replace"))
    return h.hexdigest()
