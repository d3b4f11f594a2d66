"""Med-BERT (Rasmy et al., 2021) for ehrprog."""

from ehrprog_medbert.model import MedBertBackbone, medbert_backbone

__all__ = ["MedBertBackbone", "medbert_backbone"]
