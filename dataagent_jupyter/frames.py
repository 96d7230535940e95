"""Describing live DataFrames to an LLM, at a cost that does not grow with their length.

What is exact is cheap metadata (shape, dtypes, index type, categories). Everything that
would need a pass over the data (nulls, distinct counts, min/max/mean, top values) is
computed on a bounded, positional, seeded random sample and marked ``~`` as an estimate
when the sample is not the whole frame. Column lines are produced lazily and stop at the
token budget, so a frame with thousands of columns costs the same as one with a hundred,
and the text says how many columns it left out.

``privacy="schema"`` sends names, dtypes and counts only: no cell value, no min/max, no
example, no index label leaves the kernel.

polars, DuckDB, Dask and PySpark frames are found and listed here too; what describing
them means is in :mod:`.engines` (engine-side schema and a bounded head, nothing collected).
"""

from __future__ import annotations

import hashlib
import math
import reprlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from . import engines
from .errors import FrameError
from .tokens import estimate_tokens

Privacy = Literal["sample", "schema"]

#: characters kept of a single value in examples and top-value lists
VALUE_CHARS = 40
#: columns shown in the sample-rows table (the column list itself goes to the budget)
TABLE_COLUMNS = 12
#: a string column with at most this many distinct sampled values lists its top values
LOW_CARDINALITY = 20


@dataclass(frozen=True)
class FrameInfo:
    """A frame as front ends list it: name, kind, shape, first column names, engine.

    A row count the engine does not know cheaply (a LazyFrame, a Spark plan) is None.
    """

    name: str
    kind: str
    shape: tuple[int | None, ...]
    columns: tuple[str, ...]
    engine: str = "pandas"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "shape": list(self.shape),
            "columns": list(self.columns),
            "engine": self.engine,
        }


@dataclass(frozen=True)
class FrameDescription:
    """The text sent to the model for one frame, and what it left out."""

    name: str
    text: str
    fingerprint: str
    columns_total: int
    columns_shown: int
    sampled: bool
    engine: str = "pandas"
    kind: str = ""

    @property
    def tokens(self) -> int:
        return estimate_tokens(self.text)


# --- finding frames ----------------------------------------------------------------------


def is_frame(obj: object) -> bool:
    """True for the objects %%ask can describe: DataFrames, Series and engine frames."""
    return isinstance(obj, pd.DataFrame | pd.Series) or engines.is_engine_frame(obj)


def _is_table(obj: object) -> bool:
    """What ``%%ask`` with no names picks up: DataFrames of any engine, not Series."""
    return isinstance(obj, pd.DataFrame) or engines.is_engine_frame(obj)


def frame_info(name: str, obj: Any) -> FrameInfo:
    """Cheap listing entry (no pass over the data, no query run by an engine)."""
    engine = engines.engine_of(obj)
    if engine is not None:
        try:
            columns = engine.columns(obj)
        except Exception:  # e.g. a stopped Spark session: list it, the question will say why
            return FrameInfo(name, engine.kind(obj), (None, None), (), engine.name)
        return FrameInfo(
            name,
            engine.kind(obj),
            (engine.rows(obj), len(columns)),
            tuple(c for c, _ in columns[:8]),
            engine.name,
        )
    if isinstance(obj, pd.Series):
        return FrameInfo(name, "Series", (len(obj),), (_label(obj.name),))
    return FrameInfo(name, "DataFrame", tuple(obj.shape), tuple(_label(c) for c in obj.columns[:8]))


def find_frames(
    namespace: Mapping[str, Any],
    names: Sequence[str] | None = None,
    *,
    limit: int = 8,
    order: Sequence[str] = (),
) -> dict[str, Any]:
    """The frames a question is about.

    Named: each must exist and be a DataFrame or Series, of pandas or another engine (else
    :class:`FrameError` naming it). Not named: every public DataFrame of any engine in the
    namespace, those in ``order`` (most recently defined first) ahead of the rest, at most
    ``limit``.
    """
    if names:
        found: dict[str, Any] = {}
        for name in names:
            obj = _lookup(namespace, name)
            if not is_frame(obj):
                raise FrameError(
                    f"'{name}' is a {type(obj).__name__}, not a DataFrame or Series "
                    "(pandas, polars, DuckDB, Dask or PySpark).",
                    hint=_available_hint(namespace),
                )
            found[name] = obj
        return found
    items = list(namespace.items())  # a snapshot: a cell may be defining names right now
    candidates = [n for n, v in items if not n.startswith("_") and _is_table(v)]
    ranked = [n for n in order if n in candidates]
    ranked += [n for n in reversed(candidates) if n not in ranked]
    return {n: namespace[n] for n in ranked[: max(limit, 0)]}


