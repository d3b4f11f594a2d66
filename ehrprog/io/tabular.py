"""Finding and scanning the files of a table, whatever shape a real export gives them.

Real OMOP exports come as CSV or Parquet, with or without a header row, comma or tab separated,
with upper- or lower-case file names, dates as ISO strings or ``YYYYMMDD`` integers and values
padded with spaces. This module hides that: :func:`scan_table` returns a lazy frame with
lower-case column names, and the ``parse_*`` helpers turn a column of any of those shapes into a
typed expression whose nulls can be told apart from the source's own nulls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ehrprog.core.errors import InputError

_SUFFIXES = (".parquet", ".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz")
_DATETIME_FORMATS = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%Y%m%d")
#: Formats of text times with a UTC offset (``+05:00``, ``+0500``, ``Z``), converted to UTC.
_ZONED_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M%#z")


@dataclass(frozen=True)
class TableFile:
    """One located table: its path, format and, for text files, how to read it."""

    path: Path
    fmt: str  # "parquet" or "csv"
    separator: str = ","
    has_header: bool = True


def find_table(folder: Path, name: str) -> Path | None:
    """Return the file holding table ``name`` in ``folder`` (case-insensitive), or ``None``.

    A sub-folder named for the table holding Parquet parts (``measurement/part-0.parquet``) also
    counts. Two files for one table (``person.csv`` beside a stale ``person.parquet``,
    ``measurement.csv`` beside ``measurement.csv.gz``, ``PERSON.csv`` beside ``person.csv``) are
    an :class:`~ehrprog.core.errors.InputError` naming both: which one is current is the user's to say,
    and reading either without a word lost the other's rows.
    """
    found = []
    for entry in folder.iterdir():
        lower = entry.name.lower()
        if entry.is_dir():
            if lower == name and any(entry.glob("*.parquet")):
                found.append(entry)
        elif any(lower == name + suffix for suffix in _SUFFIXES):
            found.append(entry)
    if len(found) > 1:
        names = ", ".join(sorted(entry.name for entry in found))
        raise InputError(
            f"{len(found)} files hold the OMOP table {name!r} ({names}); keep one (move the others out of the "
            "folder): reading either would ignore the other's rows without a word",
            file=str(folder),
        )
    return found[0] if found else None


def sniff(path: Path, known_columns: Sequence[str]) -> TableFile:
    """Work out the format, separator and header presence of a table file.

    A first line is a header when it contains one of ``known_columns`` (the table's DDL column
    names); the separator is whichever of tab, comma, pipe and semicolon the first line holds most.
    """
    if path.is_dir() or path.name.lower().endswith(".parquet"):
        return TableFile(path, "parquet")
    opener = _open_text(path)
    with opener as handle:
        first = handle.readline()
    if not first.strip():
        return TableFile(path, "csv", ",", True)
    separator = max(["\t", ",", "|", ";"], key=first.count)
    fields = {f.strip().strip('"').strip().lower() for f in first.rstrip("\r\n").split(separator)}
    has_header = bool(fields & set(known_columns))
    return TableFile(path, "csv", separator, has_header)


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        import gzip

        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def scan_table(table: TableFile, ddl_versions: dict[str, Sequence[str]], cdm_version: str | None) -> pl.LazyFrame:
    """Scan a table lazily with lower-case column names; text columns are read as strings.

    Args:
        table: the located file (see :func:`sniff`).
        ddl_versions: DDL column order per CDM version (``{"5.4": [...], "5.3": [...]}``), used to
            name the columns of a file without a header row.
        cdm_version: the CDM version to prefer for headerless files, when known.

    Raises:
        InputError: a headerless file whose column count matches no known CDM version.
    """
    known = {c for columns in ddl_versions.values() for c in columns}
    if table.fmt == "parquet":
        source = str(table.path / "*.parquet") if table.path.is_dir() else str(table.path)
        frame = pl.scan_parquet(source)
        schema = readable_schema(frame, table.path, "Parquet")
        _refuse_repeated_columns(list(schema), table.path)
        for column, dtype in schema.items():
            if column.lower() in known and dtype.is_nested():
                raise InputError(
                    f"column holds {dtype} values; an OMOP column holds one value per row",
                    file=str(table.path),
                    column=column,
                )
        return frame.rename({c: c.lower() for c in schema})
    new_columns = None
    if not table.has_header:
        with _open_text(table.path) as handle:
            n_fields = handle.readline().rstrip("\r\n").count(table.separator) + 1
        versions = sorted(ddl_versions, key=lambda v: v != cdm_version)
        matches = [v for v in versions if len(ddl_versions[v]) == n_fields]
        if not matches:
            expected = ", ".join(f"{len(ddl_versions[v])} (CDM {v})" for v in ddl_versions)
            raise InputError(
                f"file has no header row and {n_fields} columns; a headerless OMOP table must have "
                f"its DDL's column count: {expected}",
                file=str(table.path),
            )
        new_columns = list(ddl_versions[matches[0]])
    frame = pl.scan_csv(
        table.path,
        separator=table.separator,
        has_header=table.has_header,
        new_columns=new_columns,
        infer_schema=False,
        quote_char='"',
        truncate_ragged_lines=True,
        encoding="utf8-lossy",
    )
    names = readable_schema(frame, table.path, "delimited text")
    if table.has_header:
        with _open_text(table.path) as handle:
            header = handle.readline().rstrip("\r\n").split(table.separator)
        _refuse_repeated_columns([h.strip().strip('"') for h in header], table.path)
    try:
        _refuse_ragged_lines(table, len(names))
    except pl.exceptions.PolarsError as error:
        raise InputError(f"cannot read the file: {_first_line(error)}", file=str(table.path)) from None
    if table.has_header:
        frame = frame.rename({c: c.strip().strip('"').lower() for c in names})
    return frame


def _refuse_repeated_columns(names: list[str], path: Path) -> None:
    """A column named twice (``person_id`` and ``PERSON_ID``, or the same name twice): which copy
    holds the data cannot be told, so neither is read silently."""
    seen: dict[str, str] = {}
    for name in names:
        key = name.strip().lower()
        if key in seen:
            raise InputError(
                f"column named twice ({seen[key]!r} and {name!r}, names are read case-insensitively): "
                "which copy holds the data cannot be told; keep one",
                file=str(path),
                column=name,
            )
        seen[key] = name


def readable_schema(frame: pl.LazyFrame, path: Path, kind: str) -> dict[str, pl.DataType]:
    """The schema of a scanned file, or an :class:`InputError` naming it when it cannot be read
    (empty, truncated, corrupt, or not ``kind`` at all) instead of the engine's bare error."""
    try:
        return dict(frame.collect_schema())
    except (pl.exceptions.PolarsError, OSError) as error:
        empty = path.is_file() and path.stat().st_size == 0
        what = "the file is empty" if empty else f"not a readable {kind} file (truncated or corrupt?)"
        raise InputError(f"{what}: {_first_line(error)}", file=str(path)) from None


