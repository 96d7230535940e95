"""Turn a user's file (CSV, Excel, OpenDocument, Parquet, JSON …) into a checked DataFrame.

Files arrive from ``%dataagent load``, ``dataagent_jupyter.load`` and the widget's upload
button, so they are whatever people have on their disks: Excel files named ``.csv``, web
pages saved as ``.xls``, Windows-1252 text, zipped exports, half-finished downloads. The
rules that follow from that:

- **Content decides the type, the name only breaks ties.** Magic bytes tell a ZIP container
  (then its members tell xlsx/xlsm/xlsb/ods/odt from a plain archive), OLE2 (xls), Parquet,
  gzip/bz2/xz/zstd and tar apart from text; a file whose name disagrees is read by content
  and a note says so. Known non-table formats (PDF, images, Word, HTML …) get an error that
  says what the file really is.
- **Limits before work.** The size limit is checked on the file's size before one byte is
  read; decompressed content may be at most ``_EXPANSION`` times the limit, so a small
  archive cannot fill the memory.
- **Text is decoded by us, not by the parser**, so the whole file is validated: a BOM
  (UTF-8, UTF-16 LE/BE, UTF-32) wins, then UTF-16 without BOM (by its NUL pattern), strict
  UTF-8, cp1252, and Latin-1, which cannot fail. Anything but UTF-8 is noted.
- **Loaded data must be a table.** Empty files and sheets, a header row with no data rows,
  and duplicate column names end in :class:`LoadError` (pandas would silently rename
  duplicates to ``a.1``, and a question about column ``a`` would then quietly use half the
  data). A workbook whose first sheet is empty (a chart sheet, a cover sheet) loads the
  first sheet that has data, with a note; a sheet asked for by name or position is never
  swapped. An OpenDocument *text* file (.odt) is read through its first table, with a
  note, because a table in a report is still a table; one without tables is an error.
- **Only LoadError escapes** ``read_frame``/``load`` for a bad file: every reader error
  (parser, codec, zip, xlrd, odf, pyarrow …) becomes a message that names the file and the
  reason. ``KeyboardInterrupt`` is never caught.
- **Nothing the user had is lost.** ``load`` never rebinds a name that exists in the
  namespace, even one given explicitly with ``name=``: it picks ``name_2``, ``name_3`` …
  and says so in the notes.
"""

from __future__ import annotations

import builtins
import bz2
import codecs
import contextlib
import csv
import gzip
import html
import importlib
import io
import json
import keyword
import lzma
import os
import re
import stat
import tarfile
import unicodedata
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import LoadError

__all__ = ["LoadedFrame", "load", "read_frame", "variable_name"]

_MB = 1024 * 1024
#: Decompressed content may be at most this many times the upload limit.
_EXPANSION = 10
#: Archives inside archives are followed this deep, no deeper.
_MAX_NESTING = 3
_CONFIG_HINT = "%config DataAgent.max_upload_mb"

_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
#: Formats we recognise only to say what a file is instead of parsing garbage.
_FOREIGN: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "a PDF document"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (try pd.read_hdf)"),
    (b"ARROW1", "an Arrow/Feather file (try pd.read_feather)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x80\x04\x95", "a Python pickle (never unpickle an uploaded file)"),
    (b"\x80\x05\x95", "a Python pickle (never unpickle an uploaded file)"),
)
_BOMS: tuple[tuple[bytes, str, str], ...] = (
    # UTF-32 before UTF-16: the UTF-32-LE BOM starts with the UTF-16-LE one.
    (codecs.BOM_UTF32_LE, "utf-32", "UTF-32 (little-endian, with byte-order mark)"),
    (codecs.BOM_UTF32_BE, "utf-32", "UTF-32 (big-endian, with byte-order mark)"),
    (codecs.BOM_UTF8, "utf-8-sig", ""),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16 (little-endian, with byte-order mark)"),
    (codecs.BOM_UTF16_BE, "utf-16", "UTF-16 (big-endian, with byte-order mark)"),
)
_DELIMITERS = (",", "\t", ";", "|")
_DELIMITER_NAMES = {",": "','", "\t": "tab", ";": "';'", "|": "'|'"}

#: pandas engine module and the pip package that provides it, per workbook format.
_WORKBOOK_READERS = {
    "xlsx": ("openpyxl", "openpyxl"),
    "xlsm": ("openpyxl", "openpyxl"),
    "xls": ("xlrd", "xlrd"),
    "ods": ("odf", "odfpy"),
    "odt": ("odf", "odfpy"),
    "xlsb": ("pyxlsb", "pyxlsb"),
}
_WHAT = {
    "csv": "delimited text (CSV)",
    "tsv": "tab-separated text",
    "json": "JSON",
    "jsonl": "JSON Lines",
    "xlsx": "an Excel workbook (.xlsx)",
    "xlsm": "a macro-enabled Excel workbook (.xlsm)",
    "xlsb": "a binary Excel workbook (.xlsb)",
    "xls": "an Excel 97-2003 workbook (.xls)",
    "ods": "an OpenDocument spreadsheet (.ods)",
    "odt": "an OpenDocument text document (.odt)",
    "parquet": "a Parquet file",
}
#: Extensions grouped by what they promise; a file whose content is of another group is
#: read by content and gets a note.
_FAMILIES = {
    "text": {"csv", "tsv", "tab", "txt", "psv", "dat"},
    "json": {"json", "jsonl", "ndjson"},
    "ooxml": {"xlsx", "xlsm"},
    "xls": {"xls"},
    "xlsb": {"xlsb"},
    "ods": {"ods"},
    "odt": {"odt"},
    "parquet": {"parquet", "pq"},
}
_FAMILY_OF_FORMAT = {
    "csv": "text",
    "tsv": "text",
    "json": "json",
    "jsonl": "json",
    "xlsx": "ooxml",
    "xlsm": "ooxml",
    "xls": "xls",
    "xlsb": "xlsb",
    "ods": "ods",
    "odt": "odt",
    "parquet": "parquet",
}
_COMPRESSION_EXTS = {"gz", "gzip", "bz2", "xz", "zst", "zip", "tar", "tgz"}
_DATA_EXTS = set().union(*_FAMILIES.values())
#: Names a loaded frame must not take even when free: they would shadow what notebooks use.
_RESERVED_NAMES = {"display", "get_ipython", "exit", "quit", "pd", "np", "plt", "sns"}


