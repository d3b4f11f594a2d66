"""Progression tasks: stage records -> prediction points -> a labelled :class:`Cohort`."""

from __future__ import annotations

import warnings
from typing import Literal

import polars as pl

from ehrprog.cohorts.cohort import Cohort, CohortX
from ehrprog.core.errors import EmptyCohortError
from ehrprog.io.events import EventFrame
from ehrprog.io.ordering import SubjectTimeKeys, attach_to_subjects
from ehrprog.io.schema import LABEL_SCHEMA
from ehrprog.io.units import converted
from ehrprog.tasks.points import one_row_per_time, point_targets, prediction_points
from ehrprog.tasks.rules import StagingRule, check_one_list_per_code
from ehrprog.visits.grouping import Strategy, VisitFrame, group_visits

STAGE_EVENT_SCHEMA = {
    "subject_id": pl.Int64,
    "time": pl.Datetime("us"),
    "stage": pl.Int8,
    "source": pl.String,
    "code": pl.String,
    "value": pl.Float64,
    "computed": pl.Boolean,
}


class ProgressionTask:
    """Stage a disease from a :class:`StagingRule` and build progression cohorts.

    Args:
        rule: the disease's staging rule.
        visits: visit grouping strategy (see :func:`~ehrprog.visits.grouping.group_visits`).
        exclude_final_stage: leave out prediction points already at the last stage (they cannot
            progress); counted in ``Cohort.report``.
        require_disease_evidence: keep only subjects with a diagnosis code of the disease or a lab
            stage of at least ``evidence_min_lab_stage`` (a normal lab alone is not disease).
        evidence_min_lab_stage: see above.
        eligibility: when that evidence counts. ``"prospective"`` (default): a prediction point is
            in the cohort only once the records up to its prediction time hold the evidence, so
            the cohort is one a clinic can apply at the time it predicts. ``"retrospective"``:
            every point of a subject who has the evidence at any time, later records included;
            an outcome-conditioned selection (a subject who progresses later is more likely to
            qualify), for comparison with studies defined that way. Points left out are counted
            in ``Cohort.report``.
        progression: ``"above_current"`` (an event is a later record of a stage above the point's
            current stage) or ``"above_highest"`` (above the highest stage recorded so far: a
            chronic disease does not regress, so every record's stage becomes the running maximum
            of the subject's records, and a record that falls back and rises again is no event).
        death: how a death ends a follow-up. ``"censor"`` (default): the time to progression is
            censored at death, as at the last record; risks are then of progression in a world
            where no one dies (cause-specific), right where deaths are few or the question is the
            disease's own course. ``"competing"``: ``y`` gains a ``death`` column (the subject died
            with no progression recorded first), and evaluation scores the cumulative incidence
            of progression with death competing (Aalen-Johansen, Wolbers' C,
            :mod:`ehrprog.metrics.competing`): right for elderly cohorts, where many die before
            they could progress and a censored death would overstate the risk a clinic sees.
        confirm_days: with a number of days, a lab stage counts only once sustained: a reading's
            stage is the lowest of its own, of every reading of that lab in the ``confirm_days``
            before it, and of the last reading at least ``confirm_days`` before it (KDIGO stages
            chronic kidney disease on eGFR sustained for at least 90 days); readings with no
            earlier reading that far back stage nothing (counted in ``Cohort.report``). It is
            decided at the confirming reading, so it reads nothing later. ``None``: every reading
            stages on its own. Diagnoses are not affected.
    """

    def __init__(
        self,
        rule: StagingRule,
        *,
        visits: Strategy = "same_day",
        exclude_final_stage: bool = True,
        require_disease_evidence: bool = True,
        evidence_min_lab_stage: int = 3,
        death: Literal["censor", "competing"] = "censor",
        progression: Literal["above_current", "above_highest"] = "above_current",
        confirm_days: float | None = None,
        eligibility: Literal["prospective", "retrospective"] = "prospective",
    ) -> None:
        if eligibility not in ("prospective", "retrospective"):
            raise ValueError(f"eligibility must be 'prospective' or 'retrospective', got {eligibility!r}")
        if death not in ("censor", "competing"):
            raise ValueError(f"death must be 'censor' or 'competing', got {death!r}")
        if progression not in ("above_current", "above_highest"):
            raise ValueError(f"progression must be 'above_current' or 'above_highest', got {progression!r}")
        if confirm_days is not None and not confirm_days > 0:
            raise ValueError(f"confirm_days must be a positive number of days or None, got {confirm_days!r}")
        if type(self) is ProgressionTask and any(lab.name == "egfr" for lab in rule.labs):
            warnings.warn(
                f"rule {rule.name!r} stages eGFR: ProgressionTask reads recorded eGFR only, stages single readings "
                f"(confirm_days={confirm_days}) and counts progression {progression.replace('_', ' ')} stage; "
                "ehrprog.tasks.CKDProgression(rule=...) keeps your rule and also computes eGFR from creatinine, "
                "confirms stages over 90 days and counts progression above the highest stage so far",
                UserWarning,
                stacklevel=2,
            )
        self.rule = rule
        self.visits = visits
        self.exclude_final_stage = exclude_final_stage
        self.require_disease_evidence = require_disease_evidence
        self.evidence_min_lab_stage = evidence_min_lab_stage
        self.death = death
        self.progression = progression
        self.confirm_days = confirm_days
        self.eligibility = eligibility

    # ---------------------------------------------------------------- staging
    def derived_inputs(self, events: EventFrame) -> pl.DataFrame:
        """The codes of records that lab values are computed from: ``code`` (Categorical, as in
        events) and ``input`` (a name the task's :meth:`derived_lab_values` reads). None by default;
        CKD names creatinine here."""
        return pl.DataFrame(schema={"code": pl.Categorical, "input": pl.String})

    def derived_lab_values(
        self, rows: pl.DataFrame, events: EventFrame, counts: dict[str, int]
    ) -> dict[str, pl.DataFrame]:
        """Lab values computed from other records (none by default; CKD computes eGFR).

        Args:
            rows: the timed events whose code is a staging code or a derived input, in event order
                (subject, time, row hash): ``_row`` (position), ``subject_id``, ``time``, ``code``,
                ``numeric_value``, ``unit``, ``lab`` (Categorical: the lab a code records, else null)
                and ``input`` (Categorical: the :meth:`derived_inputs` name of a code, else null).
            events: the events (for subject attributes such as birth and sex).
            counts: where to count records left out, by reason.

        Returns:
            Per lab name, ``_row`` (of the record it was computed from), ``subject_id``, ``time``,
            ``code`` and ``value`` (in the lab's unit).
        """
        return {}

    def _stage(self, events: EventFrame, include_unstaged: bool) -> tuple[pl.DataFrame, dict[str, int]]:
        """Every stage record, in event order (by subject and time), and counts of records left out.

        The events are read once: one filter keeps the rows of every staging code and derived
        input, numbered in event order; each kind of record is taken from those rows and the
        records are put back in that order by their row number (one integer sort).
        """
        counts: dict[str, int] = {}
        codes = events.unique_codes()
        dx = self.rule.match_diagnoses(codes)
        labs = self.rule.match_labs(codes, events.codes)
        inputs = self.derived_inputs(events)
        both = pl.concat(
            [
                labs.select("code", pl.col("lab").cast(pl.String).alias("list")),
                inputs.select("code", pl.col("input").cast(pl.String).alias("list")),
            ]
        )
        check_one_list_per_code(both.with_columns(pl.col("code").cast(pl.String)), "list")
        wanted = pl.concat([dx["code"], labs["code"], inputs["code"]])
        rows = (
            events.lazy.filter(pl.col("time").is_not_null() & pl.col("code").is_in(wanted.implode()))
            .select("subject_id", "time", "code", "numeric_value", "unit")
            .with_row_index("_row")
            .with_columns(
                pl.col("code").is_in(dx["code"].implode()).alias("_dx"),
                map_categories("code", dx["code"], dx["stage"], pl.Int8).alias("_dx_stage"),
                map_categories("code", labs["code"], labs["lab"], pl.Categorical).alias("lab"),
                map_categories("code", inputs["code"], inputs["input"], pl.Categorical).alias("input"),
            )
            .collect(engine="in-memory")
        )
        parts = [
            rows.filter("_dx").select(
                "_row",
                "subject_id",
                "time",
                pl.col("_dx_stage").alias("stage"),
                pl.lit("diagnosis").alias("source"),
                "code",
                pl.lit(None, pl.Float64).alias("value"),
                pl.lit(False).alias("computed"),
            )
        ]
        derived = self.derived_lab_values(rows.drop("_dx", "_dx_stage"), events, counts)
        for lab in self.rule.labs:
            recorded = _in_lab_unit(rows.filter(pl.col("lab") == lab.name), lab, counts).select(
                "_row", "subject_id", "time", "code", "value"
            )
            values = [recorded.with_columns(pl.lit(False).alias("computed"))]
            if lab.name in derived:
                values.append(derived[lab.name].with_columns(pl.lit(True).alias("computed")))
            staged = pl.concat(values, how="vertical_relaxed").with_columns(
                lab.stage_expr(pl.col("value")).alias("stage"), pl.lit(lab.name).alias("source")
            )
            unstaged = staged.filter(pl.col("stage").is_null()).height
            if unstaged:
                counts[
                    f"{lab.name}: value missing or outside the plausible range {lab.plausible} "
                    "(DQD plausibleValueLow/High; not staged)"
                ] = unstaged
            parts.append(staged.filter(pl.col("stage").is_not_null()).select("_row", *STAGE_EVENT_SCHEMA))
        frame = pl.concat(parts, how="vertical_relaxed")
        if not include_unstaged:
            frame = frame.filter(pl.col("stage").is_not_null())
        # Records of one row (a code both a diagnosis and a lab) keep the order of the parts.
        frame = frame.sort("_row", maintain_order=True).drop("_row")
        return frame.select([pl.col(c).cast(t) for c, t in STAGE_EVENT_SCHEMA.items()]), counts

    def stage_events(self, events: EventFrame, *, include_unstaged: bool = False) -> pl.DataFrame:
        """Every stage record in ``events``.

        Returns:
            ``subject_id``, ``time``, ``stage`` (Int8, 1..n_stages), ``source`` (``"diagnosis"`` or
            the lab name), ``code`` (the record it came from), ``value`` (the lab value, null for
            diagnoses) and ``computed`` (the lab value was derived, e.g. eGFR from creatinine).
            With ``include_unstaged=True`` diagnoses of the disease without a stage are included
            with a null stage. Ordered by subject and time; records at the same time in the
            events' order (a content hash), so the order never depends on the input's.
        """
        return self._stage(events, include_unstaged)[0]

    # ---------------------------------------------------------------- cohort
    def build(self, events: EventFrame, visits: VisitFrame | None = None) -> Cohort:
        """Prediction points at every staged visit, with next-stage and time-to-progression targets.

        A point's prediction time is the end of a visit holding a stage record; its current stage is
        the highest stage recorded in that visit. Targets: ``stage`` = the next stage recorded after
        the prediction time (highest if several at that time); ``event``/``time_to_event_days`` = the
        first later record of a higher stage, else censoring at the subject's last record (death
        censors). Inputs are the visits that ended by the prediction time.

        Args:
            events: the events.
            visits: the events already grouped with this task's strategy (saves regrouping).

        Raises:
            EmptyCohortError: no prediction point could be made.
        """
        all_records, counts = self._stage(events, include_unstaged=True)
        # Inputs keep every plausible lab reading; the label options below change only the labels.
        lab_readings = all_records.filter(pl.col("stage").is_not_null() & (pl.col("source") != "diagnosis"))
        recorded = all_records.filter(pl.col("stage").is_not_null())  # as recorded, for the label warnings
        if self.confirm_days is not None:
            all_records = self._confirm(all_records, counts)
        staged = pl.col("stage").is_not_null()
        first_evidence = None
        if not self.require_disease_evidence:
            records = all_records.filter(staged)
        else:
            has_evidence = (pl.col("source") == "diagnosis") | (pl.col("stage") >= self.evidence_min_lab_stage)
            first_evidence = (
                all_records.filter(has_evidence)
                .group_by("subject_id")
                .agg(pl.col("time").min().alias("_evidence"))
                .sort("subject_id")
            )
            evidence = first_evidence["subject_id"]
            before = all_records.select(pl.col("subject_id").filter(staged).n_unique()).item()
            records = all_records.filter(staged & pl.col("subject_id").is_in(evidence.implode()))  # keeps the order
            left_out = before - records["subject_id"].n_unique()
            if left_out:
                counts[
                    f"subjects with lab stages but no diagnosis and no lab stage >= {self.evidence_min_lab_stage}"
                ] = left_out
        # What each record states (a diagnosis its code's stage, a lab reading its confirmed stage),
        # kept beside the stage the task counts (with "above_highest", the running maximum).
        records = records.with_columns(pl.col("stage").alias("recorded_stage"))
        if self.progression == "above_highest":
            records = records.with_columns(pl.col("stage").cum_max().over("subject_id"))
        if records.height == 0:
            raise EmptyCohortError(
                f"no {self.rule.name} stage records found: no cohort can be built",
                file=str(events.metadata.get("dataset_name", "")) or None,
            )
        if visits is not None and visits.strategy != self.visits:
            raise ValueError(f"visits were grouped with {visits.strategy!r}, this task uses {self.visits!r}")
        visit_frame = visits if visits is not None else group_visits(events, self.visits)
        staged_subjects = records["subject_id"].unique()
        # Project before filtering: filtering the visit frame itself would copy every code list.
        spans = visit_frame.frame.select(
            "subject_id",
            "death",
            pl.col("visits").list.eval(pl.element().struct.field("start")).alias("s"),
            pl.col("visits").list.eval(pl.element().struct.field("end")).alias("e"),
            pl.col("visits").list.eval(pl.element().struct.field("visit_index")).alias("i"),
        ).filter(pl.col("subject_id").is_in(staged_subjects.implode()))
        flat = (
            spans.select("subject_id", "s", "e", "i")
            .explode("s", "e", "i")
            .drop_nulls("s")
            .rename({"s": "start", "e": "end", "i": "visit_index"})
        )
        # One (subject, time) key space for every as-of join below: prediction times are visit
        # ends or record times, so these three columns cover every time the joins compare.
        keys = SubjectTimeKeys.fit([(records, "time"), (flat, "start"), (flat, "end")])
        points = prediction_points(records, flat, keys)
        follow_up = (
            flat.group_by("subject_id")
            .agg(pl.col("end").max().alias("_last"))
            .join(spans.select("subject_id", "death"), on="subject_id", how="left")
            .select(
                "subject_id",
                pl.max_horizontal("_last", "death").alias("_censor"),
                pl.col("death").is_not_null().alias("_died"),
            )
        )
        points = point_targets(points, records, follow_up, self.rule.n_stages, keys)
        if first_evidence is not None and self.eligibility == "prospective":
            # Evidence recorded by the prediction time: what the clinic knows when it predicts.
            eligible = attach_to_subjects(points.select("subject_id", "prediction_time"), first_evidence).select(
                (pl.col("_evidence") <= pl.col("prediction_time")).fill_null(False)
            )
            before = points.height - int(eligible.to_series().sum())
            if before:
                counts[
                    "points before the subject's first disease evidence (prospective eligibility: a diagnosis or "
                    f"a lab stage >= {self.evidence_min_lab_stage} recorded by the prediction time)"
                ] = before
            points = points.filter(eligible.to_series())
        if self.exclude_final_stage:
            final = points.filter(pl.col("current_stage") >= self.rule.n_stages)
            if final.height:
                counts[f"points already at the final stage {self.rule.n_stages}"] = final.height
            points = points.filter(pl.col("current_stage") < self.rule.n_stages)
        no_follow = points.filter(pl.col("time_to_event_days") <= 0)
        if no_follow.height:
            counts["points with no follow-up after the prediction time"] = no_follow.height
        points = points.filter(pl.col("time_to_event_days") > 0)  # still ordered by subject and time
        if points.height == 0:
            raise EmptyCohortError(f"no {self.rule.name} prediction point has follow-up: the cohort is empty")
        # Shared, not copied: the visit frame without death dates (dropping a column copies nothing).
        # It may hold subjects without points; points only ever read their own subject's visits.
        safe_visits = VisitFrame(visit_frame.frame.drop("death"), visit_frame.strategy, visit_frame.codes)
        # Readings at one time in value order: the order of the raw rows (their hashes) depends on
        # how a site writes them (units), the readings' order must not.
        lab_readings = (
            lab_readings.filter(pl.col("subject_id").is_in(staged_subjects.implode()))
            .select("subject_id", "time", pl.col("source").alias("lab"), "value")
            .sort("subject_id", "time", "lab", "value", maintain_order=True)
        )
        X = CohortX(
            points.select("subject_id", "prediction_time", "n_visits", "current_stage", "current_value"),
            safe_visits,
            lab_readings,
            {lab.name: list(lab.bands) for lab in self.rule.labs},
        )
        y = points.select(
            pl.col("next_stage").alias("stage"),
            "event",
            "time_to_event_days",
            *([(~pl.col("event") & pl.col("_died")).alias("death")] if self.death == "competing" else []),
        )
        labels = points.select(
            "subject_id",
            "prediction_time",
            pl.col("event").alias("boolean_value"),
            pl.col("next_stage").cast(pl.Int64).alias("integer_value"),
            pl.col("time_to_event_days").alias("float_value"),
            pl.lit(None, pl.String).alias("categorical_value"),
            "event",
            "time_to_event_days",
        ).cast(LABEL_SCHEMA)
        warnings = self._label_warnings(recorded, staged_subjects)
        return Cohort(X, y, points["subject_id"].to_numpy(), labels, records, counts, warnings)

    def _label_warnings(self, recorded: pl.DataFrame, subjects: pl.Series, share: float = 0.05) -> list[str]:
        """A warning when at least ``share`` of the cohort's subjects have recorded stages that fall by
        two or more stages from one record time to the next: chronic disease does not do that, so
        such records are noise (a coding or unit error, an acute illness) that single-reading labels
        would count as progression."""
        per_time = one_row_per_time(recorded.filter(pl.col("subject_id").is_in(subjects.implode())), "time")
        drops = per_time.with_columns(
            (pl.col("stage").shift(1).over("subject_id") - pl.col("stage")).fill_null(0).alias("_drop")
        )
        flagged = drops.filter(pl.col("_drop") >= 2)["subject_id"].unique()
        n = subjects.n_unique()
        if n == 0 or flagged.len() < max(1, share * n):
            return []
        worst = (
            drops.filter(pl.col("subject_id").is_in(flagged.implode()))
            .group_by("subject_id")
            .agg((pl.col("_drop") >= 2).sum().alias("n"), pl.col("stage"))
            .sort(["n", "subject_id"], descending=[True, False])[0]
        )
        path = [s for i, s in enumerate(worst["stage"][0]) if i == 0 or s != worst["stage"][0][i - 1]]
        shown = " -> ".join(str(s) for s in path[:8]) + (" ..." if len(path) > 8 else "")
        robust = self.confirm_days is not None and self.progression == "above_highest"
        advice = (
            "these labels use sustained stages and the highest stage so far, which absorb such swings"
            if robust
            else "consider confirm_days=90 and progression='above_highest'"
        )
        return [
            f"{flagged.len():,} of {n:,} subjects ({flagged.len() / n:.0%}) have recorded stages that fall by 2+ "
            f"stages between records (e.g. subject {worst['subject_id'][0]}: {shown}): implausible for a chronic "
            f"disease; {advice}"
        ]

    def _confirm(self, records: pl.DataFrame, counts: dict[str, int]) -> pl.DataFrame:
        """Lab stage records replaced by their sustained stage (see ``confirm_days``); order kept."""
        is_lab = (pl.col("source") != "diagnosis") & pl.col("stage").is_not_null()
        # The lab rows' few columns only (the records' codes and values are not copied), numbered.
        # One integer key per (subject, lab): the windows and the as-of join group by one Int64
        # instead of an Int64 and a string (at 100,000 people the step peaked ~140 MiB lower).
        sources = records["source"].unique().sort().to_list()
        subject = pl.col("subject_id")
        run = (subject != subject.shift()).fill_null(True).cum_sum()  # records ordered by subject
        subject_number = run if records["subject_id"].is_sorted() else subject.rank("dense")
        labs = (
            records.with_row_index("_order")
            .filter(is_lab)
            .select(
                "_order",
                "time",
                "stage",
                (
                    subject_number.cast(pl.Int64) * len(sources) + pl.col("source").cast(pl.Enum(sources)).to_physical()
                ).alias("_key"),
            )
        )
        if labs.height == 0:
            return records
        period = f"{round(self.confirm_days * 86_400)}s"
        recent = labs.rolling(index_column="time", period=period, group_by="_key").agg(
            pl.col("_order").last(), pl.col("stage").min().alias("_recent")
        )  # readings in (t - confirm_days, t]
        shift = pl.duration(seconds=round(self.confirm_days * 86_400))
        anchors = labs.select("_key", pl.col("time").alias("_anchor_time"), pl.col("stage").alias("_anchor"))
        confirmed = (
            recent.with_columns((pl.col("time") - shift).alias("_back"))
            .sort("_back")
            .join_asof(
                anchors.sort("_anchor_time"),
                left_on="_back",
                right_on="_anchor_time",
                by="_key",
                strategy="backward",
                check_sortedness=False,  # sorted by time as a whole, so within every group
            )
            .select(  # no reading that far back: not yet sustained (min_horizontal would skip the null)
                "_order",
                pl.when(pl.col("_anchor").is_not_null())
                .then(pl.min_horizontal("_recent", "_anchor"))
                .alias("_confirmed"),
            )
        )
        unconfirmed = confirmed.filter(pl.col("_confirmed").is_null()).height
        if unconfirmed:
            counts[
                f"lab stages with no reading of that lab {self.confirm_days:g}+ days earlier (not yet sustained)"
            ] = unconfirmed
        # Each lab row's confirmed stage put back at its position (no join or sort of the records).
        sustained = pl.Series("_confirmed", [None], pl.Int8).extend_constant(None, records.height - 1)
        sustained = sustained.scatter(confirmed["_order"], confirmed["_confirmed"].cast(pl.Int8))
        stage = pl.when(is_lab).then(sustained).otherwise(pl.col("stage"))
        return records.with_columns(stage.alias("stage")).filter(pl.col("stage").is_not_null())


