"""Loading user files: every format, encoding and failure on real files the tests write,
plus every file of the pandas-io corpus when ``shared/corpus`` is present.

The promise under test is the one a notebook user relies on: a file either becomes a
DataFrame (with notes saying what was guessed) or ends in a ``LoadError`` that names the
file and the reason. No other exception, no silently renamed or overwritten variable.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import hashlib
import io
import lzma
import os
import random
import re
import struct
import sys
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from dataagent_jupyter import loaders
from dataagent_jupyter.errors import DataAgentError, LoadError
from dataagent_jupyter.loaders import LoadedFrame, load, read_frame, variable_name

# --- helpers ---------------------------------------------------------------------------


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def load_error(source: Path | bytes, *words: str, filename: str | None = None, **kw) -> LoadError:
    """Load, expect a LoadError that names the file and contains every word given."""
    with pytest.raises(LoadError) as caught:
        load(source, filename=filename, **kw)
    error = caught.value
    shown = filename or (source.name if isinstance(source, Path) else "upload")
    assert shown in error.message, error.message
    text = str(error).lower()
    for word in words:
        assert word.lower() in text, f"{word!r} not in {str(error)!r}"
    return error


def frame_bytes(frame: pd.DataFrame, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    if fmt == "parquet":
        frame.to_parquet(buffer, index=False)
    else:
        engine = {"xlsx": "openpyxl", "ods": "odf"}[fmt]
        frame.to_excel(buffer, index=False, engine=engine, **kw)
    return buffer.getvalue()


def sheets_xlsx(sheets: dict[str, pd.DataFrame], engine: str = "openpyxl") -> bytes:
    buffer = io.BytesIO()
    with pd.ExcelWriter(buffer, engine=engine) as writer:
        for name, frame in sheets.items():
            frame.to_excel(writer, sheet_name=name, index=False)
    return buffer.getvalue()


def as_xlsm(xlsx: bytes) -> bytes:
    """Rewrite an .xlsx so its content types declare a macro-enabled workbook."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(xlsx)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "[Content_Types].xml":
                data = data.replace(
                    b"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml",
                    b"application/vnd.ms-excel.sheet.macroEnabled.main+xml",
                )
            dst.writestr(item, data)
    return out.getvalue()