# --- the result ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LoadedFrame:
    """A loaded file: the frame, the name it was bound to, and what was noticed on the way.

    ``eq=False`` because comparing two DataFrames has no single truth value; two results
    are the same only if they are the same object.
    """

    frame: pd.DataFrame
    name: str
    path: str
    format: str
    encoding: str | None
    sheet: str | None
    sheets: tuple[str, ...]
    notes: tuple[str, ...]
    requested_name: str | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """Rows and columns of the frame."""
        return self.frame.shape

    def __repr__(self) -> str:
        return (
            f"LoadedFrame(name={self.name!r}, shape={self.frame.shape}, path={self.path!r}, "
            f"format={self.format!r})"
        )

    def _source_text(self) -> str:
        parts = [self.format]
        if self.encoding and self.encoding not in ("utf-8", "utf-8-sig"):
            parts.append(self.encoding)
        if self.sheet is not None:
            parts.append(f"sheet {self.sheet!r}")
        return ", ".join(parts)

    def _column_rows(self, limit: int = 50) -> tuple[list[tuple[str, str, str]], int]:
        frame = self.frame
        nulls = frame.isna().sum()
        rows = []
        for pos, column in enumerate(frame.columns[:limit]):
            count = int(nulls.iloc[pos])
            share = f" ({count / len(frame):.0%})" if count and len(frame) else ""
            rows.append((str(column), str(frame.dtypes.iloc[pos]), f"{count}{share}"))
        return rows, max(0, frame.shape[1] - limit)

    def _repr_html_(self) -> str:
        rows, more = self._column_rows()
        esc = html.escape
        notes = "".join(f"<li>{esc(n)}</li>" for n in self.notes)
        cells = "".join(
            f"<tr><td><code>{esc(c)}</code></td><td>{esc(d)}</td>"
            f'<td style="text-align:right">{esc(n)}</td></tr>'
            for c, d, n in rows
        )
        if more:
            cells += f'<tr><td colspan="3">… and {more} more columns</td></tr>'
        head = self.frame.head(5).to_html(max_cols=20, border=0)
        r, c = self.frame.shape
        return (
            '<div class="dataagent-loaded">'
            f"<div><b><code>{esc(self.name)}</code></b>: {r:,} rows × {c:,} columns "
            f"from <code>{esc(self.path)}</code> ({esc(self._source_text())})</div>"
            + (f"<ul>{notes}</ul>" if notes else "")
            + "<details><summary>columns: dtypes and nulls</summary><table>"
            "<tr><th>column</th><th>dtype</th><th>nulls</th></tr>"
            f"{cells}</table></details>{head}</div>"
        )

    def _repr_markdown_(self) -> str:
        rows, more = self._column_rows()
        r, c = self.frame.shape
        lines = [
            f"**`{self.name}`**: {r:,} rows × {c:,} columns from `{self.path}` "
            f"({_md_cell(self._source_text())})",
            "",
        ]
        lines += [f"- {_md_cell(n)}" for n in self.notes]
        if self.notes:
            lines.append("")
        lines += ["| column | dtype | nulls |", "|---|---|---:|"]
        lines += [f"| {_md_cell(col)} | {_md_cell(d)} | {n} |" for col, d, n in rows]
        if more:
            lines.append(f"| … and {more} more columns | | |")
        head = self.frame.head(5).iloc[:, :20]
        if len(head.columns):
            lines += ["", "| " + " | ".join(_md_cell(str(x)) for x in head.columns) + " |"]
            lines.append("|" + "---|" * len(head.columns))
            for values in head.itertuples(index=False):
                lines.append("| " + " | ".join(_md_cell(str(v)) for v in values) + " |")
        return "\n".join(lines)


def _md_cell(text: str) -> str:
    # Cell values and column names are data: keep them from breaking the table or markup.
    text = text.replace("\r", " ").replace("\n", " ")
    return "".join("\\" + ch if ch in "\\`*_[]<>#|" else ch for ch in text)


# --- public functions ------------------------------------------------------------------


def load(
    path: str | os.PathLike[str] | bytes,
    *,
    name: str | None = None,
    sheet: str | int | None = None,
    namespace: MutableMapping[str, object] | None = None,
    max_mb: float | None = 200,
    filename: str | None = None,
    encoding: str | None = None,
) -> LoadedFrame:
    """Read ``path`` (a path, or the bytes of an upload with its ``filename``) into a frame.

    The frame is checked (see the module docstring), named after the file or ``name``, and
    bound in ``namespace`` when one is given. A name that is already bound there, explicit
    or derived, is never replaced: ``name_2``, ``name_3`` … is used and a note says so.
    ``max_mb`` is the size limit (``DataAgent.max_upload_mb``); ``None`` or ``0`` means
    no limit. ``encoding`` overrides detection for text files. Raises :class:`LoadError`.
    """
    shown = _shown_name(path, filename)
    if name is not None:
        _check_explicit_name(name, shown)
    max_bytes = int(max_mb * _MB) if max_mb and max_mb > 0 else None
    frame, info = read_frame(
        path, filename=filename, sheet=sheet, max_bytes=max_bytes, encoding=encoding
    )
    notes = list(info["notes"])
    wanted = name if name is not None else _identifier(filename or shown)
    chosen = _free_name(wanted, namespace)
    if chosen != wanted:
        advice = f" (del {wanted} first to reuse the name)" if name is not None else ""
        notes.append(f"name '{wanted}' was taken; bound as '{chosen}'{advice}")
    if namespace is not None:
        namespace[chosen] = frame
    return LoadedFrame(
        frame=frame,
        name=chosen,
        path=shown,
        format=info["format"],
        encoding=info["encoding"],
        sheet=info["sheet"],
        sheets=info["sheets"],
        notes=tuple(notes),
        requested_name=name,
    )


