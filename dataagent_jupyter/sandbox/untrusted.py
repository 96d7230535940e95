"""Reading what the child kernel sends back, as the hostile input it may be.

The child runs model-written code, so a result file, a status reply or a report from it
may be crafted to make the user's kernel allocate, compute or block without bound: a few
kilobytes of zstd that expand to gigabytes, a dtype name such as ``"S1000000000"``, a
status of deeply nested list text, a recipe that names the same column hundreds of
times. Everything here therefore checks sizes against :class:`ResultLimits` *before*
allocating anything of that size, accepts only what :func:`.transfer.export_value`
writes (an uncompressed Arrow IPC stream, dtypes from an allow-list, a recipe whose
fields match the table exactly), and parses text as JSON with a length cap, never with
``ast.literal_eval``. Any violation raises one :class:`LimitExceeded` or
:class:`~.transfer.TransferError`, which the sandbox reports as a ``SandboxError``.

Honest results stay fast: the file is read once into private memory (the child may still
hold it open, so it is never mapped), Arrow reads its buffers in place, and numeric
columns become pandas columns without another copy.
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import json
import os
import re
import stat
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .transfer import DTYPE_ALLOWED, RECIPE_KEY, TransferError

__all__ = ["LimitExceeded", "ResultLimits", "import_value", "parse_reply"]

_DATEUTIL = re.compile(r"dateutil|pytz/|^/|\.\.")
_OFFSET = re.compile(r"^(?:UTC)?([+-])(\d{2}):?(\d{2})$")
_FIELD_NAME = re.compile(r"[ic]\d{1,7}")
_CONTINUATION = 0xFFFFFFFF
# Arrow flatbuffer enums (format/Message.fbs): MessageHeader values.
_SCHEMA, _DICTIONARY_BATCH, _RECORD_BATCH = 1, 2, 3


class LimitExceeded(TransferError):
    """The child sent more than a limit allows; the message names the limit."""


@dataclass(frozen=True)
class ResultLimits:
    """How much one value from the child may cost the user's kernel (checked up front)."""

    file_bytes: int = 1 << 30
    decoded_bytes: int = 2 << 30  # memory of the rebuilt value, estimated before building
    cells: int = 500_000_000  # rows x columns
    columns: int = 100_000
    string_bytes: int = 16 << 20  # one string, bytes value or JSON cell
    depth: int = 64  # nesting of lists/dicts in tagged JSON
    recipe_bytes: int = 16 << 20
    reply_bytes: int = 64 << 10  # a status or report reply
    seconds: float = 120.0  # the whole import, checked between columns

    @classmethod
    def from_sandbox(cls, file_size: int | None, timeout: float) -> ResultLimits:
        """Limits derived from the child's own file-size limit (what it can write at most)."""
        file_bytes = file_size or (4 << 30)
        return cls(
            file_bytes=file_bytes,
            decoded_bytes=max(2 * file_bytes, 256 << 20),
            seconds=timeout,
        )


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB" if n >= 1 << 20 else f"{n:,} bytes"


# --- replies: small JSON texts -----------------------------------------------------------------


def parse_reply(expressions: dict[str, Any], key: str, *, max_bytes: int = 64 << 10) -> dict:
    """The JSON object a child's ``user_expressions[key]`` holds, within ``max_bytes``.

    The child's helper returns a :class:`.transfer.Reply`, whose ``repr`` is plain JSON,
    so no Python literal is ever evaluated here.
    """
    result = expressions.get(key)
    if not isinstance(result, dict) or result.get("status") != "ok":
        error = result if isinstance(result, dict) else {}
        ename, evalue = str(error.get("ename", "Error"))[:100], str(error.get("evalue", ""))[:300]
        raise TransferError(f"the analysis kernel's helper failed ({ename}: {evalue})")
    text = (result.get("data") or {}).get("text/plain")
    if not isinstance(text, str):
        raise TransferError("the analysis kernel's reply is not text")
    if len(text) > max_bytes:
        raise LimitExceeded(
            f"its reply is {len(text):,} characters, over the {max_bytes:,}-character limit "
            "on a status reply"
        )
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise TransferError("the analysis kernel's reply is not valid JSON") from None
    if not isinstance(value, dict):
        raise TransferError("the analysis kernel's reply is not a JSON object")
    return value


