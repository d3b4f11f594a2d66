"""Writing files the way users expect (permissions as their umask gives, not safetensors' 0600)."""

from __future__ import annotations

import os
from pathlib import Path


def save_tensors(tensors: dict, path: str | Path) -> None:
    """``safetensors.torch.save_file`` and then the file mode any new file would get (0666 less
    the umask): safetensors writes 0600, which hides saved models from the user's group."""
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


__all__ = ["save_tensors"]
