"""Synthetic datasets: the embedded default for the demo and benchmarks (never a substitute for real data in tests)."""

from ehrprog.datasets.history import HistoryWorld
from ehrprog.datasets.records import egfr_to_creatinine
from ehrprog.datasets.simulate import oracle_risk, simulate_ckd, simulate_events, simulated_truth

__all__ = ["HistoryWorld", "egfr_to_creatinine", "oracle_risk", "simulate_ckd", "simulate_events", "simulated_truth"]