# --- the result file ----------------------------------------------------------------------------


class _Clock:
    """Deadline and cancel checks between steps (the work between checks is bounded)."""

    def __init__(self, seconds: float, cancel: threading.Event | None) -> None:
        self.deadline = time.monotonic() + seconds
        self.seconds = seconds
        self.cancel = cancel

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise _CancelledImport()
        if time.monotonic() > self.deadline:
            raise LimitExceeded(f"reading it took longer than the {self.seconds:g} s limit")


class _CancelledImport(Exception):
    """Stop asked for while a value was being read (the caller turns it into Cancelled)."""


def _read_private(path: str, max_bytes: int) -> Any:
    """The file's bytes in private memory: never a mapping of the file the child can change.

    Never blocks on a FIFO nor follows a link the child planted; the file is removed.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        _unlink_quietly(path)
        raise TransferError(f"the result file could not be opened ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TransferError("the analysis kernel left something that is not a file")
        size = info.st_size
        if size > max_bytes:
            raise LimitExceeded(
                f"the file is {_mib(size)}, over the {_mib(max_bytes)} limit on a result file"
            )
        # numpy allocates large buffers aligned and advised for huge pages: reading into
        # one runs several times faster than into a bytearray (fewer page faults).
        import numpy as np

        data: Any = np.empty(size, dtype=np.uint8)
        view, got = memoryview(data).cast("B"), 0
        try:
            while got < size:
                n = os.readv(fd, [view[got:]])
                if n == 0:
                    break
                got += n
        finally:
            view.release()
        if got < size:
            raise TransferError("the result file was cut short while it was read")
        return data
    finally:
        os.close(fd)
        if info.st_size >= 64 << 20:  # freeing a large tmpfs file takes a while
            threading.Thread(target=_unlink_quietly, args=(path,), daemon=True).start()
        else:
            _unlink_quietly(path)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class _Flat:
    """Just enough of a FlatBuffers reader to inspect one Arrow IPC message header."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf

    def u32(self, pos: int) -> int:
        return struct.unpack_from("<I", self.buf, pos)[0]

    def table(self, pos: int) -> tuple[int, int, int]:
        vtable = pos - struct.unpack_from("<i", self.buf, pos)[0]
        return pos, vtable, struct.unpack_from("<H", self.buf, vtable)[0]

    def field(self, table: tuple[int, int, int], index: int) -> int | None:
        pos, vtable, vtable_len = table
        slot = 4 + 2 * index
        if slot + 2 > vtable_len:
            return None
        offset = struct.unpack_from("<H", self.buf, vtable + slot)[0]
        return pos + offset if offset else None

    def ref(self, pos: int) -> int:
        return pos + self.u32(pos)

    def scalar(self, table: tuple[int, int, int], index: int, fmt: str, default: int) -> int:
        pos = self.field(table, index)
        return default if pos is None else struct.unpack_from(fmt, self.buf, pos)[0]


def _check_batch(flat: _Flat, batch: tuple[int, int, int], body: int, limits: ResultLimits) -> int:
    """Refuse compression and buffers outside the body; return the batch's row count."""
    if flat.field(batch, 3) is not None:
        raise LimitExceeded("the result is compressed, and compressed results are refused")
    rows = flat.scalar(batch, 0, "<q", 0)
    if not 0 <= rows <= limits.cells:
        raise LimitExceeded(f"it has {rows:,} rows, over the {limits.cells:,}-cell limit")
    for index, check in ((1, "node"), (2, "buffer")):
        pos = flat.field(batch, index)
        if pos is None:
            continue
        vec = flat.ref(pos)
        count = flat.u32(vec)
        if count > 16 * limits.columns + 16:
            raise LimitExceeded(f"it has {count:,} Arrow {check}s, over the column limit")
        for i in range(count):
            first, second = struct.unpack_from("<qq", flat.buf, vec + 4 + 16 * i)
            if check == "node" and not 0 <= first <= max(rows, 0):
                raise TransferError("the result file's column lengths do not match its rows")
            if check == "buffer" and (first < 0 or second < 0 or first + second > body):
                raise TransferError("the result file points outside its own data")
    return rows


