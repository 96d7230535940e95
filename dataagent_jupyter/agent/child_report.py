"""Runs inside the child kernel after each agent step: what the step left behind, as JSON.

This file's source is sent to the child and installed there as the module
``_dataagent_step`` (see :func:`dataagent_jupyter.agent.steps.report_request`), so it
imports nothing from this package: only the standard library, and pandas, polars, DuckDB
or matplotlib only when the step's code already imported them. Its output is *untrusted* on the way
back (generated code ran in that kernel and may have changed anything there), so the
parent parses it strictly and bounded (:func:`dataagent_jupyter.agent.steps.parse_report`);
the bounds here only keep the message small.

The report holds what a careful analyst glances at before going on: the shape, dtypes and
first rows of ``result`` (whichever engine's frame it is, read at a cost that does not
grow with its size), each chart's title, labels and how much is drawn on it, the row
counts of the frames in the kernel (to catch a merge that multiplied rows), and the
columns that came out all missing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

#: Bounds on what one report may hold (the parent enforces its own as well).
MAX_TEXT = 2_000
MAX_COLUMNS = 40
MAX_FIGURES = 8
MAX_FRAMES = 40
HEAD_ROWS = 5


def _cut(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[:limit] + " …"


def _table(
    kind: str,
    name: str,
    rows: int | None,
    columns: int,
    dtypes: Iterable[tuple[Any, Any]],
    head: str = "",
    all_missing: Iterable[Any] = (),
    lazy: bool = False,
) -> dict[str, Any]:
    """The one form every table result is reported in, whatever engine made it.

    ``rows`` is None when counting them would run the query (a lazy frame, a relation);
    ``lazy`` says the frame was not collected to report it.
    """
    return {
        "type": name,
        "kind": kind,
        "shape": [rows, columns] if kind == "frame" else [rows],
        "dtypes": {str(c): str(t) for c, t in islice(dtypes, MAX_COLUMNS)},
        "head": _cut(head),
        "all_missing": [str(c) for c in islice(all_missing, MAX_COLUMNS)],
        "lazy": lazy,
    }


def _pandas(value: Any, pd: Any) -> dict[str, Any] | None:
    if isinstance(value, pd.DataFrame):
        rows, cols = value.shape
        missing = [c for c, m in value.isna().all().items() if m] if rows else []
        text = value.head(HEAD_ROWS).to_string(max_cols=12, max_colwidth=40)
        return _table("frame", "DataFrame", rows, cols, value.dtypes.items(), text, missing)
    if isinstance(value, pd.Series):
        missing = [value.name] if len(value) and bool(value.isna().all()) else []
        text = value.head(HEAD_ROWS).to_string()
        return _table("series", "Series", len(value), 1, [(value.name, value.dtype)], text, missing)
    return None


#: How polars prints the first rows: as small as pandas' (shape and dtypes are sent apart).
_POLARS_TABLE: dict[str, Any] = {
    "tbl_rows": HEAD_ROWS,
    "tbl_cols": 12,
    "fmt_str_lengths": 40,
    "tbl_formatting": "ASCII_MARKDOWN",
    "tbl_hide_dataframe_shape": True,
    "tbl_hide_column_data_types": True,
}


def _polars(value: Any, pl: Any) -> dict[str, Any] | None:
    """polars frames through polars' own cheap operations: a LazyFrame is never collected
    (even its head may need the whole plan run: a sort, a group-by), only its schema read.
    """
    if isinstance(value, pl.LazyFrame):
        schema = value.collect_schema()
        return _table("frame", "polars LazyFrame", None, len(schema), schema.items(), lazy=True)
    if isinstance(value, pl.DataFrame):
        rows, cols = value.shape
        nulls = value.null_count().row(0)  # Arrow keeps null counts: cheap
        missing = [c for c, n in zip(value.columns, nulls, strict=True) if rows and n == rows]
        with pl.Config(**_POLARS_TABLE):
            text = str(value.head(HEAD_ROWS))
        return _table("frame", "polars DataFrame", rows, cols, value.schema.items(), text, missing)
    if isinstance(value, pl.Series):
        missing = [value.name] if len(value) and value.null_count() == len(value) else []
        with pl.Config(**_POLARS_TABLE):
            text = str(value.head(HEAD_ROWS))
        return _table(
            "series", "polars Series", len(value), 1, [(value.name, value.dtype)], text, missing
        )
    return None


def _duckdb(value: Any, duckdb: Any) -> dict[str, Any] | None:
    """A relation's columns and types, and its first rows through a LIMIT run by DuckDB.

    One row more than shown is fetched: fewer than that means the fetch saw the whole
    result, so its row count (an empty result above all) and its all-NULL columns are
    known without counting the relation.
    """
    if not isinstance(value, duckdb.DuckDBPyRelation):
        return None
    columns = [str(c) for c in value.columns]
    fetched = value.limit(HEAD_ROWS + 1).fetchall()
    rows = len(fetched) if len(fetched) <= HEAD_ROWS else None
    missing = [c for i, c in enumerate(columns) if rows and all(r[i] is None for r in fetched)]
    lines = [" | ".join(columns[:12])]
    lines += [" | ".join(_cut(str(v), 40) for v in row[:12]) for row in fetched[:HEAD_ROWS]]
    dtypes = zip(columns, value.types, strict=True)
    return _table("frame", "DuckDB relation", rows, len(columns), dtypes, "\n".join(lines), missing)


#: The engines a table result may come from: the module each needs, and its reporter.
_ENGINES: tuple[tuple[str, Callable[[Any, Any], dict[str, Any] | None]], ...] = (
    ("pandas", _pandas),
    ("polars", _polars),
    ("duckdb", _duckdb),
)


def _table_of(value: Any) -> dict[str, Any] | None:
    """The report of a table of any engine the step's code already imported (an engine
    not in ``sys.modules`` cannot have made ``value``, and importing it here would cost
    time and break the no-hard-dependency rule).
    """
    for module, reporter in _ENGINES:
        engine = sys.modules.get(module)
        if engine is not None:
            table = reporter(value, engine)
            if table is not None:
                return table
    return None


def _counted(value: Any) -> bool:
    """An eager frame or series, whose length is known without running anything."""
    for module in ("pandas", "polars"):
        engine = sys.modules.get(module)
        if engine is not None and isinstance(value, engine.DataFrame | engine.Series):
            return True
    return False


def _figure(fig: Any) -> dict[str, Any]:
    axes = list(fig.get_axes())
    drawn = 0
    title = xlabel = ylabel = ""
    for ax in axes:
        drawn += len(ax.lines) + len(ax.patches) + len(ax.collections) + len(ax.images)
        drawn += len(ax.tables) + len(ax.texts)
        title = title or ax.get_title()
        xlabel = xlabel or ax.get_xlabel()
        ylabel = ylabel or ax.get_ylabel()
    if not title and hasattr(fig, "get_suptitle"):
        title = fig.get_suptitle()
    return {
        "title": _cut(title, 200),
        "xlabel": _cut(xlabel, 200),
        "ylabel": _cut(ylabel, 200),
        "axes": len(axes),
        "artists": int(drawn),
    }


def _describe(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    table = _table_of(value)
    if table is not None:
        return table
    figure = _as_figure(value)
    if figure is not None:
        return {"type": "Figure", "figure": _figure(figure)}
    missing = False
    try:
        missing = value != value  # NaN (and pandas NA) is not equal to itself
        missing = bool(missing) if isinstance(missing, bool) else False
    except Exception:  # comparison of an exotic object: not a missing scalar
        missing = False
    pd = sys.modules.get("pandas")
    if pd is not None and value is getattr(pd, "NA", object()):
        missing = True
    return {"type": type(value).__name__, "repr": _cut(repr(value)), "missing": missing}


def _as_figure(value: Any) -> Any:
    mpl = sys.modules.get("matplotlib.figure")
    axes = sys.modules.get("matplotlib.axes")
    if mpl is not None and isinstance(value, mpl.Figure):
        return value
    if axes is not None and isinstance(value, axes.Axes):
        return value.figure
    return None


class Reply:
    """The report, whose ``repr`` (what the user's kernel receives) is plain JSON, so the
    parent never evaluates a Python literal (the sandbox's own helpers answer the same way).
    """

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def report(namespace: dict[str, Any]) -> Reply:
    """The JSON report of the step that just ran in ``namespace`` (the child's globals).

    Called after steps that worked only, so it also keeps that step's ``result`` aside
    for ``--into`` (the next step's run clears ``result``).
    """
    namespace["_dataagent_last_result"] = namespace.get("result")
    out: dict[str, Any] = {"result": None, "figures": [], "frames": {}}
    try:
        out["result"] = _describe(namespace.get("result"))
    except Exception as exc:  # a result whose repr or dtypes raise: say so, do not fail
        out["result"] = {"type": "unknown", "repr": f"(cannot describe: {type(exc).__name__})"}
    figures: list[Any] = []
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        figures.extend(pyplot.figure(n) for n in pyplot.get_fignums())
    for name, value in list(namespace.items()):
        if name.startswith("_") or len(figures) >= MAX_FIGURES:
            continue
        figure = _as_figure(value)
        if figure is not None and all(figure is not f for f in figures):
            figures.append(figure)
    out["figures"] = [_figure(f) for f in figures[:MAX_FIGURES]]
    frames = {
        name: len(value)
        for name, value in namespace.items()
        if not name.startswith("_") and _counted(value)
    }
    out["frames"] = dict(list(frames.items())[:MAX_FRAMES])
    return Reply(json.dumps(out))
