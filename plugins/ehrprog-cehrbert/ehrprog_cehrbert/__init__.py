"""CEHR-BERT (Pang et al., 2021) for ehrprog, faithful to the ``cehrbert`` package's model."""

from ehrprog_cehrbert.model import CehrBertConfig, CehrBertForPreTraining, load_cehrbert_checkpoint

__all__ = ["CehrBertConfig", "CehrBertForPreTraining", "load_cehrbert_checkpoint"]
