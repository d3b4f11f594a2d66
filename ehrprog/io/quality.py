"""Plausibility checks in the manner of OHDSI's Data Quality Dashboard (DQD), over kept events.

The checks ehrprog runs carry DQD's check names, so a user who runs both can compare:

* ``plausibleAfterBirth`` / ``plausibleBeforeDeath``: events before the birth day or after the day
  of death are dropped at read time (a death before birth too), counted in the ingest report
  with the check's name in the reason;
* ``plausibleValueLow`` / ``plausibleValueHigh``: staging-lab values outside the lab's plausible
  range for its unit are kept out of staging and counted in ``cohort.report``
  (:class:`ehrprog.tasks.rules.LabThreshold`'s ``plausible``);
* ``plausibleGender``: events whose code is specific to one sex, recorded for a person of the
  other, counted here (:func:`plausible_gender`; kept: which record is wrong cannot be told).

``plausibleGender`` reads a code as sex-specific by its ICD-10-CM chapter (pregnancy ``O``,
``Z33``-``Z36``; female genital organs ``C51``-``C58``, ``N70``-``N98``; male genital organs
``C60``-``C63``, ``N40``-``N53``) or, for other vocabularies, by its description (pregnancy,
uterus, ovary, cervix, vagina, vulva / prostate, testis, scrotum, penis). DQD itself checks a
curated concept list; this is a documented approximation of it.
"""

from __future__ import annotations

import polars as pl

from ehrprog.io.events import EventFrame

_FEMALE_ICD = r"^(ICD10CM|ICD10|SOURCE)/(O\d|Z3[3-6]|C5[1-8]|N[7-9]\d)"
_MALE_ICD = r"^(ICD10CM|ICD10|SOURCE)/(C6[0-3]|N4\d|N5[0-3])"
_FEMALE_WORDS = r"(?i)\b(pregnan|uter|ovar|cervi[cx]|vagin|vulv|endometri)"
_MALE_WORDS = r"(?i)\b(prostat|testi[cs]|testicular|scrot|penile|penis)"


def sex_specific_codes(codes: pl.Series, descriptions: pl.DataFrame | None = None) -> pl.DataFrame:
    """``code`` and ``only`` (``"F"`` or ``"M"``) of the codes among ``codes`` specific to one sex.

    ``descriptions``: a code-metadata frame (``code``, ``description``), e.g. ``events.codes``.
    """
    table = pl.DataFrame({"code": codes.cast(pl.String).unique()})
    if descriptions is not None and descriptions.height:
        table = table.join(
            descriptions.select(pl.col("code").cast(pl.String), "description").unique("code"), on="code", how="left"
        )
    else:
        table = table.with_columns(pl.lit(None, pl.String).alias("description"))
    text = pl.col("description").fill_null("")
    only = (
        pl.when(pl.col("code").str.contains(_FEMALE_ICD) | text.str.contains(_FEMALE_WORDS))
        .then(pl.lit("F"))
        .when(pl.col("code").str.contains(_MALE_ICD) | text.str.contains(_MALE_WORDS))
        .then(pl.lit("M"))
    )
    return table.select("code", only.alias("only")).filter(pl.col("only").is_not_null())


def plausible_gender(events: EventFrame) -> pl.DataFrame:
    """DQD ``plausibleGender``: per source, events of a sex-specific code recorded for a person of
    the other sex (``source``, ``events``; empty when there are none)."""
    specific = sex_specific_codes(events.unique_codes(), events.codes)
    if specific.height == 0:
        return pl.DataFrame(schema={"source": pl.String, "events": pl.Int64})
    sex = events.subjects().select("subject_id", "sex").filter(pl.col("sex").is_not_null())
    return (
        events.lazy.select("subject_id", pl.col("code").cast(pl.String), pl.col("source").cast(pl.String))
        .join(specific.lazy(), on="code", how="inner")
        .join(sex.lazy(), on="subject_id", how="inner")
        .filter(pl.col("only") != pl.col("sex"))
        .group_by("source")
        .agg(pl.len().cast(pl.Int64).alias("events"))
        .sort("source")
        .collect()
    )


def plausibility_notes(events: EventFrame) -> list[str]:
    """The report notes of the checks run over kept events (one per source with a finding)."""
    return [
        f"DQD plausibleGender: {row['events']:,} event(s) in {row['source']} of a code specific to the "
        "other sex than the person's (kept)"
        for row in plausible_gender(events).iter_rows(named=True)
    ]


def add_plausibility_notes(events: EventFrame) -> EventFrame:
    """Add :func:`plausibility_notes` to an in-memory frame's report (readers call it; a lazy
    read is not read twice for it: call :func:`plausible_gender` yourself). Returns ``events``."""
    if events.in_memory:
        events.report.notes.extend(plausibility_notes(events))
    return events


__all__ = ["add_plausibility_notes", "plausibility_notes", "plausible_gender", "sex_specific_codes"]
