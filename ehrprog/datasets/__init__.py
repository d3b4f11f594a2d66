"""Synthetic datasets: the embedded default for the demo and benchmarks (never a substitute for real data in tests)."""

from ehrprog.datasets.simulate import egfr_to_creatinine, simulate_ckd, simulate_events

__all__ = ["egfr_to_creatinine", "simulate_ckd", "simulate_events"]
