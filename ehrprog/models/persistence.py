"""Saving and loading a fitted ``VisitProgressionEstimator``: ``config.json`` + ``model.safetensors``.

Loading never executes code and trusts nothing in the folder:

* ``config.json`` is validated by :class:`~ehrprog.models.saved_format.SavedEstimator`
  (pydantic): types, bounds, no extra keys, and the cross-field rules (``classes`` has
  ``n_classes`` stages, the baseline hazard is as long as ``event_times``, the vocabulary's value
  statistics match its codes, every number finite); the parameters are checked by the
  estimator's own ``_parameter_constraints``;
* the weights' names and shapes in the safetensors header are compared with the model the config
  describes, built first on the ``meta`` device (no memory), so a config cannot make the loader
  allocate more than the weight file holds; every loaded weight must be finite;
* the tabular model (``config.json``'s ``tabular``: linear models' coefficients, the point
  features' standardisation) is checked against the clinical table it reads; its booster is
  XGBoost JSON whose column count must match;
* ``config.json`` records the SHA-256 of its own content and the size and SHA-256 of the weights
  (and the booster): a changed byte of the config, or a file swapped
  for another model's, edited, or a link out of the folder is refused before it is read;
* a saved estimator is self-contained: string-valued backbone parameters (paths to a checkpoint
  or a text encoder) are never passed to a backbone factory on load, and the saved backbone
  architecture may hold no strings, so nothing outside the folder is opened.

Any problem raises :class:`~ehrprog.core.errors.SavedModelError` naming the file and the field.
The versions of ehrprog, torch and polars the model was saved with are recorded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import ValidationError
from sklearn.utils.validation import check_is_fitted

from ehrprog.core.errors import SavedModelError
from ehrprog.core.files import CHANGED, file_problem, save_tensors, sha256
from ehrprog.core.output import OutputFolder, set_aside
from ehrprog.models.model_card import model_card
from ehrprog.models.saved_format import (
    BOOSTER,
    CONFIG,
    FORMAT,
    MODEL_CARD,
    WEIGHTS,
    SavedEstimator,
    SavedFile,
)

if TYPE_CHECKING:
    from ehrprog.models.estimator import VisitProgressionEstimator


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    import polars as pl

    return {"ehrprog": version("ehrprog"), "torch": torch.__version__, "polars": pl.__version__}


def save_estimator(estimator: VisitProgressionEstimator, path: str | Path) -> Path:
    """Write ``estimator`` (fitted) to the folder ``path``: ``config.json`` (with the size and
    SHA-256 of the weights and the booster), ``model.safetensors``, ``booster.json`` where there is
    one, and ``MODEL_CARD.md`` (documentation; loading never reads it).

    The folder is written whole beside ``path`` and renamed into place (:mod:`ehrprog.core.output`);
    ``path`` must be new, empty, or a saved model (replaced). A folder holding files ehrprog did
    not write is refused; nothing of it is deleted.
    """

    out = model_output(path)
    with out.writing() as root:
        _write_model(estimator, root)
    return out.final


def model_output(path: str | Path, inputs: Iterable[str | Path] = ()) -> OutputFolder:
    """The checked :class:`~ehrprog.core.output.OutputFolder` of a saved estimator at ``path``: new,
    empty or a saved model, never holding a file ehrprog did not write, nor an input."""
    return OutputFolder(
        path, "model", owned=model_files, inputs=inputs, error=SavedModelError, marker=False, can_overwrite=False
    ).check()


def _write_model(estimator: VisitProgressionEstimator, root: Path) -> None:
    """The files of a saved estimator, written into the (new, empty) folder ``root``."""
    params = estimator.get_params(deep=False)
    params["tabular"] = None  # saved, fitted, under "tabular"
    params["random_state"] = estimator.random_state if isinstance(estimator.random_state, int | None) else None
    model = estimator.model_
    config = {
        "format": FORMAT,
        "versions": _versions(),
        "params": params,
        "vocabulary": {
            "codes": estimator.vocabulary_.codes,
            "value_mean": estimator.vocabulary_.value_mean.tolist(),
            "value_std": estimator.vocabulary_.value_std.tolist(),
            "descriptions": estimator.vocabulary_.descriptions,
            "units": estimator.vocabulary_.units,
        },
        "backbone_architecture": model.backbone.architecture() if hasattr(model.backbone, "architecture") else None,
        "n_classes": int(model.stage_head.out_features) if model.stage_head is not None else 0,
        "value_scale": list(estimator.value_scale_),
        "tabular": estimator.tabular_.state(),
        "classes": estimator.classes_.tolist() if hasattr(estimator, "classes_") else None,
        "event_times": estimator.event_times_.tolist() if hasattr(estimator, "event_times_") else None,
        "cumulative_baseline_hazard": estimator.cumulative_baseline_hazard_.tolist()
        if getattr(estimator, "cumulative_baseline_hazard_", None) is not None
        else None,
        "history": estimator.history_,
        "initial_validation": estimator.initial_validation_,
        "history_gain": estimator.history_gain_,
        "history_gain_se": estimator.history_gain_se_,
        "history_kept": estimator.history_kept_,
        "history_trial_gain": estimator.history_trial_gain_,
        "best_epoch": estimator.best_epoch_,
        "n_iter": estimator.n_iter_,
        "training_data": getattr(estimator, "training_data_", None),
        "heldout": getattr(estimator, "heldout_", None),
        "death": estimator.death_.state() if getattr(estimator, "death_", None) is not None else None,
    }
    save_tensors({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, root / WEIGHTS)
    if estimator.tabular_.booster_ is not None:
        estimator.tabular_.booster_.model_.save_model(str(root / BOOSTER))
    config["files"] = {
        name: {"bytes": (root / name).stat().st_size, "sha256": sha256(root / name)}
        for name in (WEIGHTS, BOOSTER)
        if (root / name).is_file()
    }
    config = json.loads(json.dumps(config))  # as it will be read back
    config["config_sha256"] = config_digest(config)
    (root / CONFIG).write_text(json.dumps(config, indent=1))
    (root / MODEL_CARD).write_text(model_card(estimator), encoding="utf-8")


#: What a saved estimator folder holds; a folder holding anything else was not written by ehrprog.
MODEL_ENTRIES = frozenset({CONFIG, WEIGHTS, MODEL_CARD, BOOSTER})


def model_files(root: Path) -> set[str] | None:
    """The files ehrprog wrote in a saved estimator folder (``config.json``, the files it lists,
    ``MODEL_CARD.md``), or ``None`` when ``root`` holds no ehrprog model config."""
    try:
        config = json.loads((root / CONFIG).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or not str(config.get("format", "")).startswith(FORMAT.split("/")[0] + "/"):
        return None
    listed = config.get("files") if isinstance(config.get("files"), dict) else {}
    return {CONFIG, MODEL_CARD} | {name for name in listed if name in MODEL_ENTRIES}


def _check_file(root: Path, name: str, record: SavedFile | None) -> Path:
    """A file of the folder after checking it is a plain file inside it, of the size and SHA-256
    config.json records (so a weight file swapped for another model's is refused)."""
    path = root / name
    problem = file_problem(path, record.bytes if record is not None else None)
    if problem is None and record is None:
        raise SavedModelError(f"config.json records no size and SHA-256 for {name}", file=str(root / CONFIG))
    if problem is None and sha256(path) != record.sha256:
        problem = CHANGED
    if problem is not None:
        raise SavedModelError(problem, file=str(path))
    return path


def config_digest(config: dict[str, Any]) -> str:
    """The SHA-256 of a config's content other than ``config_sha256`` (canonical JSON: sorted keys,
    no spaces), so any changed value, added or removed key is seen on load."""
    import hashlib

    content = {key: value for key, value in config.items() if key != "config_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_config(root: Path, parameters: Iterable[str]) -> SavedEstimator:
    """The validated ``config.json`` of a saved estimator folder, its ``params`` exactly the
    estimator's ``parameters`` (names; ``backbone__*`` besides)."""
    file = root / CONFIG
    problem = file_problem(file, None)
    if problem == "is missing":
        raise SavedModelError(f"missing: not a saved estimator folder{set_aside(root)}", file=str(file))
    if problem is not None:  # a link too: the docs promise links are refused, config.json included
        raise SavedModelError(problem, file=str(file))
    try:
        text = file.read_text()
        raw = json.loads(text)
    except FileNotFoundError:
        raise SavedModelError("missing: not a saved estimator folder", file=str(file)) from None
    except PermissionError as error:
        raise SavedModelError(f"cannot read: {error.strerror or error}", file=str(file)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SavedModelError(f"not valid JSON ({error})", file=str(file)) from None
    if not isinstance(raw, dict):
        raise SavedModelError("must hold a JSON object", file=str(file))
    if raw.get("format") != FORMAT:
        raise SavedModelError(
            f"format {raw.get('format')!r} is not {FORMAT!r} (a model saved by another ehrprog version: fit and save "
            "it again)",
            file=str(file),
            field="format",
        )
    try:
        saved = SavedEstimator.model_validate_json(text, context={"parameters": set(parameters)})
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        if not field:  # a cross-field rule: its message starts with the field it names
            named = re.match(r"Value error, (\w+): ", first["msg"])
            field = named.group(1) if named else None
        raise SavedModelError(
            f"{first['msg']} ({error.error_count()} problem(s) in all)", file=str(file), field=field
        ) from None
    if config_digest(raw) != saved.config_sha256:
        raise SavedModelError(
            "its content does not match the config_sha256 it records (the file was edited after the model was saved)",
            file=str(file),
            field="config_sha256",
        )
    return saved


def _weight_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes in a safetensors header (the file's size bounds them)."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except FileNotFoundError:
        raise SavedModelError("missing", file=str(file)) from None
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise SavedModelError(f"not a readable safetensors file ({error})", file=str(file)) from None


def _non_finite_numbers(path: Path) -> int:
    """How many numbers in a JSON file (or numeric strings, as XGBoost writes its ``base_score``)
    are NaN or infinite (``json`` reads the tokens NaN and Infinity as floats); 0 for a file that
    is not JSON (the XGBoost reader names that)."""
    import math

    def count(value: object) -> int:
        if isinstance(value, float):
            return int(not math.isfinite(value))
        if isinstance(value, str):
            try:
                return int(not math.isfinite(float(value)))
            except ValueError:
                return 0
        if isinstance(value, dict):
            return sum(count(v) for v in value.values())
        if isinstance(value, list):
            return sum(count(v) for v in value)
        return 0

    try:
        return count(json.loads(path.read_text()))
    except (OSError, ValueError):
        return 0


def _load_tabular(root: Path, config: SavedEstimator):
    """The fitted tabular model of a saved folder (its booster read as XGBoost JSON: no code runs)."""
    from sklearn.utils._param_validation import InvalidParameterError

    from ehrprog.models.tabular import TabularModel

    saved = config.tabular
    try:
        TabularModel(**saved.params)._validate_params()
    except (TypeError, InvalidParameterError) as error:
        raise SavedModelError(str(error), file=str(root / CONFIG), field="tabular.params") from None
    booster = None
    if saved.risk_model == "booster":
        from xgboost import XGBRegressor

        _check_file(root, BOOSTER, config.files.get(BOOSTER))
        bad = _non_finite_numbers(root / BOOSTER)
        if bad:
            raise SavedModelError(
                f"holds {bad} non-finite number(s) (NaN or infinite leaves predict NaN)", file=str(root / BOOSTER)
            )
        try:
            booster = XGBRegressor()
            booster.load_model(str(root / BOOSTER))
            features = booster.get_booster().num_features()
        except Exception as error:  # XGBoost's own error on a corrupt JSON model
            raise SavedModelError(f"not a readable XGBoost JSON model: {error}", file=str(root / BOOSTER)) from None
        if features != saved.booster_width():
            raise SavedModelError(
                f"the booster reads {features} columns; the saved table and counts have {saved.booster_width()}",
                file=str(root / BOOSTER),
            )
    elif (root / BOOSTER).exists() or (root / BOOSTER).is_symlink():
        raise SavedModelError("a booster is saved but tabular.risk_model is not 'booster'", file=str(root / BOOSTER))
    return TabularModel.from_state(saved.model_dump(), booster)


def load_estimator(cls: type[VisitProgressionEstimator], path: str | Path) -> VisitProgressionEstimator:
    """Load and check a folder written by :func:`save_estimator` (see the module docstring)."""
    from safetensors.torch import load_file
    from sklearn.utils._param_validation import InvalidParameterError

    from ehrprog.features.tensors import Vocabulary
    from ehrprog.models.death import DeathHazard
    from ehrprog.models.tabular import TabularModel

    root = Path(path)
    config = read_config(root, cls._get_param_names())
    file = str(root / CONFIG)
    estimator = cls(**config.params)
    try:
        estimator._validate_params()
    except InvalidParameterError as error:
        named = re.search(r"The '([^']+)' parameter", str(error))
        field = f"params.{named.group(1)}" if named else "params"
        raise SavedModelError(str(error), file=file, field=field) from None
    vocab = config.vocabulary
    estimator.vocabulary_ = Vocabulary(
        vocab.codes,
        np.asarray(vocab.value_mean, np.float32),
        np.asarray(vocab.value_std, np.float32),
        vocab.descriptions,
        vocab.units,
    )
    estimator.tabular_ = _load_tabular(root, config)
    estimator.tabular = TabularModel(**config.tabular.params)
    _check_file(root, WEIGHTS, config.files.get(WEIGHTS))
    shapes = _weight_shapes(root / WEIGHTS)
    try:
        with torch.device("meta"):
            skeleton = estimator._build_model(config.n_classes, config.backbone_architecture, saved=True)
    except (TypeError, ValueError, RuntimeError) as error:
        raise SavedModelError(f"describes no buildable model ({error})", file=file, field="params") from None
    expected = {name: tuple(tensor.shape) for name, tensor in skeleton.state_dict().items()}
    if expected != shapes:
        wrong = sorted(set(expected) ^ set(shapes)) or sorted(k for k in expected if expected[k] != shapes[k])
        name = wrong[0]
        raise SavedModelError(
            f"the weights do not match the model config.json describes ({len(wrong)} tensor(s) differ; "
            f"{name}: file {shapes.get(name)}, config {expected.get(name)})",
            file=str(root / WEIGHTS),
            field=name,
        )
    weights = load_file(str(root / WEIGHTS))
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise SavedModelError("holds NaN or infinite values", file=str(root / WEIGHTS), field=name)
    model = estimator._build_model(config.n_classes, config.backbone_architecture, saved=True)
    model.load_state_dict(weights)
    estimator.model_ = model.eval()
    estimator.value_scale_ = tuple(config.value_scale)
    estimator.n_features_in_ = 1
    estimator.history_ = config.history
    estimator.initial_validation_ = config.initial_validation
    estimator.history_gain_ = config.history_gain
    estimator.history_gain_se_ = config.history_gain_se
    estimator.history_kept_ = config.history_kept
    estimator.history_trial_gain_ = config.history_trial_gain
    estimator.loss_curve_ = [record["train_loss"] for record in config.history if "train_loss" in record]
    estimator.validation_loss_curve_ = [record["valid_loss"] for record in config.history if "valid_loss" in record]
    estimator.best_epoch_, estimator.n_iter_ = config.best_epoch, config.n_iter
    estimator.training_data_ = config.training_data
    estimator.heldout_ = config.heldout.model_dump(exclude_none=True) if config.heldout is not None else None
    estimator.death_ = DeathHazard.from_state(config.death.model_dump()) if config.death is not None else None
    if config.classes is not None:
        estimator.classes_ = np.asarray(config.classes, dtype=np.int64)
    if config.event_times is not None:
        estimator.event_times_ = np.asarray(config.event_times)
        hazard = config.cumulative_baseline_hazard
        estimator.cumulative_baseline_hazard_ = np.asarray(hazard) if hazard is not None else None
    return estimator


class PersistenceMixin:
    """``save``, ``save_backbone`` and ``load`` of :class:`~ehrprog.models.estimator.VisitProgressionEstimator`."""

    def save(self, path: str | Path) -> Path:
        """Write ``config.json`` (parameters, vocabulary, classes, baseline hazard, history,
        versions), ``model.safetensors`` (weights) and ``MODEL_CARD.md`` (training data, held-out
        metrics where measured, intended use, known limits; :mod:`ehrprog.models.model_card`) to the folder
        ``path``; see :mod:`ehrprog.models.persistence`."""
        check_is_fitted(self, "model_")
        return save_estimator(self, path)

    def save_backbone(self, path: str | Path) -> Path:
        """Write the fitted (fine-tuned) backbone as a pre-trained folder (``config.json``,
        ``model.safetensors``, ``vocab.json``) that ``backbone__checkpoint=path`` loads into
        another estimator, aligned to that estimator's codes. Backbones with a pre-trained layout
        only (a ``model_type``: default, CEHR-BERT, Med-BERT, BEHRT, ClinicalBERT)."""
        check_is_fitted(self, "model_")
        from ehrprog.networks.backbones.checkpoint import save_pretrained

        backbone = self.model_.backbone
        if not getattr(backbone, "model_type", ""):
            raise ValueError(f"backbone {self.backbone!r} has no pre-trained folder layout to save")
        extra = backbone.pretrained_config() if hasattr(backbone, "pretrained_config") else {}
        self.model_.cpu()
        return save_pretrained(backbone, self.vocabulary_.codes, path, backbone=self.backbone, fine_tuned=True, **extra)

    @classmethod
    def load(cls, path: str | Path) -> VisitProgressionEstimator:
        """Load a saved estimator. Reads and validates JSON and safetensors only: no code is
        executed and nothing outside the folder is opened."""
        return load_estimator(cls, path)


__all__ = ["FORMAT", "PersistenceMixin", "SavedEstimator", "load_estimator", "read_config", "save_estimator"]
