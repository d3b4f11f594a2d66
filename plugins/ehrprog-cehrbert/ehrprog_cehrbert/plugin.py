"""The ehrprog plugin of CEHR-BERT: registers the loader of ``cehrbert`` checkpoints."""

from __future__ import annotations

import pluggy

hookimpl = pluggy.HookimplMarker("ehrprog")


def _load(folder):
    from ehrprog_cehrbert.model import load_cehrbert_checkpoint

    return load_cehrbert_checkpoint(folder)


@hookimpl
def ehrprog_register_checkpoint_loaders(register) -> None:
    from ehrprog.plugins import CheckpointLoader

    register(CheckpointLoader("cehrbert", _load, "checkpoints saved by the cehrbert package (save_pretrained)"))