def _check_stream(data: Any, limits: ResultLimits, clock: _Clock) -> None:
    """Walk every IPC message header before Arrow decodes anything."""
    import pyarrow as pa

    reader = pa.ipc.MessageReader.open_stream(pa.py_buffer(data))
    rows = 0
    first = True
    while True:
        clock.check()
        try:
            message = reader.read_next_message()
        except StopIteration:
            break
        flat = _Flat(message.metadata.to_pybytes())
        root = flat.table(flat.u32(0))
        kind = flat.scalar(root, 1, "<B", 0)
        header_pos = flat.field(root, 2)
        body = message.body.size if message.body is not None else 0
        if kind == _SCHEMA and first:
            if message.metadata.size > limits.recipe_bytes + (1 << 20) + 256 * limits.columns:
                raise LimitExceeded("its schema is larger than the limit on a result's recipe")
        elif kind in (_RECORD_BATCH, _DICTIONARY_BATCH) and header_pos is not None and not first:
            header = flat.table(flat.ref(header_pos))
            if kind == _DICTIONARY_BATCH:
                data_pos = flat.field(header, 1)
                if data_pos is None:
                    raise TransferError("the result file holds an empty dictionary batch")
                header = flat.table(flat.ref(data_pos))
                _check_batch(flat, header, body, limits)
            else:
                rows += _check_batch(flat, header, body, limits)
        else:
            raise TransferError("the result file holds a message Arrow results never contain")
        first = False
        if rows > limits.cells:
            raise LimitExceeded(f"it has over {limits.cells:,} rows, over the cell limit")


#: Bytes a pandas cell takes at most, by the Arrow type it arrives as (object cells extra).
_OBJECT_CELL = 64