def read_frame(
    source: str | os.PathLike[str] | bytes,
    *,
    filename: str | None = None,
    sheet: str | int | None = None,
    max_bytes: int | None = None,
    encoding: str | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read and check one file; the low-level step under :func:`load`, binding nothing.

    ``source`` is a path or the raw bytes of an upload (then ``filename`` supplies the
    name used in messages and as a type hint). Returns the frame and a dict with
    ``format``, ``encoding``, ``sheet``, ``sheets``, ``delimiter``, ``compression``,
    ``member`` (the file used inside an archive) and ``notes``. Every failure caused by
    the file is a :class:`LoadError` that names it.
    """
    shown = _shown_name(source, filename)
    label = f"'{shown}'"
    info = _Info()
    try:
        data = _read_source(source, shown, max_bytes)
        src = _Source(data=data, name=_basename(filename or shown), label=label)
        limit = max_bytes * _EXPANSION if max_bytes else None
        frame = _read_any(src, info, sheet=sheet, limit=limit, encoding=encoding)
    except LoadError:
        raise
    except MemoryError:
        raise LoadError(
            f"{label} does not fit in memory once loaded.",
            hint="Load a smaller extract, or read it in chunks with pandas yourself.",
        ) from None
    except Exception as exc:  # a reader failed in a way no branch below foresaw
        raise LoadError(f"{label} could not be read: {_reason(exc)}") from exc
    return frame, info.as_dict()


def variable_name(filename: str, namespace: Mapping[str, object] | None = None) -> str:
    """A free Python variable name for a file: ``"my sales.csv"`` → ``"my_sales"``.

    Extensions (``.csv.gz`` too) are dropped, the rest lower-cased and made a valid
    identifier; a keyword or builtin (``class``, ``list``) gets ``_df`` appended, a leading
    digit ``df_`` prefixed. If ``namespace`` already has the name, ``_2``, ``_3`` … is added.
    """
    return _free_name(_identifier(filename), namespace)


# --- names -----------------------------------------------------------------------------


def _identifier(filename: str) -> str:
    stem = _basename(str(filename))
    while True:
        base, dot, ext = stem.rpartition(".")
        if not dot or not base or ext.lower() not in _COMPRESSION_EXTS:
            break
        stem = base
    base, dot, ext = stem.rpartition(".")
    if dot and base and ext.lower() in _DATA_EXTS:
        stem = base
    stem = unicodedata.normalize("NFKC", stem).lower()
    chars = (ch if ("a" + ch).isidentifier() else "_" for ch in stem)
    name = re.sub(r"_+", "_", "".join(chars)).strip("_")[:48].rstrip("_")
    if not name:
        return "df"
    if not name.isidentifier():  # starts with a digit or another non-starting character
        name = f"df_{name}"
    if keyword.iskeyword(name) or hasattr(builtins, name) or name in _RESERVED_NAMES:
        name = f"{name}_df"
    return name


def _free_name(name: str, namespace: Mapping[str, object] | None) -> str:
    if namespace is None or name not in namespace:
        return name
    number = 2
    while f"{name}_{number}" in namespace:
        number += 1
    return f"{name}_{number}"


def _check_explicit_name(name: object, shown: str) -> None:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        suggestion = _identifier(str(name) + ".csv")
        raise LoadError(
            f"Cannot load '{shown}' as {name!r}: that is not a valid Python variable name.",
            hint=f"Use a name such as {suggestion!r}.",
        )


def _basename(name: str) -> str:
    # Browser uploads from Windows may carry backslash paths.
    return os.path.basename(name.replace("\\", "/")) or name


def _shown_name(source: object, filename: str | None) -> str:
    if filename:
        return str(filename)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "upload"
    try:
        return os.fsdecode(os.fspath(source))  # type: ignore[call-overload]
    except TypeError:
        return repr(source)[:80]


# --- reading the raw bytes -------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """Bytes to parse, the file name that hints at their type, and how messages quote it."""

    data: bytes
    name: str
    label: str
    depth: int = 0

    @property
    def ext(self) -> str:
        return _ext(self.name)


@dataclass
class _Info:
    """What readers learn on the way; becomes the dict ``read_frame`` returns."""

    format: str = ""
    encoding: str | None = None
    sheet: str | None = None
    sheets: tuple[str, ...] = ()
    delimiter: str | None = None
    compression: list[str] = field(default_factory=list)
    member: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "encoding": self.encoding,
            "sheet": self.sheet,
            "sheets": self.sheets,
            "delimiter": self.delimiter,
            "compression": "+".join(self.compression) or None,
            "member": self.member,
            "notes": tuple(self.notes),
        }


def _ext(name: str) -> str:
    base, dot, ext = name.rpartition(".")
    return ext.lower() if dot and base else ""


def _size_text(size: float) -> str:
    return f"{size / _MB:,.1f} MB" if size >= 0.1 * _MB else f"{size / 1024:,.1f} KB"


def _too_big(label: str, size: int, max_bytes: int) -> LoadError:
    return LoadError(
        f"{label} is {_size_text(size)}, over the upload limit of {_size_text(max_bytes)}.",
        hint=f"Raise the limit with {_CONFIG_HINT} = {int(size / _MB) + 1}, "
        "or load a smaller extract.",
    )


def _read_source(source: object, shown: str, max_bytes: int | None) -> bytes:
    label = f"'{shown}'"
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)  # a private copy: the caller's buffer is never touched
        if max_bytes is not None and len(data) > max_bytes:
            raise _too_big(label, len(data), max_bytes)
        return data
    try:
        path = Path(os.fsdecode(os.fspath(source))).expanduser()  # type: ignore[call-overload]
    except TypeError:
        raise LoadError(
            f"Cannot load {label}: expected a file path or the bytes of a file, "
            f"got {type(source).__name__}."
        ) from None
    try:
        info = path.stat()
    except FileNotFoundError:
        raise LoadError(
            f"{label} does not exist.",
            hint=f"Looked for {path.absolute()}; check the name and the working folder "
            f"({os.getcwd()}).",
        ) from None
    except OSError as exc:
        raise LoadError(f"{label} cannot be opened: {_reason(exc)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise LoadError(f"{label} is a folder, not a file.", hint="Name a file inside it.")
    if not stat.S_ISREG(info.st_mode):
        raise LoadError(f"{label} is not a regular file (a device, pipe or socket).")
    # The limit is checked on the size the file system reports, before reading anything.
    if max_bytes is not None and info.st_size > max_bytes:
        raise _too_big(label, info.st_size, max_bytes)
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1 if max_bytes is not None else -1)
    except OSError as exc:
        raise LoadError(f"{label} cannot be read: {_reason(exc)}") from None
    if max_bytes is not None and len(data) > max_bytes:  # it grew while we looked
        raise _too_big(label, len(data), max_bytes)
    return data


def _read_capped(handle: Any, limit: int | None, label: str) -> bytes:
    """Read a decompressing stream to the end, refusing to expand past ``limit``."""
    if limit is None:
        return handle.read()
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = handle.read(min(_MB, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise _too_big_unpacked(label, limit)


def _too_big_unpacked(label: str, limit: int) -> LoadError:
    return LoadError(
        f"{label} expands to more than {_size_text(limit)} when decompressed "
        f"({_EXPANSION}× the upload limit).",
        hint=f"Raise the limit with {_CONFIG_HINT}, or load a smaller extract.",
    )


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text.replace("Error tokenizing data. C error: ", "")
    if not text:
        return type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "…"


@contextlib.contextmanager
def _reading(label: str, what: str, *, package: str | None = None) -> Iterator[None]:
    """Turn whatever a third-party reader raises into a LoadError about ``label``."""
    try:
        with warnings.catch_warnings():
            # Reader chatter ("no default style", unsupported extensions) means nothing to
            # the user.
            warnings.simplefilter("ignore")
            yield
    except LoadError:
        raise
    except ImportError as exc:
        needed = package or getattr(exc, "name", None) or "the missing package"
        raise LoadError(
            f"{label} is {what}, which needs the '{needed}' package, and it is not "
            f"installed ({_reason(exc)}).",
            hint=f"Install it with: pip install {needed}",
        ) from exc
    except MemoryError:
        raise
    except (EOFError, zipfile.BadZipFile) as exc:
        raise LoadError(
            f"{label} is damaged or incomplete: it looks like {what}, but reading it failed "
            f"({_reason(exc)}).",
            hint="Download or copy the file again; if it opens elsewhere, re-save it there.",
        ) from exc
    except Exception as exc:
        raise LoadError(
            f"{label} could not be read as {what}: {_reason(exc)}",
            hint="Check that the file opens in the program that made it, and re-save it.",
        ) from exc


def _require(module: str, package: str, label: str, what: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError:
        raise LoadError(
            f"{label} is {what}, which needs the '{package}' package, and it is not installed.",
            hint=f"Install it with: pip install {package}  (then load the file again)",
        ) from None


# --- deciding what the bytes are -------------------------------------------------------


def _sniff(data: bytes) -> str:
    """The container or format the first bytes announce, ``"text"`` if none."""
    if data.startswith(_ZIP_MAGICS):
        return "zip"
    if data.startswith(_OLE2):
        return "ole2"
    if data.startswith(b"PAR1"):
        return "parquet"
    if data.startswith(b"\x1f\x8b"):
        return "gzip"
    if (
        data.startswith(b"BZh")
        and data[3:4] in b"123456789"
        and data[4:10] in (b"1AY&SY", b"\x17rE8P\x90")
    ):
        return "bz2"
    if data.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if data.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if data[257:262] == b"ustar":
        return "tar"
    return "text"


def _read_any(
    src: _Source,
    info: _Info,
    *,
    sheet: str | int | None,
    limit: int | None,
    encoding: str | None,
) -> pd.DataFrame:
    if not src.data:
        raise LoadError(f"{src.label} is empty (0 bytes).", hint="Check that it was saved.")
    for magic, what in _FOREIGN:
        if src.data.startswith(magic):
            raise LoadError(f"{src.label} is {what}, not a table file.")
    kind = _sniff(src.data)
    if kind in ("gzip", "bz2", "xz", "zstd"):
        return _read_compressed(src, info, kind, sheet=sheet, limit=limit, encoding=encoding)
    if kind == "tar":
        return _read_tar(src, info, sheet=sheet, limit=limit, encoding=encoding)
    if kind == "zip":
        return _read_zip(src, info, sheet=sheet, limit=limit, encoding=encoding)
    if kind == "ole2":
        return _read_workbook(src, info, _ole2_format(src), sheet)
    if sheet is not None:
        info.notes.append(f"sheet {sheet!r} ignored: the file is not a workbook")
    if kind == "parquet":
        return _read_parquet(src, info)
    return _read_text(src, info, encoding)


def _note_format(src: _Source, info: _Info, fmt: str) -> None:
    """Record the format and say so when the file's name promised another one."""
    info.format = fmt
    family = next((f for f, exts in _FAMILIES.items() if src.ext in exts), None)
    if family is not None and family != _FAMILY_OF_FORMAT[fmt]:
        info.notes.append(f"named .{src.ext} but holds {_WHAT[fmt]}; read it by its content")


# --- containers ------------------------------------------------------------------------


def _inner(src: _Source, data: bytes, name: str, label: str) -> _Source:
    if src.depth >= _MAX_NESTING:
        raise LoadError(f"{src.label} nests archives more than {_MAX_NESTING} deep.")
    return _Source(data=data, name=name, label=label, depth=src.depth + 1)


def _read_compressed(
    src: _Source,
    info: _Info,
    kind: str,
    *,
    sheet: str | int | None,
    limit: int | None,
    encoding: str | None,
) -> pd.DataFrame:
    names = {"gzip": "gzip", "bz2": "bzip2", "xz": "xz", "zstd": "Zstandard"}
    what = f"{names[kind]}-compressed data"
    with _reading(src.label, what):
        if kind == "zstd":
            data = _unzstd(src, limit)
        else:
            openers: dict[str, Callable[..., Any]] = {
                "gzip": gzip.open,
                "bz2": bz2.open,
                "xz": lzma.open,
            }
            opener = openers[kind]
            with opener(io.BytesIO(src.data), "rb") as handle:
                data = _read_capped(handle, limit, src.label)
    info.compression.append(kind)
    base, dot, ext = src.name.rpartition(".")
    inner_name = base if dot and base and ext.lower() in _COMPRESSION_EXTS else src.name
    if ext.lower() == "tgz":
        inner_name = base + ".tar"
    if not data:
        raise LoadError(f"{src.label} is empty once decompressed.")
    inner = _inner(src, data, inner_name, src.label)
    return _read_any(inner, info, sheet=sheet, limit=limit, encoding=encoding)


def _unzstd(src: _Source, limit: int | None) -> bytes:
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+

        with zstd.open(io.BytesIO(src.data), "rb") as handle:
            return _read_capped(handle, limit, src.label)
    except ImportError:
        pass
    _require("zstandard", "zstandard", src.label, "Zstandard-compressed (.zst)")
    import zstandard  # type: ignore[import-not-found]

    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(src.data)) as handle:
        return _read_capped(handle, limit, src.label)


