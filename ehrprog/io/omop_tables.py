"""OMOP CDM table definitions: DDL column orders (for headerless files) and event mappings.

Column orders follow the OHDSI CommonDataModel DDL for CDM 5.3 and 5.4. Only the tables
ehrprog reads are listed.
"""

from __future__ import annotations

from dataclasses import dataclass

_S = str.split

DDL: dict[str, dict[str, list[str]]] = {
    "person": {
        "5.4": _S(
            "person_id gender_concept_id year_of_birth month_of_birth day_of_birth birth_datetime "
            "race_concept_id ethnicity_concept_id location_id provider_id care_site_id person_source_value "
            "gender_source_value gender_source_concept_id race_source_value race_source_concept_id "
            "ethnicity_source_value ethnicity_source_concept_id"
        ),
    },
    "cdm_source": {
        "5.4": _S(
            "cdm_source_name cdm_source_abbreviation cdm_holder source_description source_documentation_reference "
            "cdm_etl_reference source_release_date cdm_release_date cdm_version cdm_version_concept_id "
            "vocabulary_version"
        ),
        "5.3": _S(
            "cdm_source_name cdm_source_abbreviation cdm_holder source_description source_documentation_reference "
            "cdm_etl_reference source_release_date cdm_release_date cdm_version vocabulary_version"
        ),
    },
    "observation_period": {
        "5.4": _S(
            "observation_period_id person_id observation_period_start_date observation_period_end_date "
            "period_type_concept_id"
        ),
    },
    "death": {
        "5.4": _S(
            "person_id death_date death_datetime death_type_concept_id cause_concept_id cause_source_value "
            "cause_source_concept_id"
        ),
    },
    "visit_occurrence": {
        "5.4": _S(
            "visit_occurrence_id person_id visit_concept_id visit_start_date visit_start_datetime visit_end_date "
            "visit_end_datetime visit_type_concept_id provider_id care_site_id visit_source_value "
            "visit_source_concept_id admitted_from_concept_id admitted_from_source_value discharged_to_concept_id "
            "discharged_to_source_value preceding_visit_occurrence_id"
        ),
        "5.3": _S(
            "visit_occurrence_id person_id visit_concept_id visit_start_date visit_start_datetime visit_end_date "
            "visit_end_datetime visit_type_concept_id provider_id care_site_id visit_source_value "
            "visit_source_concept_id admitting_source_concept_id admitting_source_value discharge_to_concept_id "
            "discharge_to_source_value preceding_visit_occurrence_id"
        ),
    },
    "visit_detail": {
        "5.4": _S(
            "visit_detail_id person_id visit_detail_concept_id visit_detail_start_date visit_detail_start_datetime "
            "visit_detail_end_date visit_detail_end_datetime visit_detail_type_concept_id provider_id care_site_id "
            "visit_detail_source_value visit_detail_source_concept_id admitted_from_concept_id "
            "admitted_from_source_value discharged_to_source_value discharged_to_concept_id "
            "preceding_visit_detail_id parent_visit_detail_id visit_occurrence_id"
        ),
        "5.3": _S(
            "visit_detail_id person_id visit_detail_concept_id visit_detail_start_date visit_detail_start_datetime "
            "visit_detail_end_date visit_detail_end_datetime visit_detail_type_concept_id provider_id care_site_id "
            "admitting_source_concept_id discharge_to_concept_id preceding_visit_detail_id "
            "visit_detail_source_value visit_detail_source_concept_id admitting_source_value "
            "discharge_to_source_value visit_detail_parent_id visit_occurrence_id"
        ),
    },
    "condition_occurrence": {
        "5.4": _S(
            "condition_occurrence_id person_id condition_concept_id condition_start_date condition_start_datetime "
            "condition_end_date condition_end_datetime condition_type_concept_id condition_status_concept_id "
            "stop_reason provider_id visit_occurrence_id visit_detail_id condition_source_value "
            "condition_source_concept_id condition_status_source_value"
        ),
        "5.3": _S(
            "condition_occurrence_id person_id condition_concept_id condition_start_date condition_start_datetime "
            "condition_end_date condition_end_datetime condition_type_concept_id stop_reason provider_id "
            "visit_occurrence_id visit_detail_id condition_source_value condition_source_concept_id "
            "condition_status_source_value condition_status_concept_id"
        ),
    },
    "condition_era": {
        "5.4": _S(
            "condition_era_id person_id condition_concept_id condition_era_start_date condition_era_end_date "
            "condition_occurrence_count"
        ),
    },
    "procedure_occurrence": {
        "5.4": _S(
            "procedure_occurrence_id person_id procedure_concept_id procedure_date procedure_datetime "
            "procedure_end_date procedure_end_datetime procedure_type_concept_id modifier_concept_id quantity "
            "provider_id visit_occurrence_id visit_detail_id procedure_source_value procedure_source_concept_id "
            "modifier_source_value"
        ),
        "5.3": _S(
            "procedure_occurrence_id person_id procedure_concept_id procedure_date procedure_datetime "
            "procedure_type_concept_id modifier_concept_id quantity provider_id visit_occurrence_id "
            "visit_detail_id procedure_source_value procedure_source_concept_id modifier_source_value"
        ),
    },
    "drug_exposure": {
        "5.4": _S(
            "drug_exposure_id person_id drug_concept_id drug_exposure_start_date drug_exposure_start_datetime "
            "drug_exposure_end_date drug_exposure_end_datetime verbatim_end_date drug_type_concept_id stop_reason "
            "refills quantity days_supply sig route_concept_id lot_number provider_id visit_occurrence_id "
            "visit_detail_id drug_source_value drug_source_concept_id route_source_value dose_unit_source_value"
        ),
    },
    "device_exposure": {
        "5.4": _S(
            "device_exposure_id person_id device_concept_id device_exposure_start_date "
            "device_exposure_start_datetime device_exposure_end_date device_exposure_end_datetime "
            "device_type_concept_id unique_device_id production_id quantity provider_id visit_occurrence_id "
            "visit_detail_id device_source_value device_source_concept_id unit_concept_id unit_source_value "
            "unit_source_concept_id"
        ),
        "5.3": _S(
            "device_exposure_id person_id device_concept_id device_exposure_start_date "
            "device_exposure_start_datetime device_exposure_end_date device_exposure_end_datetime "
            "device_type_concept_id unique_device_id quantity provider_id visit_occurrence_id visit_detail_id "
            "device_source_value device_source_concept_id"
        ),
    },
    "measurement": {
        "5.4": _S(
            "measurement_id person_id measurement_concept_id measurement_date measurement_datetime "
            "measurement_time measurement_type_concept_id operator_concept_id value_as_number value_as_concept_id "
            "unit_concept_id range_low range_high provider_id visit_occurrence_id visit_detail_id "
            "measurement_source_value measurement_source_concept_id unit_source_value unit_source_concept_id "
            "value_source_value measurement_event_id meas_event_field_concept_id"
        ),
        "5.3": _S(
            "measurement_id person_id measurement_concept_id measurement_date measurement_datetime "
            "measurement_time measurement_type_concept_id operator_concept_id value_as_number value_as_concept_id "
            "unit_concept_id range_low range_high provider_id visit_occurrence_id visit_detail_id "
            "measurement_source_value measurement_source_concept_id unit_source_value value_source_value"
        ),
    },
    "observation": {
        "5.4": _S(
            "observation_id person_id observation_concept_id observation_date observation_datetime "
            "observation_type_concept_id value_as_number value_as_string value_as_concept_id qualifier_concept_id "
            "unit_concept_id provider_id visit_occurrence_id visit_detail_id observation_source_value "
            "observation_source_concept_id unit_source_value qualifier_source_value value_source_value "
            "observation_event_id obs_event_field_concept_id"
        ),
        "5.3": _S(
            "observation_id person_id observation_concept_id observation_date observation_datetime "
            "observation_type_concept_id value_as_number value_as_string value_as_concept_id qualifier_concept_id "
            "unit_concept_id provider_id visit_occurrence_id visit_detail_id observation_source_value "
            "observation_source_concept_id unit_source_value qualifier_source_value"
        ),
    },
    "concept": {
        "5.4": _S(
            "concept_id concept_name domain_id vocabulary_id concept_class_id standard_concept concept_code "
            "valid_start_date valid_end_date invalid_reason"
        ),
    },
    "source_to_standard_vocab_map": {
        "5.4": _S(
            "source_code source_concept_id source_code_description source_vocabulary_id source_domain_id "
            "source_concept_class_id source_valid_start_date source_valid_end_date source_invalid_reason "
            "target_concept_id target_concept_name target_vocabulary_id target_domain_id target_concept_class_id "
            "target_invalid_reason target_standard_concept"
        ),
    },
}