def _in_lab_unit(rows: pl.DataFrame, lab, counts: dict[str, int]) -> pl.DataFrame:
    """``rows`` of one lab with ``value``: the numeric value in the unit of the lab's bands (its
    ``units`` table, one factor per distinct unit); rows in a unit the lab does not know are left
    out and counted."""
    value = pl.col("numeric_value").cast(pl.Float64)
    if lab.units is None or rows.height == 0:
        return rows.with_columns(value.alias("value"))
    units = rows["unit"].unique().drop_nulls().cast(pl.String)
    factors = pl.Series([lab.unit_factor(u) for u in units], dtype=pl.Float64)
    factor = pl.when(pl.col("unit").is_null()).then(1.0).otherwise(map_categories("unit", units, factors, pl.Float64))
    in_unit = rows.with_columns(converted(value, factor).alias("value"), factor.is_null().alias("_foreign"))
    foreign = in_unit.filter("_foreign")
    if foreign.height:
        shown = ", ".join(repr(u) for u in sorted(foreign["unit"].cast(pl.String).unique().to_list())[:5])
        counts[f"{lab.name}: unit not a unit of {lab.name} ({shown}; not staged)"] = foreign.height
    return in_unit.filter(~pl.col("_foreign")).drop("_foreign")


def map_categories(column: str, keys: pl.Series, values: pl.Series, dtype: pl.DataType) -> pl.Expr:
    """Categorical ``column`` mapped through ``keys -> values`` (null where absent).

    Few distinct values (stages, lab names, unit factors): one membership test per value, which
    polars answers on the category ids, is 3-10x faster than a hash lookup per row
    (``replace_strict``) or a gather by category id (1.9M staging rows: 0.002-0.006 s against
    0.016-0.026 s per mapping on this project's 2-core VM). Many distinct values: ``replace_strict``.
    """
    if keys.len() == 0:
        return pl.lit(None, dtype)
    table = pl.DataFrame({"key": keys.cast(pl.String), "value": values.cast(dtype)}).drop_nulls("value")
    distinct = table["value"].unique(maintain_order=True)
    if distinct.len() > 16:
        return pl.col(column).replace_strict(table["key"], table["value"], default=None, return_dtype=dtype)
    mapped = pl.lit(None, dtype)
    for value in distinct:
        members = table.filter(pl.col("value") == value)["key"]
        mapped = (
            pl.when(pl.col(column).is_in(members.cast(pl.Categorical).implode()))
            .then(pl.lit(value, dtype))
            .otherwise(mapped)
        )
    return mapped
