"""``VisitProgressionEstimator``: the hierarchical visit model as a scikit-learn estimator.

Follows scikit-learn to the letter: ``__init__`` only stores parameters; ``fit`` validates,
seeds from ``random_state`` and returns ``self``; fitted state ends in ``_``; prediction methods
check fitted-ness. Nested parameters are routed with ``backbone__...`` / ``module__...`` so a
grid search can reach them. Saving writes safetensors + JSON; loading never unpickles.
"""

from __future__ import annotations

import json
import time
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GroupShuffleSplit
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ehrprog.batching import VisitTensors, Vocabulary
from ehrprog.metrics import harrell_c, macro_auroc
from ehrprog.model import VisitSequenceModel, breslow_baseline, cox_partial_likelihood
from ehrprog.tasks.cohort import CohortX

_PREFIXES = ("backbone__", "module__")


def _split_targets(y: Any, n: int) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """``(stage, event, time)`` from a cohort's ``y`` frame, a scikit-survival structured array or a stage array.

    Missing stages are NaN. Any part the input does not hold is ``None``.
    """
    if isinstance(y, pl.DataFrame) or hasattr(y, "iloc"):
        frame = y if isinstance(y, pl.DataFrame) else pl.from_pandas(y)
        stage = frame["stage"].cast(pl.Float64).fill_null(np.nan).to_numpy() if "stage" in frame.columns else None
        event = frame["event"].cast(pl.Boolean).to_numpy() if "event" in frame.columns else None
        tte = frame["time_to_event_days"].cast(pl.Float64).to_numpy() if "time_to_event_days" in frame.columns else None
        return stage, event, tte
    array = np.asarray(y)
    if array.dtype.names:  # scikit-survival: (event: bool, time: float)
        names = array.dtype.names
        event_name = next(n for n in names if array.dtype[n] == np.bool_)
        time_name = next(n for n in names if n != event_name)
        return None, array[event_name].astype(bool), array[time_name].astype(float)
    if array.ndim != 1 or len(array) != n:
        raise ValueError(
            f"y must be a cohort's y frame, a structured survival array or {n} stages; got shape {array.shape}"
        )
    return array.astype(float), None, None


def _value_scale(X: CohortX) -> tuple[float, float]:
    """Mean and standard deviation of the training points' current staging-lab value."""
    if "current_value" not in X.points.columns:
        return (0.0, 1.0)
    values = X.points["current_value"].drop_nulls()
    if values.len() < 2:
        return (0.0, 1.0)
    std = float(values.std())
    return (float(values.mean()), std if std > 1e-6 else 1.0)


def _distributed(model: torch.nn.Module, device: torch.device) -> tuple[int, int, torch.nn.Module]:
    """``(rank, world size, module to train)``: under ``torchrun`` (``WORLD_SIZE`` > 1) the model is
    wrapped in DistributedDataParallel (NCCL on GPUs, gloo on CPUs); otherwise ``(0, 1, model)``."""
    import os

    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return 0, 1, model
    ids = [device.index or 0] if device.type == "cuda" else None
    return dist.get_rank(), dist.get_world_size(), torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


