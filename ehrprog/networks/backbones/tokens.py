"""Visit batches ``[B, V, C]`` as the token sequences BERT-family EHR models read ``[B, L]``.

A subject's visits become one sequence, built with tensor operations (no loop over subjects or
visits): an optional ``[CLS]``, then per visit, in order, an optional artificial time token
(CEHR-BERT's ``W0``-``W3``, ``M1``-``M11``, ``LT`` for the gap since the previous visit), an
optional visit-start ``VS``, the visit's codes, an optional visit-end ``VE`` and an optional
separator ``[SEP]`` (BEHRT). Tokens are packed to the left, so ``L`` is the longest subject's
token count, not ``V * C``.

Token ids share one space: ids below ``vocab_size`` are code rows of the estimator's vocabulary
(0 padding, 1 unknown), ``vocab_size + i`` is :data:`SPECIAL_TOKENS` ``[i]``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

SPECIAL_TOKENS: tuple[str, ...] = (
    "[MASK]",
    "[CLS]",
    "VS",
    "VE",
    "[SEP]",
    "W0",
    "W1",
    "W2",
    "W3",
    *(f"M{i}" for i in range(1, 12)),
    "LT",
)
MASK, CLS, VS, VE, SEP, W0 = 0, 1, 2, 3, 4, 5
M1, LT = 9, 20


def time_token(gap_days: torch.Tensor) -> torch.Tensor:
    """CEHR-BERT's artificial time token for a gap between visits (days): ``W{gap // 7}`` under 28
    days, ``M{gap // 30}`` (1-11) under 360 days, ``LT`` beyond; as indices into :data:`SPECIAL_TOKENS`."""
    gap = gap_days.floor().clamp(min=0).long()
    weeks = W0 + (gap // 7).clamp(0, 3)
    months = M1 - 1 + (gap // 30).clamp(1, 11)
    return torch.where(gap < 28, weeks, torch.where(gap < 360, months, torch.full_like(gap, LT)))


@dataclass(frozen=True)
class TokenLayout:
    """Which structural tokens a model's sequence holds."""

    cls: bool = True
    time_tokens: bool = False
    visit_start: bool = False
    visit_end: bool = False
    separator: bool = False


@dataclass
class Tokens:
    """A packed token batch; every field is ``[B, L]``."""

    ids: torch.Tensor  # long: code row (< vocab_size) or vocab_size + special index; 0 padding
    attend: torch.Tensor  # bool: a real token
    block: torch.Tensor  # long: visit whose causal block holds the token (-1 [CLS], V padding)
    order: torch.Tensor  # long: CEHR-BERT's visit order (visit + 1; a time token has the previous visit's; 0 [CLS])
    position: torch.Tensor  # long: 1-based position of a code inside its visit; 0 for other tokens
    segment: torch.Tensor  # long: 1/2 alternating per visit; 0 for [CLS], time tokens, padding
    days: torch.Tensor  # float: days since 1970-01-01 of the token's visit (the next visit's for a time token)
    ages: torch.Tensor  # float: age in years at that visit
    values: torch.Tensor  # float: standardised value of a code token (0 if none)
    has_value: torch.Tensor  # bool
    slot: torch.Tensor  # long: index of a code token in the flattened [B*V*C] grid; -1 otherwise

    @property
    def is_code(self) -> torch.Tensor:
        return self.slot >= 0


def layout_tokens(
    codes: torch.Tensor,
    values: torch.Tensor,
    has_value: torch.Tensor,
    visit_mask: torch.Tensor,
    visit_days: torch.Tensor | None,
    ages: torch.Tensor | None,
    vocab_size: int,
    layout: TokenLayout,
) -> Tokens:
    """Pack a visit batch into tokens.

    Args:
        codes: ``[B, V, C]`` code rows (0 padding).
        values: ``[B, V, C]`` standardised values.
        has_value: ``[B, V, C]`` flags: the code carries a value.
        visit_mask: ``[B, V]`` real visits.
        visit_days: ``[B, V]`` visit start in days since 1970 (zeros when ``None``).
        ages: ``[B, V]`` age in years (zeros when ``None``).
        vocab_size: the size of the code vocabulary (special ids follow it).
        layout: the model's structural tokens.
    """
    b, v, c = codes.shape
    device = codes.device
    if visit_days is None:
        visit_days = torch.zeros(b, v, device=device)
    if ages is None:
        ages = torch.zeros(b, v, device=device)
    visit_days, ages = visit_days.float(), ages.float()
    visit = torch.arange(v, device=device).expand(b, v)
    parts: list[dict[str, torch.Tensor]] = []

    def special(index: int | torch.Tensor, valid: torch.Tensor, order: torch.Tensor, segment: bool) -> dict:
        ids = vocab_size + (index if torch.is_tensor(index) else torch.full((b, v), index, device=device))
        return {
            "ids": ids.long(),
            "attend": valid,
            "block": visit,
            "order": order,
            "position": torch.zeros(b, v, dtype=torch.long, device=device),
            "segment": (1 + visit % 2) if segment else torch.zeros(b, v, dtype=torch.long, device=device),
            "days": visit_days,
            "ages": ages,
            "values": torch.zeros(b, v, device=device),
            "has_value": torch.zeros(b, v, dtype=torch.bool, device=device),
            "slot": torch.full((b, v), -1, dtype=torch.long, device=device),
        }

    if layout.time_tokens:
        previous_days = torch.cat([visit_days[:, :1], visit_days[:, :-1]], dim=1)
        previous_real = torch.cat([torch.zeros_like(visit_mask[:, :1]), visit_mask[:, :-1]], dim=1)
        parts.append(special(time_token(visit_days - previous_days), visit_mask & previous_real, visit, False))
    if layout.visit_start:
        parts.append(special(VS, visit_mask, visit + 1, True))
    code_valid = (codes > 0) & visit_mask[..., None]  # [B,V,C]
    grid = torch.arange(b * v * c, device=device).view(b, v, c)
    code_part = {
        "ids": codes.long(),
        "attend": code_valid,
        "block": visit[..., None].expand(b, v, c),
        "order": (visit + 1)[..., None].expand(b, v, c),
        "position": torch.arange(1, c + 1, device=device).expand(b, v, c),
        "segment": (1 + visit % 2)[..., None].expand(b, v, c),
        "days": visit_days[..., None].expand(b, v, c),
        "ages": ages[..., None].expand(b, v, c),
        "values": values.float() * has_value,
        "has_value": has_value & code_valid,
        "slot": torch.where(code_valid, grid, -1),
    }
    if layout.visit_end:
        parts.append(special(VE, visit_mask, visit + 1, True))
    if layout.separator:
        parts.append(special(SEP, visit_mask, visit + 1, True))
    n_before = (1 if layout.time_tokens else 0) + (1 if layout.visit_start else 0)
    names = [f.name for f in fields(Tokens)]
    # [B, V, S]: per visit, the structural tokens before the codes, the codes, those after.
    per_visit = {
        name: torch.cat(
            [p[name][..., None] for p in parts[:n_before]]
            + [code_part[name]]
            + [p[name][..., None] for p in parts[n_before:]],
            dim=-1,
        ).reshape(b, -1)
        for name in names
    }
    if layout.cls:
        head = {
            "ids": torch.full((b, 1), vocab_size + CLS, dtype=torch.long, device=device),
            "attend": torch.ones(b, 1, dtype=torch.bool, device=device),
            "block": torch.full((b, 1), -1, dtype=torch.long, device=device),
            "order": torch.zeros(b, 1, dtype=torch.long, device=device),
            "position": torch.zeros(b, 1, dtype=torch.long, device=device),
            "segment": torch.zeros(b, 1, dtype=torch.long, device=device),
            "days": visit_days[:, :1],
            "ages": ages[:, :1],
            "values": torch.zeros(b, 1, device=device),
            "has_value": torch.zeros(b, 1, dtype=torch.bool, device=device),
            "slot": torch.full((b, 1), -1, dtype=torch.long, device=device),
        }
        per_visit = {name: torch.cat([head[name], per_visit[name]], dim=1) for name in names}
    valid = per_visit["attend"]
    length = max(int(valid.sum(1).max()), 1)
    keep = torch.sort((~valid).to(torch.int8), dim=1, stable=True).indices[:, :length]  # real tokens first
    packed = {name: torch.gather(per_visit[name], 1, keep) for name in names}
    real = packed["attend"]
    packed["ids"] = torch.where(real, packed["ids"], 0)
    packed["block"] = torch.where(real, packed["block"], v)
    packed["slot"] = torch.where(real, packed["slot"], -1)
    for name in ("order", "position", "segment"):
        packed[name] = torch.where(real, packed[name], 0)
    return Tokens(**packed)


def pool_visits(hidden: torch.Tensor, tokens: Tokens, n_visits: int) -> torch.Tensor:
    """Mean of each visit's token states (its time token, VS, codes, VE, SEP): ``[B, L, H] -> [B, V, H]``."""
    b, length, h = hidden.shape
    inside = tokens.attend & (tokens.block >= 0) & (tokens.block < n_visits)
    index = torch.where(inside, tokens.block, n_visits)  # a spill-over row for [CLS] and padding
    sums = torch.zeros(b, n_visits + 1, h, dtype=hidden.dtype, device=hidden.device)
    sums.scatter_add_(1, index[..., None].expand(b, length, h), hidden * inside[..., None].to(hidden.dtype))
    counts = torch.zeros(b, n_visits + 1, dtype=hidden.dtype, device=hidden.device)
    counts.scatter_add_(1, index, inside.to(hidden.dtype))
    return sums[:, :n_visits] / counts[:, :n_visits].clamp(min=1)[..., None]


__all__ = ["SPECIAL_TOKENS", "TokenLayout", "Tokens", "layout_tokens", "pool_visits", "time_token"]
