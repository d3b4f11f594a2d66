"""Which subjects a pre-trained checkpoint read, without listing them: a Bloom filter of subject ids.

A checkpoint pre-trained on a population that holds a test subject has seen that subject's
records, so a model fine-tuned from it and scored on that subject is scored on data it learned
from. :class:`SubjectFingerprint` lets the evaluation find those subjects: ``contains(ids)`` is
True for every id the fingerprint was made of (no false negatives) and for about
``false_positive_rate`` of the others (default 1 in 10,000), so an overlap is never missed and
an exclusion rarely drops a subject that was not read. The ids themselves are not stored (the
filter holds ``bits`` bits; about 2.4 bytes a subject at the default rate).

Hashing: each id (as unsigned 64-bit) gives two SplitMix64 hashes ``h1``, ``h2``; its ``hashes``
positions are ``(h1 + i * h2) mod bits`` (Kirsch and Mitzenmacher's double hashing), all in numpy.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _positions(subject_ids: np.ndarray, bits: int, hashes: int) -> np.ndarray:
    """``[n, hashes]`` bit positions of each id."""
    ids = np.asarray(subject_ids, dtype=np.int64).view(np.uint64)
    h1 = _splitmix64(ids)
    h2 = _splitmix64(h1 ^ np.uint64(0xD6E8FEB86659FD93)) | np.uint64(1)
    steps = np.arange(hashes, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return ((h1[:, None] + steps[None, :] * h2[:, None]) % np.uint64(bits)).astype(np.int64)


@dataclass(frozen=True)
class SubjectFingerprint:
    """A Bloom filter of subject ids (see the module docstring).

    Attributes:
        n_subjects: how many distinct ids it was made of.
        bits: the filter's size in bits.
        hashes: bit positions set per id.
        data: the bits, packed (``ceil(bits / 8)`` bytes, little bit order).
    """

    n_subjects: int
    bits: int
    hashes: int
    data: bytes

    @classmethod
    def of(cls, subject_ids: Any, false_positive_rate: float = 1e-4) -> SubjectFingerprint:
        """The fingerprint of ``subject_ids`` (any int64 ids; repeats count once)."""
        if not 0 < false_positive_rate < 1:
            raise ValueError(f"false_positive_rate must be in (0, 1), got {false_positive_rate}")
        ids = np.unique(np.asarray(subject_ids, dtype=np.int64))
        n = max(len(ids), 1)
        bits = max(64, math.ceil(-n * math.log(false_positive_rate) / math.log(2) ** 2))
        hashes = max(1, round(bits / n * math.log(2)))
        filled = np.zeros(bits, dtype=bool)
        filled[_positions(ids, bits, hashes).ravel()] = True
        return cls(len(ids), bits, hashes, np.packbits(filled, bitorder="little").tobytes())

    def contains(self, subject_ids: Any) -> np.ndarray:
        """``[n]`` bool: True for every id this was made of (and rarely for another)."""
        ids = np.asarray(subject_ids, dtype=np.int64)
        if not len(ids):
            return np.zeros(0, dtype=bool)
        filled = np.unpackbits(np.frombuffer(self.data, dtype=np.uint8), bitorder="little", count=self.bits)
        return filled[_positions(ids, self.bits, self.hashes)].astype(bool).all(axis=1)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: the sizes and the bits in base64."""
        return {
            "n_subjects": self.n_subjects,
            "bits": self.bits,
            "hashes": self.hashes,
            "data": base64.b64encode(self.data).decode("ascii"),
        }

    @classmethod
    def from_json(cls, value: Any, where: str = "subject fingerprint") -> SubjectFingerprint:
        """Read :meth:`to_json`'s form back, checked (a ``ValueError`` naming ``where`` otherwise)."""
        try:
            n, bits, hashes = (int(value[k]) for k in ("n_subjects", "bits", "hashes"))
            data = base64.b64decode(value["data"], validate=True)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{where}: not a subject fingerprint ({error})") from error
        if bits < 1 or not 1 <= hashes <= 64 or n < 0 or len(data) != math.ceil(bits / 8):
            raise ValueError(f"{where}: inconsistent subject fingerprint ({bits} bits in {len(data)} bytes)")
        return cls(n, bits, hashes, data)


__all__ = ["SubjectFingerprint"]