def _lookup(namespace: Mapping[str, Any], name: str) -> Any:
    """``name`` or a dotted path like ``data.sales`` (attribute or key lookups)."""
    head, *rest = name.split(".")
    if not head.isidentifier() or head not in namespace:
        raise FrameError(
            f"there is no variable named '{name}' in the notebook.", hint=_available_hint(namespace)
        )
    obj = namespace[head]
    for part in rest:
        try:
            obj = obj[part] if isinstance(obj, Mapping) else getattr(obj, part)
        except Exception:  # any failing lookup: user objects may raise anything
            raise FrameError(
                f"'{name}' does not exist ('{part}' not found).", hint=_available_hint(namespace)
            ) from None
    return obj


def _available_hint(namespace: Mapping[str, Any]) -> str:
    names = [n for n, v in list(namespace.items()) if not n.startswith("_") and is_frame(v)]
    if not names:
        return "No DataFrame is defined yet; create or load one first (%dataagent load PATH)."
    shown = ", ".join(names[:10]) + (" …" if len(names) > 10 else "")
    return f"DataFrames and Series in the notebook: {shown}."


class FrameTracker:
    """Remembers the order in which frames were (re)defined, most recent first.

    Called after each cell: a name whose object identity changed moves to the front. This
    is what "most recently defined first" means for ``%%ask`` with no names.
    """

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._order: list[str] = []

    def update(self, namespace: Mapping[str, Any]) -> None:
        items = list(namespace.items())  # a snapshot: widget threads call this too
        current = {n: id(v) for n, v in items if not n.startswith("_") and is_frame(v)}
        changed = [n for n, i in current.items() if self._ids.get(n) != i]
        # dict order is definition order, so later definitions in one cell rank higher
        self._order = [
            *reversed(changed),
            *(n for n in self._order if n in current and n not in changed),
        ]
        self._ids = current

    @property
    def order(self) -> list[str]:
        return list(self._order)


# --- sampling and fingerprints -----------------------------------------------------------


def sample_positions(n: int, k: int, *, seed: int = 0) -> np.ndarray:
    """Sorted, distinct, seeded random positions; all of them when ``n <= k``.

    Seeded by the length so the same frame gives the same description (cache, replay).
    """
    if n <= k:
        return np.arange(n)
    rng = np.random.default_rng(seed + n)
    return np.unique(rng.integers(0, n, size=k))


def fingerprint(obj: pd.DataFrame | pd.Series, *, sample: int = 256) -> str:
    """A cheap version tag: shape, dtypes, labels and a hash of sampled rows.

    Costs O(sample) whatever the length. It catches reassignment, appended rows, changed
    dtypes or columns, and most edits; an in-place edit of a row outside the sample is not
    seen (the price of not hashing a 10 GB frame on every question).
    """
    h = hashlib.blake2b(digest_size=12)
    frame = obj.to_frame() if isinstance(obj, pd.Series) else obj
    h.update(repr((type(obj).__name__, frame.shape)).encode())
    h.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()][:5000]).encode())
    h.update(repr(type(frame.index).__name__).encode())
    n = len(frame)
    if n:
        pos = np.union1d(sample_positions(n, sample, seed=7), [0, n - 1])
        part = frame.iloc[pos]
        try:
            hashed = pd.util.hash_pandas_object(part, index=True).to_numpy()
            h.update(hashed.tobytes())
        except (TypeError, ValueError):  # unhashable cells (lists, dicts): fall back to repr
            h.update(repr(part.to_numpy().tolist()).encode(errors="replace"))
    return h.hexdigest()


# --- describing --------------------------------------------------------------------------


