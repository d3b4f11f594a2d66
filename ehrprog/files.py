"""The files and folders ehrprog writes and reads back: the modes users expect (not
safetensors' 0600), folders replaced whole by renames, output folders that never hold someone
else's files, and files checked against the size and SHA-256 recorded when they were written."""

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


def output_entries(root: Path, error: type[Exception]) -> list[str]:
    """The names in an output folder ``root`` (none if it is new or empty); ``error`` if ``root``
    exists and is not a folder."""
    if not root.exists() and not root.is_symlink():
        return []
    if root.is_symlink() or not root.is_dir():
        raise error("the output path exists and is not a folder", file=str(root))
    return sorted(p.name for p in root.iterdir())


def refuse_foreign(root: Path, foreign: list[str], error: type[Exception]) -> None:
    """``error`` naming the entries of ``root`` ehrprog did not write (ehrprog never deletes or
    overwrites those), when there are any."""
    if foreign:
        raise error(
            f"the output folder holds files ehrprog did not write ({', '.join(foreign[:5])}); ehrprog never "
            "deletes or overwrites those: choose a new or empty folder",
            file=str(root),
        )


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


__all__ = [
    "CHANGED",
    "file_problem",
    "output_entries",
    "refuse_foreign",
    "replace_folder",
    "save_tensors",
    "sha256",
    "temporary_sibling",
]
