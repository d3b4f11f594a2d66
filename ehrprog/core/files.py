"""The files and folders ehrprog writes and reads back: the modes users expect (not
safetensors' 0600) and files checked against the size and SHA-256 recorded when they were
written. Writing output folders is :mod:`ehrprog.core.output`'s."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def sha256(path: Path) -> str:
    """The SHA-256 (hex) of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_problem(path: str | Path, size: int | None) -> str | None:
    """What is wrong with a file recorded at ``size`` bytes (``None``: any size), or ``None``: a
    link (ehrprog's folders hold plain files: a link could lead out of the folder), missing,
    unreadable, not a file, or of another size. The SHA-256 is the caller's (it may be checked
    later, or once). One ``lstat`` and one access check (it runs on every file of a cohort at load)."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return "is missing"
    except OSError as error:
        return f"cannot read it: {error.strerror or error}"
    if stat.S_ISLNK(status.st_mode):
        return "is a link; ehrprog's folders hold plain files"
    if not stat.S_ISREG(status.st_mode):
        return "is not a file"
    if not os.access(path, os.R_OK):
        return "cannot read it: Permission denied"
    if size is not None and status.st_size != size:
        return (
            f"has {status.st_size:,} bytes, {size:,} were recorded (it was changed, truncated or replaced after it "
            "was written)"
        )
    return None


#: The SHA-256 mismatch, said the same way for every folder.
CHANGED = "does not match the SHA-256 recorded when it was written (its content was changed since)"


def save_tensors(tensors: dict, path: str | Path) -> None:
    """``safetensors.torch.save_file`` and then the file mode any new file would get (0666 less
    the umask): safetensors writes 0600, which hides saved models from the user's group."""
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


__all__ = [
    "CHANGED",
    "file_problem",
    "save_tensors",
    "sha256",
]
