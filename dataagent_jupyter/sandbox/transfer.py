"""Moving values between the user's kernel and the child kernel, by copy, through files.

Both kernels load this same module: the parent imports it as part of the package, the
child's launcher loads it from its file (as ``_dataagent_transfer``) before Landlock hides
the package folder. Its top level imports the standard library only.

**Parent → child (frames):** the parent is trusted, so the format is pickle protocol 5
with the column buffers *out of band*: one file holds a small pickle stream followed by
the raw, 64-byte-aligned buffers, written once per frame version and shared by every
later child (:mod:`.frame_store`). The child maps the file copy-on-write (``MAP_PRIVATE``,
read-only descriptor) and unpickles with the buffers pointing into the mapping, so
numeric columns are not copied a second time and stay writable, while the file stays as
the parent wrote it. Pickle is pandas' own exact serialization, so
every dtype survives (categoricals, tz-aware datetimes, nullable ints, MultiIndex on
either axis, object columns holding anything picklable, ``attrs``). Measured on the
development machine (2 cores, /dev/shm) for a 1 GB float frame: in-band pickle 0.32 GB/s
end to end, Arrow IPC (written, then read and converted) 0.9 GB/s, Arrow read zero-copy
from a mapping is instant but gives read-only arrays that pandas 3 refuses to write to;
out-of-band pickle plus a private mapping 2.5 GB/s, bounded by tmpfs page allocation;
and a version already written costs the next child only a hard link and a mapping.
Arrow files mapped read-only were the alternative weighed for sharing: they would need
a second format for the columns Arrow cannot hold and give read-only arrays.

**Child → parent (``fetch``):** this module only *writes* results (child side); the
user's kernel reads them with :mod:`.untrusted`, which treats the file as hostile and
never unpickles it. A DataFrame/Series/Index/ndarray travels as an uncompressed Arrow IPC
stream whose recipe (schema metadata, JSON) restores the index, the column labels and
the dtypes (named from :data:`DTYPE_ALLOWED` only). Object columns, and dtypes Arrow or
the allow-list cannot hold, travel as tagged JSON per cell (numbers, strings, containers,
dates, decimals...); other Python values use the same tagged JSON. Anything else is
refused with a message naming its type. Helpers called from the parent return a
:class:`Reply`, whose ``repr`` is JSON, so the parent never evaluates a Python literal.

**Which frame versions are already written** is the parent's business alone: see
``sent_frames.py`` (kept out of this file, which the child loads and which must stay
standard-library-only at its top level).
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import json
import math
import mmap
import os
import pickle
import re
import struct
import uuid
from collections.abc import Mapping
from typing import Any

__all__ = [
    "DTYPE_ALLOWED",
    "ENGINE_TAG",
    "RECIPE_KEY",
    "Reply",
    "TransferError",
    "engine_tag",
    "export_value",
    "receive",
    "send_back",
    "write_pickled",
]

_MAGIC = b"DAXFER1\0"
_ALIGN = 64
_CHUNK = 1 << 30  # one write() moves at most ~2 GiB on Linux; stay well below
_MAP_THRESHOLD = 1 << 20  # smaller files are simply read


class TransferError(Exception):
    """A value could not be copied across; the message is written for the notebook user."""


# --- parent → child: pickle 5 with out-of-band buffers ---------------------------------------


def _create_exclusive(path: str) -> int:
    # O_EXCL + O_NOFOLLOW: never write through something planted at the path.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(path, flags, 0o600)


def _write_all(fd: int, data: memoryview) -> None:
    view = data.cast("B") if data.format != "B" or data.ndim != 1 else data
    offset = 0
    while offset < len(view):
        offset += os.write(fd, view[offset : offset + _CHUNK])


def write_pickled(obj: Any, path: str) -> int:
    """Write ``obj`` as a pickle stream plus aligned raw buffers; return the file's size."""
    buffers: list[pickle.PickleBuffer] = []
    stream = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    raws = []
    for buf in buffers:
        try:
            raws.append(buf.raw())
        except BufferError:  # not contiguous: copy it (pickle rarely hands us these)
            raws.append(memoryview(bytes(buf)))
    lengths = [len(stream), *(raw.nbytes for raw in raws)]
    header = _MAGIC + struct.pack(f"<Q{len(lengths)}Q", len(lengths), *lengths)
    fd = _create_exclusive(path)
    try:
        _write_all(fd, memoryview(header))
        _write_all(fd, memoryview(stream))
        pos = len(header) + len(stream)
        for raw in raws:
            pad = -pos % _ALIGN
            if pad:
                os.write(fd, b"\0" * pad)
            _write_all(fd, raw)
            pos += pad + raw.nbytes
    finally:
        os.close(fd)
    return pos


