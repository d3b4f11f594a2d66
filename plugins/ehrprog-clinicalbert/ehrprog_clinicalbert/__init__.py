"""ClinicalBERT-style description embeddings of codes for ehrprog."""

from ehrprog_clinicalbert.model import ClinicalBertBackbone, clinicalbert_backbone, code_text, encode_texts

__all__ = ["ClinicalBertBackbone", "clinicalbert_backbone", "code_text", "encode_texts"]
