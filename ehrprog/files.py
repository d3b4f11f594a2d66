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


def temporary_sibling(final: Path) -> Path:
    """A new empty hidden folder beside ``final`` to write into before :func:`replace_folder`."""
    import shutil

    final.parent.mkdir(parents=True, exist_ok=True)
    folder = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    return folder


def replace_folder(written: Path, final: Path) -> None:
    """Put the complete folder ``written`` at ``final`` by renames, so ``final`` holds the old
    folder or the new one, never a mixture: an old one is moved aside first and deleted only once
    the new one is in place (put back if that rename fails). The caller has checked that the old
    folder is one ehrprog may replace."""
    import shutil

    if not final.exists():
        os.replace(written, final)
        return
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(final, old)
    try:
        os.replace(written, final)
    except OSError:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


__all__ = ["replace_folder", "save_tensors", "temporary_sibling"]