def _pick_member(src: _Source, names: list[str], info: _Info, kind: str) -> str:
    """The one file of an archive to load; several candidates are an error listing them."""
    files = [
        n
        for n in names
        if not n.endswith("/")
        and not n.startswith("__MACOSX/")
        and not _basename(n).startswith(".")
    ]
    if not files:
        raise LoadError(f"{src.label} is an archive with no files in it.")
    if len(files) == 1:
        info.notes.append(f"read '{files[0]}' from the {kind} archive")
        return files[0]
    # Prefer the single data file next to e.g. a README.txt.
    tables = [n for n in files if _ext(_strip_compression(n)) in _DATA_EXTS - {"txt"}]
    if len(tables) == 1:
        info.notes.append(
            f"the {kind} archive holds {len(files)} files; loaded the only table, '{tables[0]}'"
        )
        return tables[0]
    shown = ", ".join(files[:15]) + (f" … ({len(files)} in all)" if len(files) > 15 else "")
    raise LoadError(
        f"{src.label} is an archive with {len(files)} files, and it is not clear which one "
        f"to load: {shown}.",
        hint="Extract it and load the file you want by its path.",
    )


def _strip_compression(name: str) -> str:
    base, dot, ext = name.rpartition(".")
    return base if dot and base and ext.lower() in _COMPRESSION_EXTS else name