def read_pickled(path: str) -> Any:
    """Load a file written by :func:`write_pickled` (child side; the file is not changed).

    Large files are mapped copy-on-write (``MAP_PRIVATE``) from a read-only descriptor,
    so the unpickled arrays live in the file's pages and stay writable, while every
    write lands in this process's own copy of the page: the next child, mapping the same
    file, sees it as the user's kernel wrote it.
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size >= _MAP_THRESHOLD:
            data: Any = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
        else:
            data = bytearray(size)
            fh.readinto(data)
    view = memoryview(data)
    if bytes(view[:8]) != _MAGIC:
        raise TransferError("a frame file was damaged on its way to the analysis kernel")
    (count,) = struct.unpack_from("<Q", view, 8)
    lengths = struct.unpack_from(f"<{count}Q", view, 16)
    pos = 16 + 8 * count
    stream = view[pos : pos + lengths[0]]
    pos += lengths[0]
    buffers = []
    for length in lengths[1:]:
        pos += -pos % _ALIGN
        buffers.append(view[pos : pos + length])
        pos += length
    return pickle.loads(stream, buffers=buffers)


#: Child side: every frame of this child's question as it arrived from the parent, by name.
_PRISTINE: dict[str, Any] = {}


def receive(
    namespace: dict[str, Any],
    files: Mapping[str, str],
    *,
    keep: tuple[str, ...] = (),
    forget: tuple[str, ...] = (),
    drop: tuple[str, ...] = (),
) -> None:
    """Child side of a run's prelude: bind the question's frames afresh before each attempt.

    ``files`` are frames new to this child; ``keep`` are frames it already holds (an
    earlier fix attempt of the same question). Either way the name is bound to a fresh
    shallow copy of the frame *as the parent sent it*, so an attempt that edited or
    rebound ``df`` does not leak into the next attempt, and no bytes travel for it (with
    copy-on-write the copy costs nothing until the code writes to it). ``forget`` names
    frames this attempt no longer uses: they leave the namespace too.
    """
    for name in (*drop, *forget):
        namespace.pop(name, None)
    for name in forget:
        _PRISTINE.pop(name, None)
    for name, path in files.items():
        _PRISTINE[name] = read_pickled(path)
    for name in (*files, *keep):
        if name not in _PRISTINE:
            raise LookupError(f"frame {name!r} is not held by this kernel")
        namespace[name] = _fresh(_PRISTINE[name])


#: Arrow schema metadata key naming the engine a polars/DuckDB frame was sent from
#: (the parent tags it in ``engines/payload.py``): ``b"polars:polars LazyFrame"``...
ENGINE_TAG = b"dataagent.engine"


def engine_tag(value: Any) -> bytes | None:
    """The engine tag of an Arrow table sent for a polars/DuckDB frame (else None)."""
    schema = getattr(value, "schema", None) if type(value).__name__ == "Table" else None
    metadata = getattr(schema, "metadata", None) or {}
    tag = metadata.get(ENGINE_TAG) if isinstance(metadata, dict) else None
    return tag if isinstance(tag, bytes) else None


def _duckdb_connection() -> Any:
    """DuckDB's default connection, made with an explicit thread count.

    Left to itself DuckDB reads ``/sys/fs/cgroup`` to count CPUs, which the sandbox does not
    let it open; it then refuses to start. The model's ``duckdb.sql(...)`` uses this one.
    """
    import duckdb

    connection = _DUCKDB.get("connection")
    if connection is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        connection = duckdb.connect(config={"threads": max(threads, 1)})
        duckdb.set_default_connection(connection)
        _DUCKDB["connection"] = connection
    return connection


_DUCKDB: dict[str, Any] = {}


def _fresh(value: Any) -> Any:
    """What one question binds: a shallow pandas copy, or the engine's object over Arrow.

    A polars or DuckDB frame arrives as an Arrow table tagged with its engine; it becomes
    the same kind of object the user holds (zero-copy over the table), so code written in
    that engine's API runs as it would in the notebook.
    """
    tag = engine_tag(value)
    if tag is None:
        return value.copy(deep=not _copy_on_write())
    engine, _, kind = tag.decode().partition(":")
    table = value.replace_schema_metadata(None)
    if engine == "polars":
        import polars

        frame: Any = polars.from_arrow(table)
        return frame.lazy() if kind.endswith("LazyFrame") else frame
    if engine == "duckdb":
        return _duckdb_connection().from_arrow(table)
    raise LookupError(f"a frame of engine {engine!r} cannot be rebuilt here")


# --- child → parent: Arrow IPC + tagged JSON, never pickle ------------------------------------

#: Schema metadata key of the recipe that restores index, labels and dtypes.
RECIPE_KEY = b"dataagent"
#: The only dtype names a result may state (the user's kernel refuses others; this side
#: sends columns of any other dtype as tagged JSON). ``pandas_dtype`` of an arbitrary
#: name can allocate without bound ("S1000000000") or open files ("dateutil/...").
DTYPE_ALLOWED = re.compile(
    r"object|bool|boolean|str|string|string\[(python|pyarrow)\]"
    r"|u?int(8|16|32|64)|U?Int(8|16|32|64)|float(16|32|64)|Float(32|64)|complex(64|128)"
    r"|(datetime|timedelta)64\[(s|ms|us|ns)\]"
    r"|datetime64\[(s|ms|us|ns), [\w+\-:/]{1,64}\]"
    r"|period\[\d{0,4}[A-Za-z][\w\-]{0,15}\]"
    r"|interval\[(u?int64|float64|datetime64\[ns\]|timedelta64\[ns\]), (right|left|both|neither)\]"
    r"|[a-z][a-z0-9_]{0,23}(\[(s|ms|us|ns)(, tz=[\w+\-:/]{1,64})?\])?\[pyarrow\]"
)


class Reply:
    """A helper's answer whose ``repr`` (what the user's kernel receives) is plain JSON."""

    def __init__(self, value: Any) -> None:
        self.text = value if isinstance(value, str) else json.dumps(value)

    def __repr__(self) -> str:
        return self.text


class _Unsupported(TransferError):
    pass


def _tz_name(tz: Any) -> str | None:
    if tz is None:
        return None
    key = getattr(tz, "key", None) or getattr(tz, "zone", None)
    if key:
        return str(key)
    if isinstance(tz, _dt.timezone):
        offset = tz.utcoffset(None)
        if offset == _dt.timedelta(0):
            return "UTC"
        minutes = int(offset.total_seconds() // 60)
        sign = "+" if minutes >= 0 else "-"
        return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    raise _Unsupported(f"a time zone of type {type(tz).__name__}")


def _encode(value: Any) -> Any:
    """A JSON-ready form of ``value``; containers and special types are tagged ``{"$": ...}``."""
    import numpy as np
    import pandas as pd

    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int) and not isinstance(value, np.integer):
        return value
    if isinstance(value, float) and not isinstance(value, np.floating):
        return value if math.isfinite(value) else {"$": "float", "v": repr(value)}
    if value is pd.NaT:
        return {"$": "NaT"}
    if value is pd.NA:
        return {"$": "NA"}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, tuple):
        return {"$": "tuple", "v": [_encode(v) for v in value]}
    if isinstance(value, dict):
        return {"$": "dict", "v": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if isinstance(value, set | frozenset):
        return {"$": type(value).__name__, "v": [_encode(v) for v in value]}
    if isinstance(value, bytes | bytearray):
        return {"$": type(value).__name__, "v": base64.b64encode(value).decode()}
    if isinstance(value, complex):
        return {"$": "complex", "v": [repr(value.real), repr(value.imag)]}
    if isinstance(value, decimal.Decimal):
        return {"$": "decimal", "v": str(value)}
    if isinstance(value, uuid.UUID):
        return {"$": "uuid", "v": str(value)}
    if isinstance(value, pd.Timestamp):
        return {
            "$": "timestamp",
            "v": int(value.value),
            "unit": value.unit,
            "tz": _tz_name(value.tzinfo),
        }
    if isinstance(value, pd.Timedelta):
        return {"$": "timedelta64", "v": int(value.value), "unit": value.unit}
    if isinstance(value, _dt.datetime):
        return {
            "$": "datetime",
            "v": value.replace(tzinfo=None).isoformat(),
            "tz": _tz_name(value.tzinfo),
        }
    if isinstance(value, _dt.date):
        return {"$": "date", "v": value.isoformat()}
    if isinstance(value, _dt.time):
        return {"$": "time", "v": value.isoformat()}
    if isinstance(value, _dt.timedelta):
        return {"$": "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, np.generic):
        dtype = value.dtype
        if dtype.kind in "biuf":
            return {"$": "np", "dtype": dtype.str, "v": _encode(value.item())}
        if dtype.kind in "mM":
            return {"$": "np", "dtype": dtype.str, "v": int(value.view("i8"))}
        if dtype.kind in "U":
            return str(value)
        if dtype.kind == "c":
            return {"$": "np", "dtype": dtype.str, "v": _encode(complex(value))}
    raise _Unsupported(f"an object of type {type(value).__module__}.{type(value).__qualname__}")


def _dtype_text(dtype: Any) -> Any:
    """The dtype as the recipe states it: its name, or for categoricals the full categories."""
    import pandas as pd

    if isinstance(dtype, pd.CategoricalDtype):
        return {"categories": _axis_recipe(dtype.categories), "ordered": bool(dtype.ordered)}
    if isinstance(dtype, pd.StringDtype) and dtype.na_value is pd.NA:
        return f"string[{dtype.storage}]"
    text = str(dtype)
    return text if DTYPE_ALLOWED.fullmatch(text) else "object"


def _arrow_ok(kind: Any) -> bool:
    """Arrow types the user's kernel accepts (others travel as tagged JSON)."""
    import pyarrow as pa

    t = pa.types
    if t.is_dictionary(kind):
        return t.is_integer(kind.index_type) and _arrow_ok(kind.value_type)
    if isinstance(kind, pa.ExtensionType):  # pandas' own: Period and Interval
        storage = kind.storage_type
        return kind.extension_name in ("pandas.period", "pandas.interval") and (
            all(_arrow_ok(storage.field(i).type) for i in range(storage.num_fields))
            if t.is_struct(storage)
            else _arrow_ok(storage)
        )
    return any(
        check(kind)
        for check in (
            t.is_boolean,
            t.is_integer,
            t.is_floating,
            t.is_timestamp,
            t.is_duration,
            t.is_date,
            t.is_time,
            t.is_string,
            t.is_large_string,
            t.is_binary,
            t.is_null,
            t.is_decimal,
        )
    )