def read_parquet_file(path: Path, kind: str = "Parquet") -> pl.DataFrame:
    """A whole Parquet file, or an :class:`InputError` naming it (see :func:`readable_schema`)."""
    frame = pl.scan_parquet(path)
    readable_schema(frame, path, kind)
    try:
        return frame.collect()
    except (pl.exceptions.PolarsError, OSError) as error:
        raise InputError(
            f"not a readable {kind} file (truncated or corrupt?): {_first_line(error)}", file=str(path)
        ) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _refuse_ragged_lines(table: TableFile, n_columns: int) -> None:
    """Raise :class:`InputError` when a line of a text table holds more fields than its header.

    The CSV reader would cut such a line's extra fields off (``1,0,2020-01-01,CKD, stage 4``
    under a 4-column header would become code ``CKD``): a silent change of the row. A field is a
    stretch between separators outside double quotes; a line whose quotes do not pair up (a quoted
    field running over several lines) is left to the reader.
    """
    lines = pl.scan_csv(
        table.path,
        has_header=False,
        separator="\x1f",
        quote_char=None,
        new_columns=["line"],
        infer_schema=False,
        encoding="utf8-lossy",
    ).with_row_index("index", offset=1)
    line = pl.col("line")
    unquoted = line.str.replace_all(r'"[^"]*"', "")
    fields = unquoted.str.count_matches(table.separator, literal=True) + 1
    quotes = line.str.count_matches('"', literal=True).fill_null(0)
    balanced = quotes % 2 == 0
    others = [sep for sep in ("\t", ",", "|", ";") if sep != table.separator]
    other = pl.any_horizontal([unquoted.str.contains(sep, literal=True) for sep in others])

    def count_and_first(mask: pl.Expr, name: str) -> list[pl.Expr]:
        return [mask.sum().alias(f"{name}_n"), pl.col("index").filter(mask).min().alias(f"{name}_first")]

    # Every check in one pass over the lines: bytes that are not UTF-8 (replaced by U+FFFD, which
    # can merge codes), the quote count (odd: a quote never closes), lines written with another
    # separator (they read as one field), lines with more fields than the columns.
    ragged = (fields > n_columns) & balanced
    found = (
        lines.select(
            *count_and_first(line.str.contains("\ufffd", literal=True), "bad_text"),
            quotes.sum().alias("quotes"),
            *count_and_first((fields == 1) & (n_columns > 1) & other & balanced, "mixed"),
            *count_and_first(ragged, "ragged"),
            fields.filter(ragged).max().alias("widest"),
        )
        .collect()
        .row(0, named=True)
    )
    if found["bad_text_n"]:
        raise InputError(
            f"{found['bad_text_n']} line(s) are not valid UTF-8 (first at line {found['bad_text_first']}): the file "
            "must be UTF-8; re-encode it (e.g. iconv -f latin1 -t utf-8)",
            file=str(table.path),
        )
    if found["quotes"] % 2:  # it opened on the last line where the running count turned odd (rare: a second pass)
        odd = quotes.cum_sum() % 2
        opened = lines.filter((odd == 1) & (odd.shift(1, fill_value=0) == 0)).select(pl.col("index").last()).collect()
        raise InputError(
            f"a double quote opened at line {opened.item()} is never closed (a broken quote)", file=str(table.path)
        )
    if found["mixed_n"]:
        raise InputError(
            f"{found['mixed_n']} line(s) use another separator than the header's {table.separator!r} (first at line "
            f"{found['mixed_first']}): a file must use one separator throughout",
            file=str(table.path),
        )
    if found["ragged_n"]:
        raise InputError(
            f"{found['ragged_n']} line(s) hold more fields than the {n_columns} columns of the table "
            f"(first at line {found['ragged_first']}, up to {found['widest']} fields): a value containing the "
            f"separator {table.separator!r} must be quoted; the extra fields would otherwise be cut off",
            file=str(table.path),
        )