def zip_of(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


# No maintained library writes .xls or .xlsb, so the tests carry minimal writers that
# produce what xlrd and pyxlsb read: an OLE2 compound file holding a BIFF8 stream, and a
# ZIP of BIFF12 records.


def ole2(streams: dict[str, bytes]) -> bytes:
    """An OLE2 compound file (v3, 512-byte sectors) with the given streams (no mini stream)."""
    end, free, fat_sector = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD
    fat, bodies, entries, sector = [fat_sector, end], [], [], 2
    for name, data in streams.items():
        size = max(4096, -(-len(data) // 512) * 512)  # streams under 4096 would be "mini"
        data = data.ljust(size, b"\x00")
        count = size // 512
        entries.append((name, sector, size))
        fat += [sector + i + 1 for i in range(count - 1)] + [end]
        sector += count
        bodies.append(data)
    fat += [free] * (128 - len(fat))

    def entry(name: str, kind: int, start: int, size: int, child: int, right: int) -> bytes:
        raw = name.encode("utf-16-le") + b"\x00\x00"
        return (
            raw.ljust(64, b"\x00")
            + struct.pack("<HBB", len(raw), kind, 1)
            + struct.pack("<III", free, right, child)
            + b"\x00" * 36
            + struct.pack("<II", start, size)
            + b"\x00" * 4
        )

    directory = entry("Root Entry", 5, end, 0, 1, free)
    for i, (name, start, size) in enumerate(entries):
        directory += entry(name, 2, start, size, free, i + 2 if i + 1 < len(entries) else free)
    header = (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
        + b"\x00" * 16
        + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6)
        + b"\x00" * 6
        + struct.pack("<9I", 0, 1, 1, 0, 4096, end, 0, end, 0)
        + struct.pack("<I", 0)
        + struct.pack("<I", free) * 108
    )
    return header + struct.pack("<128I", *fat) + directory.ljust(512, b"\x00") + b"".join(bodies)


def xls(sheets: dict[str, list[list[object]]]) -> bytes:
    """A BIFF8 workbook: {sheet name: rows of str / number / None}."""

    def record(kind: int, data: bytes = b"") -> bytes:
        return struct.pack("<HH", kind, len(data)) + data

    def bof(kind: int) -> bytes:
        return record(0x0809, struct.pack("<HHHHII", 0x0600, kind, 0x0DBB, 0x07CC, 0, 6))

    bodies = []
    for rows in sheets.values():
        width = max((len(r) for r in rows), default=0)
        body = bof(0x10) + record(0x0200, struct.pack("<IIHHH", 0, len(rows), 0, width, 0))
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                if isinstance(value, str):
                    raw = value.encode("latin-1")
                    body += record(0x0204, struct.pack("<HHHHB", r, c, 0, len(raw), 0) + raw)
                elif value is not None:
                    body += record(0x0203, struct.pack("<HHHd", r, c, 0, float(value)))
        bodies.append(body + record(0x000A))

    def workbook_globals(offsets: list[int]) -> bytes:
        out = bof(0x05) + record(0x0042, struct.pack("<H", 1200))
        for name, offset in zip(sheets, offsets, strict=True):
            raw = name.encode("latin-1")
            out += record(0x0085, struct.pack("<IBBBB", offset, 0, 0, len(raw), 0) + raw)
        return out + record(0x000A)

    position, offsets = len(workbook_globals([0] * len(sheets))), []
    for body in bodies:
        offsets.append(position)
        position += len(body)
    return ole2({"Workbook": workbook_globals(offsets) + b"".join(bodies)})


def xlsb(sheets: dict[str, list[list[object]]]) -> bytes:
    """A BIFF12 (.xlsb) workbook: {sheet name: rows of str / number / None}."""

    def record(kind: int, data: bytes = b"") -> bytes:
        head, value, size = bytearray(), kind, len(data)
        while True:
            head.append(value & 0xFF)
            value >>= 8
            if not value:
                break
        while True:
            head.append((size & 0x7F) | (0x80 if size >> 7 else 0))
            size >>= 7
            if not size:
                break
        return bytes(head) + data

    def text(value: str) -> bytes:
        return struct.pack("<I", len(value)) + value.encode("utf-16-le")

    strings: list[str] = []
    workbook, rels, parts = record(0x018F), [], {}
    for i, (name, rows) in enumerate(sheets.items(), 1):
        workbook += record(0x019C, struct.pack("<II", 0, i) + text(f"rId{i}") + text(name))
        rels.append(f'<Relationship Id="rId{i}" Target="worksheets/sheet{i}.bin"/>')
        width = max((len(r) for r in rows), default=1)
        sheet = record(0x0194, struct.pack("<IIII", 0, max(len(rows) - 1, 0), 0, width - 1))
        sheet += record(0x0191)
        for r, row in enumerate(rows):
            sheet += record(0x0000, struct.pack("<I", r) + b"\x00" * 21)
            for c, value in enumerate(row):
                if isinstance(value, str):
                    strings.append(value)
                    sheet += record(0x0007, struct.pack("<III", c, 0, len(strings) - 1))
                elif value is not None:
                    sheet += record(0x0005, struct.pack("<IId", c, 0, float(value)))
        parts[f"xl/worksheets/sheet{i}.bin"] = sheet + record(0x0192)
    shared = record(0x019F, struct.pack("<II", len(strings), len(strings)))
    shared += b"".join(record(0x0013, b"\x00" + text(s)) for s in strings) + record(0x01A0)
    parts["xl/workbook.bin"] = workbook + record(0x0190)
    parts["xl/sharedStrings.bin"] = shared
    parts["xl/_rels/workbook.bin.rels"] = (
        "<Relationships>" + "".join(rels) + "</Relationships>"
    ).encode()
    parts["[Content_Types].xml"] = b"<Types/>"
    return zip_of(parts)


def odt(tables: dict[str, list[list[str]]]) -> bytes:
    """An OpenDocument *text* document holding the given tables."""
    from odf.opendocument import OpenDocumentText
    from odf.table import Table, TableCell, TableColumn, TableRow
    from odf.text import P

    document = OpenDocumentText()
    document.text.addElement(P(text="A report with a table in it."))
    for name, rows in tables.items():
        table = Table(name=name)
        table.addElement(TableColumn(numbercolumnsrepeated=len(rows[0])))
        for row in rows:
            table_row = TableRow()
            for value in row:
                cell = TableCell(valuetype="string")
                cell.addElement(P(text=value))
                table_row.addElement(cell)
            table.addElement(table_row)
        document.text.addElement(table)
    buffer = io.BytesIO()
    document.write(buffer)
    return buffer.getvalue()


SALES = pd.DataFrame({"city": ["Zürich", "Köln", "Paris"], "amount": [1, 2, 3]})
MULTI = {
    "Charlie": pd.DataFrame({"c": [1, 2]}),
    "Alpha": pd.DataFrame({"a": [1, 2, 3]}),
    "Beta": pd.DataFrame({"b": [1]}),
}
TEXT = "city,amount\nZürich,1\nKöln,2\nParis,3\n"


def check_sales(result: LoadedFrame) -> None:
    assert list(result.frame.columns) == ["city", "amount"]
    assert result.frame["city"].tolist() == ["Zürich", "Köln", "Paris"]
    assert result.frame["amount"].tolist() == [1, 2, 3]


# --- formats ---------------------------------------------------------------------------


def test_csv_loads_as_utf8_with_no_notes(tmp_path: Path) -> None:
    result = load(write(tmp_path, "sales.csv", TEXT))
    check_sales(result)
    assert (result.format, result.encoding, result.sheet, result.sheets) == (
        "csv",
        "utf-8",
        None,
        (),
    )
    assert result.notes == ()
    assert result.name == "sales"


@pytest.mark.parametrize(
    ("delimiter", "said", "fmt"),
    [(";", "';'", "csv"), ("\t", "tab", "tsv"), ("|", "'|'", "csv")],
)
def test_delimiter_is_sniffed_and_reported(
    tmp_path: Path, delimiter: str, said: str, fmt: str
) -> None:
    result = load(write(tmp_path, "sales.csv", TEXT.replace(",", delimiter)))
    check_sales(result)
    assert result.format == fmt
    assert f"delimiter {said} detected" in result.notes


def test_semicolon_file_with_decimal_commas_reads_numbers(tmp_path: Path) -> None:
    text = (
        "name;price;qty;code;mixed;total\n"
        "A;1,5;2;007;1,5;1 204,50\n"
        "B;2,25;3;010;abc;1.391,25\n"
        "C;10;4;120;2,0;\n"
    )
    result = load(write(tmp_path, "prices.csv", text))
    frame = result.frame
    assert list(frame.columns) == ["name", "price", "qty", "code", "mixed", "total"]
    assert frame["price"].tolist() == [1.5, 2.25, 10.0]
    assert frame["total"].iloc[:2].tolist() == [1204.5, 1391.25]
    assert frame["total"].isna().iloc[2]
    assert frame["code"].tolist() == [7, 10, 120]  # pandas' own integer reading, untouched
    assert frame["mixed"].tolist() == ["1,5", "abc", "2,0"]  # not all numbers: stays text
    assert "decimal commas read as numbers in: price, total" in result.notes
    # a comma-separated file never gets this treatment (its commas split the fields)
    plain = load(write(tmp_path, "plain.csv", 'a,b\n"1,5",x\n')).frame
    assert plain["a"].tolist() == ["1,5"]


def test_tsv_and_txt_files(tmp_path: Path) -> None:
    tsv = load(write(tmp_path, "sales.tsv", TEXT.replace(",", "\t")))
    check_sales(tsv)
    assert tsv.format == "tsv" and tsv.notes == ()  # a tab in a .tsv is no news
    txt = load(write(tmp_path, "sales.txt", TEXT.replace(",", "|")))
    check_sales(txt)
    assert "delimiter '|' detected" in txt.notes


def test_quoted_fields_keep_their_delimiters(tmp_path: Path) -> None:
    text = 'name,comment\nA,"one, two; three"\nB,"x|y"\n'
    frame = load(write(tmp_path, "notes.csv", text)).frame
    assert frame.shape == (2, 2)
    assert frame["comment"].tolist() == ["one, two; three", "x|y"]


def test_single_column_text(tmp_path: Path) -> None:
    frame = load(write(tmp_path, "ids.csv", "id\n1\n2\n3\n")).frame
    assert frame.shape == (3, 1)


@pytest.mark.parametrize(
    ("name", "text", "fmt"),
    [
        (
            "records.json",
            '[{"city": "Zürich", "amount": 1}, {"city": "Köln", "amount": 2},'
            ' {"city": "Paris", "amount": 3}]',
            "json",
        ),
        (
            "columns.json",
            '{"city": {"0": "Zürich", "1": "Köln", "2": "Paris"},'
            ' "amount": {"0": 1, "1": 2, "2": 3}}',
            "json",
        ),
        (
            "lines.jsonl",
            '{"city": "Zürich", "amount": 1}\n{"city": "Köln", "amount": 2}\n'
            '{"city": "Paris", "amount": 3}\n',
            "jsonl",
        ),
        (
            "lines.ndjson",
            '{"city": "Zürich", "amount": 1}\n{"city": "Köln", "amount": 2}\n'
            '{"city": "Paris", "amount": 3}',
            "jsonl",
        ),
        (
            "lines.json",
            '{"city": "Zürich", "amount": 1}\n{"city": "Köln", "amount": 2}\n'
            '{"city": "Paris", "amount": 3}\n',
            "jsonl",
        ),
    ],
)
def test_json_and_json_lines(tmp_path: Path, name: str, text: str, fmt: str) -> None:
    result = load(write(tmp_path, name, text))
    check_sales(result)
    assert result.format == fmt


def test_json_that_is_not_a_table(tmp_path: Path) -> None:
    load_error(write(tmp_path, "config.json", '{"debug": true, "level": 3}'), "JSON")
    load_error(write(tmp_path, "broken.json", '[{"a": 1}, {"a": '), "JSON")


def test_parquet(tmp_path: Path) -> None:
    result = load(write(tmp_path, "sales.parquet", frame_bytes(SALES, "parquet")))
    check_sales(result)
    assert (result.format, result.encoding) == ("parquet", None)


def test_xlsx(tmp_path: Path) -> None:
    result = load(write(tmp_path, "sales.xlsx", frame_bytes(SALES, "xlsx")))
    check_sales(result)
    assert (result.format, result.encoding, result.sheet, result.sheets) == (
        "xlsx",
        None,
        "Sheet1",
        ("Sheet1",),
    )
    assert result.notes == ()


def test_xlsm(tmp_path: Path) -> None:
    result = load(write(tmp_path, "sales.xlsm", as_xlsm(frame_bytes(SALES, "xlsx"))))
    check_sales(result)
    assert result.format == "xlsm"


def test_xls(tmp_path: Path) -> None:
    rows = [["city", "amount"], ["Zürich", 1], ["Köln", 2], ["Paris", 3]]
    result = load(write(tmp_path, "sales.xls", xls({"Data": rows})))
    check_sales(result)
    assert (result.format, result.sheet, result.sheets) == ("xls", "Data", ("Data",))


def test_xlsb(tmp_path: Path) -> None:
    rows = [["city", "amount"], ["Zürich", 1], ["Köln", 2], ["Paris", 3]]
    result = load(write(tmp_path, "sales.xlsb", xlsb({"Data": rows})))
    check_sales(result)
    assert (result.format, result.sheet) == ("xlsb", "Data")


def test_ods(tmp_path: Path) -> None:
    result = load(write(tmp_path, "sales.ods", frame_bytes(SALES, "ods")))
    check_sales(result)
    assert (result.format, result.sheet) == ("ods", "Sheet1")


def test_odt_text_document_loads_its_table_with_a_note(tmp_path: Path) -> None:
    rows = [["city", "amount"], ["Zürich", "1"], ["Köln", "2"]]
    result = load(write(tmp_path, "report.odt", odt({"Prices": rows})))
    assert result.format == "odt"
    assert result.frame.shape == (2, 2)
    assert any("text document, not a spreadsheet" in n and "Prices" in n for n in result.notes)


def test_odt_without_a_table_is_an_error(tmp_path: Path) -> None:
    from odf.opendocument import OpenDocumentText
    from odf.text import P

    document = OpenDocumentText()
    document.text.addElement(P(text="No tables here."))
    buffer = io.BytesIO()
    document.write(buffer)
    load_error(write(tmp_path, "letter.odt", buffer.getvalue()), "no tables")


# --- compressed and archived ----------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "compress", "kind"),
    [
        (".gz", gzip.compress, "gzip"),
        (".bz2", bz2.compress, "bz2"),
        (".xz", lzma.compress, "xz"),
        (".zip", lambda data: zip_of({"sales.csv": data}), "zip"),
    ],
)
def test_compressed_csv(tmp_path: Path, suffix: str, compress, kind: str) -> None:
    path = write(tmp_path, "sales.csv" + suffix, compress(TEXT.encode()))
    result = load(path)
    check_sales(result)
    assert result.format == "csv"
    assert result.name == "sales"
    _, info = read_frame(path)
    assert info["compression"] == kind


def test_gzip_is_found_by_content_whatever_the_name(tmp_path: Path) -> None:
    check_sales(load(write(tmp_path, "sales.csv", gzip.compress(TEXT.encode()))))


def test_tar_gz_with_one_csv(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("export/sales.csv")
        info.size = len(TEXT.encode())
        archive.addfile(info, io.BytesIO(TEXT.encode()))
    path = write(tmp_path, "export.tar.gz", buffer.getvalue())
    check_sales(load(path))
    assert read_frame(path)[1]["compression"] == "gzip+tar"


def test_zip_with_a_readme_loads_the_one_table(tmp_path: Path) -> None:
    data = zip_of(
        {
            "README.txt": b"about this export",
            "data/sales.csv": TEXT.encode(),
            "__MACOSX/data/._sales.csv": b"junk",
        }
    )
    result = load(write(tmp_path, "export.zip", data))
    check_sales(result)
    assert any("only table, 'data/sales.csv'" in n for n in result.notes)


def test_zip_with_several_tables_lists_them(tmp_path: Path) -> None:
    data = zip_of({"2023.csv": TEXT.encode(), "2024.csv": TEXT.encode()})
    load_error(write(tmp_path, "years.zip", data), "2 files", "2023.csv", "2024.csv")


def test_zip_holding_a_workbook(tmp_path: Path) -> None:
    data = zip_of({"sales.xlsx": frame_bytes(SALES, "xlsx")})
    result = load(write(tmp_path, "sales.zip", data))
    check_sales(result)
    assert result.format == "xlsx"


def test_empty_zip_and_empty_member(tmp_path: Path) -> None:
    load_error(write(tmp_path, "nothing.zip", zip_of({})), "no files")
    load_error(write(tmp_path, "hollow.zip", zip_of({"a.csv": b""})), "empty")


def test_zstd(tmp_path: Path) -> None:
    try:
        import zstandard
    except ImportError:
        # The frame magic is enough to be recognised; the message must name the package.
        data = b"\x28\xb5\x2f\xfd" + b"\x00" * 16
        load_error(write(tmp_path, "sales.csv.zst", data), "pip install zstandard")
    else:  # pragma: no cover - depends on the environment
        data = zstandard.ZstdCompressor().compress(TEXT.encode())
        check_sales(load(write(tmp_path, "sales.csv.zst", data)))


# --- type by content, not by name -------------------------------------------------------


def test_workbook_named_csv_is_read_as_a_workbook(tmp_path: Path) -> None:
    result = load(write(tmp_path, "sales.csv", frame_bytes(SALES, "xlsx")))
    check_sales(result)
    assert result.format == "xlsx"
    assert any("named .csv but holds an Excel workbook" in n for n in result.notes)


def test_text_named_xlsx_is_read_as_text(tmp_path: Path) -> None:
    result = load(write(tmp_path, "sales.xlsx", TEXT))
    check_sales(result)
    assert result.format == "csv"
    assert any("named .xlsx but holds delimited text" in n for n in result.notes)


def test_xls_named_xlsx_and_parquet_named_csv(tmp_path: Path) -> None:
    rows = [["city", "amount"], ["Zürich", 1], ["Köln", 2], ["Paris", 3]]
    assert load(write(tmp_path, "sales.xlsx", xls({"S": rows}))).format == "xls"
    assert load(write(tmp_path, "sales.csv", frame_bytes(SALES, "parquet"))).format == "parquet"


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        (
            "report.xls",
            "<!DOCTYPE html><html><body><table><tr><td>1</td></tr></table>",
            ("HTML page", "pd.read_html"),
        ),
        (
            "export.xls",
            '<?xml version="1.0"?><Workbook xmlns="urn:schemas-microsoft-com:'
            'office:spreadsheet"></Workbook>',
            ("Excel 2003 XML",),
        ),
        ("data.csv", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", ("PDF",)),
        ("chart.xlsx", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ("PNG image",)),
        ("table.csv", b"SQLite format 3\x00" + bytes(100), ("SQLite",)),
        (
            "data.xlsx",
            zip_of({"word/document.xml": b"<w:document/>", "[Content_Types].xml": b"<Types/>"}),
            ("Word document",),
        ),
        ("data.csv", bytes(range(256)) * 4, ("binary data",)),
    ],
)
def test_files_that_are_not_tables_say_what_they_are(
    tmp_path: Path, name: str, data: bytes | str, words: tuple[str, ...]
) -> None:
    load_error(write(tmp_path, name, data), *words)


def test_password_protected_office_file(tmp_path: Path) -> None:
    data = ole2({"EncryptionInfo": b"\x04\x00\x04\x00", "EncryptedPackage": b"\x00" * 64})
    load_error(write(tmp_path, "secret.xlsx", data), "password-protected")


# --- encodings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "encoding", "note"),
    [
        (TEXT.encode("utf-8"), "utf-8", None),
        (codecs.BOM_UTF8 + TEXT.encode("utf-8"), "utf-8-sig", None),
        (codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le"), "utf-16", "UTF-16 (little-endian"),
        (codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"), "utf-16", "UTF-16 (big-endian"),
        (TEXT.encode("utf-16-le"), "utf-16-le", "UTF-16-LE (no byte-order mark)"),
        (TEXT.encode("utf-16-be"), "utf-16-be", "UTF-16-BE (no byte-order mark)"),
        (TEXT.encode("utf-32"), "utf-32", "UTF-32"),
        (TEXT.encode("cp1252"), "cp1252", "cp1252"),
    ],
    ids=["utf8", "utf8-bom", "utf16le-bom", "utf16be-bom", "utf16le", "utf16be", "utf32", "cp1252"],
)
def test_encodings(tmp_path: Path, data: bytes, encoding: str, note: str | None) -> None:
    result = load(write(tmp_path, "sales.csv", data))
    check_sales(result)  # also proves a BOM does not end up in the first column's name
    assert result.encoding == encoding
    if note is None:
        assert result.notes == ()
    else:
        assert any(note in n and "not UTF-8" in n for n in result.notes), result.notes


def test_cp1252_only_characters_survive(tmp_path: Path) -> None:
    text = "item,price\nCafé crème,3 €\n“Quote”,4 €\n"
    frame = load(write(tmp_path, "menu.csv", text.encode("cp1252"))).frame
    assert frame["item"].tolist() == ["Café crème", "“Quote”"]
    assert frame["price"].tolist() == ["3 €", "4 €"]


def test_latin1_is_the_last_fallback(tmp_path: Path) -> None:
    # 0x8d is undefined in cp1252, so only Latin-1 can decode it.
    result = load(write(tmp_path, "legacy.csv", b"name,value\nA\x8dB,1\n\xe9t\xe9,2\n"))
    assert result.encoding == "latin-1"
    assert result.frame["name"].tolist() == ["A\x8dB", "été"]
    assert any("Latin-1" in n and "encoding=" in n for n in result.notes)


def test_explicit_encoding_overrides_detection(tmp_path: Path) -> None:
    data = "都市,金額\n東京,1\n大阪,2\n".encode("shift_jis")
    path = write(tmp_path, "japan.csv", data)
    guessed = load(path)
    assert guessed.encoding != "shift_jis" and guessed.notes  # a guess, and it says so
    result = load(path, encoding="shift_jis")
    assert list(result.frame.columns) == ["都市", "金額"]
    assert result.encoding == "shift_jis"
    load_error(path, "not valid utf-8", encoding="utf-8")
    load_error(path, "unknown encoding", encoding="klingon")


def test_truncated_utf16_is_an_error(tmp_path: Path) -> None:
    data = codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le")[:-1]
    load_error(write(tmp_path, "cut.csv", data), "UTF-16")


# --- workbooks with several sheets ------------------------------------------------------


def test_multi_sheet_workbook_loads_the_first_and_lists_all(tmp_path: Path) -> None:
    result = load(write(tmp_path, "book.xlsx", sheets_xlsx(MULTI)))
    assert result.sheet == "Charlie"
    assert result.sheets == ("Charlie", "Alpha", "Beta")
    assert result.frame.shape == (2, 1)
    assert "workbook has 3 sheets: Charlie, Alpha, Beta; loaded 'Charlie'" in result.notes


@pytest.mark.parametrize(
    ("sheet", "expected"),
    [
        ("Beta", "Beta"),
        (2, "Beta"),
        ("2", "Beta"),
        (-1, "Beta"),
        ("alpha", "Alpha"),
        (0, "Charlie"),
    ],
)
def test_sheet_by_name_or_position(tmp_path: Path, sheet: str | int, expected: str) -> None:
    result = load(write(tmp_path, "book.xlsx", sheets_xlsx(MULTI)), sheet=sheet)
    assert result.sheet == expected
    assert list(result.frame.columns) == [expected[0].lower()]


@pytest.mark.parametrize("sheet", ["Delta", 3, -4, 1.5])
def test_unknown_sheet_lists_the_sheets(tmp_path: Path, sheet: object) -> None:
    path = write(tmp_path, "book.xlsx", sheets_xlsx(MULTI))
    load_error(path, "Charlie, Alpha, Beta", sheet=sheet)


@pytest.mark.parametrize("fmt", ["xls", "xlsb", "ods"])
def test_sheets_in_other_workbook_formats(tmp_path: Path, fmt: str) -> None:
    sheets = {"Charlie": [["c"], [1], [2]], "Alpha": [["a"], [1]]}
    data = {
        "xls": lambda: xls(sheets),
        "xlsb": lambda: xlsb(sheets),
        "ods": lambda: sheets_xlsx(
            {k: pd.DataFrame({k[0].lower(): [1]}) for k in sheets}, engine="odf"
        ),
    }[fmt]()
    path = write(tmp_path, f"book.{fmt}", data)
    assert load(path).sheets == ("Charlie", "Alpha")
    assert load(path, sheet="Alpha").frame.columns.tolist() == ["a"]
    load_error(path, "Charlie, Alpha", sheet="Beta")


def test_empty_first_sheet_is_skipped_with_a_note(tmp_path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    book.active.title = "Cover"
    data = book.create_sheet("Data")
    for row in (["city", "amount"], ["Zürich", 1], ["Köln", 2], ["Paris", 3]):
        data.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    path = write(tmp_path, "report.xlsx", buffer.getvalue())
    result = load(path)
    check_sales(result)
    assert result.sheet == "Data"
    assert "sheet 'Cover' is empty" in result.notes
    load_error(path, "Sheet 'Cover'", "empty", sheet="Cover")  # asked for it: no skipping


def test_sheet_for_a_csv_is_ignored_with_a_note(tmp_path: Path) -> None:
    result = load(write(tmp_path, "sales.csv", TEXT), sheet="Data")
    check_sales(result)
    assert any("sheet 'Data' ignored" in n for n in result.notes)


# --- empty, header-only, duplicates, damaged -------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("empty.csv", b"", ("empty", "0 bytes")),
        ("blank.csv", b"\n\n  \r\n", ("empty",)),
        ("bom.csv", codecs.BOM_UTF8, ("empty",)),
        ("header.csv", b"city,amount\n", ("header row (city, amount)", "no data rows")),
        ("header.tsv", b"city\tamount\r\n\r\n", ("no data rows",)),
        ("empty.gz", gzip.compress(b""), ("empty",)),
        ("empty.json", b"[]", ("empty",)),
    ],
)
def test_empty_and_header_only_text(
    tmp_path: Path, name: str, data: bytes, words: tuple[str, ...]
) -> None:
    error = load_error(write(tmp_path, name, data), *words)
    assert isinstance(error, DataAgentError)  # what every front end knows how to show


def test_header_only_and_empty_workbooks(tmp_path: Path) -> None:
    header_only = frame_bytes(SALES.iloc[:0], "xlsx")
    load_error(write(tmp_path, "header.xlsx", header_only), "Sheet1", "no data rows")
    empty = sheets_xlsx({"One": pd.DataFrame(), "Two": pd.DataFrame()})
    load_error(write(tmp_path, "blank.xlsx", empty), "2 sheets", "empty")
    load_error(write(tmp_path, "blank.xls", xls({"Only": []})), "empty")


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("dups.csv", b"id,amount,amount,city,city,city\n1,2,3,a,b,c\n"),
        (
            "dups.xlsx",
            frame_bytes(
                pd.DataFrame(
                    [[1, 2, 3, "a", "b", "c"]],
                    columns=["id", "amount", "amount", "city", "city", "city"],
                ),
                "xlsx",
            ),
        ),
        (
            "dups.xls",
            xls(
                {
                    "S": [
                        ["id", "amount", "amount", "city", "city", "city"],
                        [1, 2, 3, "a", "b", "c"],
                    ]
                }
            ),
        ),
    ],
)
def test_duplicate_column_names_are_an_error(tmp_path: Path, name: str, data: bytes) -> None:
    error = load_error(
        write(tmp_path, name, data), "duplicate column names", "'amount' (2×)", "'city' (3×)"
    )
    assert "own name" in (error.hint or "")


def test_duplicate_names_in_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table([[1, 2], [3, 4]], names=["a", "a"]), buffer)
    load_error(write(tmp_path, "dups.parquet", buffer.getvalue()), "'a'")


