"""Tasks: staging rules, labels and cohorts. CKD is the flagship; other diseases use the same rule model."""

from ehrprog.cohorts.cohort import Cohort, CohortX
from ehrprog.tasks.ckd import CKDProgression, ckd_epi_2021, ckd_rule
from ehrprog.tasks.population import Population
from ehrprog.tasks.progression import ProgressionTask
from ehrprog.tasks.rules import DiagnosisCode, LabThreshold, StagingRule

__all__ = [
    "CKDProgression",
    "Cohort",
    "CohortX",
    "DiagnosisCode",
    "LabThreshold",
    "Population",
    "ProgressionTask",
    "StagingRule",
    "ckd_epi_2021",
    "ckd_rule",
]
