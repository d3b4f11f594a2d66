"""What a saved estimator's ``config.json`` may hold: the pydantic schema
(:class:`SavedEstimator` and its parts) that :mod:`ehrprog.models.persistence` validates a
folder against before anything of it is used (types, bounds, no extra keys, cross-field rules,
every number finite), and the names of the files of a saved model."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

FORMAT = "ehrprog.VisitProgressionEstimator/6"
CONFIG, WEIGHTS, MODEL_CARD = "config.json", "model.safetensors", "MODEL_CARD.md"
BOOSTER = "booster.json"
#: Largest vocabulary and stage count a saved model may declare.
MAX_CODES, MAX_CLASSES = 10_000_000, 1_000

Finite = Annotated[float, Field(allow_inf_nan=False)]
Scalar = bool | int | Finite | str | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SavedVersions(_Strict):
    """The package versions the model was saved with."""

    ehrprog: str
    torch: str
    polars: str


class SavedVocabulary(_Strict):
    """Codes (embedding rows 2..) and each row's value mean and standard deviation (rows 0 and 1 included)."""

    codes: list[str] = Field(max_length=MAX_CODES)
    value_mean: list[Finite]
    value_std: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]]
    descriptions: list[str | None] | None = None
    #: The unit each code's values were read in at training (None: no unit), see ehrprog.io.units.
    units: list[str | None] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SavedVocabulary:
        rows = len(self.codes) + 2
        for name in ("value_mean", "value_std"):
            if len(getattr(self, name)) != rows:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries; {len(self.codes)} codes need {rows}")
        for name in ("descriptions", "units"):
            values = getattr(self, name)
            if values is not None and len(values) != len(self.codes):
                raise ValueError(f"{name} has {len(values)} entries for {len(self.codes)} codes")
        if len(set(self.codes)) != len(self.codes):
            raise ValueError("codes must be distinct")
        return self


class SavedPointFeatures(_Strict):
    """The fitted :class:`~ehrprog.features.point.PointFeatures` (labs, their standardisation, static codes)."""

    max_labs: int = Field(ge=0, le=MAX_CODES)
    min_readings: int = Field(ge=0)
    trend_years: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    min_trend_days: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    max_static_codes: int = Field(ge=0, le=MAX_CODES)
    labs: list[str] = Field(max_length=MAX_CODES)
    bands: dict[str, list[tuple[Finite, int]]]
    lab_mean: list[Finite]
    lab_std: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]]
    static_codes: list[str] = Field(max_length=MAX_CODES)
    max_history_codes: int = Field(default=0, ge=0, le=MAX_CODES)
    history_codes: list[str] = Field(default_factory=list, max_length=MAX_CODES)
    age_mean: Finite
    age_std: Annotated[float, Field(gt=0, allow_inf_nan=False)]

    @model_validator(mode="after")
    def _consistent(self) -> SavedPointFeatures:
        if not len(self.labs) == len(self.lab_mean) == len(self.lab_std):
            raise ValueError(f"lab_mean and lab_std need one entry per lab ({len(self.labs)})")
        if len(set(self.labs)) != len(self.labs) or len(set(self.static_codes)) != len(self.static_codes):
            raise ValueError("labs and static_codes must be distinct")
        if not set(self.bands) <= set(self.labs):
            raise ValueError("bands: every banded lab must be one of the labs")
        return self


class SavedLinear(_Strict):
    """A linear model of the tabular part: ``coef`` ``[K, C]``, ``intercept`` ``[K]``, the
    table's standardisation ``mean`` and ``scale`` ``[C]``."""

    coef: list[list[Finite]] = Field(max_length=MAX_CLASSES)
    intercept: list[Finite]
    mean: list[Finite] = Field(max_length=MAX_CODES)
    scale: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]]

    @model_validator(mode="after")
    def _consistent(self) -> SavedLinear:
        if len(self.intercept) != len(self.coef) or any(len(row) != len(self.mean) for row in self.coef):
            raise ValueError("coef must be [len(intercept), len(mean)]")
        if len(self.scale) != len(self.mean):
            raise ValueError("scale must have one entry per column of mean")
        return self


class SavedWindowed(_Strict):
    """The windowed counts the tabular booster reads: the windows (days; ``None``: all history)
    and the kept codes and coded measurements (:class:`~ehrprog.features.windowed.WindowedCounts`)."""

    windows_days: list[Annotated[float, Field(gt=0, allow_inf_nan=False)] | None] = Field(min_length=1, max_length=8)
    codes: list[str] = Field(max_length=MAX_CODES)
    lab_codes: list[str] = Field(max_length=MAX_CODES)

    def width(self) -> int:
        return len(self.codes) * len(self.windows_days) + len(self.lab_codes)


#: The figures of a tabular model's fitting sample (``TabularModel.fit_sample_``).
SampleKey = Literal["points", "subjects", "of_points", "of_subjects", "seed"]