def describe(
    name: str,
    obj: Any,
    *,
    privacy: Privacy = "sample",
    sample_rows: int = 5,
    stats_sample: int = 10_000,
    budget_tokens: int = 1500,
) -> FrameDescription:
    """The text that tells the model what ``obj`` holds, within ``budget_tokens``."""
    engine = engines.engine_of(obj)
    if engine is not None:
        # imported here: the engine describer builds on this module's helpers
        from .engines.describe import describe_engine_frame

        return describe_engine_frame(
            name,
            obj,
            engine,
            privacy=privacy,
            sample_rows=sample_rows,
            stats_sample=stats_sample,
            budget_tokens=budget_tokens,
        )
    is_series = isinstance(obj, pd.Series)
    frame = obj.to_frame(name=obj.name if obj.name is not None else name) if is_series else obj
    n_rows, n_cols = frame.shape
    positions = sample_positions(n_rows, max(stats_sample, 1))
    sampled = len(positions) < n_rows
    sample = frame.iloc[positions] if sampled else frame
    est = "~" if sampled else ""

    kind = "Series" if is_series else "DataFrame"
    shape = f"{n_rows:,} rows" if is_series else f"{n_rows:,} rows × {n_cols:,} columns"
    head = [f"### {name} ({kind}, {shape})"]
    if is_series:
        head.append(f"series name: {_label(obj.name)!s}")
    head.append("index: " + _describe_index(frame.index, privacy))
    if isinstance(frame.columns, pd.MultiIndex):
        head.append(
            f"columns: MultiIndex with {frame.columns.nlevels} levels "
            f"{list(frame.columns.names)}; refer to a column by its tuple"
        )
    if sampled:
        head.append(
            f"statistics below are estimates (~) from a random sample of {len(positions):,} rows"
        )
    dup = frame.columns[frame.columns.duplicated()]
    if len(dup):
        head.append("duplicate column names: " + ", ".join(sorted({_label(c) for c in dup})))

    budget_chars = max(budget_tokens, 50) * 4
    with_table = privacy != "schema" and sample_rows > 0 and n_rows > 0
    text, shown, used = fit_columns(
        "\n".join(head),
        _column_lines(frame, sample, privacy, est),
        [_label(c) for c in frame.columns],
        budget_chars=budget_chars,
        reserve=min(budget_chars // 3, 180 * (sample_rows + 2)) if with_table else 0,
    )
    table = (
        _sample_table(frame, sample_rows, min(shown, TABLE_COLUMNS), max(budget_chars - used, 200))
        if with_table
        else ""
    )
    if table:
        text += "\n" + table
    if n_rows == 0:
        text += "\n(the frame is empty: no rows)"
    return FrameDescription(
        name=name,
        text=text,
        fingerprint=fingerprint(obj),
        columns_total=n_cols,
        columns_shown=shown,
        sampled=sampled,
    )


def fit_columns(
    head: str,
    lines: Iterator[str],
    labels: Sequence[str],
    *,
    budget_chars: int,
    reserve: int,
    title: str = "columns (name: dtype, nulls, statistics):",
) -> tuple[str, int, int]:
    """``head`` plus as many column lines as fit, and the names of those left out.

    ``lines`` is lazy, so columns past the budget are never computed; ``reserve`` keeps
    room for the example-rows table. Returns the text, the columns shown and chars used.
    """
    shown = 0
    kept: list[str] = []
    used = len(head) + 40
    for line in lines:
        if used + len(line) + 1 > budget_chars - reserve and shown > 0:
            break
        kept.append(line)
        used += len(line) + 1
        shown += 1
    text = head + (f"\n{title}\n" + "\n".join(kept) if kept else "")
    if shown < len(labels):
        left = labels[shown:]
        names = ", ".join(left[:40])
        more = " …" if len(left) > 40 else ""
        note = f"\n… {len(left):,} more columns not described (budget): {names}{more}"
        if used + len(note) > budget_chars:
            note = f"\n… {len(left):,} more columns not described (budget)."
        text += note
        used += len(note)
    return text, shown, used


def describe_many(
    frames: Mapping[str, Any],
    *,
    privacy: Privacy,
    sample_rows: int,
    stats_sample: int,
    budget_tokens: int,
) -> list[FrameDescription]:
    """Describe several frames sharing one budget (split evenly, unused share passed on)."""
    out: list[FrameDescription] = []
    remaining = budget_tokens
    items = list(frames.items())
    for i, (name, obj) in enumerate(items):
        share = max(remaining // (len(items) - i), 120)
        desc = describe(
            name,
            obj,
            privacy=privacy,
            sample_rows=sample_rows,
            stats_sample=stats_sample,
            budget_tokens=share,
        )
        remaining -= desc.tokens
        out.append(desc)
    return out


def _describe_index(index: pd.Index, privacy: Privacy) -> str:
    name = (
        f" named {list(index.names) if index.nlevels > 1 else _label(index.name)}"
        if any(n is not None for n in index.names)
        else ""
    )
    if isinstance(index, pd.RangeIndex):
        if len(index) == 0:
            return f"empty RangeIndex{name}"
        if index.step == 1 and index.start == 0:
            return f"RangeIndex 0..{len(index) - 1}{name}"
        return f"RangeIndex(start={index.start}, stop={index.stop}, step={index.step}){name}"
    if isinstance(index, pd.MultiIndex):
        levels = ", ".join(
            f"{_label(n)} ({lv.dtype})" for n, lv in zip(index.names, index.levels, strict=True)
        )
        return f"MultiIndex [{levels}]"
    text = f"{type(index).__name__} of {index.dtype}{name}"
    if privacy == "schema" or len(index) == 0:
        return text
    try:
        if isinstance(
            index, pd.DatetimeIndex | pd.TimedeltaIndex | pd.PeriodIndex
        ) or pd.api.types.is_numeric_dtype(index.dtype):
            lo, hi = index[0], index[-1]
            mono = "increasing" if index.is_monotonic_increasing else "unordered"
            return f"{text}, first {_short(lo)}, last {_short(hi)} ({mono})"
    except (TypeError, ValueError):
        pass
    return f"{text}, e.g. " + ", ".join(_short(v) for v in index[:3])


def _column_lines(
    frame: pd.DataFrame, sample: pd.DataFrame, privacy: Privacy, est: str
) -> Iterator[str]:
    """One line per column, produced lazily so the budget decides how many get computed."""
    dup = set(frame.columns[frame.columns.duplicated(keep=False)])
    for i in range(frame.shape[1]):
        col = frame.columns[i]
        sample_col = sample.iloc[:, i]
        label = _label(col)
        try:
            stats = _column_stats(sample_col, privacy, est)
        except Exception as exc:  # one odd column must not sink the whole description
            stats = f"statistics unavailable ({type(exc).__name__})"
        flag = " (duplicate name)" if col in dup else ""
        yield f"- {label}{flag}: {sample_col.dtype}; {stats}"


def _column_stats(s: pd.Series, privacy: Privacy, est: str) -> str:
    n = len(s)
    nulls = int(s.isna().sum())
    parts = [f"{nulls:,} null{'s' if nulls != 1 else ''}" if not est else f"~{_pct(nulls, n)} null"]
    if n == 0 or nulls == n:
        return ", ".join(parts + (["all null"] if n else []))
    values = s.dropna()
    dtype = s.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        parts.append(
            f"{len(dtype.categories):,} categories"
            + ("" if privacy == "schema" else f" e.g. {_list(dtype.categories[:6])}")
        )
        if privacy != "schema":
            parts.append("top " + _top(values, est))
        return ", ".join(parts)
    if pd.api.types.is_bool_dtype(dtype):
        if privacy != "schema":
            share = float(values.astype(bool).mean())
            parts.append(f"{est}{share:.0%} True")
        return ", ".join(parts)
    if pd.api.types.is_numeric_dtype(dtype):
        distinct = _nunique(values)
        parts.append(f"{est}{distinct:,} distinct")
        if privacy != "schema":
            arr = values.to_numpy(dtype="float64", na_value=np.nan)
            finite = arr[np.isfinite(arr)]
            if len(finite):
                parts.append(
                    f"min {est}{_num(finite.min())}, max {est}{_num(finite.max())}, "
                    f"mean {est}{_num(finite.mean())}"
                )
            if len(finite) < len(arr):
                parts.append("has ±inf")
        return ", ".join(parts)
    if pd.api.types.is_datetime64_any_dtype(dtype) or isinstance(dtype, pd.PeriodDtype):
        if privacy != "schema":
            parts.append(f"range {est}{_short(values.min())} .. {_short(values.max())}")
        return ", ".join(parts)
    if pd.api.types.is_timedelta64_dtype(dtype):
        if privacy != "schema":
            parts.append(
                f"min {_short(values.min())}, max {_short(values.max())}, "
                f"mean {est}{_short(values.mean())}"
            )
        return ", ".join(parts)
    # strings and objects (possibly mixed, possibly nested)
    kinds = values.map(lambda v: type(v).__name__).value_counts()
    if len(kinds) > 1:
        mix = ", ".join(f"{k} {_pct(c, len(values))}" for k, c in kinds.head(4).items())
        parts.append(f"mixed types: {mix}")
    elif kinds.index[0] not in ("str", "NAType"):
        parts.append(f"values are {kinds.index[0]}")
    distinct = _nunique(values)
    parts.append(f"{est}{distinct:,} distinct")
    if privacy == "schema":
        return ", ".join(parts)
    if distinct <= LOW_CARDINALITY or distinct <= len(values) * 0.05:
        parts.append("top " + _top(values, est))
    else:
        lengths = values.map(lambda v: len(v) if isinstance(v, str) else len(repr(v)))
        parts.append(f"length {int(lengths.min())}..{int(lengths.max())}")
        parts.append(f"e.g. {_list(values.iloc[:3])}")
    return ", ".join(parts)


def _nunique(values: pd.Series) -> int:
    try:
        return int(values.nunique())
    except TypeError:  # lists/dicts are unhashable
        return int(values.map(repr).nunique())


def _top(values: pd.Series, est: str, k: int = 5) -> str:
    try:
        counts = values.value_counts()
    except TypeError:
        counts = values.map(repr).value_counts()
    n = len(values)
    shown = ", ".join(f"{_short(v)} {est}{_pct(c, n)}" for v, c in counts.head(k).items())
    return shown + (" …" if len(counts) > k else "")


def _sample_table(frame: pd.DataFrame, rows: int, cols: int, budget_chars: int) -> str:
    if cols <= 0:
        return ""
    positions = sample_positions(len(frame), rows, seed=1)
    part = frame.iloc[positions, :cols]
    header = "| " + " | ".join(["(index)"] + [_cell(_label(c), 24) for c in part.columns])
    lines = [
        f"{len(part)} example rows (random):",
        header + " |",
        "|" + "---|" * (len(part.columns) + 1),
    ]
    used = sum(len(x) for x in lines)
    for idx, row in zip(part.index, part.itertuples(index=False, name=None), strict=True):
        line = "| " + " | ".join([_cell(idx, 20)] + [_cell(v, 24) for v in row]) + " |"
        if used + len(line) > budget_chars:
            break
        lines.append(line)
        used += len(line)
    return "\n".join(lines) if len(lines) > 3 else ""


# --- formatting helpers ------------------------------------------------------------------

_repr = reprlib.Repr()
_repr.maxstring = VALUE_CHARS
_repr.maxother = VALUE_CHARS
_repr.maxlist = 4
_repr.maxdict = 4


def _label(col: object) -> str:
    """A column label as the model should write it: plain for str, repr otherwise."""
    if isinstance(col, str):
        return col if col.isprintable() and col.strip() == col and col else repr(col)
    return repr(col)


def _short(value: object) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= VALUE_CHARS else value[:VALUE_CHARS] + "…")
    if isinstance(value, float | np.floating):
        return _num(float(value))
    if isinstance(value, np.generic):
        value = value.item()
        if isinstance(value, float):
            return _num(value)
    if isinstance(value, pd.Timestamp):
        return str(value.date()) if value == value.normalize() and value.tz is None else str(value)
    if isinstance(value, pd.Timedelta | pd.Period):
        return str(value)
    return _repr.repr(value)


def _cell(value: object, width: int) -> str:
    text = value if isinstance(value, str) else _short(value)
    text = text.replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def _list(values: Any) -> str:
    return "[" + ", ".join(_short(v) for v in list(values)) + "]"


def _num(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    if x == int(x) and abs(x) < 1e15:
        return f"{int(x):,}"
    if abs(x) >= 1000:
        return f"{x:,.1f}"
    return f"{x:.4g}"


def _pct(part: int, whole: int) -> str:
    if whole == 0:
        return "0%"
    share = part / whole
    if 0 < share < 0.001:
        return "<0.1%"
    return f"{share:.1%}" if share < 0.1 else f"{share:.0%}"