def _decoded_estimate(column: Any, how: str, dtype_text: Any) -> int:
    """An upper bound on the memory one column takes once rebuilt in pandas."""
    import pyarrow as pa

    rows = len(column)
    kind = column.type
    chunks = column.chunks if hasattr(column, "chunks") else [column]
    if how == "json":
        tokens = rows
        text = 0
        for chunk in chunks:
            values = chunk.buffers()[2]
            if values is None:
                continue
            raw = memoryview(values)[: len(values)]
            text += len(raw)
            tokens += sum(bytes(raw).count(c) for c in (b",", b"[", b"{", b":"))
        return text * 2 + tokens * 100
    if pa.types.is_dictionary(kind):
        dictionary = sum(_decoded_estimate(c.dictionary, "arrow", "object") for c in chunks)
        return rows * 8 + dictionary
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind):
        data = sum(c.buffers()[2].size for c in chunks if c.buffers()[2] is not None)
        per_cell = 16 if str(dtype_text) in ("str", "string[pyarrow]") else _OBJECT_CELL
        return data + rows * per_cell
    if pa.types.is_null(kind):
        return rows * 8
    if isinstance(kind, pa.ExtensionType):
        kind = kind.storage_type
    if pa.types.is_struct(kind):  # an Interval's bounds: at most an object per field
        return rows * _OBJECT_CELL * (kind.num_fields + 1)
    width = max(getattr(kind, "bit_width", 64) // 8, 1)
    return rows * max(width, 8) + rows  # nulls may widen ints to float64, plus a mask


def _arrow_type_allowed(kind: Any) -> bool:
    import pyarrow as pa

    t = pa.types
    if t.is_dictionary(kind):
        return t.is_integer(kind.index_type) and _arrow_type_allowed(kind.value_type)
    if t.is_timestamp(kind) and kind.tz:
        _check_tz(kind.tz)
    if isinstance(kind, pa.ExtensionType):  # pandas' own: Period and Interval
        storage = kind.storage_type
        return kind.extension_name in ("pandas.period", "pandas.interval") and (
            all(_arrow_type_allowed(storage.field(i).type) for i in range(storage.num_fields))
            if t.is_struct(storage)
            else _arrow_type_allowed(storage)
        )
    return bool(
        t.is_boolean(kind)
        or t.is_integer(kind)
        or t.is_floating(kind)
        or t.is_timestamp(kind)
        or t.is_duration(kind)
        or t.is_date(kind)
        or t.is_time(kind)
        or t.is_string(kind)
        or t.is_large_string(kind)
        or t.is_binary(kind)
        or t.is_null(kind)
        or t.is_decimal(kind)
    )


def import_value(
    path: str,
    *,
    limits: ResultLimits | None = None,
    cancel: threading.Event | None = None,
) -> Any:
    """Validate and rebuild what :func:`.transfer.export_value` wrote (user's kernel side).

    Raises LimitExceeded or TransferError for anything out of bounds or malformed, and
    ``_CancelledImport`` (see :func:`is_cancelled`) when ``cancel`` is set meanwhile.
    """
    import pyarrow as pa

    limits = limits or ResultLimits()
    clock = _Clock(limits.seconds, cancel)
    data = _read_private(path, limits.file_bytes)
    try:
        _check_stream(data, limits, clock)
        table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
        raw_recipe = (table.schema.metadata or {}).get(RECIPE_KEY)
        if raw_recipe is None:
            raise TransferError("the result file has no recipe")
        if len(raw_recipe) > limits.recipe_bytes:
            raise LimitExceeded(
                f"its recipe is {_mib(len(raw_recipe))}, over the {_mib(limits.recipe_bytes)} limit"
            )
        _check_json_size(raw_recipe, limits)
        recipe = json.loads(raw_recipe)
        clock.check()
        if not isinstance(recipe, dict):
            raise TransferError("the result file's recipe is not an object")
        return _rebuild(table, recipe, limits, clock, data)
    except (TransferError, _CancelledImport):
        raise
    except RecursionError:
        raise LimitExceeded("its values nest deeper than the limit on nesting") from None
    except (
        pa.ArrowException,
        KeyError,
        TypeError,
        ValueError,
        IndexError,
        AttributeError,
        OverflowError,
        struct.error,
        decimal.InvalidOperation,
    ) as exc:
        raise TransferError(
            f"the analysis kernel sent back an unreadable value ({type(exc).__name__})"
        ) from None


def is_cancelled(exc: BaseException) -> bool:
    """True for the exception :func:`import_value` raises when its cancel event was set."""
    return isinstance(exc, _CancelledImport)


def _check_json_size(text: bytes | str, limits: ResultLimits) -> None:
    raw = text.encode() if isinstance(text, str) else bytes(text)
    tokens = sum(raw.count(c) for c in (b",", b"[", b"{", b":")) + 1
    if len(raw) * 2 + tokens * 100 > limits.decoded_bytes:
        raise LimitExceeded(
            f"its JSON would take over {_mib(limits.decoded_bytes)} in memory, the limit on a "
            "result"
        )


def _rebuild(
    table: Any, recipe: dict[str, Any], limits: ResultLimits, clock: _Clock, memory: Any
) -> Any:
    import numpy as np
    import pandas as pd

    ncols = table.num_columns
    if ncols > limits.columns:
        raise LimitExceeded(f"it has {ncols:,} columns, over the {limits.columns:,} limit")
    if table.num_rows * max(ncols, 1) > limits.cells:
        raise LimitExceeded(
            f"it has {table.num_rows:,} x {ncols:,} cells, over the {limits.cells:,}-cell limit"
        )
    table.validate(full=True)
    kind = recipe.get("kind")
    if kind == "value":
        if ncols:
            raise TransferError("the result file holds columns it does not describe")
        return _decode(recipe.get("value"), limits.depth)
    if kind == "ndarray":
        dtype = np.dtype(_numpy_dtype(recipe["dtype"]))
        shape = tuple(int(x) for x in recipe["shape"])
        if (
            ncols != 1
            or table.column_names != ["v"]
            or not _arrow_type_allowed(table.schema[0].type)
        ):
            raise TransferError("the result file does not hold one array")
        size = 1
        for n in shape:
            if n < 0:
                raise TransferError("the result file has a negative array dimension")
            size *= n
        if size != table.num_rows or size * dtype.itemsize > limits.decoded_bytes:
            raise LimitExceeded("the array's shape does not fit its data or the size limit")
        flat = table.column("v").to_numpy(zero_copy_only=False)
        if flat.dtype != dtype:
            flat = flat.astype(dtype)
        return flat.reshape(shape)
    if kind not in ("frame", "series", "index"):
        raise TransferError("the analysis kernel sent back an unknown kind of value")
    fields = recipe.get("fields")
    if not isinstance(fields, list) or len(fields) != ncols:
        raise TransferError("the result file's recipe does not list each column exactly once")
    # a malformed field gives no name, so the count check below refuses the recipe
    names: list[str] = [
        f[0] for f in fields if isinstance(f, list) and len(f) == 3 and isinstance(f[0], str)
    ]
    if (
        len(set(names)) != ncols
        or set(names) != set(table.column_names)
        or not all(isinstance(n, str) and _FIELD_NAME.fullmatch(n) for n in names)
    ):
        raise TransferError("the result file's recipe does not list each column exactly once")
    total = 0
    for name, how, dtype_text in fields:
        if how not in ("json", "arrow"):
            raise TransferError(f"unknown column encoding {how!r} in the result file")
        column = table.column(name)
        if not _arrow_type_allowed(column.type) or (how == "json" and not _is_text(column)):
            raise TransferError(f"refused the Arrow type {column.type} in the result file")
        _check_dtype_text(dtype_text)
        _check_strings(column, limits)
        total += _decoded_estimate(column, how, dtype_text)
    if total > limits.decoded_bytes:
        raise LimitExceeded(
            f"it would take about {_mib(total)} in memory, over the "
            f"{_mib(limits.decoded_bytes)} limit on a result"
        )
    table = table.replace_schema_metadata(None)  # our recipe restores dtypes, not pandas'
    columns: dict[str, Any] = {}
    for name, how, dtype_text in fields:
        clock.check()
        chunked = table.column(name)
        if how == "json":
            values = [_decode(json.loads(x), limits.depth) for x in chunked.to_pylist()]
            columns[name] = _astype(pd.Series(values, dtype=object), dtype_text)
        else:
            columns[name] = _from_arrow(chunked, dtype_text, memory)
    nrows = int(recipe["rows"])
    if nrows != table.num_rows:
        raise TransferError("the result file's row count does not match its recipe")
    idx_recipe = recipe["index"]
    if not isinstance(idx_recipe, dict):
        raise TransferError("the result file's index recipe is not an object")
    levels_wanted = idx_recipe.get("levels")
    index_fields = sorted(n for n in names if n.startswith("i"))
    data_fields = [n for n in names if n.startswith("c")]
    if levels_wanted is not None:
        levels_wanted = int(levels_wanted)
        if index_fields != sorted(f"i{i}" for i in range(levels_wanted)) or levels_wanted < 1:
            raise TransferError("the result file's index levels do not match its columns")
        levels = [pd.Index(_values(columns[f"i{i}"]), copy=False) for i in range(levels_wanted)]
        level_names = _decode(idx_recipe["names"], limits.depth)
        if not isinstance(level_names, list) or len(level_names) != levels_wanted:
            raise TransferError("the result file's index names do not match its levels")
        index = (
            pd.MultiIndex.from_arrays(levels, names=level_names)
            if len(levels) > 1
            else levels[0].rename(level_names[0])
        )
        if idx_recipe.get("freq"):
            index = _with_freq(index, str(idx_recipe["freq"])[:32])
    else:
        if index_fields:
            raise TransferError("the result file's index levels do not match its columns")
        index = _rebuild_axis(idx_recipe, limits)
    if len(index) != nrows:
        raise TransferError("the result file's index does not match its rows")
    clock.check()
    if kind == "index":
        return index
    if sorted(data_fields) != sorted(f"c{j}" for j in range(len(data_fields))):
        raise TransferError("the result file's columns are not numbered in order")
    labels = _rebuild_axis(recipe["columns"], limits)
    if len(labels) != len(data_fields):
        raise TransferError("the result file's column labels do not match its columns")
    data_cols = [columns[f"c{j}"] for j in range(len(data_fields))]
    if kind == "series":
        if len(data_cols) != 1:
            raise TransferError("a Series must come back as exactly one column")
        name = _decode(recipe.get("name"), limits.depth)
        return pd.Series(_values(data_cols[0]), index=index, name=name, copy=False)
    frame = pd.DataFrame(
        {j: _values(col) for j, col in enumerate(data_cols)}, index=index, copy=False
    )
    frame.columns = labels
    return frame


def _plain_column(chunked: Any, dtype: Any, memory: Any) -> Any:
    """A writable numpy view of a null-free numeric column, in the private copy we read.

    Arrow's own conversion gives read-only arrays, which pandas refuses to write to; the
    bytes are ours (read into private memory), so they can be handed over as they are.
    """
    import numpy as np

    if not isinstance(dtype, np.dtype) or dtype.kind not in "iufmM" or chunked.num_chunks != 1:
        return None
    chunk = chunked.chunk(0)
    if chunk.null_count or chunk.type.bit_width != dtype.itemsize * 8:
        return None
    try:
        if chunk.type.to_pandas_dtype() != dtype:
            return None
    except (NotImplementedError, TypeError):
        return None
    import pyarrow as pa

    data = chunk.buffers()[1]
    if data is None:
        return None
    # Arrow's slices of our memory are read-only views; find the same bytes in ``memory``.
    offset = data.address - pa.py_buffer(memory).address + chunk.offset * dtype.itemsize
    if offset < 0 or offset + len(chunk) * dtype.itemsize > len(memory):
        return None  # Arrow copied it elsewhere (e.g. to align it): use its conversion
    array = np.frombuffer(memory, dtype=dtype, count=len(chunk), offset=offset)
    return array if array.flags.writeable else None


def _values(column: Any) -> Any:
    # A Series' own values (not a read-only view of them), or the ndarray as it is.
    return column.array if hasattr(column, "array") else column


def _is_text(column: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_string(column.type) or pa.types.is_large_string(column.type)


def _check_strings(column: Any, limits: ResultLimits) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_dictionary(kind):
        for chunk in column.chunks:
            _check_strings(pa.chunked_array([chunk.dictionary]), limits)
        return
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)):
        return
    if len(column) == 0:
        return
    longest = pc.max(pc.binary_length(column)).as_py() or 0
    if longest > limits.string_bytes:
        raise LimitExceeded(
            f"one of its strings is {_mib(longest)}, over the {_mib(limits.string_bytes)} "
            "limit on a string"
        )