class SavedTabular(_Strict):
    """The fitted :class:`~ehrprog.models.tabular.TabularModel` (the booster's trees are ``booster.json``)."""

    params: dict[str, bool | int | Finite | str | dict[str, Scalar | list[Scalar]] | None]
    n_stages: int = Field(ge=1, le=MAX_CLASSES)
    point_features: SavedPointFeatures | None
    windowed: SavedWindowed | None = None
    n_classes: int = Field(ge=0, le=MAX_CLASSES)
    has_risk: bool
    risk_model: Literal["booster", "cox"] | None
    booster_params: dict[str, Scalar] | None
    cox: SavedLinear | None
    stage: SavedLinear | None
    fit_sample: dict[SampleKey, Annotated[int, Field(ge=0)]] | None = None

    def width(self) -> int:
        """Columns of the clinical table this model reads."""
        from ehrprog.features.point import PointFeatures

        features = PointFeatures(**self.point_features.model_dump()).n_features if self.point_features else 0
        return features + self.n_stages + 3

    def booster_width(self) -> int:
        """Columns the booster reads: the clinical table, then the windowed counts."""
        return self.width() + (self.windowed.width() if self.windowed is not None else 0)

    @model_validator(mode="after")
    def _consistent(self) -> SavedTabular:
        width = self.width()
        for name in ("cox", "stage"):
            linear = getattr(self, name)
            if linear is not None and len(linear.mean) != width:
                raise ValueError(f"{name}: reads {len(linear.mean)} columns; the clinical table has {width}")
        if self.cox is not None and (len(self.cox.coef) != 1 or self.risk_model != "cox"):
            raise ValueError("cox: a linear Cox (one row) is saved exactly with risk_model 'cox'")
        if (self.stage is not None) != (self.n_classes > 0) or (
            self.stage is not None and len(self.stage.coef) != self.n_classes
        ):
            raise ValueError("stage: a logistic model with n_classes rows is saved exactly when n_classes > 0")
        if self.risk_model is not None and not self.has_risk:
            raise ValueError("risk_model: a risk model needs has_risk")
        if (self.risk_model == "booster") != (self.booster_params is not None):
            raise ValueError("booster_params: saved exactly with risk_model 'booster'")
        return self


class SavedSubgroup(_Strict):
    """One subgroup's held-out figures (ehrprog.evaluation.subgroups)."""

    attribute: str = Field(max_length=200)
    group: str = Field(max_length=200)
    points: int = Field(ge=0)
    subjects: int = Field(ge=0)
    events: int = Field(ge=0)
    metrics: dict[str, Finite]
    too_few: bool


class SavedHeldout(_Strict):
    """Scores on held-out subjects (for the model card): which points, and the metrics."""

    description: str = Field(max_length=1000)
    metrics: dict[str, Finite]
    #: What the figures stand on (ehrprog.evaluation.evidence.Evidence), where it was counted.
    evidence: dict[str, Annotated[int, Field(ge=0)]] | None = None
    #: The figures too few to judge, each with its reason.
    too_few: dict[str, Annotated[str, Field(max_length=1000)]] | None = None
    #: The model's figures per subgroup of the held-out subjects.
    subgroups: list[SavedSubgroup] | None = Field(default=None, max_length=1000)


class SavedFile(_Strict):
    """A file of the folder that config.json vouches for: its size (bytes) and SHA-256 (hex)."""

    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class SavedDeath(_Strict):
    """The model of death of an estimator fitted with death competing
    (:class:`~ehrprog.models.death.DeathHazard`): a linear Cox on the clinical table and its
    Breslow baseline (``event_times``, days; ``cumulative_hazard`` at each)."""

    linear: SavedLinear
    event_times: list[Finite] = Field(min_length=1)
    cumulative_hazard: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]]

    @model_validator(mode="after")
    def _consistent(self) -> SavedDeath:
        if len(self.linear.coef) != 1:
            raise ValueError("linear: a model of death has one output")
        if len(self.cumulative_hazard) != len(self.event_times):
            raise ValueError("cumulative_hazard must have one entry per event time")
        return self


#: The devices a saved model may name (``params.device``): where ehrprog trains and predicts.
DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"


