"""Runs inside the child kernel after each agent step: what the step left behind, as JSON.

This file's source is sent to the child and installed there as the module
``_dataagent_step`` (see :func:`dataagent_jupyter.agent.steps.report_request`), so it
imports nothing from this package: only the standard library, and pandas / matplotlib
only when the step's code already imported them. Its output is *untrusted* on the way
back (generated code ran in that kernel and may have changed anything there), so the
parent parses it strictly and bounded (:func:`dataagent_jupyter.agent.steps.parse_report`);
the bounds here only keep the message small.

The report holds what a careful analyst glances at before going on: the shape, dtypes and
first rows of ``result``, each chart's title, labels and how much is drawn on it, the row
counts of the frames in the kernel (to catch a merge that multiplied rows), and the
columns that came out all missing.
"""

from __future__ import annotations

import json
import sys
from typing import Any

#: Bounds on what one report may hold (the parent enforces its own as well).
MAX_TEXT = 2_000
MAX_COLUMNS = 40
MAX_FIGURES = 8
MAX_FRAMES = 40
HEAD_ROWS = 5


def _cut(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[:limit] + " …"


def _frame(value: Any) -> dict[str, Any]:
    rows, cols = value.shape
    dtypes = {str(c): str(t) for c, t in list(value.dtypes.items())[:MAX_COLUMNS]}
    all_missing: list[str] = []
    if rows:
        missing = value.isna().all()
        all_missing = [str(c) for c, m in missing.items() if m][:MAX_COLUMNS]
    return {
        "type": "DataFrame",
        "shape": [int(rows), int(cols)],
        "dtypes": dtypes,
        "head": _cut(value.head(HEAD_ROWS).to_string(max_cols=12, max_colwidth=40)),
        "all_missing": all_missing,
    }


def _series(value: Any) -> dict[str, Any]:
    return {
        "type": "Series",
        "shape": [len(value)],
        "dtypes": {str(value.name): str(value.dtype)},
        "head": _cut(value.head(HEAD_ROWS).to_string()),
        "all_missing": [str(value.name)] if len(value) and bool(value.isna().all()) else [],
    }


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
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(value, pd.DataFrame):
        return _frame(value)
    if pd is not None and isinstance(value, pd.Series):
        return _series(value)
    figure = _as_figure(value)
    if figure is not None:
        return {"type": "Figure", "figure": _figure(figure)}
    missing = False
    try:
        missing = value != value  # NaN (and pandas NA) is not equal to itself
        missing = bool(missing) if isinstance(missing, bool) else False
    except Exception:  # comparison of an exotic object: not a missing scalar
        missing = False
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
    pd = sys.modules.get("pandas")
    if pd is not None:
        frames = {
            name: len(value)
            for name, value in namespace.items()
            if not name.startswith("_") and isinstance(value, pd.DataFrame | pd.Series)
        }
        out["frames"] = dict(list(frames.items())[:MAX_FRAMES])
    return Reply(json.dumps(out))