def _with_freq(index: Any, freq: str) -> Any:
    import pandas as pd

    try:
        return type(index)(index, freq=pd.tseries.frequencies.to_offset(freq))
    except (TypeError, ValueError):
        return index  # the values do not fit that frequency: keep them as they are


def _from_arrow(chunked: Any, dtype_text: Any, memory: Any = None) -> Any:
    import numpy as np
    import pandas as pd

    dtype = _restore_dtype(dtype_text)
    plain = _plain_column(chunked, dtype, memory) if memory is not None else None
    if plain is not None:
        return plain  # a writable ndarray; pandas wraps it without copying
    if isinstance(dtype, pd.api.extensions.ExtensionDtype) and hasattr(dtype, "__from_arrow__"):
        try:
            return pd.Series(dtype.__from_arrow__(chunked), copy=False)
        except (TypeError, ValueError, NotImplementedError):
            pass
    series = chunked.to_pandas()
    if isinstance(dtype, pd.CategoricalDtype):
        return series.astype(dtype) if series.dtype != dtype else series
    series = series if series.dtype == dtype else _astype(series, dtype_text)
    values = series.array
    array = getattr(values, "_ndarray", None)
    if isinstance(array, np.ndarray) and not array.flags.writeable:
        series = series.copy()  # Arrow's conversion can be read-only: the user may write
    return series


