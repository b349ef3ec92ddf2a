"""Readers for labelled tables (CSV, JSONL, Parquet; optionally gzipped) with a column map.

A reader yields one :class:`RawRow` per data row and never stops at a bad row: a row it
cannot decode or parse comes out with ``problem`` set, so validation can quarantine it
with its reason while every good row goes on. Problems with the file as a whole (missing,
empty, no data rows, the named columns absent) raise :class:`DataFileError` with a
message that says what to do.
"""

from __future__ import annotations

import collections
import codecs
import csv
import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Descriptions longer than this are rejected by validation, but the reader must still get
# past them (Python's csv module stops at 128 KiB by default).
csv.field_size_limit(64 * 1024 * 1024)

# compared with the column names lower-cased and stripped of everything but letters and
# digits, so "HS Code", "hs-code" and "HSCODE" all match "hscode"
TEXT_CANDIDATES = ("goodsdescription", "description", "desc", "text", "productname", "product",
                   "title", "itemdescription")
LABEL_CANDIDATES = ("hscode", "hs6", "code", "label", "hs", "tariffcode", "commoditycode", "hts")
FORMATS = ("csv", "tsv", "jsonl", "parquet")
NO_LABEL = "\0no-label"  # label_column value for unlabelled tables (prediction input): label is None


UNDECODABLE = "row has bytes that are not valid"  # prefix of the problem text; reason not_utf8


def _undecodable(encoding: str) -> str:
    hint = " (pass --encoding cp1252 or latin-1 if the file is not UTF-8)" if encoding.startswith("utf-8") else ""
    return f"{UNDECODABLE} {encoding}{hint}"


BLANK_ROW = "the row is blank"


class DataFileError(ValueError):
    """The file as a whole cannot be read as a labelled table."""


@dataclass(slots=True)
class RawRow:
    number: int  # 1-based data row number (header excluded)
    text: object
    label: object
    record: dict  # the row as read, for the quarantine file
    problem: str | None = None  # set when the row itself could not be read