def test_columns_really_named_like_pandas_copies_are_fine(tmp_path: Path) -> None:
    frame = load(write(tmp_path, "versions.csv", "a,a.1,b.2\n1,2,3\n")).frame
    assert list(frame.columns) == ["a", "a.1", "b.2"]


def test_row_with_too_many_fields(tmp_path: Path) -> None:
    text = "a,b,c\n1,2,3\n4,5,6\n7,8,9,10,11\n"
    load_error(write(tmp_path, "ragged.csv", text), "line 4")


def _valid_samples() -> dict[str, bytes]:
    rows = [["city", "amount"], ["Zürich", 1], ["Köln", 2], ["Paris", 3]]
    return {
        "sales.xlsx": frame_bytes(SALES, "xlsx"),
        "sales.ods": frame_bytes(SALES, "ods"),
        "sales.xls": xls({"Data": rows}),
        "sales.xlsb": xlsb({"Data": rows}),
        "sales.parquet": frame_bytes(SALES, "parquet"),
        "sales.csv.gz": gzip.compress(TEXT.encode() * 20),
        "sales.csv.bz2": bz2.compress(TEXT.encode() * 20),
        "sales.csv.xz": lzma.compress(TEXT.encode() * 20),
        "sales.zip": zip_of({"sales.csv": TEXT.encode() * 20}),
    }