def _read_zip(
    src: _Source,
    info: _Info,
    *,
    sheet: str | int | None,
    limit: int | None,
    encoding: str | None,
) -> pd.DataFrame:
    try:
        archive = zipfile.ZipFile(io.BytesIO(src.data))
        names = archive.namelist()
        kind = _zip_kind(archive, names)
    except Exception as exc:
        raise LoadError(
            f"{src.label} is a damaged or incomplete ZIP container ({_reason(exc)}); "
            ".xlsx, .xlsm, .xlsb and .ods files are ZIP containers too.",
            hint="Download or copy the file again; if it opens elsewhere, re-save it there.",
        ) from exc
    with archive:
        if kind in ("xlsx", "xlsm", "xlsb", "ods", "odt"):
            # The reader inflates the parts itself; their declared sizes bound what it will.
            if limit is not None and sum(i.file_size for i in archive.infolist()) > limit:
                raise _too_big_unpacked(src.label, limit)
            return _read_workbook(src, info, kind, sheet)
        if kind is not None:
            raise LoadError(f"{src.label} is {kind}, not a table file.")
        member = _pick_member(src, names, info, "ZIP")
        with _reading(src.label, "a ZIP archive"), archive.open(member) as handle:
            data = _read_capped(handle, limit, src.label)
    info.compression.append("zip")
    info.member = member
    label = f"'{member}' inside {src.label}"
    if not data:
        raise LoadError(f"{label} is empty (0 bytes).")
    inner = _inner(src, data, _basename(member), label)
    return _read_any(inner, info, sheet=sheet, limit=limit, encoding=encoding)


def _zip_kind(archive: zipfile.ZipFile, names: list[str]) -> str | None:
    """Office format of a ZIP container by its members; ``None`` for a plain archive."""
    members = set(names)
    if "xl/workbook.bin" in members:
        return "xlsb"
    if "xl/workbook.xml" in members:
        try:
            types = archive.read("[Content_Types].xml")
        except KeyError:
            types = b""
        return "xlsm" if b"macroEnabled.main" in types else "xlsx"
    if "mimetype" in members:
        mimetype = archive.read("mimetype").decode("ascii", "replace").strip()
        if mimetype.endswith("opendocument.spreadsheet"):
            return "ods"
        if mimetype.endswith("opendocument.text"):
            return "odt"
        if "opendocument" in mimetype:
            return f"an OpenDocument file of another kind ({mimetype})"
    if "word/document.xml" in members:
        return "a Word document (.docx)"
    if "ppt/presentation.xml" in members:
        return "a PowerPoint presentation (.pptx)"
    if "content.xml" in members and "META-INF/manifest.xml" in members:
        return "ods"  # an OpenDocument file that lost its mimetype member
    return None