def _column_payload(series: Any) -> tuple[Any, str]:
    """(values Arrow can take, how to read them back) for one column or index level."""
    import pyarrow as pa

    if series.dtype == object:
        return [json.dumps(_encode(v), allow_nan=True) for v in series], "json"
    try:
        if _dtype_text(series.dtype) != "object" and _arrow_ok(
            pa.Array.from_pandas(series.iloc[:0]).type
        ):
            return series, "arrow"
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError):
        pass
    return [json.dumps(_encode(v), allow_nan=True) for v in series.astype(object)], "json"


def _axis_recipe(index: Any) -> dict[str, Any]:
    """Column labels (small): plain tagged JSON plus the dtype to rebuild them with."""
    import pandas as pd

    if isinstance(index, pd.MultiIndex):
        return {"multi": True, "values": _encode(list(index)), "names": _encode(list(index.names))}
    if isinstance(index, pd.RangeIndex):
        return {"range": [index.start, index.stop, index.step], "name": _encode(index.name)}
    return {
        "values": _encode(index.astype(object).tolist()),
        "name": _encode(index.name),
        "dtype": _dtype_text(index.dtype),
    }


def _engine_result_as_pandas(value: Any) -> Any:
    """A polars or DuckDB result comes back to the notebook as a pandas DataFrame/Series.

    The result channel speaks pandas only; a lazy query is refused rather than run here.
    """
    module = type(value).__module__.split(".")[0]
    name = type(value).__name__
    if module == "polars" and name in ("DataFrame", "Series"):
        return value.to_pandas()
    if module == "polars" and name == "LazyFrame":
        raise TransferError("a polars LazyFrame (a query): make `result` its collected value")
    if module == "duckdb" and name == "DuckDBPyRelation":
        return value.df()
    return value


