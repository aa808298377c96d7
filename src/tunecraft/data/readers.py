"""Readers for the user's own files (CSV, TSV, JSONL, Parquet); every error names file, line and field."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

log = logging.getLogger(__name__)
MISSING = {"", "nan", "na", "n/a", "null", "none"}
"""Label cells that spell a missing value (compared lower-cased, stripped): pandas and spreadsheets write
these for an empty cell, and read as text they would become a class of their own."""
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet",
           ".sqlite": "sqlite", ".db": "sqlite"}


@dataclass
class Example:
    text: str
    label: str | None = None
    text_pair: str | None = None
    path: str = ""
    line: int | None = None
    """Where it came from (file and line, or row for Parquet), for error messages."""


@dataclass
class Columns:
    text: str = "text"
    label: str | None = "label"
    text_pair: str | None = None
    missing_labels: str = "error"
    """A row whose label is missing (see MISSING): "error" (naming file, line and field) or "drop" it."""

    def required(self) -> list[str]:
        return [c for c in (self.text, self.text_pair, self.label) if c]


def detect_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    if path.suffix.lower() in FORMATS:
        return FORMATS[path.suffix.lower()]
    raise DataError(path, None, None, f"cannot tell the format from the suffix '{path.suffix}'; "
                    "set data.format to csv, tsv, jsonl or parquet")


def _decode(path: Path) -> str:
    data = path.read_bytes()
    if not data.strip():
        raise DataError(path, None, None, "the file is empty")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(path, line, None, f"not valid UTF-8 (byte 0x{data[err.start]:02x} at column {col}); "
                        "re-save the file as UTF-8") from None


def is_missing(value) -> bool:
    """None, a float NaN, or a string in MISSING."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value.strip().lower() in MISSING


def check_header(path: Path, line: int | None, names: list[str]) -> None:
    """Two columns of one name are an error naming both positions (a dict of the row would keep the last)."""
    first: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if name in first:
            raise DataError(path, line, name, f"the column name appears twice (columns {first[name]} and {position}); "
                            "rename one")
        first[name] = position


def _make_example(path: Path, line: int, row: dict, cols: Columns) -> Example | None:
    """The example of one row; None for a row left out (a missing label with cols.missing_labels "drop")."""
    def text_field(name: str) -> str:
        value = row.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(path, line, name, "empty text")
        if not isinstance(value, str):
            raise DataError(path, line, name, f"expected text, got {type(value).__name__} {value!r}")
        return value

    label = None
    if cols.label:
        value = row.get(cols.label)
        if is_missing(value):
            if cols.missing_labels == "drop":
                return None
            raise DataError(path, line, cols.label, f"missing label ({value!r}); set data.missing_labels: drop "
                            "to leave such rows out")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, dict | list):
            raise DataError(path, line, cols.label, f"a label must be a string or number, got {value!r}")
        label = str(value).strip()
    return Example(
        text=text_field(cols.text),
        label=label,
        text_pair=text_field(cols.text_pair) if cols.text_pair else None,
        path=str(path),
        line=line,
    )


def _check_columns(path: Path, line: int | None, present: list[str], cols: Columns) -> None:
    for name in cols.required():
        if name not in present:
            raise DataError(path, line, name, f"column not found; the columns are: {', '.join(present)}")


def _read_delimited(path: Path, cols: Columns, delimiter: str) -> list[Example]:
    reader = csv.reader(io.StringIO(_decode(path), newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
        check_header(path, 1, header)
        _check_columns(path, 1, header, cols)
        out = []
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(path, reader.line_num, None,
                                f"the row has {len(row)} fields but the header has {len(header)}")
            out.append(_make_example(path, reader.line_num, dict(zip(header, row)), cols))
    except csv.Error as err:
        raise DataError(path, reader.line_num, None, f"malformed CSV: {err}") from None
    return out


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple]) -> dict:
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)
    return dict(pairs)


