"""Unit spellings reduced for lookup, so a lab's unit table (creatinine, eGFR) matches UCUM codes,
their common variants and OMOP unit concept names alike."""

from __future__ import annotations

import re

_UNIT_WORDS = (
    (r"micro(gram|mole)s?", lambda m: "ug" if m.group(1) == "gram" else "umol"),
    (r"milli(gram|mole)s?", lambda m: "mg" if m.group(1) == "gram" else "mmol"),
    (r"nano(mole)s?", lambda m: "nmol"),
    (r"grams?", lambda m: "g"),
    (r"(deci)?(liter|litre)s?", lambda m: "dl" if m.group(1) else "l"),
    (r"milli(liter|litre)s?", lambda m: "ml"),
)


def normalise_unit(unit: str) -> str:
    """A unit spelling reduced for lookup: lower case, no spaces or UCUM annotations (``{...}``),
    ``µ``/``μ``/``mc`` as ``u``, unit names (``milligram per deciliter``) as symbols (``mg/dl``)."""
    text = re.sub(r"\{[^}]*\}", "", unit.strip().lower())
    text = re.sub(r"milli(liter|litre)s?", "ml", text)
    for pattern, symbol in _UNIT_WORDS:
        text = re.sub(pattern, symbol, text)
    text = re.sub(r"\s*per\s*", "/", text)
    text = text.replace("µ", "u").replace("μ", "u").replace("mcg", "ug").replace("mcmol", "umol")
    return re.sub(r"\s+", "", text)


__all__ = ["normalise_unit"]