def _read_tar(
    src: _Source,
    info: _Info,
    *,
    sheet: str | int | None,
    limit: int | None,
    encoding: str | None,
) -> pd.DataFrame:
    archive_bytes = io.BytesIO(src.data)
    with _reading(src.label, "a tar archive"), tarfile.open(fileobj=archive_bytes) as archive:
        members = {m.name: m for m in archive.getmembers() if m.isfile()}
        member = _pick_member(src, list(members), info, "tar")
        handle = archive.extractfile(members[member])
        data = _read_capped(handle, limit, src.label) if handle else b""
    info.compression.append("tar")
    info.member = member
    label = f"'{member}' inside {src.label}"
    if not data:
        raise LoadError(f"{label} is empty (0 bytes).")
    inner = _inner(src, data, _basename(member), label)
    return _read_any(inner, info, sheet=sheet, limit=limit, encoding=encoding)


def _ole2_format(src: _Source) -> str:
    """OLE2 holds .xls but also old Word files and password-protected .xlsx."""

    def has(stream: str) -> bool:
        return stream.encode("utf-16-le") in src.data

    if has("EncryptionInfo") and has("EncryptedPackage"):
        raise LoadError(
            f"{src.label} is a password-protected Office file.",
            hint="Open it in Excel, remove the password (File › Info › Protect Workbook), "
            "save it, and load it again.",
        )
    if not (has("Workbook") or has("Book")):
        if has("WordDocument"):
            raise LoadError(f"{src.label} is a Word document (.doc), not a table file.")
        if has("PowerPoint Document"):
            raise LoadError(f"{src.label} is a PowerPoint presentation, not a table file.")
    return "xls"


# --- workbooks -------------------------------------------------------------------------


def _read_workbook(src: _Source, info: _Info, fmt: str, sheet: str | int | None) -> pd.DataFrame:
    module, package = _WORKBOOK_READERS[fmt]
    what = _WHAT[fmt]
    _require(module, package, src.label, what)
    _note_format(src, info, fmt)
    with _reading(src.label, what, package=package):
        workbook = _xlrd_book(src.data) if fmt == "xls" else io.BytesIO(src.data)
        with pd.ExcelFile(workbook, engine=module) as book:
            names = [str(n) for n in book.sheet_names]
            info.sheets = tuple(names)
            if not names:
                kind = "tables" if fmt == "odt" else "sheets"
                raise LoadError(f"{src.label} is {what} with no {kind}.")
            chosen, frame = _parse_sheet(src, info, book, names, sheet)
            info.sheet = chosen

            def raw_header() -> pd.DataFrame:
                return book.parse(chosen, header=None, nrows=1)

            _check_frame(frame, src, info, raw_header=raw_header)
    if fmt == "odt":
        info.notes.append(f"a text document, not a spreadsheet: loaded its table '{chosen}'")
    return frame


def _xlrd_book(data: bytes) -> Any:
    # xlrd prints its complaints about damaged files to stdout, which in a kernel is the
    # user's cell output; opening the book ourselves lets them go to a discarded buffer.
    import xlrd

    return xlrd.open_workbook(file_contents=data, logfile=io.StringIO())


def _parse_sheet(
    src: _Source, info: _Info, book: pd.ExcelFile, names: list[str], sheet: str | int | None
) -> tuple[str, pd.DataFrame]:
    listing = _sheet_listing(names)
    if sheet is not None:
        chosen = _resolve_sheet(src, names, sheet, listing)
        if len(names) > 1:
            info.notes.append(f"workbook has {listing}; loaded '{chosen}'")
        frame = book.parse(chosen)
        if frame.shape[1] == 0:
            raise LoadError(
                f"Sheet '{chosen}' of {src.label} is empty.",
                hint=f"The workbook has {listing}.",
            )
        return chosen, frame
    skipped = []
    for chosen in names:
        frame = book.parse(chosen)
        if frame.shape[1] > 0:
            break
        skipped.append(chosen)
    else:
        shown = ", ".join(names[:20]) + (" …" if len(names) > 20 else "")
        raise LoadError(
            f"{src.label} has no data: "
            + (
                f"its only sheet, '{names[0]}', is empty."
                if len(names) == 1
                else f"all {len(names)} sheets ({shown}) are empty."
            ),
        )
    if len(names) > 1:
        info.notes.append(f"workbook has {listing}; loaded '{chosen}'")
    if skipped:
        empty = ", ".join(f"'{s}'" for s in skipped)
        info.notes.append(f"sheet {empty} {'is' if len(skipped) == 1 else 'are'} empty")
    return chosen, frame


def _sheet_listing(names: list[str]) -> str:
    shown = ", ".join(names[:20]) + (" …" if len(names) > 20 else "")
    return f"{len(names)} sheet{'s' if len(names) != 1 else ''}: {shown}"


def _resolve_sheet(src: _Source, names: list[str], sheet: str | int, listing: str) -> str:
    if isinstance(sheet, bool) or not isinstance(sheet, (str, int)):
        raise LoadError(
            f"Cannot pick a sheet of {src.label} by {sheet!r}: give its name or its "
            f"position (0 is the first). The workbook has {listing}."
        )
    if isinstance(sheet, str):
        if sheet in names:
            return sheet
        folded = [n for n in names if n.strip().casefold() == sheet.strip().casefold()]
        if len(folded) == 1:
            return folded[0]
        if not re.fullmatch(r"-?\d+", sheet.strip()):
            raise LoadError(
                f"{src.label} has no sheet named '{sheet}'; it has {listing}.",
                hint="Pass one of these names, or a position (0 is the first sheet).",
            )
        sheet = int(sheet)  # "--sheet 2" on the command line means a position
    if -len(names) <= sheet < len(names):
        return names[sheet]
    raise LoadError(
        f"{src.label} has no sheet at position {sheet}; it has {listing} "
        f"(positions 0 to {len(names) - 1}).",
        hint="Pass one of these names, or a position (0 is the first sheet).",
    )


