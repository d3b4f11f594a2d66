"""The ingest report: rows read, kept and dropped, by table (or shard) and by reason."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from ehrprog.errors import InputError

#: Column holding why a row was dropped (null = kept) while a table is being checked.
DROP = "_drop"
#: Its type: a Categorical (a few distinct reasons over many rows; building a String column
#: of reasons row by row cost ~25x more in polars' when/then chains).
DROP_DTYPE = pl.Categorical()
#: "Kept": the null reason, typed.
NO_REASON = pl.lit(None, DROP_DTYPE)


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
    """

    counts: pl.DataFrame
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_checked(cls, checked: pl.LazyFrame | pl.DataFrame, notes: list[str]) -> IngestReport:
        """Count a checked event frame (event columns plus ``_drop``) by source and reason."""
        counts = (
            checked.lazy()
            .group_by("source", DROP)
            .agg(pl.len().alias("rows"))
            .select(pl.col("source").cast(pl.String), pl.col(DROP).cast(pl.String).alias("reason"), "rows")
            .sort("source", "reason", nulls_last=False)
            # A lazy frame may not fit in memory: stream it; an in-memory piece is counted in memory.
            .collect(engine="in-memory" if isinstance(checked, pl.DataFrame) else "streaming")
            .with_columns(pl.col("rows").cast(pl.Int64))
        )
        return cls(counts, list(notes))

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
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)