# --- dtypes, axes and tagged JSON ---------------------------------------------------------------


def _check_dtype_text(text: Any) -> None:
    if isinstance(text, dict):
        if set(text) != {"categories", "ordered"} or not isinstance(text["categories"], dict):
            raise TransferError("refused a categorical dtype recipe from the analysis kernel")
        return
    if not isinstance(text, str) or len(text) > 80 or not DTYPE_ALLOWED.fullmatch(text):
        raise TransferError(f"refused the dtype {str(text)[:80]!r} from the analysis kernel")


def _check_tz(name: Any) -> Any:
    """A tz for pandas from a name the child sent: a zone key, an offset or UTC only.

    pandas resolves ``dateutil/<path>`` by opening ``<path>``: a child could make the
    parent open any file (a FIFO would hang it), so names are checked, never passed on raw.
    """
    if not isinstance(name, str) or len(name) > 64 or _DATEUTIL.search(name):
        raise TransferError(
            f"refused a time zone named {str(name)[:64]!r} from the analysis kernel"
        )
    if name.upper() in ("UTC", "Z"):
        return "UTC"
    offset = _OFFSET.match(name)
    if offset:
        sign = -1 if offset.group(1) == "-" else 1
        delta = _dt.timedelta(hours=int(offset.group(2)), minutes=int(offset.group(3)))
        return _dt.timezone(sign * delta)
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError) as exc:
        raise TransferError(f"unknown time zone {name!r} from the analysis kernel") from exc
    return name