def existing_file(path: str | Path) -> Path:
    """`path` as a Path; a DataError naming it ("file not found") where it is not a file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, None, "file not found")
    return path


def json_rows(path: Path, columns: Mapping[str, str] | None = None):
    """(line number, object) for each non-blank line of a JSONL file, or for each element of a file holding one
    JSON array (Alpaca's native format; the line is where the element starts); errors name file and line. A
    key that appears twice in one object is an error (json.loads would keep the last). `columns` (data.columns:
    the field tunecraft reads → the user's name for it) renames each row's keys to the names the task reads."""
    text = _decode(path)
    rows = _array_rows(path, text) if text.lstrip().startswith("[") else _line_rows(path, text)
    if columns:  # every row first: a mapped name no row has is a typo, named before any row's missing field
        rows = list(rows)
        check_all_mapped(path, [row for _, row in rows if isinstance(row, dict)], columns)
    for number, row in rows:
        if not isinstance(row, dict):
            raise DataError(path, number, None, f"expected a JSON object, got {type(row).__name__}")
        yield number, renamed(path, number, row, columns) if columns else row


def renamed(path: Path, line: int | None, row: dict, columns: Mapping[str, str]) -> dict:
    """`row` with each of the user's field names (data.columns: ours → theirs) under the name tunecraft reads;
    a row holding both names for one field is an error naming them."""
    for ours, theirs in columns.items():
        if theirs in row and ours != theirs:
            if ours in row:
                raise DataError(path, line, ours, f"the row has both '{ours}' and '{theirs}', which data.columns "
                                f"maps to '{ours}'; remove one")
            row[ours] = row.pop(theirs)
    return row


def check_all_mapped(path: Path, rows: list[dict], columns: Mapping[str, str]) -> None:
    """A name data.columns gives that no row of the file has is an error naming it (a typo would otherwise read
    as a missing field, or silently as an absent optional one)."""
    for ours, theirs in columns.items():
        if not any(theirs in row or ours in row for row in rows):
            raise DataError(path, None, theirs, f"data.columns maps '{ours}' to this field, but no row of the file "
                            "has it")


def _parse(path: Path, number: int, parse, in_file: bool = False):
    """parse(), its errors as DataErrors at line `number` (or, `in_file`, where the decoder stopped)."""
    try:
        return parse()
    except json.JSONDecodeError as err:
        line = err.lineno if in_file else number
        raise DataError(path, line, None, f"invalid JSON: {err.msg} at column {err.colno}") from None
    except _DuplicateKey as err:
        raise DataError(path, number, str(err), "the key appears twice in one object; remove one") from None
    except (ValueError, RecursionError) as err:
        raise DataError(path, number, None, f"invalid JSON: {err}") from None


def _line_rows(path: Path, text: str):
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, _parse(path, number, lambda line=line: json.loads(line, object_pairs_hook=_unique_keys))


def _array_rows(path: Path, text: str):
    """The elements of a JSON array, each with the line it starts on."""
    decoder = json.JSONDecoder(object_pairs_hook=_unique_keys)
    pos = text.index("[") + 1
    expect_value, first = True, True
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        line = text.count("\n", 0, pos) + 1
        if pos >= len(text):
            raise DataError(path, line, None, "invalid JSON: the array is not closed with ']'")
        if text[pos] == "]" and (not expect_value or first):
            if text[pos + 1:].strip():
                raise DataError(path, line, None, "invalid JSON: extra data after the array's ']'")
            return
        if not expect_value:
            if text[pos] != ",":
                raise DataError(path, line, None, f"invalid JSON: expected ',' or ']' between elements, got "
                                f"{text[pos]!r}")
            pos, expect_value = pos + 1, True
            continue
        row, pos = _parse(path, line, lambda start=pos: decoder.raw_decode(text, start), in_file=True)
        yield line, row
        expect_value, first = False, False


def _read_jsonl(path: Path, cols: Columns) -> list[Example]:
    out = []
    for number, row in json_rows(path):
        _check_columns(path, number, list(row), cols)
        out.append(_make_example(path, number, row, cols))
    return out


def _read_parquet(path: Path, cols: Columns) -> list[Example]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        check_header(path, None, pq.read_schema(path).names)
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(path, None, None, f"not a readable Parquet file: {err}") from None
    _check_columns(path, None, table.column_names, cols)
    return [_make_example(path, i, row, cols) for i, row in enumerate(table.to_pylist(), start=1)]


def _read_sqlite(path: Path, cols: Columns) -> list[Example]:
    """The feedback a served model collected (`tunecraft serve` → /v1/feedback): table `feedback`."""
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM feedback ORDER BY id").fetchall()
    except sqlite3.Error as err:
        raise DataError(path, None, None, f"not a tunecraft feedback database: {err}") from None
    present = list(rows[0].keys()) if rows else []
    if rows:
        _check_columns(path, None, present, cols)
    out = [_make_example(path, row["id"], dict(row), cols) for row in rows]
    db.close()
    return out


def read_examples(path: str | Path, cols: Columns, fmt: str = "auto") -> list[Example]:
    """Every example of a file. A missing label (see MISSING) is an error naming file, line and field, or with
    `cols.missing_labels == "drop"` its row is left out and the count logged as a warning."""
    path = existing_file(path)
    fmt = detect_format(path, fmt)
    if fmt == "parquet":
        examples = _read_parquet(path, cols)
    elif fmt == "sqlite":
        examples = _read_sqlite(path, cols)
    elif fmt == "jsonl":
        examples = _read_jsonl(path, cols)
    else:
        examples = _read_delimited(path, cols, "," if fmt == "csv" else "\t")
    dropped = examples.count(None)
    if dropped:
        examples = [e for e in examples if e is not None]
        log.warning("%s: left out %d of %d rows whose label is missing (data.missing_labels: drop)", path, dropped,
                    dropped + len(examples))
    if not examples:
        raise DataError(path, None, None, "no data rows")
    return examples
