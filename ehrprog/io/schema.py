"""Table schemas shared by every layer: events (MEDS v0.4 + extensions), visits and labels.

These are the single source of truth for column names and dtypes. Configuration objects are
pydantic models elsewhere; tables are described here as polars schemas.
"""

from __future__ import annotations

import meds
import polars as pl

#: MEDS code for a subject's birth, and for death (the ``meds`` package's constants).
BIRTH_CODE: str = meds.birth_code
DEATH_CODE: str = meds.death_code

#: The event table: MEDS v0.4 data schema followed by ehrprog's optional extension columns.
#: ``code``, ``visit_type``, ``unit`` and ``source`` are few distinct strings repeated over many
#: rows: in memory they are polars Categoricals (4 bytes a row instead of a 16-byte string view
#: plus its buffer; compare with ``pl.col("code") == "LOINC/2160-0"`` or ``.is_in([...])`` as with
#: strings, cast to ``pl.String`` for string functions or joins with string columns). Their hash
#: is computed from the text, so orders built on it do not depend on how categories were
#: numbered. On disk (``write_meds``) they are strings, as MEDS says.
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "subject_id": pl.Int64(),
    "time": pl.Datetime("us"),
    "code": pl.Categorical(),
    "numeric_value": pl.Float32(),
    "text_value": pl.String(),
    "visit_id": pl.Int64(),
    "visit_type": pl.Categorical(),
    "unit": pl.Categorical(),
    "source": pl.Categorical(),
}

#: The event columns held as Categorical in memory and written as strings.
CATEGORICAL_COLUMNS = tuple(name for name, dtype in EVENT_SCHEMA.items() if dtype == pl.Categorical)

#: A full sort order over the event columns (for comparing event tables regardless of row order).
EVENT_SORT = ["subject_id", "time", "code", "numeric_value", "text_value", "visit_id", "unit", "source"]

#: One visit, as a struct inside ``VisitFrame.frame["visits"]``.
VISIT_STRUCT = pl.Struct(
    {
        "visit_index": pl.Int32(),
        "visit_id": pl.Int64(),
        "start": pl.Datetime("us"),
        "end": pl.Datetime("us"),
        "visit_type": pl.Categorical(),
        "codes": pl.List(pl.Categorical()),
        "numeric_values": pl.List(pl.Float32()),
        "days_since_first": pl.Float32(),
        "days_since_prev": pl.Float32(),
        "age_days": pl.Float32(),
    }
)

#: The ``meds`` package's label schema (polars types; ``float_value`` widened to Float64 as the
#: time to event in days needs) plus the survival pair used by progression tasks.
LABEL_SCHEMA: dict[str, pl.DataType] = {
    **{
        name: pl.Float64() if dtype == pl.Float32 else dtype
        for name, dtype in pl.DataFrame(meds.LabelSchema.schema().empty_table()).schema.items()
    },
    "event": pl.Boolean(),
    "time_to_event_days": pl.Float64(),
}


def conform_events(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Add missing optional event columns as nulls, cast to ``EVENT_SCHEMA`` and order columns.

    Extra columns are dropped; the required MEDS columns must already exist.
    """
    present = set(frame.collect_schema().names())
    exprs = [
        (pl.col(name) if name in present else pl.lit(None)).cast(dtype).alias(name)
        for name, dtype in EVENT_SCHEMA.items()
    ]
    return frame.select(exprs)


def row_hash() -> pl.Expr:
    """A 64-bit hash of an event row's content: every ``EVENT_SCHEMA`` column but ``source`` (where
    a row came from is no part of what it says), so the same event read from two tables or shards
    hashes the same and the canonical order puts the copies next to each other.

    Each column is hashed with its own seed and the hashes are combined with XOR: about six times
    faster than hashing a struct of the columns, and as good for what it is used for (a content-
    determined tie order, and putting identical rows next to each other).
    """
    hashes = [pl.col(name).hash(seed=index) for index, name in enumerate(EVENT_SCHEMA) if name != "source"]
    combined = hashes[0]
    for expr in hashes[1:]:
        combined = combined ^ expr
    return combined