def _restore_dtype(text: Any) -> Any:
    """A pandas dtype from an allow-listed name (or a categorical recipe) the child sent."""
    import pandas as pd

    _check_dtype_text(text)
    if isinstance(text, dict):
        return pd.CategoricalDtype(
            _rebuild_axis(text["categories"], ResultLimits()), ordered=bool(text["ordered"])
        )
    for token in re.findall(r"tz=([^,\]\s]+)", text):
        _check_tz(token)
    match = re.fullmatch(r"datetime64\[(\w+), (.+)\]", text)
    if match:
        return pd.DatetimeTZDtype(unit=_unit(match.group(1)), tz=_check_tz(match.group(2)))
    return pd.api.types.pandas_dtype(text)


def _astype(values: Any, dtype_text: Any) -> Any:
    if dtype_text == "object":
        return values.astype(object)
    try:
        return values.astype(_restore_dtype(dtype_text))
    except TransferError:
        raise
    except Exception:
        return values  # keep what came; the data is intact, only the dtype differs


def _rebuild_axis(recipe: Any, limits: ResultLimits) -> Any:
    import pandas as pd

    if not isinstance(recipe, dict):
        raise TransferError("an axis recipe in the result file is not an object")
    if "range" in recipe:
        start, stop, step = (int(x) for x in recipe["range"])
        return pd.RangeIndex(start, stop, step, name=_decode(recipe.get("name"), limits.depth))
    if recipe.get("multi"):
        tuples = _decode(recipe["values"], limits.depth)
        return pd.MultiIndex.from_tuples(tuples, names=_decode(recipe["names"], limits.depth))
    values = _decode(recipe["values"], limits.depth)
    if not isinstance(values, list):
        raise TransferError("an axis in the result file is not a list")
    index = pd.Index(values, dtype=object, name=_decode(recipe.get("name"), limits.depth))
    return _astype(index, recipe.get("dtype", "object"))