def detect_format(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    for suffix, fmt in ((".csv", "csv"), (".tsv", "tsv"), (".jsonl", "jsonl"),
                        (".ndjson", "jsonl"), (".parquet", "parquet")):
        if name.endswith(suffix):
            return fmt
    raise DataFileError(
        f"{path.name}: cannot tell the format from the name; use .csv, .tsv, .jsonl or .parquet "
        "(optionally .gz), or pass --format"
    )


def pick_column(columns: list[str], wanted: str | None, candidates: tuple[str, ...], role: str,
                flag: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise DataFileError(f"no {role} column {wanted!r}; the file has columns {columns}")
        return wanted
    squashed = {re.sub(r"[^a-z0-9]", "", c.lower()): c for c in reversed(columns)}
    for candidate in candidates:
        if candidate in squashed:
            return squashed[candidate]
    raise DataFileError(f"cannot find a {role} column among {columns}; name it with {flag}")


def _label_column(columns: list[str], wanted: str | None) -> str | None:
    if wanted == NO_LABEL:
        return None
    return pick_column(columns, wanted, LABEL_CANDIDATES, "code", "--label-column")


def _open_binary(path: Path):
    if not path.exists():
        raise DataFileError(f"{path}: no such file")
    if not path.is_file():
        raise DataFileError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise DataFileError(f"{path.name}: the file is empty")
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


_BROKEN_COMPRESSION = (gzip.BadGzipFile, EOFError, zlib.error)


def _compression_error(path: Path, exc: Exception) -> DataFileError:
    if isinstance(exc, EOFError):
        return DataFileError(f"{path.name}: the gzip stream ends early; the file is truncated")
    return DataFileError(f"{path.name}: not a valid gzip file ({exc})")


def sniff_encoding(path: Path, encoding: str | None) -> str:
    """The given encoding, else UTF-16 when the file starts with its byte-order mark,
    else UTF-8 (with an optional BOM)."""
    if encoding:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise DataFileError(f"unknown encoding {encoding!r}") from None
        return encoding
    with _open_binary(path) as raw:
        try:
            head = raw.read(4)
        except _BROKEN_COMPRESSION as exc:
            raise _compression_error(path, exc) from None
    if head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        return "utf-16"
    return "utf-8-sig"


def sniff_delimiter(header_line: str, default: str) -> str:
    """``;`` or ``|`` instead of ``,`` when the header line clearly uses it (European
    spreadsheet exports)."""
    if default != ",":
        return default
    counts = {d: header_line.count(d) for d in (",", ";", "|", "\t")}
    best = max(counts, key=counts.get)
    return best if counts[best] > counts[","] else ","


def _has_undecodable(*values: object) -> bool:
    # surrogateescape turns each undecodable byte into a lone surrogate U+DC80..U+DCFF
    return any(isinstance(v, str) and any("\udc80" <= ch <= "\udcff" for ch in v) for v in values)


def _escape(value: object) -> object:
    """Undecodable bytes shown as \\xNN, so the text can be written as UTF-8 JSON."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return value


def _printable(record: dict) -> dict:
    """The record with undecodable bytes shown as \\xNN, safe to write as JSON."""
    return {str(_escape(key)): _escape(value) for key, value in record.items()}


def _has_lone_surrogate(obj: object) -> bool:
    # JSON may spell an unpaired surrogate as an escape ("\\ud800"): valid JSON, not text
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class _LineSource:
    """Lines for ``csv.reader`` that remembers which lines each record consumed and can
    take lines back, so a record that swallowed later rows can be re-read.

    An unclosed quote makes the csv module read on to the end of the file (or the next
    quote) as one field. We only undo that when the result is certainly broken: a record
    that spans several lines *and* has the wrong number of fields. Its first line is
    quarantined and the lines after it are read again as rows. A description quoted
    across lines with the right number of fields is left alone."""

    def __init__(self, stream):
        self._stream = stream
        self._pending: collections.deque[str] = collections.deque()
        self.consumed: list[str] = []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self._pending.popleft() if self._pending else next(self._stream)
        self.consumed.append(line)
        return line

    def push_back(self, lines: list[str]) -> None:
        self._pending.extendleft(reversed(lines))


def _read_delimited(path: Path, delimiter: str, text_column: str | None,
                    label_column: str | None, encoding: str) -> Iterator[RawRow]:
    with _open_binary(path) as raw:
        stream = io.TextIOWrapper(raw, encoding=encoding, errors="surrogateescape", newline="")
        lines = _LineSource(stream)
        try:
            first = next(lines)
        except StopIteration:
            raise DataFileError(f"{path.name}: the file is empty") from None
        lines.push_back([first])
        reader = csv.reader(lines, delimiter=sniff_delimiter(first, delimiter))
        try:
            header = next(reader)
        except StopIteration:
            raise DataFileError(f"{path.name}: the file is empty") from None
        except csv.Error as exc:
            raise DataFileError(f"{path.name}: unreadable header ({exc})") from None
        # a header with non-UTF-8 bytes would make every quarantined record unwritable
        header = [_escape(h).strip() for h in header]
        if not any(header):
            raise DataFileError(f"{path.name}: the first line is blank; expected a header row")
        text_col = pick_column(header, text_column, TEXT_CANDIDATES, "description", "--text-column")
        label_col = _label_column(header, label_column)
        ti = header.index(text_col)
        li = header.index(label_col) if label_col is not None else None
        number = 0
        while True:
            lines.consumed = []
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                number += 1
                yield RawRow(number, None, None, {"line": reader.line_num}, f"malformed CSV: {exc}")
                continue
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                yield RawRow(0, None, None, {}, BLANK_ROW)  # number_rows drops or numbers it
                continue
            number += 1
            consumed = lines.consumed
            if len(consumed) > 1 and len(fields) != len(header):
                # an unclosed quote: quarantine its own line, read the rest again as rows
                lines.push_back(consumed[1:])
                yield RawRow(number, None, None, _printable({"line": consumed[0].rstrip("\r\n")}),
                             "malformed CSV: unclosed quote (the rows after it were read again)")
                continue
            record = dict(zip(header, fields))
            if len(fields) != len(header):
                yield RawRow(number, None, None, _printable({"fields": fields}),
                             f"row has {len(fields)} fields, the header has {len(header)}")
            elif _has_undecodable(*fields):
                yield RawRow(number, None, None, _printable(record), _undecodable(encoding))
            else:
                yield RawRow(number, fields[ti], fields[li] if li is not None else None, record)
        if number == 0:
            raise DataFileError(f"{path.name}: the file has a header but no data rows")


def _read_jsonl(path: Path, text_column: str | None, label_column: str | None,
                encoding: str) -> Iterator[RawRow]:
    with _open_binary(path) as raw:
        stream = io.TextIOWrapper(raw, encoding=encoding, errors="surrogateescape", newline=None)
        number = 0
        columns: tuple[str, str] | None = None
        for line in stream:
            if not line.strip():
                yield RawRow(0, None, None, {}, BLANK_ROW)  # number_rows drops or numbers it
                continue
            number += 1
            if _has_undecodable(line):
                yield RawRow(number, None, None, _printable({"line": line[:2000]}), _undecodable(encoding))
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                yield RawRow(number, None, None, {"line": line[:2000]}, f"not valid JSON: {exc}")
                continue
            if not isinstance(obj, dict):
                yield RawRow(number, None, None, {"line": line[:2000]}, "a JSONL row must be an object")
                continue
            if "\\u" in line and _has_lone_surrogate(obj):
                yield RawRow(number, None, None, {"line": line[:2000]},
                             f"{UNDECODABLE} text: a \\u escape is an unpaired surrogate")
                continue
            if columns is None:  # the first object plays the header's part
                keys = list(obj)
                columns = (
                    pick_column(keys, text_column, TEXT_CANDIDATES, "description", "--text-column"),
                    _label_column(keys, label_column),
                )
            yield RawRow(number, obj.get(columns[0]), obj.get(columns[1]) if columns[1] else None, obj)
        if number == 0:
            raise DataFileError(f"{path.name}: the file has no rows")


def _read_parquet(path: Path, text_column: str | None, label_column: str | None) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    _open_binary(path).close()  # same messages for missing and empty files
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DataFileError(f"{path.name}: not a readable Parquet file ({exc})") from None
    columns = parquet.schema_arrow.names
    text_col = pick_column(columns, text_column, TEXT_CANDIDATES, "description", "--text-column")
    label_col = _label_column(columns, label_column)
    wanted = [text_col] if label_col is None else [text_col, label_col]
    number = 0
    for batch in parquet.iter_batches(columns=wanted, batch_size=10_000):
        texts = batch.column(0).to_pylist()
        labels = batch.column(1).to_pylist() if label_col is not None else [None] * len(texts)
        for text, label in zip(texts, labels):
            number += 1
            record = {text_col: text} if label_col is None else {text_col: text, label_col: label}
            yield RawRow(number, text, label, record)
    if number == 0:
        raise DataFileError(f"{path.name}: the file has no rows")


def read_table(path: str | Path, *, text_column: str | None = None, label_column: str | None = None,
               fmt: str | None = None, encoding: str | None = None, keep_blank: bool = False) -> Iterator[RawRow]:
    """Yield every data row of ``path``; see the module docstring for error handling.

    ``encoding`` applies to CSV/TSV/JSONL (default: UTF-8, or UTF-16 when the file
    starts with its byte-order mark). A blank line is not a row for a dataset; with
    ``keep_blank`` (prediction inputs, answered line for line) it is one, with the
    problem ``BLANK_ROW``, so the output keeps the input's row numbers. Blank lines at
    the end of the file are dropped either way.
    """
    path = Path(path)
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise DataFileError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    if fmt == "parquet":
        return _read_parquet(path, text_column, label_column)
    encoding = sniff_encoding(path, encoding)
    if fmt == "jsonl":
        rows = _read_jsonl(path, text_column, label_column, encoding)
    else:
        rows = _read_delimited(path, "\t" if fmt == "tsv" else ",", text_column, label_column, encoding)
    return number_rows(_guard_compression(path, rows), keep_blank)


def number_rows(rows: Iterator[RawRow], keep_blank: bool) -> Iterator[RawRow]:
    """Rows numbered from 1; ``BLANK_ROW`` rows dropped, or (``keep_blank``) kept when a
    row follows them, so trailing blank lines are never rows."""
    number, blanks = 0, 0
    for row in rows:
        if row.problem == BLANK_ROW:
            blanks += keep_blank  # held back: only a row after them makes them rows
            continue
        for _ in range(blanks):
            number += 1
            yield RawRow(number, None, None, {}, BLANK_ROW)
        blanks, number = 0, number + 1
        row.number = number
        yield row


def _guard_compression(path: Path, rows: Iterator[RawRow]) -> Iterator[RawRow]:
    """A corrupt or truncated .gz surfaces mid-read; report it as a file error."""
    try:
        yield from rows
    except _BROKEN_COMPRESSION as exc:
        raise _compression_error(path, exc) from None
