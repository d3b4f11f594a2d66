"""The ingest report: rows read, kept and dropped, by table (or shard) and by reason; and values
inside kept rows that were nulled (unparseable, not finite), by table, column and reason."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from ehrprog.core.errors import InputError

#: Column holding why a row was dropped (null = kept) while a table is being checked.
DROP = "_drop"
#: Its type: a Categorical (a few distinct reasons over many rows; building a String column
#: of reasons row by row cost ~25x more in polars' when/then chains).
DROP_DTYPE = pl.Categorical()
#: "Kept": the null reason, typed.
NO_REASON = pl.lit(None, DROP_DTYPE)


#: Column holding why values of a row were nulled (null = none), e.g. "value_as_number: not a number".
VALUE = "_value"
#: The columns of a checked frame beyond the event schema.
CHECK_COLUMNS = (DROP, VALUE)
NO_VALUE_ISSUE = pl.lit(None, DROP_DTYPE)


def kept(checked: pl.LazyFrame | pl.DataFrame):
    """The kept rows of a checked frame, without the check columns."""
    return checked.filter(pl.col(DROP).is_null()).drop(CHECK_COLUMNS, strict=False)


def value_issues(*issues: tuple[pl.Expr, str] | None) -> pl.Expr:
    """One row's value issues: for each ``(mask, reason)`` (``None``: a column the table lacks)
    the reason where the mask holds, joined by "; " when several do; null when none does. Built
    from literal reasons (a when/then chain of categoricals, no string work per row)."""
    from itertools import combinations

    present = [issue for issue in issues if issue is not None]
    expr = pl.when(pl.lit(False)).then(NO_VALUE_ISSUE)
    for size in range(len(present), 0, -1):  # the most specific combination first
        for combo in combinations(present, size):
            mask = pl.all_horizontal([m.fill_null(False) for m, _ in combo])
            expr = expr.when(mask).then(reason("; ".join(r for _, r in combo)))
    return expr.otherwise(NO_VALUE_ISSUE)


_VALUES_SCHEMA = {"source": pl.String, "reason": pl.String, "values": pl.Int64}


def reason(text: str) -> pl.Expr:
    """A drop reason, as a literal of the ``_drop`` column's type."""
    return pl.lit(text, DROP_DTYPE)


@dataclass
class IngestReport:
    """Counts of what was read, kept and dropped.

    Attributes:
        counts: one row per (``source``, ``reason``) with ``rows``; ``reason`` is null for kept rows.
        notes: facts about the input worth knowing that dropped nothing (absent tables, renamed
            columns, fallbacks taken), each with a count where one applies.
        values: one row per (``source``, ``reason``) with ``values``: values of kept rows that were
            nulled, the reason naming the column and the rule ("value_as_number: not a number").
    """

    counts: pl.DataFrame
    notes: list[str] = field(default_factory=list)
    values: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=_VALUES_SCHEMA))

    @classmethod
    def from_checked(cls, checked: pl.LazyFrame | pl.DataFrame, notes: list[str]) -> IngestReport:
        """Count a checked event frame (event columns plus ``_drop`` and, where a reader checks
        values, ``_value``) by source and reason."""
        lazy = checked.lazy()
        issue = pl.col(VALUE) if VALUE in lazy.collect_schema().names() else NO_VALUE_ISSUE
        grouped = (
            lazy.group_by("source", DROP, issue.alias(VALUE))
            .agg(pl.len().alias("rows"))
            # A lazy frame may not fit in memory: stream it; an in-memory piece is counted in memory.
            .collect(engine="in-memory" if isinstance(checked, pl.DataFrame) else "streaming")
            .with_columns(pl.col("source").cast(pl.String), pl.col("rows").cast(pl.Int64))
        )
        counts = (
            grouped.group_by("source", pl.col(DROP).cast(pl.String).alias("reason"))
            .agg(pl.col("rows").sum())
            .sort("source", "reason", nulls_last=False)
        )
        values = (
            grouped.filter(pl.col(DROP).is_null() & pl.col(VALUE).is_not_null())
            .select("source", pl.col(VALUE).cast(pl.String).str.split("; ").alias("reason"), "rows")
            .explode("reason")
            .group_by("source", "reason")
            .agg(pl.col("rows").sum().alias("values"))
            .sort("source", "reason")
        )
        return cls(counts, list(notes), values)

    @classmethod
    def merge(cls, reports: list[IngestReport], notes: list[str]) -> IngestReport:
        """One report of several (pieces or shards of one read)."""
        counts = [r.counts for r in reports] or [
            pl.DataFrame(schema={"source": pl.String, "reason": pl.String, "rows": pl.Int64})
        ]
        values = [r.values for r in reports] or [pl.DataFrame(schema=_VALUES_SCHEMA)]
        return cls(
            pl.concat(counts)
            .group_by("source", "reason")
            .agg(pl.col("rows").sum())
            .sort("source", "reason", nulls_last=False),
            list(notes),
            pl.concat(values).group_by("source", "reason").agg(pl.col("values").sum()).sort("source", "reason"),
        )

    @property
    def values_nulled(self) -> dict[str, int]:
        """Values nulled per reason, over all sources."""
        rows = self.values.group_by("reason").agg(pl.col("values").sum())
        return dict(zip(rows["reason"].to_list(), rows["values"].to_list(), strict=True))

    @property
    def rows_read(self) -> int:
        return int(self.counts["rows"].sum())

    @property
    def rows_kept(self) -> int:
        return int(self.counts.filter(pl.col("reason").is_null())["rows"].sum())

    @property
    def rows_dropped(self) -> int:
        return self.rows_read - self.rows_kept

    @property
    def dropped(self) -> dict[str, int]:
        """Rows dropped per reason, over all sources."""
        rows = self.counts.filter(pl.col("reason").is_not_null()).group_by("reason").agg(pl.col("rows").sum())
        return dict(zip(rows["reason"].to_list(), rows["rows"].to_list(), strict=True))

    def by_source(self) -> pl.DataFrame:
        """One row per source: ``read``, ``kept``, ``dropped``."""
        return (
            self.counts.group_by("source")
            .agg(
                pl.col("rows").sum().alias("read"),
                pl.col("rows").filter(pl.col("reason").is_null()).sum().alias("kept"),
            )
            .with_columns((pl.col("read") - pl.col("kept")).alias("dropped"))
            .sort("source")
        )

    def raise_on_drops(self) -> None:
        """Raise :class:`InputError` for the first reason any row was dropped (``strict`` mode)."""
        bad = self.counts.filter(pl.col("reason").is_not_null())
        if bad.height:
            row = bad.row(0, named=True)
            raise InputError(f"{row['rows']} row(s) break the rule: {row['reason']}", file=row["source"])

    def __str__(self) -> str:
        lines = [f"rows read {self.rows_read:,}, kept {self.rows_kept:,}, dropped {self.rows_dropped:,}"]
        for row in self.by_source().iter_rows(named=True):
            lines.append(f"  {row['source']}: read {row['read']:,}, kept {row['kept']:,}, dropped {row['dropped']:,}")
        for row in self.counts.filter(pl.col("reason").is_not_null()).iter_rows(named=True):
            lines.append(f"  dropped {row['rows']:,} from {row['source']}: {row['reason']}")
        for row in self.values.iter_rows(named=True):
            lines.append(f"  values nulled {row['values']:,} in {row['source']}: {row['reason']}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)
