"""BEHRT (Li et al., 2020) for ehrprog."""

from ehrprog_behrt.model import BehrtBackbone, behrt_backbone

__all__ = ["BehrtBackbone", "behrt_backbone"]
