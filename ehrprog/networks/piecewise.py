"""Piecewise-exponential survival: a hazard constant within each piece of a time grid.

Used twice: by the time-to-event pre-training objective (:mod:`ehrprog.networks.tte`, many codes
at once) and by the estimator's ``survival_head="piecewise"`` (absolute risks at any horizon,
not only a ranking). With pieces ending at ``e_1 < ... < e_{T-1}`` (the last piece is open), a
subject with log hazards ``log λ_t`` has cumulative hazard ``H(u) = Σ_t λ_t · exposure_t(u)``,
``exposure_t(u) = clip(u - e_{t-1}, 0, e_t - e_{t-1})``, and survival ``S(u) = exp(-H(u))``.
Under right censoring the negative log-likelihood of an observation ``(u, event)`` is
``H(u) - event · log λ_{piece of u}``, exact (no discretisation of time).
"""

from __future__ import annotations

import torch

#: The estimator's hazard pieces (years; the last piece is open-ended): finer early, where most
#: CKD progression in a cohort's follow-up happens, up to the 5-year horizon.
SURVIVAL_PIECES_YEARS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0)
#: Days per year (times are kept in days elsewhere in the package).
DAYS_PER_YEAR = 365.25
#: The horizon (years) whose cumulative hazard ranks subjects (``predict_risk`` of a piecewise head).
RISK_HORIZON_YEARS = 5.0


def _edges(ends: tuple[float, ...] | torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Piece starts ``[T]`` and widths ``[T]`` (the last infinite) for piece ends ``[T - 1]``."""
    ends = torch.as_tensor(ends, dtype=like.dtype, device=like.device)
    starts = torch.cat([torch.zeros(1, dtype=like.dtype, device=like.device), ends])
    widths = torch.cat([ends - starts[:-1], torch.full((1,), float("inf"), dtype=like.dtype, device=like.device)])
    return starts, widths


def exposure(times: torch.Tensor, ends: tuple[float, ...] | torch.Tensor) -> torch.Tensor:
    """Time spent in each piece before ``times`` (any shape ``[...]``) -> ``[..., T]``."""
    starts, widths = _edges(ends, times)
    return torch.minimum((times[..., None] - starts).clamp(min=0.0), widths)


def piece_of(times: torch.Tensor, ends: tuple[float, ...] | torch.Tensor) -> torch.Tensor:
    """The index of the piece each time falls in (``[...]`` -> ``[...]`` int64)."""
    starts, _ = _edges(ends, times)
    return (torch.searchsorted(starts, times.contiguous(), right=True) - 1).clamp(0, len(starts) - 1)


def piecewise_exponential_nll(
    log_hazard: torch.Tensor, times: torch.Tensor, event: torch.Tensor, ends: tuple[float, ...] | torch.Tensor
) -> torch.Tensor:
    """Negative log-likelihood of each observation under right censoring.

    Args:
        log_hazard: ``[N, T]`` or ``[N, T, K]`` log hazard per time unit in each piece.
        times: ``[N]`` or ``[N, K]`` time to the event or censoring (the unit of ``ends``).
        event: like ``times``, bool: the event was observed at ``times``.
        ends: the ``T - 1`` piece ends.

    Returns:
        Like ``times``: ``H(times) - event * log λ[piece of times]``.
    """
    spent = exposure(times, ends)  # [N, (K,) T]
    piece = piece_of(times, ends)
    if log_hazard.dim() == 3:  # [N, T, K] -> pieces last
        log_hazard = log_hazard.transpose(1, 2)
    at_event = log_hazard.gather(-1, piece[..., None]).squeeze(-1)
    return (log_hazard.exp() * spent).sum(-1) - event.to(log_hazard.dtype) * at_event


def cumulative_hazard(
    log_hazard: torch.Tensor, times: torch.Tensor, ends: tuple[float, ...] | torch.Tensor
) -> torch.Tensor:
    """``H(u)`` ``[N, M]`` of subjects with log hazards ``[N, T]`` at times ``u`` ``[M]``."""
    return log_hazard.exp() @ exposure(times, ends).T


def risk_score(log_hazard: torch.Tensor, ends: tuple[float, ...] = SURVIVAL_PIECES_YEARS) -> torch.Tensor:
    """The ranking score of piecewise hazards ``[N, T]``: ``log H(RISK_HORIZON_YEARS)`` ``[N]``
    (a monotone transform of the risk of progressing within the horizon)."""
    horizon = torch.tensor([RISK_HORIZON_YEARS], dtype=log_hazard.dtype, device=log_hazard.device)
    return torch.logsumexp(log_hazard + torch.log(exposure(horizon, ends)), dim=-1)


def base_log_hazards(
    times: torch.Tensor, event: torch.Tensor, ends: tuple[float, ...], offset: torch.Tensor | None = None
) -> torch.Tensor:
    """Maximum-likelihood log hazard per piece ``[T]`` (events over exposure, each subject's
    exposure weighted by ``exp(offset)``, e.g. a Cox linear predictor): a proportional-hazards start."""
    weight = offset.exp() if offset is not None else torch.ones_like(times)
    spent = (exposure(times, ends) * weight[:, None]).sum(0)
    events = torch.zeros_like(spent).scatter_add_(0, piece_of(times, ends), event.to(times.dtype))
    return torch.log((events + 0.5) / (spent + 1e-6))


__all__ = [
    "DAYS_PER_YEAR",
    "RISK_HORIZON_YEARS",
    "SURVIVAL_PIECES_YEARS",
    "base_log_hazards",
    "cumulative_hazard",
    "exposure",
    "piece_of",
    "piecewise_exponential_nll",
    "risk_score",
]