class SavedEstimator(_Strict):
    """The schema of ``config.json``."""

    format: Literal["ehrprog.VisitProgressionEstimator/6"]
    versions: SavedVersions
    params: dict[str, Scalar]
    vocabulary: SavedVocabulary
    backbone_architecture: dict[str, bool | int | Finite | str | list[str] | None] | None
    n_classes: int = Field(ge=0, le=MAX_CLASSES)
    value_scale: tuple[Finite, Annotated[float, Field(gt=0, allow_inf_nan=False)]]
    tabular: SavedTabular
    classes: list[int] | None
    event_times: list[Finite] | None
    cumulative_baseline_hazard: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]] | None
    history: list[dict[str, Finite]]
    initial_validation: dict[str, Finite] | None = None
    history_gain: Finite | None = None
    history_gain_se: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    history_kept: bool = False
    history_trial_gain: Finite | None = None
    best_epoch: int = Field(ge=0)
    n_iter: int = Field(ge=0)
    training_data: dict[str, int | Finite | str] | None = None
    heldout: SavedHeldout | None = None
    #: Where death competed in training: the model of death (None where death censored).
    death: SavedDeath | None = None
    #: The weights (and the booster, when saved), tied to this config by size and SHA-256.
    files: dict[Literal["model.safetensors", "booster.json"], SavedFile]
    #: The SHA-256 of this file's other content (:func:`config_digest`): a changed byte is seen.
    config_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("params")
    @classmethod
    def _known_parameters(cls, params: dict[str, Scalar], info: ValidationInfo) -> dict[str, Scalar]:
        # The estimator's parameter names come from the class that loads (read_config's context):
        # this module does not import the estimator, which imports it.
        known = set((info.context or {}).get("parameters", ()))
        if not known:
            raise ValueError("no estimator parameter names to check them against (read_config gives them)")
        unknown = sorted(k for k in params if k not in known and not k.startswith("backbone__"))
        if unknown:
            raise ValueError(f"unknown parameters {unknown}")
        missing = sorted(known - set(params))
        if missing:
            raise ValueError(f"missing parameters {missing}")
        device = params.get("device")
        if not isinstance(device, str) or not re.match(DEVICE_PATTERN, device):
            raise ValueError(f"device {device!r} is not a device ehrprog runs on (auto, cpu, mps, cuda, cuda:N)")
        return params

    @model_validator(mode="after")
    def _consistent(self) -> SavedEstimator:
        target = self.params["target"]
        if target in ("stage", "both"):
            if self.classes is None or len(self.classes) != self.n_classes or self.n_classes < 2:
                raise ValueError(
                    f"classes: target {target!r} needs 'classes' with n_classes (>= 2) stages; "
                    f"got {self.classes} for n_classes={self.n_classes}"
                )
            if sorted(set(self.classes)) != self.classes:
                raise ValueError("classes: must be distinct and increasing")
        if self.params.get("tabular") is not None:
            raise ValueError("params: the tabular model is saved under 'tabular', params.tabular must be null")
        if self.tabular.has_risk != (target in ("progression", "both")) or self.tabular.n_classes != self.n_classes:
            raise ValueError(
                f"tabular: its outputs (risk {self.tabular.has_risk}, {self.tabular.n_classes} "
                f"stage classes) do not match target {target!r} with n_classes={self.n_classes}"
            )
        if (self.tabular.risk_model == "booster") != ("booster.json" in self.files):
            raise ValueError("files: booster.json is recorded exactly when tabular.risk_model is 'booster'")
        if target == "progression" and (self.n_classes != 0 or self.classes is not None):
            raise ValueError("n_classes: target 'progression' has no stage head: n_classes must be 0, classes null")
        if target in ("progression", "both"):
            times, hazard = self.event_times, self.cumulative_baseline_hazard
            if self.params.get("survival_head") == "piecewise":  # hazards come from the head itself
                if not times or hazard is not None:
                    raise ValueError("event_times: a piecewise head needs event_times and no baseline hazard")
                hazard = [0.0] * len(times)
            if times is None or hazard is None or len(times) != len(hazard) or not times:
                raise ValueError("cumulative_baseline_hazard: must have one value per entry of 'event_times'")
            if np.any(np.diff(times) <= 0) or np.any(np.diff(hazard) < 0):
                raise ValueError("event_times: must increase, and 'cumulative_baseline_hazard' must not decrease")
        elif self.event_times is not None or self.cumulative_baseline_hazard is not None:
            raise ValueError(
                "event_times: target 'stage' has no survival head: event_times and the hazard must be null"
            )
        return self

    @field_validator("backbone_architecture")
    @classmethod
    def _no_paths(cls, architecture: dict[str, Any] | None) -> dict[str, Any] | None:
        strings = sorted(k for k, v in (architecture or {}).items() if isinstance(v, str))
        if strings:
            raise ValueError(f"may not hold strings (a saved model follows no path): {strings}")
        return architecture


__all__ = [
    "BOOSTER",
    "CONFIG",
    "DEVICE_PATTERN",
    "FORMAT",
    "MAX_CLASSES",
    "MAX_CODES",
    "MODEL_CARD",
    "WEIGHTS",
    "SavedEstimator",
    "SavedFile",
    "SavedHeldout",
    "SavedLinear",
    "SavedPointFeatures",
    "SavedTabular",
    "SavedVersions",
    "SavedVocabulary",
    "SavedWindowed",
]