# --- other binary formats --------------------------------------------------------------


def _read_parquet(src: _Source, info: _Info) -> pd.DataFrame:
    _note_format(src, info, "parquet")
    with _reading(src.label, _WHAT["parquet"], package="pyarrow"):
        _parquet_duplicates(src)
        frame = pd.read_parquet(io.BytesIO(src.data))
    _check_frame(frame, src, info)
    return frame


def _parquet_duplicates(src: _Source) -> None:
    # pyarrow refuses to read repeated column names with an opaque message; say it plainly.
    import pyarrow.parquet as pq

    names = pq.read_schema(io.BytesIO(src.data)).names
    repeated = [(n, c) for n, c in Counter(names).items() if c > 1]
    if repeated:
        listed = ", ".join(f"'{n}' ({c}×)" for n, c in repeated)
        raise LoadError(
            f"{src.label} has duplicate column names: {listed}.",
            hint="Give every column its own name where the file is written, and load it again.",
        )


# --- text ------------------------------------------------------------------------------


def _decode(src: _Source, encoding: str | None, info: _Info) -> str:
    data = src.data
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise LoadError(f"Cannot read {src.label}: unknown encoding {encoding!r}.") from None
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            raise LoadError(
                f"{src.label} is not valid {encoding}: byte {exc.object[exc.start]:#04x} at "
                f"position {exc.start} does not decode.",
                hint="Leave encoding= out to let the loader detect it.",
            ) from None
        info.encoding = encoding
        return text.removeprefix("\ufeff")
    for bom, codec, title in _BOMS:
        if data.startswith(bom):
            try:
                text = data.decode(codec)
            except UnicodeDecodeError as exc:
                raise LoadError(
                    f"{src.label} starts with a {codec.upper()} byte-order mark but is not "
                    f"valid {codec.upper()} (at byte {exc.start}); the file may be cut short.",
                    hint="Download or copy the file again, or re-save it as UTF-8.",
                ) from None
            info.encoding = codec
            if title:
                info.notes.append(f"read as {title}, not UTF-8")
            return text
    sixteen = _utf16_without_bom(data)
    if sixteen:
        with contextlib.suppress(UnicodeDecodeError):
            text = data.decode(sixteen)
            info.encoding = sixteen
            info.notes.append(f"read as {sixteen.upper()} (no byte-order mark), not UTF-8")
            return text
    with contextlib.suppress(UnicodeDecodeError):
        text = data.decode("utf-8")
        info.encoding = "utf-8"
        return text
    if b"\x00" in data:
        raise LoadError(
            f"{src.label} is not a text file or any table format the loader knows "
            "(it holds binary data).",
            hint="Supported: CSV/TSV/TXT, Excel (.xlsx .xlsm .xls .xlsb), .ods, Parquet, "
            "JSON, JSON Lines, and those compressed or zipped.",
        )
    for codec, title in (
        ("cp1252", "cp1252 (Windows Western European)"),
        ("latin-1", "Latin-1 (ISO-8859-1)"),
    ):
        with contextlib.suppress(UnicodeDecodeError):
            text = data.decode(codec)
            info.encoding = codec
            info.notes.append(
                f"read as {title}, not UTF-8; if characters look wrong, load it again with "
                "encoding= set to the file's real encoding"
            )
            return text
    raise AssertionError("latin-1 decodes every byte")  # pragma: no cover


def _utf16_without_bom(data: bytes) -> str | None:
    """UTF-16 without BOM shows as NUL bytes in every other position (for Latin text)."""
    sample = data[:4096]
    half = len(sample) // 2
    if half < 2:
        return None
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    if odd > 0.4 * half and even < 0.05 * half:
        return "utf-16-le"
    if even > 0.4 * half and odd < 0.05 * half:
        return "utf-16-be"
    return None


def _read_text(src: _Source, info: _Info, encoding: str | None) -> pd.DataFrame:
    text = _decode(src, encoding, info)
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped:
        raise LoadError(f"{src.label} is empty (only blank lines).", hint="Check it was saved.")
    start = stripped[:400].lower()
    if start.startswith(("<!doctype html", "<html", "<table", "<head", "<body")):
        raise LoadError(
            f"{src.label} is an HTML page, not a table file (a download link that returned a "
            "web page, or a web export named like a spreadsheet).",
            hint="If it holds an HTML table, read it with pd.read_html; otherwise download "
            "the real file again.",
        )
    if start.startswith("<?xml"):
        kind = (
            "an Excel 2003 XML spreadsheet"
            if "urn:schemas-microsoft-com:office:spreadsheet" in stripped[:4000]
            else "an XML document"
        )
        raise LoadError(
            f"{src.label} is {kind}, not a table file the loader reads.",
            hint="Open it in a spreadsheet program and save it as .xlsx or .csv.",
        )
    json_named = src.ext in _FAMILIES["json"]
    if json_named or stripped[:1] in "{[":
        try:
            return _read_json(src, info, text)
        except LoadError:
            if json_named:
                raise  # otherwise it was text that merely starts like JSON
    return _read_delimited(src, info, text)


def _read_json(src: _Source, info: _Info, text: str) -> pd.DataFrame:
    lines = src.ext in ("jsonl", "ndjson") or _looks_like_json_lines(text)
    fmt = "jsonl" if lines else "json"
    with _reading(src.label, _WHAT[fmt]):
        frame = pd.read_json(io.StringIO(text), lines=lines)
    if not isinstance(frame, pd.DataFrame):  # pragma: no cover - typ="frame" is the default
        raise LoadError(f"{src.label} holds JSON that is not a table.")
    _note_format(src, info, fmt)
    _check_frame(frame, src, info)
    return frame