def export_value(value: Any, path: str) -> int:
    """Write ``value`` for the parent (child side); returns the size. Raises TransferError."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    value = _engine_result_as_pandas(value)
    recipe: dict[str, Any]
    arrays: dict[str, Any] = {}
    if isinstance(value, pd.DataFrame | pd.Series | pd.Index):
        kind = (
            "frame"
            if isinstance(value, pd.DataFrame)
            else "series"
            if isinstance(value, pd.Series)
            else "index"
        )
        frame = (
            value
            if kind == "frame"
            else value.to_frame(name=0)
            if kind == "series"
            else pd.DataFrame(index=value)
        )
        recipe = {"kind": kind, "fields": []}
        index = frame.index
        if isinstance(index, pd.RangeIndex):
            recipe["index"] = _axis_recipe(index)
        else:
            levels = [index.get_level_values(i) for i in range(index.nlevels)]
            recipe["index"] = {"levels": len(levels), "names": _encode(list(index.names))}
            freq = getattr(index, "freqstr", None)  # DatetimeIndex/TimedeltaIndex keep it
            if freq and not isinstance(index, pd.PeriodIndex):
                recipe["index"]["freq"] = freq
            for i, level in enumerate(levels):
                payload, how = _column_payload(pd.Series(level, copy=False))
                arrays[f"i{i}"] = payload
                dtype = _dtype_text(level.dtype) if how == "arrow" else _json_dtype(level.dtype)
                recipe["fields"].append([f"i{i}", how, dtype])
        recipe["columns"] = _axis_recipe(frame.columns)
        for j in range(frame.shape[1]):
            column = frame.iloc[:, j]
            payload, how = _column_payload(column)
            arrays[f"c{j}"] = payload
            dtype = _dtype_text(column.dtype) if how == "arrow" else _json_dtype(column.dtype)
            recipe["fields"].append([f"c{j}", how, dtype])
        if kind == "series":
            recipe["name"] = _encode(value.name)
        table = (
            pa.Table.from_arrays([_to_arrow(v) for v in arrays.values()], names=list(arrays))
            if arrays
            else pa.table({"_": pa.nulls(len(frame))}).drop_columns(["_"])
        )
    elif isinstance(value, np.ndarray) and value.dtype.kind in "biufmM":
        recipe = {"kind": "ndarray", "shape": list(value.shape), "dtype": value.dtype.str}
        table = pa.table({"v": pa.array(np.ascontiguousarray(value).reshape(-1))})
    else:
        if isinstance(value, np.ndarray):
            value = value.tolist()
        recipe = {"kind": "value", "value": _encode(value)}
        table = pa.table({})
    recipe["rows"] = table.num_rows
    meta = dict(table.schema.metadata or {})
    meta[RECIPE_KEY] = json.dumps(recipe, allow_nan=True).encode()
    table = table.replace_schema_metadata(meta)
    fd = _create_exclusive(path)
    # An uncompressed stream: the user's kernel refuses compression (a small file must not
    # expand to gigabytes there) and reads the stream's messages in the order it checked.
    with os.fdopen(fd, "wb") as fh, pa.ipc.new_stream(fh, table.schema) as writer:
        writer.write_table(table)
    return os.path.getsize(path)


def _to_arrow(payload: Any) -> Any:
    """One column as an Arrow array; plain numeric columns without a copy, NaN kept as NaN."""
    import numpy as np
    import pyarrow as pa

    if isinstance(payload, list):  # tagged JSON cells
        return pa.array(payload, type=pa.large_string())
    if isinstance(payload.dtype, np.dtype) and payload.dtype.kind in "iuf":
        return pa.array(payload.to_numpy(), from_pandas=False)
    return pa.array(payload, from_pandas=True)


def _json_dtype(dtype: Any) -> Any:
    # Tagged JSON cells are restored with the original dtype when it is allowed (they
    # came as JSON because Arrow could not hold them), else they stay objects.
    text = _dtype_text(dtype)
    return text if isinstance(text, str) else "object"


def send_back(namespace: Mapping[str, Any], name: str, path: str) -> Reply:
    """Child side of ``fetch``: export ``namespace[name]``; a JSON status for the parent."""
    if name not in namespace:
        return Reply({"ok": False, "missing": True})
    try:
        size = export_value(namespace[name], path)
    except TransferError as exc:
        return Reply({"ok": False, "error": str(exc)[:500]})
    except OSError as exc:
        return Reply({"ok": False, "error": f"could not write it: {exc.strerror}"})
    return Reply({"ok": True, "bytes": size})


# --- pandas settings both kernels need -----------------------------------------------------


def _copy_on_write() -> bool:
    import pandas as pd

    if int(pd.__version__.split(".")[0]) >= 3:
        return True
    return pd.options.mode.copy_on_write is True
