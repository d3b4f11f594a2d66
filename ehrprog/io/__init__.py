"""Adapters: OMOP and MEDS in, one event schema out."""

from ehrprog.io.meds import read_meds, write_meds
from ehrprog.io.omop import read_omop

__all__ = ["read_meds", "read_omop", "write_meds"]
