"""The one rule every writer of ehrprog follows (cohort, build, model, pretrain, evaluate, report,
simulate, convert, MEDS), in one place:

1. **An output is never an input**: a folder that is, holds, or lies inside a folder the command
   reads is refused, naming both (``convert SRC SRC/..`` deleted the source).
2. **What ehrprog did not write is never deleted or replaced.** A non-empty folder that is not
   of the writer's own kind (an OMOP extract given to ``simulate``, a saved model given to
   ``pretrain``) is refused; with ``overwrite`` ehrprog writes its files into it and keeps every
   other file where it is. A folder of its own kind is replaced, but a file inside it that ehrprog
   did not write (``shards/00000/README.txt``) is refused, or kept with ``overwrite``. What
   ehrprog wrote is what the folder's own record lists (a cohort's manifest and ``shard.json``
   files, a model's ``config.json``), or else the list :data:`MARKER` holds.
3. **Whole or not at all**: a folder is written into a hidden sibling (``.NAME.tmp-PID``) and
   renamed into place; the old one is set aside (``.NAME.old-PID``), the user's files are moved
   from it into the new one, and it is deleted once empty. A failed write removes its temporary
   folder (a full disk does not stay full). Leftovers of a killed writer are settled the next
   time the folder is written: a temporary folder of a process that has ended is removed; a
   folder set aside by a process killed between its two renames is put back (or, when the new
   folder is in place, the user's files still in it are moved across); while another process is
   writing the folder, the write is refused naming its process id.
4. **Every OS error names the folder** (disk full, file too large, permission denied).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ehrprog.core.errors import InputError

log = logging.getLogger(__name__)

#: The list of the files ehrprog wrote into a folder that has no record of its own (MEDS, a
#: pre-trained checkpoint, a report, a simulated extract): ``{"kind": ..., "files": [...]}``.
MARKER = ".ehrprog-output.json"

#: A function that tells what ehrprog wrote in an existing folder of one kind: the relative
#: paths (POSIX) of its files, or ``None`` when the folder is not of that kind.
Owned = Callable[[Path], "set[str] | None"]


def tree(root: Path) -> list[str]:
    """Every file under ``root`` as a relative POSIX path; a link counts as a file (never followed)."""
    found = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        base = Path(folder).relative_to(root)
        links = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
        found += [(base / name).as_posix() for name in [*files, *links]]
    return sorted(found)


def marked(kind: str) -> Owned:
    """The files a folder's :data:`MARKER` lists when it names ``kind`` (the marker included)."""

    def owned(root: Path) -> set[str] | None:
        try:
            record = json.loads((root / MARKER).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("kind") != kind or not isinstance(record.get("files"), list):
            return None
        return {str(name) for name in record["files"]} | {MARKER}

    return owned


def _relation(a: Path, b: Path) -> str | None:
    """How folder ``a`` relates to ``b`` (links resolved): "is", "holds", "is inside", or None."""
    a, b = a.resolve(), b.resolve()
    if a == b:
        return "is"
    if a in b.parents:
        return "holds"
    if b in a.parents:
        return "is inside"
    return None


def process_alive(pid: int) -> bool:
    """Whether another process ``pid`` runs (this process's own leftovers count as ended)."""
    if pid == os.getpid():
        return False  # this process's own leftover of an earlier, failed write
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputFolder:
    """One output folder of a writer, checked before any work and written whole.

    Args:
        path: the folder to write.
        kind: what the writer writes (``"cohort"``, ``"model"``, ``"MEDS dataset"``, ...), said in errors.
        owned: what ehrprog wrote in an existing folder of this kind (see :data:`Owned`); default
            the :data:`MARKER`'s list for ``kind``.
        inputs: the folders (or files) the command reads; the output must not be, hold or lie in one.
        overwrite: write into a non-empty folder of another kind, and keep the files ehrprog did
            not write in a folder of its own kind (without it both are refused).
        error: the exception type raised (with ``rule`` and ``file=``).
        marker: write :data:`MARKER` listing the written files (for kinds without a record of their own).
        can_overwrite: whether the writer offers ``overwrite`` (its errors suggest it only then).

    Use: ``out = OutputFolder(...).check()`` before reading any data, then
    ``with out.writing() as folder: ...`` to write the files into ``folder``.
    """

    def __init__(
        self,
        path: str | Path,
        kind: str,
        *,
        owned: Owned | None = None,
        inputs: Iterable[str | Path] = (),
        overwrite: bool = False,
        error: type[Exception] = InputError,
        marker: bool = True,
        can_overwrite: bool = True,
    ) -> None:
        self.final = Path(path)
        self.kind = kind
        self.owned = owned or marked(kind)
        self.inputs = [Path(p) for p in inputs]
        self.overwrite = overwrite
        self.error = error
        self.marker = marker
        self.can_overwrite = can_overwrite
        self.keep: list[str] = []  # the user's files in the folder, kept where they are
        self.checked = False

    def _fail(self, rule: str, file: Path | None = None) -> Exception:
        return self.error(rule, file=str(file or self.final))

    # ------------------------------------------------------------------ check
    def check(self) -> OutputFolder:
        """Apply the rule to the folder as it is now (before any data is read); returns self."""
        for source in self.inputs:
            relation = _relation(self.final, source)
            if relation is not None:
                raise self._fail(
                    f"the output folder {relation} an input of this command ({source}): writing it could "
                    "replace or delete what is being read; choose a folder outside the input"
                )
        self._settle_leftovers()
        if self.final.is_symlink() or (self.final.exists() and not self.final.is_dir()):
            raise self._fail("the output path exists and is not a folder")
        files = tree(self.final) if self.final.exists() else []
        if not files:
            self.keep, self.checked = [], True
            return self
        owned = self.owned(self.final)
        foreign = files if owned is None else [f for f in files if f not in owned]
        if foreign and not self.overwrite:
            listed = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            what = "is not empty and is not an ehrprog " + self.kind + " folder: it" if owned is None else ""
            hint = (
                ", or pass --overwrite (overwrite=True) to write beside them, keeping them"
                if self.can_overwrite
                else ""
            )
            raise self._fail(
                f"the output folder {what} holds files ehrprog did not write ({listed}); ehrprog never deletes or "
                f"overwrites those: choose a new or empty folder{hint}".replace("folder  holds", "folder holds")
            )
        self.keep, self.checked = foreign, True
        return self

    def _leftovers(self) -> list[tuple[Path, str, int]]:
        parent, name = self.final.parent, self.final.name
        if not parent.is_dir():
            return []
        pattern = re.compile(rf"\.{re.escape(name)}\.(tmp|old)-(\d+)")
        found = []
        for entry in parent.iterdir():
            match = pattern.fullmatch(entry.name)
            if match:
                found.append((entry, match[1], int(match[2])))
        return sorted(found)

    def _settle_leftovers(self) -> None:
        for entry, what, pid in self._leftovers():
            if process_alive(pid):
                raise self._fail(
                    f"another ehrprog process (pid {pid}) is writing this folder ({entry.name} beside it); wait "
                    f"for it to end (if no process {pid} runs, remove {entry})"
                )
            if what == "tmp":  # a killed writer's half-written folder: only ehrprog's files are in it
                shutil.rmtree(entry, ignore_errors=True)
                log.warning("removed %s, left by a write that did not finish", entry)
            elif not self.final.exists() and not self.final.is_symlink():
                os.replace(entry, self.final)
                log.warning("put back %s as %s: a write was stopped between its two renames", entry, self.final)
            else:
                self._empty_old(entry)

    # ------------------------------------------------------------------ write
    @contextmanager
    def writing(self) -> Iterator[Path]:
        """A new hidden folder beside the output to write into; on success it replaces the output
        (see the module docstring), on failure it is removed and an OS error names the folder."""
        if not self.checked:
            self.check()
        temporary = self.final.parent / f".{self.final.name}.tmp-{os.getpid()}"
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(temporary, ignore_errors=True)
            temporary.mkdir()
            yield temporary
            written = tree(temporary)
            clash = sorted(set(written) & set(self.keep))
            if clash:
                raise self._fail(
                    f"the output folder holds {', '.join(clash[:5])}, which ehrprog did not write and would "
                    "replace; move it out of the folder"
                )
            if self.marker:
                (temporary / MARKER).write_text(json.dumps({"kind": self.kind, "files": written}, indent=1))
            self._put_in_place(temporary)
        except BaseException as error:
            shutil.rmtree(temporary, ignore_errors=True)
            os_error = _as_os_error(error)
            if os_error is not None:
                raise self._fail(_os_rule(os_error, self.kind)) from error
            raise

    def _put_in_place(self, temporary: Path) -> None:
        if not self.final.exists() and not self.final.is_symlink():
            os.replace(temporary, self.final)
            return
        old = self.final.parent / f".{self.final.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(self.final, old)
        try:
            os.replace(temporary, self.final)
        except OSError:
            os.replace(old, self.final)
            raise
        self._empty_old(old)

    def _empty_old(self, old: Path) -> None:
        """Move the user's files from a folder set aside into the output, delete what ehrprog
        wrote in it, and remove it once empty; a file that cannot move is left there, named."""
        owned = self.owned(old) or set()
        files = tree(old)
        stuck = []
        for name in files:
            if name in owned:
                continue
            target = self.final / name
            if target.exists() or target.is_symlink():
                stuck.append(name)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(old / name, target)
        if stuck:
            log.warning(
                "%s is left beside %s: it holds %s, which ehrprog did not write and which the new folder also "
                "holds; move it where you want it and delete the folder",
                old.name,
                self.final,
                ", ".join(stuck[:5]),
            )
            return
        shutil.rmtree(old, ignore_errors=True)


def set_aside(final: str | Path) -> str:
    """What a reader says of a missing folder ``final`` whose previous version a killed write set
    aside (``.NAME.old-PID`` beside it): where it is and how to get it back; ``""`` otherwise."""
    final = Path(final)
    if final.exists() or not final.parent.is_dir():
        return ""
    pattern = re.compile(rf"\.{re.escape(final.name)}\.old-\d+")
    aside = sorted(p for p in final.parent.iterdir() if pattern.fullmatch(p.name))
    if not aside:
        return ""
    return (
        f"; a write was stopped between its two renames and the previous folder is at {aside[-1]}: rename it back "
        f"to {final.name} (writing {final.name} again puts it back first)"
    )


def _as_os_error(error: BaseException) -> OSError | None:
    """``error`` as an OS error where it is one, or wraps one in its message as polars and
    pyarrow do (``"... File too large (os error 27)"``, ``"[Errno 28] No space left"``)."""
    if isinstance(error, OSError) and not isinstance(error, ValueError):
        return error
    match = re.search(r"\(os error (\d+)\)|\[Errno (\d+)\]", str(error))
    if match is None:
        return None
    code = int(match[1] or match[2])
    return OSError(code, os.strerror(code))


def _os_rule(error: OSError, kind: str) -> str:
    """An OS error as a rule naming what failed: disk full and file size limits in words."""
    reason = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EFBIG: "a file is larger than this file system allows",
        errno.EACCES: "permission denied",
        errno.EROFS: "the file system is read-only",
    }.get(error.errno, error.strerror or str(error))
    where = f" ({error.filename})" if error.filename else ""
    return f"cannot write the {kind} folder: {reason}{where}; nothing of it was kept"


__all__ = ["MARKER", "OutputFolder", "marked", "process_alive", "set_aside", "tree"]