def _looks_like_json_lines(text: str) -> bool:
    lines = [line for line in text.splitlines()[:3] if line.strip()]
    if len(lines) < 2:
        return False
    try:
        return all(isinstance(json.loads(line), dict) for line in lines[:2])
    except ValueError:
        return False


def _sniff_delimiter(text: str) -> str | None:
    """The delimiter that splits the first lines into the most consistent field count."""
    sample = text[:65536]
    if len(text) > len(sample):
        sample = sample[: sample.rfind("\n") + 1] or sample  # no half line at the end
    best: tuple[float, int] | None = None
    chosen = None
    for delimiter in _DELIMITERS:
        try:
            rows = [r for r in csv.reader(io.StringIO(sample), delimiter=delimiter) if r][:100]
        except csv.Error:
            continue
        if not rows:
            continue
        fields, count = Counter(len(r) for r in rows).most_common(1)[0]
        if fields < 2:
            continue
        score = (count / len(rows), fields)
        if best is None or score > best:
            best, chosen = score, delimiter
    return chosen


def _read_delimited(src: _Source, info: _Info, text: str) -> pd.DataFrame:
    delimiter = _sniff_delimiter(text) or ","
    info.delimiter = delimiter
    fmt = "tsv" if delimiter == "\t" else "csv"
    _note_format(src, info, fmt)
    expected = "\t" if src.ext in ("tsv", "tab") else ","
    if delimiter != expected:
        info.notes.append(f"delimiter {_DELIMITER_NAMES[delimiter]} detected")
    with _reading(src.label, _WHAT[fmt]):
        # One pass over the whole file gives each column one dtype (no mixed-type chunks).
        frame = pd.read_csv(io.StringIO(text), sep=delimiter, low_memory=False)

    def raw_header() -> pd.DataFrame:
        return pd.read_csv(io.StringIO(text), sep=delimiter, header=None, nrows=1, dtype=str)

    _check_frame(frame, src, info, raw_header=raw_header)
    if delimiter != ",":
        frame = _decimal_commas(frame, info)
    return frame


# Numbers written the continental way: "1 204,50", "1.204,50", "830,00", "-0,5".
_DECIMAL_COMMA = re.compile(r"^[-+]?\d{1,3}(?:[ .\u00a0\u202f']?\d{3})*(?:,\d+)?$")


def _decimal_commas(frame: pd.DataFrame, info: _Info) -> pd.DataFrame:
    """Text columns that are all decimal-comma numbers become float columns (with a note).

    Files split by ';' or tabs usually come from locales that write 1 204,50; pandas
    keeps those as strings. A column is converted only when every non-empty value has
    that shape and at least one uses a comma, so codes such as "007" stay text.
    """
    converted: list[str] = []
    for position, column in enumerate(frame.columns):
        values = frame.iloc[:, position]
        if not (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
            continue
        present = values.dropna().astype(str).str.strip()
        present = present[present != ""]
        if present.empty or not present.str.contains(",", regex=False).any():
            continue
        if not present.map(lambda v: bool(_DECIMAL_COMMA.match(v))).all():
            continue
        numbers = (
            values.astype("string")
            .str.strip()
            .str.replace(r"[ .\u00a0\u202f']", "", regex=True)
            .str.replace(",", ".", regex=False)
        )
        frame.isetitem(position, pd.to_numeric(numbers, errors="coerce").astype("float64"))
        converted.append(str(column))
    if converted:
        info.notes.append("decimal commas read as numbers in: " + ", ".join(converted))
    return frame


# --- checks on the result --------------------------------------------------------------

_MANGLED = re.compile(r"^(.*)\.(\d+)$")


def _check_frame(
    frame: pd.DataFrame,
    src: _Source,
    info: _Info,
    *,
    raw_header: Callable[[], pd.DataFrame] | None = None,
) -> None:
    """Refuse frames that would mislead: no columns, no rows, duplicate column names."""
    where = f"Sheet '{info.sheet}' of {src.label}" if info.sheet is not None else src.label
    if frame.shape[1] == 0:
        raise LoadError(f"{where} is empty: there is no column to load.")
    duplicates = _duplicate_columns(frame, raw_header)
    if duplicates:
        listed = ", ".join(f"'{name}' ({count}×)" for name, count in duplicates)
        raise LoadError(
            f"{where} has duplicate column names: {listed}.",
            hint="Give every column its own name in the header row and load it again "
            "(pandas would rename the copies to 'name.1', which is easy to miss). A header "
            "of several rows needs pandas itself: pd.read_excel or pd.read_csv with "
            "header=[0, 1].",
        )
    if frame.shape[0] == 0:
        columns = ", ".join(str(c) for c in frame.columns[:10])
        more = " …" if frame.shape[1] > 10 else ""
        other = ""
        if len(info.sheets) > 1:
            other = f" The workbook has {_sheet_listing(list(info.sheets))}."
        raise LoadError(
            f"{where} has a header row ({columns}{more}) but no data rows.",
            hint="Add data below the header, or pick another file or sheet." + other,
        )


def _duplicate_columns(
    frame: pd.DataFrame, raw_header: Callable[[], pd.DataFrame] | None
) -> list[tuple[str, int]]:
    counts = Counter(str(c) for c in frame.columns)
    found = [(name, n) for name, n in counts.items() if n > 1]
    if found or raw_header is None:
        return found
    # pandas renames a repeated header "a" to "a.1"; only the raw header row can tell that
    # from a file that really has a column called "a.1", so read it only when it could be.
    names = set(counts)
    if not any((m := _MANGLED.match(n)) and m.group(1) in names for n in names):
        return []
    header = raw_header()
    if header.empty:
        return []
    values = [str(v) for v in header.iloc[0].tolist() if not pd.isna(v) and str(v) != ""]
    return [(name, n) for name, n in Counter(values).items() if n > 1]