class VisitProgressionEstimator(BaseEstimator):
    """Predict the next CKD stage and/or the time to progression from a subject's visits.

    Args:
        target: ``"stage"`` (classification of the next recorded stage), ``"progression"``
            (Cox survival model of time to a higher stage) or ``"both"`` (trained jointly).
        backbone: the name of a registered backbone plugin (``ehrprog plugins`` lists them);
            ``"default"`` learns code embeddings and a within-visit encoder from scratch.
        embedding_dim, hidden_dim: code embedding size D and sequence state size H.
        visit_encoder: ``"attention"`` (masked attention pooling) or ``"transformer"``.
        sequence_encoder: ``"gru"``, ``"lstm"`` or ``"transformer"`` (causal).
        dropout: dropout before the heads (and inside transformers).
        max_epochs, batch_size (subjects per batch), lr, weight_decay: AdamW training.
        patience: epochs without validation improvement before stopping early.
        validation_fraction: share of subjects held out (by subject) for early stopping; 0 disables it.
        max_codes_per_visit, max_visits: truncation (first codes of a visit; last visits of a history).
        min_code_count: codes seen fewer times in training share the unknown embedding.
        refit_risk_head: after training, refit the linear risk head to the exact (ridge-penalised)
            Cox optimum on the frozen features of the training points.
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``...
        random_state: seed; the same data and seed give the same model on CPU.
        verbose: 0 silent, 1 a progress bar per epoch.
        **kwargs: ``backbone__<name>`` / ``module__<name>`` extra parameters for the backbone and
            the sequence model (e.g. ``module__n_stages``).

    Attributes:
        classes_: stage labels (``target`` stage/both).
        vocabulary_: the code vocabulary.
        model_: the trained torch module (on CPU after fit).
        history_: one dict per epoch (``epoch``, ``train_loss``, ``valid_loss``, ``seconds``).
        event_times_, cumulative_baseline_hazard_: Breslow baseline (``target`` progression/both).
        risk_head_refit_: where the risk head was refitted (``"validation"``, ``"training"``), or
            why not.
        n_features_in_: 1 (inputs are visit histories, not a feature matrix).
    """

    _parameter_constraints: dict = {  # noqa: RUF012 (scikit-learn's convention)
        "target": [StrOptions({"stage", "progression", "both"})],
        "backbone": [str],
        "embedding_dim": [Interval(Integral, 4, None, closed="left")],
        "hidden_dim": [Interval(Integral, 4, None, closed="left")],
        "visit_encoder": [StrOptions({"attention", "transformer"})],
        "sequence_encoder": [StrOptions({"gru", "lstm", "transformer"})],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "max_codes_per_visit": [Interval(Integral, 1, None, closed="left")],
        "max_visits": [Interval(Integral, 1, None, closed="left")],
        "min_code_count": [Interval(Integral, 1, None, closed="left")],
        "refit_risk_head": ["boolean"],
        "device": [str],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        target: str = "stage",
        backbone: str = "default",
        embedding_dim: int = 64,
        hidden_dim: int = 64,
        visit_encoder: str = "attention",
        sequence_encoder: str = "gru",
        dropout: float = 0.1,
        max_epochs: int = 20,
        batch_size: int = 64,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        patience: int = 3,
        validation_fraction: float = 0.15,
        max_codes_per_visit: int = 64,
        max_visits: int = 256,
        min_code_count: int = 1,
        refit_risk_head: bool = True,
        device: str = "auto",
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
        **kwargs: Any,
    ) -> None:
        self.target = target
        self.backbone = backbone
        self.embedding_dim = embedding_dim
        self.hidden_dim = hidden_dim
        self.visit_encoder = visit_encoder
        self.sequence_encoder = sequence_encoder
        self.dropout = dropout
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.max_codes_per_visit = max_codes_per_visit
        self.max_visits = max_visits
        self.min_code_count = min_code_count
        self.refit_risk_head = refit_risk_head
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        for key, value in kwargs.items():
            if not key.startswith(_PREFIXES):
                raise TypeError(f"unexpected parameter {key!r}; extra parameters must start with {_PREFIXES}")
            setattr(self, key, value)

    # ----------------------------------------------------------- parameters
    def _routed(self, prefix: str) -> dict[str, Any]:
        return {k[len(prefix) :]: v for k, v in vars(self).items() if k.startswith(prefix)}

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        params = super().get_params(deep=False)
        params.update({k: v for k, v in vars(self).items() if k.startswith(_PREFIXES)})
        return params

    def set_params(self, **params: Any) -> VisitProgressionEstimator:
        routed = {k: v for k, v in params.items() if k.startswith(_PREFIXES)}
        for key, value in routed.items():
            setattr(self, key, value)
        rest = {k: v for k, v in params.items() if k not in routed}
        return super().set_params(**rest) if rest else self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        tags.input_tags.two_d_array = False
        tags.target_tags.required = True
        if self.target == "stage":
            tags.estimator_type = "classifier"
        return tags

    # ----------------------------------------------------------- training
    def _device(self) -> torch.device:
        if self.device == "auto":
            if torch.cuda.is_available():
                import os

                return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
            return torch.device("cpu")
        return torch.device(self.device)

    def _seed(self) -> int:
        if isinstance(self.random_state, np.random.RandomState):
            return int(self.random_state.randint(0, 2**31 - 1))
        return 0 if self.random_state is None else int(self.random_state)

    def _build_model(self, n_classes: int, architecture: dict[str, Any] | None = None) -> VisitSequenceModel:
        """The model for ``vocabulary_``; ``architecture`` (from a saved estimator) replaces the
        backbone parameters that point at a pre-trained source."""
        from ehrprog.plugins import get_backbone

        spec = get_backbone(self.backbone)
        backbone = spec.factory(
            vocab_size=self.vocabulary_.size,
            dim=self.embedding_dim,
            visit_encoder=self.visit_encoder,
            dropout=self.dropout,
            vocabulary=self.vocabulary_,
            **{**self._routed("backbone__"), **(architecture or {})},
        )
        return VisitSequenceModel(
            backbone,
            n_classes=n_classes,
            hidden=self.hidden_dim,
            sequence_encoder=self.sequence_encoder,
            dropout=self.dropout,
            **self._routed("module__"),
        )

    def _loss(self, outputs, rows: np.ndarray, targets, device: torch.device) -> torch.Tensor:
        logits, risk = outputs
        stage_idx, event, tte = targets
        loss = torch.zeros((), device=device)
        if self.target in ("stage", "both"):
            labels = torch.from_numpy(stage_idx[rows]).to(device)
            known = labels >= 0
            if known.any():
                loss = loss + torch.nn.functional.cross_entropy(logits[known].float(), labels[known])
        if self.target in ("progression", "both"):
            loss = loss + cox_partial_likelihood(
                risk, torch.from_numpy(tte[rows]).to(device), torch.from_numpy(event[rows]).to(device)
            )
        return loss

    def fit(self, X: CohortX, y: Any, groups: Any = None) -> VisitProgressionEstimator:
        """Train on prediction points ``X`` (a :class:`~ehrprog.tasks.CohortX`) with targets ``y``.

        ``y`` is a cohort's ``y`` frame (the estimator takes what ``target`` needs), a
        scikit-survival structured array (progression) or an array of stages (stage). Points
        without a next stage are ignored by the stage loss. ``groups`` is accepted for API
        symmetry with ``GroupKFold``; the internal validation split is always by subject.
        """
        self._validate_params()
        if not isinstance(X, CohortX):
            raise TypeError(f"X must be a CohortX (cohort.X from a task's build), got {type(X).__name__}")
        stage, event, tte = _split_targets(y, len(X))
        if self.target in ("stage", "both") and stage is None:
            raise ValueError(f"target={self.target!r} needs stages in y (a 'stage' column or a stage array)")
        if self.target in ("progression", "both") and (event is None or tte is None):
            raise ValueError(
                f"target={self.target!r} needs 'event' and 'time_to_event_days' in y "
                "(or a scikit-survival structured array)"
            )
        if len(X) == 0:
            raise ValueError("cannot fit on an empty cohort")
        seed = self._seed()
        device = self._device()
        self.n_features_in_ = 1
        stage_idx = np.full(len(X), -1, dtype=np.int64)
        n_classes = 1
        if stage is not None and self.target in ("stage", "both"):
            known = ~np.isnan(stage)
            self.classes_ = np.unique(stage[known]).astype(np.int64)
            if len(self.classes_) < 2:
                raise ValueError(f"need at least two stages in y to classify, got {self.classes_.tolist()}")
            stage_idx[known] = np.searchsorted(self.classes_, stage[known].astype(np.int64))
            n_classes = len(self.classes_)
        targets = (
            stage_idx,
            event.astype(np.float32) if event is not None else None,
            tte.astype(np.float32) if tte is not None else None,
        )
        subjects = X.points["subject_id"].to_numpy()
        rows = np.arange(len(X))
        train_rows, valid_rows = rows, np.array([], dtype=np.int64)
        if self.validation_fraction > 0 and len(np.unique(subjects)) >= 5:
            split = GroupShuffleSplit(n_splits=1, test_size=self.validation_fraction, random_state=seed)
            train_rows, valid_rows = next(split.split(rows, groups=subjects))
        self.vocabulary_ = Vocabulary.fit(X[train_rows], min_count=self.min_code_count)
        self.value_scale_ = _value_scale(X[train_rows])
        tensors = self._visit_tensors(X)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self._build_model(n_classes).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        rng = np.random.default_rng(seed)
        amp = device.type == "cuda"
        rank, world, trained = _distributed(model, device)
        n_batches = -(-len(np.unique(subjects[train_rows])) // self.batch_size)
        steps = max(n_batches // world, 1)  # equal steps on every rank (DDP needs them in lockstep)
        self.history_ = []
        best, best_state, stale = np.inf, None, 0
        for epoch in range(1, self.max_epochs + 1):
            started = time.perf_counter()
            trained.train()
            losses, weights = [], []
            batches = tensors.subject_batches(train_rows, self.batch_size, rng)
            mine = (b for i, b in enumerate(batches) if i % world == rank and i // world < steps)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + epoch + 1000 * rank)  # dropout masks: reproducible per epoch
                for batch in tqdm(
                    mine, total=steps, disable=not self.verbose or rank > 0, desc=f"epoch {epoch}", leave=False
                ):
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                        outputs = trained(batch.tensors(device))
                    loss = self._loss(outputs, batch.point_index, targets, device)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
                    optimizer.step()
                    losses.append(float(loss.detach()))
                    weights.append(len(batch.point_index))
            record = {"epoch": epoch, "train_loss": float(np.average(losses, weights=weights))}
            if len(valid_rows):
                record["valid_loss"] = self._evaluate_loss(model, tensors, valid_rows, targets, device)
            record["seconds"] = time.perf_counter() - started
            self.history_.append(record)
            monitored = record.get("valid_loss", record["train_loss"])
            if monitored < best - 1e-4:
                best, stale = monitored, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
                if len(valid_rows) and stale >= self.patience:
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
        self.model_ = model.cpu().eval()
        if self.target in ("progression", "both"):
            self.risk_head_refit_ = "off"
            if self.refit_risk_head:
                # On the held-out validation subjects when they hold enough events (the network never
                # trained on them, so their features are not overfitted), else on the training points.
                self.risk_head_refit_ = "skipped: fewer than 20 events"
                for name, rows in (("validation", valid_rows), ("training", train_rows)):
                    if event[rows].sum() >= 20:
                        try:
                            self._refit_risk_head(X[rows], event[rows], tte[rows])
                            self.risk_head_refit_ = name
                        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as error:
                            self.risk_head_refit_ = f"skipped: {error}"
                        break
            risk = self._predict_outputs(X[train_rows])[1]
            self.event_times_, self.cumulative_baseline_hazard_ = breslow_baseline(
                risk, tte[train_rows], event[train_rows].astype(bool)
            )
        return self

    def _refit_risk_head(self, X: CohortX, event: np.ndarray, tte: np.ndarray) -> None:
        """Refit the (linear) risk head to the exact optimum of the ridge-penalised Cox partial
        likelihood on the frozen head features of the training points (Newton's method, as
        scikit-survival's CoxPHSurvivalAnalysis with Breslow ties); mini-batch AdamW leaves it short."""
        from sksurv.linear_model import CoxPHSurvivalAnalysis
        from sksurv.util import Surv

        tensors = self._visit_tensors(X)
        features = np.zeros((len(X), self.model_.risk_head.in_features), dtype=np.float64)
        with torch.no_grad():
            for batch in tensors.subject_batches(np.arange(len(X)), max(self.batch_size, 256)):
                features[batch.point_index] = self.model_.head_features(batch.tensors(torch.device("cpu"))).numpy()
        scale = features.std(axis=0)
        scale = np.where(scale > 1e-8, scale, 1.0)
        cox = CoxPHSurvivalAnalysis(alpha=1.0, ties="breslow", n_iter=200).fit(
            features / scale, Surv.from_arrays(event.astype(bool), tte.astype(float))
        )
        if not np.isfinite(cox.coef_).all():
            raise ArithmeticError("the Cox refit did not converge to finite coefficients")
        with torch.no_grad():
            self.model_.risk_head.weight.copy_(torch.from_numpy(cox.coef_ / scale).float()[None, :])
            self.model_.risk_head.bias.zero_()

    def _visit_tensors(self, X: CohortX) -> VisitTensors:
        return VisitTensors(X, self.vocabulary_, self.max_codes_per_visit, self.max_visits, self.value_scale_)

    def _evaluate_loss(self, model, tensors: VisitTensors, rows: np.ndarray, targets, device) -> float:
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            if self.target in ("progression", "both"):  # Cox risk sets span the whole validation set
                logits, risk = [], []
                order = []
                for batch in tensors.subject_batches(rows, self.batch_size):
                    out = model(batch.tensors(device))
                    logits.append(out[0])
                    risk.append(out[1])
                    order.append(batch.point_index)
                index = np.concatenate(order)
                return float(self._loss((torch.cat(logits), torch.cat(risk)), index, targets, device))
            for batch in tensors.subject_batches(rows, self.batch_size):
                loss = self._loss(model(batch.tensors(device)), batch.point_index, targets, device)
                total += float(loss) * len(batch.point_index)
                count += len(batch.point_index)
        return total / max(count, 1)

    # ----------------------------------------------------------- prediction
    def _check(self, X: Any) -> None:
        check_is_fitted(self, "model_")
        if not isinstance(X, CohortX):
            raise TypeError(f"X must be a CohortX, got {type(X).__name__}")

    def _predict_outputs(self, X: CohortX) -> tuple[np.ndarray, np.ndarray]:
        """Stage logits ``[n, K]`` and log relative risks ``[n]`` in the order of ``X``'s points."""
        tensors = self._visit_tensors(X)
        logits = np.zeros((len(X), self.model_.stage_head.out_features), dtype=np.float32)
        risk = np.zeros(len(X), dtype=np.float32)
        self.model_.eval()
        with torch.no_grad():
            for batch in tensors.subject_batches(np.arange(len(X)), max(self.batch_size, 256)):
                out_logits, out_risk = self.model_(batch.tensors(torch.device("cpu")))
                logits[batch.point_index] = out_logits.float().numpy()
                risk[batch.point_index] = out_risk.float().numpy()
        return logits, risk

    def predict_proba(self, X: CohortX) -> np.ndarray:
        """Stage probabilities ``[n, len(classes_)]``."""
        self._check(X)
        self._require("stage", "predict_proba")
        logits = self._predict_outputs(X)[0]
        return torch.softmax(torch.from_numpy(logits), dim=1).numpy()

    def predict_risk(self, X: CohortX) -> np.ndarray:
        """Log relative risk of progression ``[n]`` (higher = sooner)."""
        self._check(X)
        self._require("progression", "predict_risk")
        return self._predict_outputs(X)[1]

    def predict(self, X: CohortX) -> np.ndarray:
        """The most probable next stage (``target`` stage/both) or the progression risk score."""
        if self.target == "progression":
            return self.predict_risk(X)
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]

    def predict_survival_function(self, X: CohortX, return_array: bool = False):
        """Progression-free survival ``S(t | x) = exp(-H0(t) exp(r(x)))`` (Breslow ``H0``).

        Returns scikit-survival ``StepFunction`` objects over ``event_times_`` (days), or with
        ``return_array=True`` an array ``[n, len(event_times_)]``.
        """
        from sksurv.functions import StepFunction

        risk = self.predict_risk(X).astype(np.float64)
        survival = np.exp(-np.outer(np.exp(risk), self.cumulative_baseline_hazard_))
        if return_array:
            return survival
        return np.array([StepFunction(self.event_times_, row) for row in survival])

    def score(self, X: CohortX, y: Any) -> float:
        """Macro one-vs-rest AUROC (stage), Harrell's C (progression), or their mean (both)."""
        stage, event, tte = _split_targets(y, len(X))
        scores = []
        if self.target in ("stage", "both"):
            known = ~np.isnan(stage)
            proba = self.predict_proba(X)
            scores.append(macro_auroc(stage[known], proba[known], self.classes_))
        if self.target in ("progression", "both"):
            scores.append(harrell_c(event, tte, self.predict_risk(X)))
        return float(np.mean(scores))

    def _require(self, kind: str, method: str) -> None:
        if kind == "stage" and self.target == "progression":
            raise AttributeError(f"{method} needs target='stage' or 'both'; this estimator has target='progression'")
        if kind == "progression" and self.target == "stage":
            raise AttributeError(f"{method} needs target='progression' or 'both'; this estimator has target='stage'")

    def explain(self, X: CohortX, output: str = "auto", steps: int = 32) -> pl.DataFrame:
        """Per-code and per-visit attributions by integrated gradients over the code embeddings.

        The path runs from all-zero embeddings (the padding embedding) to the actual ones in
        ``steps`` Riemann steps; a code's attribution is the sum over embedding dimensions of
        ``embedding * mean gradient``, so a point's attributions add up to its output minus the
        output of the all-padding input (the completeness axiom, up to the discretisation).

        Args:
            X: prediction points to explain (each is explained in its own history).
            output: ``"risk"`` (log relative risk), ``"stage"`` (logit of the predicted stage) or
                ``"auto"`` (risk when the model has a survival head, else stage).
            steps: integration steps.

        Returns:
            One row per (point, input visit, code): ``point`` (row of ``X``), ``subject_id``,
            ``visit_index``, ``visit_start``, ``code``, ``attribution`` and ``visit_attribution``
            (the visit's total).
        """
        self._check(X)
        if output == "auto":
            output = "stage" if self.target == "stage" else "risk"
        if output not in ("risk", "stage"):
            raise ValueError(f"output must be 'risk', 'stage' or 'auto', got {output!r}")
        self._require("progression" if output == "risk" else "stage", "explain")
        tensors = self._visit_tensors(X)
        model = self.model_.eval()
        rows = []
        for index in range(len(X)):
            batch = tensors.batch(np.array([index]))
            inputs = batch.tensors(torch.device("cpu"))
            with torch.no_grad():
                embedded = model.backbone.embed(inputs["codes"], inputs["values"], inputs["has_value"])
                logits, _ = model(inputs)
                chosen = int(logits[0].argmax())
            total = torch.zeros_like(embedded)
            for alpha in (torch.arange(steps, dtype=embedded.dtype) + 0.5) / steps:
                scaled = (alpha * embedded).requires_grad_(True)
                logits, risk = model(inputs, scaled)
                value = risk[0] if output == "risk" else logits[0, chosen]
                (grad,) = torch.autograd.grad(value, scaled)
                total += grad
            attribution = (embedded * total / steps).sum(-1)[0]  # [V, C]
            codes = batch.codes[0]
            visit_pos, code_pos = np.nonzero(codes)
            rows.append(
                pl.DataFrame(
                    {
                        "point": np.full(len(visit_pos), index),
                        "visit_index": visit_pos + batch.visit_offset[0],
                        "code_row": codes[visit_pos, code_pos],
                        "attribution": attribution.detach().numpy()[visit_pos, code_pos],
                    }
                )
            )
        frame = pl.concat(rows)
        names = pl.DataFrame({"code_row": np.arange(2, self.vocabulary_.size), "code": self.vocabulary_.codes})
        visits = X.visits.visits().select("subject_id", "visit_index", pl.col("start").alias("visit_start"))
        points = X.points.with_row_index("point").select(pl.col("point").cast(pl.Int64), "subject_id")
        return (
            frame.with_columns(pl.col("code_row").cast(pl.Int64), pl.col("visit_index").cast(pl.Int32))
            .join(names, on="code_row", how="left")
            .with_columns(pl.col("code").fill_null("<unknown code>"))
            .join(points, on="point", how="left")
            .join(visits, on=["subject_id", "visit_index"], how="left")
            .with_columns(pl.col("attribution").sum().over("point", "visit_index").alias("visit_attribution"))
            .select("point", "subject_id", "visit_index", "visit_start", "code", "attribution", "visit_attribution")
            .sort("point", "visit_index", "attribution", descending=[False, False, True])
        )

    # ----------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write ``config.json`` (parameters, vocabulary, classes, baseline hazard, history) and
        ``model.safetensors`` (weights) to the folder ``path``."""
        check_is_fitted(self, "model_")
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        params = {k: v for k, v in self.get_params().items() if k != "random_state"}
        params["random_state"] = self.random_state if isinstance(self.random_state, int | None) else None
        config = {
            "format": "ehrprog.VisitProgressionEstimator/1",
            "params": params,
            "vocabulary": {
                "codes": self.vocabulary_.codes,
                "value_mean": self.vocabulary_.value_mean.tolist(),
                "value_std": self.vocabulary_.value_std.tolist(),
                "descriptions": self.vocabulary_.descriptions,
            },
            "backbone_architecture": self.model_.backbone.architecture()
            if hasattr(self.model_.backbone, "architecture")
            else None,
            "n_classes": int(self.model_.stage_head.out_features),
            "value_scale": list(self.value_scale_),
            "classes": self.classes_.tolist() if hasattr(self, "classes_") else None,
            "event_times": self.event_times_.tolist() if hasattr(self, "event_times_") else None,
            "cumulative_baseline_hazard": self.cumulative_baseline_hazard_.tolist()
            if hasattr(self, "cumulative_baseline_hazard_")
            else None,
            "history": self.history_,
        }
        (root / "config.json").write_text(json.dumps(config, indent=1))
        save_file({k: v.contiguous() for k, v in self.model_.state_dict().items()}, str(root / "model.safetensors"))
        return root

    def save_backbone(self, path: str | Path) -> Path:
        """Write the fitted (fine-tuned) backbone as a pre-trained folder (``config.json``,
        ``model.safetensors``, ``vocab.json``) that ``backbone__checkpoint=path`` loads into
        another estimator, aligned to that estimator's codes. Backbones with a pre-trained layout
        only (a ``model_type``: CEHR-BERT, Med-BERT, BEHRT, ClinicalBERT)."""
        check_is_fitted(self, "model_")
        from ehrprog.backbones.checkpoint import save_pretrained

        backbone = self.model_.backbone
        if not getattr(backbone, "model_type", ""):
            raise ValueError(f"backbone {self.backbone!r} has no pre-trained folder layout to save")
        extra = backbone.pretrained_config() if hasattr(backbone, "pretrained_config") else {}
        return save_pretrained(backbone, self.vocabulary_.codes, path, backbone=self.backbone, fine_tuned=True, **extra)

    @classmethod
    def load(cls, path: str | Path) -> VisitProgressionEstimator:
        """Load a saved estimator. Reads JSON and safetensors only: no code is executed."""
        root = Path(path)
        config = json.loads((root / "config.json").read_text())
        if config.get("format") != "ehrprog.VisitProgressionEstimator/1":
            raise ValueError(f"{root / 'config.json'} is not a saved VisitProgressionEstimator")
        estimator = cls(**config["params"])
        vocab = config["vocabulary"]
        estimator.vocabulary_ = Vocabulary(
            vocab["codes"],
            np.asarray(vocab["value_mean"], np.float32),
            np.asarray(vocab["value_std"], np.float32),
            vocab.get("descriptions"),
        )
        model = estimator._build_model(config["n_classes"], config.get("backbone_architecture"))
        model.load_state_dict(load_file(str(root / "model.safetensors")))
        estimator.model_ = model.eval()
        estimator.value_scale_ = tuple(config["value_scale"])
        estimator.n_features_in_ = 1
        estimator.history_ = config["history"]
        if config["classes"] is not None:
            estimator.classes_ = np.asarray(config["classes"], dtype=np.int64)
        if config["event_times"] is not None:
            estimator.event_times_ = np.asarray(config["event_times"])
            estimator.cumulative_baseline_hazard_ = np.asarray(config["cumulative_baseline_hazard"])
        return estimator


__all__ = ["NotFittedError", "VisitProgressionEstimator"]