@pytest.mark.parametrize("name", list(_valid_samples()))
def test_truncated_files_are_a_load_error(tmp_path: Path, name: str) -> None:
    data = _valid_samples()[name]
    load_error(write(tmp_path, name, data[: len(data) // 2]))


def test_damaged_files_never_raise_anything_but_load_error(tmp_path: Path) -> None:
    """Cut and bit-flipped versions of every format: a frame or a LoadError, nothing else."""
    rng = random.Random(4)
    outcomes = {"frame": 0, "error": 0}
    for name, data in _valid_samples().items():
        variants = [data[:cut] for cut in (1, 8, 64, 300, len(data) - 20)]
        for _ in range(12):
            damaged = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            variants.append(bytes(damaged))
        for variant in variants:
            try:
                result = load(variant, filename=name)
            except LoadError as error:
                assert name in error.message
                outcomes["error"] += 1
            else:
                assert isinstance(result.frame, pd.DataFrame)
                outcomes["frame"] += 1
    assert outcomes["error"] > 0


def test_damaged_xls_prints_nothing(tmp_path: Path, capsys) -> None:
    data = _valid_samples()["sales.xls"]
    load_error(write(tmp_path, "sales.xls", data[:1000] + bytes(3)), "Excel 97-2003")
    assert capsys.readouterr() == ("", "")  # xlrd's own warnings would land in the cell


def test_corrupt_member_crc(tmp_path: Path) -> None:
    data = bytearray(zip_of({"sales.csv": TEXT.encode() * 50}))
    data[60] ^= 0xFF  # inside the deflated member: CRC or inflate fails
    load_error(write(tmp_path, "sales.zip", bytes(data)))


# --- size limit, missing files, the reader packages -------------------------------------


def test_size_limit_is_checked_before_reading(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "huge.csv"
    with open(path, "wb") as handle:
        handle.truncate(3 * 1024 * 1024)  # sparse: big on paper, nothing on disk

    def no_reading(*args, **kwargs):
        raise AssertionError("the file was opened")

    monkeypatch.setattr(loaders, "open", no_reading, raising=False)
    error = load_error(path, "3.0 MB", "limit of 1.0 MB", max_mb=1)
    assert "DataAgent.max_upload_mb" in (error.hint or "")


def test_size_limit_for_uploads_and_decompressed_content(tmp_path: Path) -> None:
    load_error(b"a\n" + b"1\n" * 600_000, "limit", filename="big.csv", max_mb=1)
    bomb = gzip.compress(b"a\n" + b"1\n" * 6_000_000)  # 12 MB of text, a few KB packed
    assert len(bomb) < 100_000
    load_error(write(tmp_path, "bomb.csv.gz", bomb), "decompressed", max_mb=1)
    assert load(write(tmp_path, "fine.csv.gz", bomb), max_mb=None).frame.shape == (6_000_000, 1)


def test_workbook_that_inflates_past_the_limit(tmp_path: Path) -> None:
    padded = zip_of({"xl/workbook.xml": b"<workbook/>", "xl/padding.bin": bytes(11 * 2**20)})
    load_error(write(tmp_path, "bomb.xlsx", padded), "decompressed", max_mb=1)


def test_zero_means_no_limit(tmp_path: Path) -> None:
    assert load(write(tmp_path, "sales.csv", TEXT), max_mb=0).frame.shape == (3, 2)


def test_missing_file_folder_and_device(tmp_path: Path) -> None:
    error = load_error(tmp_path / "nope.csv", "does not exist")
    assert str(tmp_path) in (error.hint or "")
    load_error(tmp_path, "folder")
    if os.path.exists("/dev/null"):
        with pytest.raises(LoadError, match="not a regular file"):
            load("/dev/null")


def test_wrong_argument_type_is_a_load_error() -> None:
    with pytest.raises(LoadError, match="expected a file path or the bytes"):
        load(12345)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "module", "package"),
    [
        ("sales.xlsx", "openpyxl", "openpyxl"),
        ("sales.xls", "xlrd", "xlrd"),
        ("sales.ods", "odf", "odfpy"),
        ("sales.xlsb", "pyxlsb", "pyxlsb"),
    ],
)
def test_missing_reader_package_is_named(
    tmp_path: Path, monkeypatch, name: str, module: str, package: str
) -> None:
    data = _valid_samples()[name]
    path = write(tmp_path, name, data)
    monkeypatch.setitem(sys.modules, module, None)  # makes "import module" fail
    load_error(path, f"pip install {package}")


def test_keyboard_interrupt_is_not_swallowed(tmp_path: Path, monkeypatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pd, "read_csv", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load(write(tmp_path, "sales.csv", TEXT))


def test_unexpected_reader_failure_becomes_load_error(tmp_path: Path, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("internal reader bug")

    monkeypatch.setattr(pd, "read_parquet", broken)
    load_error(
        write(tmp_path, "sales.parquet", frame_bytes(SALES, "parquet")), "internal reader bug"
    )


def test_the_file_is_not_changed(tmp_path: Path) -> None:
    path = write(tmp_path, "sales.xlsx", frame_bytes(SALES, "xlsx"))
    before = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    load(path)
    assert (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns) == before


# --- names and the namespace ------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("my sales.csv", "my_sales"),
        ("Sales Q1 (final).xlsx", "sales_q1_final"),
        ("2023 report.xlsx", "df_2023_report"),
        ("class.csv", "class_df"),
        ("list.csv", "list_df"),
        ("pd.csv", "pd_df"),
        ("données.csv", "données"),
        ("---.csv", "df"),
        ("salaries.csv.gz", "salaries"),
        ("tar_csv.tar.gz", "tar_csv"),
        ("v1.2.csv", "v1_2"),
        ("report.final", "report_final"),
        ("C:\\Users\\me\\Q3-data.csv", "q3_data"),
        ("/tmp/exports/orders.parquet", "orders"),
        ("x" * 100 + ".csv", "x" * 48),
    ],
)
def test_variable_name(filename: str, expected: str) -> None:
    name = variable_name(filename)
    assert name == expected
    assert name.isidentifier()


def test_variable_name_numbers_taken_names() -> None:
    assert variable_name("my sales.csv", {"my_sales": 1, "my_sales_2": 2}) == "my_sales_3"
    assert variable_name("my sales.csv", {"other": 1}) == "my_sales"


def test_load_binds_and_never_overwrites(tmp_path: Path) -> None:
    path = write(tmp_path, "sales.csv", TEXT)
    namespace: dict[str, object] = {}
    first = load(path, namespace=namespace)
    assert first.name == "sales" and namespace["sales"] is first.frame
    second = load(path, namespace=namespace)
    assert second.name == "sales_2" and namespace["sales_2"] is second.frame
    assert namespace["sales"] is first.frame  # the first one is untouched
    assert "name 'sales' was taken; bound as 'sales_2'" in second.notes


def test_explicit_name_is_used_but_never_replaces_anything(tmp_path: Path) -> None:
    path = write(tmp_path, "sales.csv", TEXT)
    precious = ["not", "a", "frame"]
    namespace: dict[str, object] = {"report": precious}
    result = load(path, name="report", namespace=namespace)
    assert result.name == "report_2" and result.requested_name == "report"
    assert namespace["report"] is precious
    assert any("'report' was taken" in n and "del report" in n for n in result.notes)
    free = load(path, name="q1", namespace=namespace)
    assert free.name == "q1" and free.notes == () and namespace["q1"] is free.frame


@pytest.mark.parametrize("name", ["my sales", "class", "1st", ""])
def test_invalid_explicit_name(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, "sales.csv", TEXT)
    namespace: dict[str, object] = {}
    load_error(path, "not a valid Python variable name", name=name, namespace=namespace)
    assert namespace == {}


def test_without_namespace_nothing_is_bound(tmp_path: Path) -> None:
    result = load(write(tmp_path, "sales.csv", TEXT))
    assert result.name == "sales" and result.requested_name is None


# --- bytes from the widget's upload button ------------------------------------------------


def test_upload_bytes_with_filename() -> None:
    namespace: dict[str, object] = {}
    result = load(TEXT.encode("cp1252"), filename="Q1 sales.csv", namespace=namespace)
    check_sales(result)
    assert (result.name, result.path, result.encoding) == ("q1_sales", "Q1 sales.csv", "cp1252")
    assert namespace["q1_sales"] is result.frame


def test_upload_bytes_without_filename_are_sniffed() -> None:
    result = load(frame_bytes(SALES, "xlsx"))
    check_sales(result)
    assert (result.format, result.name, result.path) == ("xlsx", "upload", "upload")


def test_upload_buffers_are_copied_not_changed() -> None:
    buffer = bytearray(TEXT.encode())
    check_sales(load(buffer, filename="sales.csv"))
    check_sales(load(memoryview(buffer), filename="sales.csv"))
    assert bytes(buffer) == TEXT.encode()


def test_read_frame_reports_what_it_found() -> None:
    frame, info = read_frame(
        zip_of({"s.csv": TEXT.replace(",", ";").encode("utf-16")}), filename="s.zip"
    )
    assert frame.shape == (3, 2)
    assert info["format"] == "csv" and info["delimiter"] == ";"
    assert info["encoding"] == "utf-16" and info["compression"] == "zip"
    assert info["member"] == "s.csv"
    assert isinstance(info["notes"], tuple)


# --- the summary a user sees ------------------------------------------------------------


def test_summary_html_and_markdown(tmp_path: Path) -> None:
    text = "<b>name</b>,a|b,n\nété,1,\ny,2,3\n"
    result = load(write(tmp_path, "odd names.csv", text.encode("cp1252")))
    page = result._repr_html_()
    assert "odd_names" in page and "2 rows × 3 columns" in page
    assert "&lt;b&gt;name&lt;/b&gt;" in page and "<b>name</b>" not in page
    assert "cp1252" in page and "not UTF-8" in page
    assert "1 (50%)" in page  # the nulls column
    markdown = result._repr_markdown_()
    assert "| column | dtype | nulls |" in markdown
    assert "a\\|b" in markdown  # a pipe in a column name does not break the table
    assert repr(result).startswith("LoadedFrame(name='odd_names', shape=(2, 3)")


def test_summary_of_a_wide_frame_is_bounded() -> None:
    wide = pd.DataFrame([list(range(120))], columns=[f"c{i}" for i in range(120)])
    result = load(frame_bytes(wide, "parquet"), filename="wide.parquet")
    assert "… and 70 more columns" in result._repr_html_()
    assert "… and 70 more columns" in result._repr_markdown_()


# --- the pandas-io corpus ----------------------------------------------------------------

CORPUS = Path(
    os.environ.get("DATAAGENT_CORPUS") or Path(__file__).resolve().parents[2] / "shared" / "corpus"
)
PANDAS_IO = CORPUS / "pandas-io"

#: Where this loader deliberately does better than pandas' default read that SOURCES.md
#: records: a shape it reads instead, or the words of the LoadError it gives instead.
DELIBERATE = {
    # tab-separated despite the name: the sniffer finds the tab
    **{f"salaries.csv{ext}": (46, 4) for ext in ("", ".bz2", ".gz", ".xz", ".zip")},
    "items.jsonl": (2, 2),  # read as JSON Lines, not as CSV
    "utf16_ex.txt": (50, 11),  # UTF-16 with BOM is decoded
    "utf16_ex_small.zip": (2, 2),
    "utf32_ex_small.zip": (2, 2),
    "utf8_ex_small.zip": (2, 2),  # tab-separated
    "unicode_series.csv": (17, 2),  # cp1252 fallback
    "sauron.SHIFT_JIS.csv": (13, 2),  # Latin-1 fallback (noted); encoding= gets it right
    **{
        f"df_mangle_dup_col_dtypes.{ext}": "duplicate column names"
        for ext in ("ods", "xls", "xlsb", "xlsm", "xlsx")
    },
    **{
        f"test_datetime_mi.{ext}": "duplicate column names"
        for ext in ("ods", "xls", "xlsb", "xlsm", "xlsx")
    },
    "salaries.csv.zst": "zstandard",  # unless zstandard is installed (checked below)
}


def _expected_from_sources() -> dict[str, tuple[int, int] | str | None]:
    """What SOURCES.md's 'pandas default read' column implies for this loader's default.

    A shape; ``"error"`` where it must be a LoadError (no data, or header only); ``None``
    where pandas failed and either outcome is allowed.
    """
    sources = CORPUS / "SOURCES.md"
    expected: dict[str, tuple[int, int] | str | None] = {}
    if not sources.exists():
        return expected
    for line in sources.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) < 7 or not cells[1].startswith("pandas-io/"):
            continue
        name, read = Path(cells[1]).name, cells[5]
        if m := re.match(r"ok \((\d+), (\d+)\)", read):
            expected[name] = (int(m[1]), int(m[2]))
        elif read.startswith("ok sheets="):
            shapes = [(int(r), int(c)) for r, c in re.findall(r"\((\d+), (\d+)\)", read)]
            # The first sheet with a column is loaded; header-only or all empty: an error.
            first = next((s for s in shapes if s[1] > 0), None)
            expected[name] = first if first and first[0] > 0 else "error"
        else:
            expected[name] = None
    return expected


def _corpus_files() -> list[Path]:
    if not PANDAS_IO.is_dir():
        return []
    return sorted(
        path
        for folder in ("csv", "excel", "parser-data")
        if (PANDAS_IO / folder).is_dir()
        for path in (PANDAS_IO / folder).iterdir()
        if path.is_file()
    )


CORPUS_FILES = _corpus_files()
EXPECTED = _expected_from_sources()


@pytest.mark.parametrize(
    "path",
    CORPUS_FILES or [None],
    ids=[f"{p.parent.name}/{p.name}" for p in CORPUS_FILES] or ["no-corpus"],
)
def test_corpus_file(path: Path | None) -> None:
    if path is None:
        pytest.skip(f"no corpus at {PANDAS_IO} (set DATAAGENT_CORPUS to point at one)")
    expected = DELIBERATE.get(path.name, EXPECTED.get(path.name))
    if path.name == "salaries.csv.zst":
        try:
            import zstandard  # noqa: F401
        except ImportError:
            pass
        else:  # pragma: no cover - depends on the environment
            expected = (46, 4)
    try:
        result = load(path)
    except LoadError as error:
        assert path.name in error.message
        assert isinstance(expected, str) or expected is None, (
            f"expected {expected}, got LoadError: {error}"
        )
        if isinstance(expected, str) and expected != "error":
            assert expected in str(error)
        return
    assert not isinstance(expected, str), f"expected a LoadError ({expected}), it loaded"
    assert isinstance(result.frame, pd.DataFrame)
    if expected is not None:
        assert result.frame.shape == expected
    assert result._repr_html_() and result._repr_markdown_()