@dataclass(frozen=True)
class EventTable:
    """How one OMOP clinical table becomes events.

    ``times`` are tried in order (a datetime column first, then its date); ``concept`` is the
    standard concept column, ``source_value``/``source_concept`` the source columns.
    """

    name: str
    concept: str
    times: tuple[str, ...]
    source_value: str | None = None
    source_concept: str | None = None
    numeric: str | None = None
    text: str | None = None
    unit: str | None = None
    unit_concept: str | None = None
    visit: str | None = "visit_occurrence_id"
    row_id: str | None = None


EVENT_TABLES: dict[str, EventTable] = {
    t.name: t
    for t in (
        EventTable(
            "visit_occurrence",
            "visit_concept_id",
            ("visit_start_datetime", "visit_start_date"),
            "visit_source_value",
            "visit_source_concept_id",
        ),
        EventTable(
            "visit_detail",
            "visit_detail_concept_id",
            ("visit_detail_start_datetime", "visit_detail_start_date"),
            "visit_detail_source_value",
            "visit_detail_source_concept_id",
        ),
        EventTable(
            "condition_occurrence",
            "condition_concept_id",
            ("condition_start_datetime", "condition_start_date"),
            "condition_source_value",
            "condition_source_concept_id",
        ),
        EventTable(
            "condition_era",
            "condition_concept_id",
            ("condition_era_start_date",),
            visit=None,
        ),
        EventTable(
            "procedure_occurrence",
            "procedure_concept_id",
            ("procedure_datetime", "procedure_date"),
            "procedure_source_value",
            "procedure_source_concept_id",
        ),
        EventTable(
            "drug_exposure",
            "drug_concept_id",
            ("drug_exposure_start_datetime", "drug_exposure_start_date"),
            "drug_source_value",
            "drug_source_concept_id",
        ),
        EventTable(
            "device_exposure",
            "device_concept_id",
            ("device_exposure_start_datetime", "device_exposure_start_date"),
            "device_source_value",
            "device_source_concept_id",
            unit="unit_source_value",
            unit_concept="unit_concept_id",
        ),
        EventTable(
            "measurement",
            "measurement_concept_id",
            ("measurement_datetime", "measurement_date"),
            "measurement_source_value",
            "measurement_source_concept_id",
            numeric="value_as_number",
            unit="unit_source_value",
            unit_concept="unit_concept_id",
        ),
        EventTable(
            "observation",
            "observation_concept_id",
            ("observation_datetime", "observation_date"),
            "observation_source_value",
            "observation_source_concept_id",
            numeric="value_as_number",
            text="value_as_string",
            unit="unit_source_value",
            unit_concept="unit_concept_id",
        ),
    )
}

#: Tables read by default. ``condition_era`` duplicates condition_occurrence and ``visit_detail``
#: duplicates visit_occurrence in most ETLs, so both are opt-in (``tables=...``); condition_era is
#: used automatically when an extract has no condition_occurrence (see ``read_omop``).
DEFAULT_TABLES = (
    "visit_occurrence",
    "condition_occurrence",
    "procedure_occurrence",
    "drug_exposure",
    "device_exposure",
    "measurement",
    "observation",
)

#: Names of OMOP concepts ehrprog needs even when an extract ships no CONCEPT table.
KNOWN_CONCEPTS: dict[int, tuple[str, str, str]] = {
    # concept_id: (vocabulary_id, concept_code, concept_name)
    8507: ("Gender", "M", "MALE"),
    8532: ("Gender", "F", "FEMALE"),
    9201: ("Visit", "IP", "Inpatient Visit"),
    9202: ("Visit", "OP", "Outpatient Visit"),
    9203: ("Visit", "ER", "Emergency Room Visit"),
    262: ("Visit", "ERIP", "Emergency Room and Inpatient Visit"),
    581477: ("Visit", "OMOP4822036", "Office Visit"),
    42898160: ("Visit", "NHCI", "Non-hospital institution Visit"),
}