def _unit(unit: Any) -> str:
    if unit not in ("s", "ms", "us", "ns"):
        raise TransferError(f"unknown time unit {str(unit)[:20]!r} from the analysis kernel")
    return str(unit)


def _numpy_dtype(text: Any) -> str:
    if not isinstance(text, str) or not re.fullmatch(
        r"[<>|=]?(b1|[iu][1248]|f[248]|c(8|16)|[mM]8(\[(Y|M|W|D|h|m|s|ms|us|ns)\])?)", text
    ):
        raise TransferError(f"refused the dtype {str(text)[:40]!r} from the analysis kernel")
    return text


def _decode(data: Any, depth: int) -> Any:
    """Rebuild a tagged-JSON value; ``depth`` is how much deeper containers may nest."""
    import numpy as np
    import pandas as pd

    if depth < 0:
        raise LimitExceeded("its values nest deeper than the limit on nesting")
    if isinstance(data, list):
        return [_decode(v, depth - 1) for v in data]
    if not isinstance(data, dict):
        return data
    tag: Any = data.get("$")
    v: Any = data.get("v")
    inner = depth - 1
    if tag == "float":
        return float(str(v)[:40])
    if tag == "NaT":
        return pd.NaT
    if tag == "NA":
        return pd.NA
    if tag == "tuple":
        return tuple(_decode(x, inner) for x in _as_list(v))
    if tag == "dict":
        return {_decode(k, inner): _decode(x, inner) for k, x in _as_list(v)}
    if tag == "set":
        return {_decode(x, inner) for x in _as_list(v)}
    if tag == "frozenset":
        return frozenset(_decode(x, inner) for x in _as_list(v))
    if tag == "bytes":
        return base64.b64decode(_as_str(v))
    if tag == "bytearray":
        return bytearray(base64.b64decode(_as_str(v)))
    if tag == "complex":
        return complex(float(str(v[0])[:40]), float(str(v[1])[:40]))
    if tag == "decimal":
        return decimal.Decimal(_as_str(v)[:400])
    if tag == "uuid":
        return uuid.UUID(_as_str(v))
    if tag == "timestamp":
        tz = data.get("tz")
        stamp = pd.Timestamp(int(v), unit="ns", tz=_check_tz(tz) if tz else None)
        return stamp.as_unit(_unit(data.get("unit")))
    if tag == "timedelta64":
        return pd.Timedelta(int(v), unit="ns").as_unit(_unit(data.get("unit")))
    if tag == "datetime":
        tz = data.get("tz")
        value = _dt.datetime.fromisoformat(_as_str(v))
        return pd.Timestamp(value).tz_localize(_check_tz(tz)).to_pydatetime() if tz else value
    if tag == "date":
        return _dt.date.fromisoformat(_as_str(v))
    if tag == "time":
        return _dt.time.fromisoformat(_as_str(v))
    if tag == "timedelta":
        return _dt.timedelta(days=int(v[0]), seconds=int(v[1]), microseconds=int(v[2]))
    if tag == "np":
        dtype = np.dtype(_numpy_dtype(data.get("dtype")))
        if dtype.kind in "mM":
            return np.int64(int(v)).view(dtype)
        return dtype.type(_decode(v, inner))
    raise TransferError(f"unknown value tag {str(tag)[:40]!r} from the analysis kernel")


def _as_list(v: Any) -> list:
    if not isinstance(v, list):
        raise TransferError("a tagged value in the result file is malformed")
    return v


def _as_str(v: Any) -> str:
    if not isinstance(v, str):
        raise TransferError("a tagged value in the result file is malformed")
    return v