def present(column: str, dtype: pl.DataType) -> pl.Expr:
    """Whether the source holds a value (non-null, and for text not blank), without parsing it."""
    if dtype == pl.String:
        return pl.col(column).str.strip_chars().str.len_bytes() > 0
    return pl.col(column).is_not_null()


def clean_string(column: str, dtype: pl.DataType) -> pl.Expr:
    """A column as a trimmed string, with empty strings as null."""
    return clean_string_expr(pl.col(column), dtype)


def clean_string_expr(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """An expression of a column of type ``dtype`` as a trimmed string, with empty strings as null."""
    expr = expr.cast(pl.String).str.strip_chars()
    return pl.when(expr.str.len_bytes() > 0).then(expr).otherwise(None)


#: The largest integer a float64 holds exactly (2^53): float ids beyond it may be another id.
_EXACT_FLOAT = 2**53
_INTEGRAL_TEXT = r"^[+-]?\d+(\.0*)?$"


def parse_int(column: str, dtype: pl.DataType) -> pl.Expr:
    """A column as Int64, exactly: anything that is not an integer becomes null (never truncated).

    Text is an integer when it reads as one, optionally with a zero fraction (``"12"``, ``"12.0"``,
    ``"12.000"``), parsed from the digits (so ``"9007199254740993.0"`` stays itself); ``"2.7"``,
    ``"1e3"`` or ``"abc"`` are null. A float column's value is an integer when it has no fraction
    and is below 2^53 in size (beyond that a float cannot tell neighbouring ids apart). Readers
    count the rows a null id drops.
    """
    if dtype.is_integer():
        return pl.col(column).cast(pl.Int64)
    if dtype.is_float():
        value = pl.col(column)
        exact = value.is_finite() & (value == value.floor()) & (value.abs() < _EXACT_FLOAT)
        return pl.when(exact).then(value.cast(pl.Int64, strict=False)).otherwise(None)
    text = clean_string(column, dtype)
    digits = text.str.replace(r"\.0*$", "")
    return pl.when(text.str.contains(_INTEGRAL_TEXT)).then(digits.cast(pl.Int64, strict=False)).otherwise(None)


#: The largest magnitude a float32 holds (values are stored as float32): beyond it is infinity.
_FLOAT32_MAX = 3.4028234663852886e38
_DECIMAL_COMMA = r"^[+-]?\d+,\d+$"
_DECIMAL_POINT = r"^[+-]?\d*\.\d+(?:[eE][+-]?\d+)?$"
_THOUSANDS = r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$"


def decimal_mark(frame: pl.LazyFrame, column: str, dtype: pl.DataType) -> tuple[str, list[str]]:
    """The decimal mark of a text column of numbers, decided once for the whole column: ``","``
    where it writes ``"2,5"`` and never ``"2.5"``, else ``"."``; and notes counting what the
    decision changes (values read with a decimal comma; ``"1,234"`` read as 1234 beside dot
    decimals; other commas nulled). A numeric column needs no decision (``"."``, no notes)."""
    if dtype.is_numeric() or dtype == pl.Null:
        return ".", []
    text = clean_string(column, dtype)
    counts = frame.select(
        text.str.contains(_DECIMAL_POINT).sum().alias("point"),
        text.str.contains(_DECIMAL_COMMA).sum().alias("comma"),
        text.str.contains(_THOUSANDS).sum().alias("thousands"),
        (text.str.contains(",", literal=True) & ~text.str.contains(_THOUSANDS)).sum().alias("other"),
    ).collect()
    point, comma, thousands, other = (int(counts[name][0] or 0) for name in counts.columns)
    if comma and not point:
        return ",", [f"{column}: {comma:,} values read with a decimal comma (the column writes no decimal point)"]
    notes = []
    if thousands:
        notes.append(f"{column}: {thousands:,} values read with ',' as a thousands separator ('1,234' = 1234)")
    if other:
        notes.append(f"{column}: {other:,} values hold a comma in a column that writes decimals with a dot (nulled)")
    return ".", notes


def parse_float(column: str, dtype: pl.DataType, decimal: str = ",?") -> pl.Expr:
    """A column as a finite Float64, or null.

    Text reads as a number in the usual forms. ``decimal`` is the column's decimal mark as
    :func:`decimal_mark` decides it for the whole column: ``","`` reads ``"2,5"`` as 2.5; ``"."``
    reads ``"1,234"`` and ``"1,234.5"`` with thousands separators and nulls any other comma;
    ``",?"`` (where no column-wide decision was made) reads a decimal comma where that is the only
    reading (digits, one comma, digits; never ``"1,000.5"``). NaN, infinities and magnitudes a
    float32 cannot hold (``"1e400"``, ``"1e39"``) become null: readers count them
    (:func:`value_issue`).
    """
    if dtype.is_numeric():
        value = pl.col(column).cast(pl.Float64)
    else:
        text = clean_string(column, dtype)
        if decimal == ".":
            grouped = text.str.contains(_THOUSANDS)
            text = pl.when(grouped).then(text.str.replace_all(",", "", literal=True)).otherwise(text)
            text = pl.when(text.str.contains(",", literal=True)).then(None).otherwise(text)
        else:
            decimal_comma = text.str.contains(_DECIMAL_COMMA)
            text = pl.when(decimal_comma).then(text.str.replace(",", ".", literal=True)).otherwise(text)
        value = text.cast(pl.Float64, strict=False)
    return pl.when(value.is_finite() & (value.abs() <= _FLOAT32_MAX)).then(value).otherwise(None)


def number_issues(column: str, dtype: pl.DataType, parsed: pl.Expr, mark: str) -> list[tuple[pl.Expr, str]]:
    """The value issues of a number column parsed with decimal ``mark``: a comma the column's
    mark does not explain (``"2,5"`` in a column that writes ``"2.5"``), and anything else that is
    not a finite number; one reason a value (see :func:`value_issue`)."""
    nulled = present(column, dtype).fill_null(False) & parsed.is_null()
    if mark != "." or dtype.is_numeric() or dtype == pl.Null:
        return [(nulled, f"{column}: not a finite number (nulled)")]
    comma = clean_string(column, dtype).str.contains(",", literal=True).fill_null(False)
    return [
        (nulled & comma, f"{column}: a comma in a column that writes decimals with a dot (nulled)"),
        (nulled & ~comma, f"{column}: not a finite number (nulled)"),
    ]


def in_schema(schema: dict[str, pl.DataType], column: str | None) -> tuple[str | None, pl.DataType | None]:
    """``(column, dtype)`` when the table has the column, else ``(None, None)``."""
    return (column, schema[column]) if column is not None and column in schema else (None, None)


def value_issue(
    column: str | None, dtype: pl.DataType | None, parsed: pl.Expr, rule: str
) -> tuple[pl.Expr, str] | None:
    """Where a value of ``column`` was nulled, with the reason: the source held a value (not
    blank) that ``parsed`` (its parsed expression) could not keep. ``rule`` says what it is not
    (``"not a finite number"``); the reason reads ``"<column>: <rule> (nulled)"``. ``None`` when
    the table lacks the column (see :func:`ehrprog.io.accounting.value_issues`)."""
    if column is None or dtype is None:
        return None
    return present(column, dtype).fill_null(False) & parsed.is_null(), f"{column}: {rule} (nulled)"


def parse_datetime(column: str, dtype: pl.DataType) -> pl.Expr:
    """A column as ``Datetime("us")`` from a date, a datetime, ISO text or ``YYYYMMDD`` (int or text).

    Times with a UTC offset (``2012-09-25T23:30:00+05:00``, ``...Z``) and time-zone-aware
    datetimes are converted to UTC, then kept without a zone (every time in ehrprog is naive UTC
    or local as recorded; an offset is never dropped as if the wall-clock time were UTC). Anything
    else (an integer that is not ``YYYYMMDD``, such as epoch seconds) does not parse: null.
    """
    if isinstance(dtype, pl.Datetime):
        value = pl.col(column)
        if dtype.time_zone is not None:
            value = value.dt.convert_time_zone("UTC")
        return value.dt.replace_time_zone(None).cast(pl.Datetime("us"))
    if isinstance(dtype, pl.Date):
        return pl.col(column).cast(pl.Datetime("us"))
    text = clean_string(column, dtype)
    zoned = [
        text.str.strptime(pl.Datetime("us", "UTC"), fmt, strict=False).dt.replace_time_zone(None)
        for fmt in _ZONED_FORMATS
    ]
    plain = [text.str.strptime(pl.Datetime("us"), fmt, strict=False) for fmt in _DATETIME_FORMATS]
    # Text with an offset must not fall through to a plain format that reads only its date.
    has_offset = text.str.contains(r"(Z|[+-]\d\d:?\d\d)$")
    return pl.when(has_offset).then(pl.coalesce(zoned)).otherwise(pl.coalesce(plain))
