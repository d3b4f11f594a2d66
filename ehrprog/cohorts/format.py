"""What a saved cohort folder must look like, checked before anything in it is trusted.

``manifest.json`` and each ``shards/<name>/shard.json`` are validated with pydantic: shard names
are plain names inside the folder (no path separators, no ``..``, unique), counts are
non-negative and add up, every file a shard lists is a relative path inside its shard with a size
and a SHA-256. A file is then checked against its record before it is read: its size always, its
hash once per process (:func:`verify_file`), so an edited, truncated, swapped or missing file is
an :class:`~ehrprog.core.errors.InputError` naming the shard and the file, never data read silently.

:func:`cohort_files` tells what ehrprog wrote in a cohort folder (the manifest, each shard's
``shard.json`` and the files it lists), so that a writer (:class:`~ehrprog.core.output.OutputFolder`)
never deletes or overwrites anything else in it, at any depth.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError, field_validator, model_validator

from ehrprog.core.errors import InputError
from ehrprog.core.files import CHANGED, file_problem, sha256

FORMAT = "ehrprog-cohort/1"
MANIFEST = "manifest.json"
SHARD_META = "shard.json"
#: A shard name: a plain folder name (what ehrprog writes is ``00000``, ``00001``, ...).
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
#: The files every shard with points holds (besides ``arrays/*.npy``).
SHARD_TABLES = ("points.parquet", "labels.parquet", "visits.parquet", "labs.parquet", "stages.parquet")


def _plain_name(value: str) -> str:
    if not _NAME.match(value) or value in (".", ".."):
        raise ValueError(f"{value!r} is not a plain shard name (letters, digits, '_', '-', '.'; no '/' or '..')")
    return value


class ShardEntry(BaseModel):
    """One shard as the manifest lists it."""

    model_config = ConfigDict(extra="ignore")
    name: str
    source: str = ""
    fingerprint: str = ""
    subjects: NonNegativeInt = 0
    points: NonNegativeInt = 0
    visits: NonNegativeInt = 0

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _plain_name(value)


class EmptyShardEntry(ShardEntry):
    """A piece of the input that yielded no prediction point (no counts)."""


class Manifest(BaseModel):
    """``manifest.json`` of a saved cohort."""

    model_config = ConfigDict(extra="ignore")
    format: Literal["ehrprog-cohort/1"]
    dataset: str = ""
    shards: list[ShardEntry] = Field(min_length=1)
    empty_shards: list[EmptyShardEntry] = Field(default_factory=list)
    subjects: NonNegativeInt
    points: NonNegativeInt
    visits: NonNegativeInt
    strategy: str | dict[str, float]
    lab_bands: dict[str, list[tuple[float, int]]] = Field(default_factory=dict)
    report: dict[str, int] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        names = [s.name for s in self.shards] + [s.name for s in self.empty_shards]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"shard names listed more than once: {', '.join(repeated)}")
        for total in ("subjects", "points", "visits"):
            summed = sum(getattr(s, total) for s in self.shards)
            if summed != getattr(self, total):
                raise ValueError(f"{total} is {getattr(self, total):,} but the shards list {summed:,}")
        return self


class FileRecord(BaseModel):
    """One file of a shard: its size (bytes) and SHA-256 (hex)."""

    model_config = ConfigDict(extra="forbid")
    bytes: NonNegativeInt
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ShardMeta(BaseModel):
    """``shard.json``: what one shard holds."""

    model_config = ConfigDict(extra="ignore")
    name: str
    source: str = ""
    fingerprint: str = ""
    subjects: NonNegativeInt
    points: NonNegativeInt
    visits: NonNegativeInt
    files: dict[str, FileRecord]

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _plain_name(value)

    @field_validator("files")
    @classmethod
    def _relative_inside(cls, files: dict[str, FileRecord]) -> dict[str, FileRecord]:
        for relative in files:  # string tests: this runs on every file of every shard at load
            parts = relative.split("/")
            if relative.startswith("/") or "\\" in relative or any(part in ("", ".", "..") for part in parts):
                raise ValueError(f"file {relative!r} is not a relative path inside the shard")
        return files


def _errors(error: ValidationError) -> str:
    shown = []
    for item in error.errors()[:5]:
        where = ".".join(str(part) for part in item["loc"]) or "(the whole file)"
        shown.append(f"{where}: {item['msg']}")
    return "; ".join(shown)


def read_json(path: Path, what: str) -> Any:
    """A JSON file, or an :class:`InputError` naming it (missing, unreadable, not JSON)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"{what} is missing", file=str(path)) from None
    except OSError as error:
        raise InputError(f"cannot read {what}: {error.strerror or error}", file=str(path)) from None
    try:
        return json.loads(text)
    except ValueError as error:
        raise InputError(f"{what} is not valid JSON: {error}", file=str(path)) from None


def read_manifest(root: Path) -> Manifest:
    """The validated manifest of the saved cohort at ``root``."""
    path = root / MANIFEST
    if not path.is_file():
        from ehrprog.core.output import set_aside

        raise InputError(
            f"not a saved cohort: no manifest.json (write one with cohort.save){set_aside(root)}", file=str(root)
        )
    raw = read_json(path, "manifest.json")
    if not isinstance(raw, dict):
        raise InputError(f"manifest.json must hold a JSON object, not {type(raw).__name__}", file=str(path))
    if raw.get("format") != FORMAT:
        raise InputError(
            f"unknown saved-cohort format {raw.get('format')!r} (this version reads {FORMAT!r})", file=str(path)
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as error:
        raise InputError(f"manifest.json is not a valid ehrprog manifest: {_errors(error)}", file=str(path)) from None


def read_shard_meta(folder: Path, entry: ShardEntry) -> ShardMeta:
    """The validated ``shard.json`` of the shard ``folder``, checked against the manifest's ``entry``."""
    path = folder / SHARD_META
    if folder.is_symlink() or not folder.is_dir():
        what = "a link" if folder.is_symlink() else "missing"
        raise InputError(f"shard {entry.name!r} listed in the manifest is {what}", file=str(folder))
    raw = read_json(path, "shard.json")
    if not isinstance(raw, dict):
        raise InputError(f"shard.json must hold a JSON object, not {type(raw).__name__}", file=str(path))
    try:
        meta = ShardMeta.model_validate(raw)
    except ValidationError as error:
        raise InputError(f"shard.json is not valid: {_errors(error)}", file=str(path)) from None
    for field in ("name", "points", "subjects", "visits"):
        if getattr(meta, field) != getattr(entry, field):
            raise InputError(
                f"shard {entry.name!r}: {field} is {getattr(meta, field)!r} in shard.json but "
                f"{getattr(entry, field)!r} in the manifest",
                file=str(path),
            )
    missing = [name for name in SHARD_TABLES if name not in meta.files]
    if meta.points and (missing or not any(f.startswith("arrays/") for f in meta.files)):
        raise InputError(f"shard {entry.name!r}: shard.json lists no {', '.join(missing) or 'arrays/'}", file=str(path))
    for relative, record in meta.files.items():
        check_size(folder, entry.name, relative, record)
    return meta


def check_size(folder: Path, shard: str, relative: str, record: FileRecord) -> str:
    """The path of a shard's file after checking that it is a plain file inside the shard (no
    link out of it) of the recorded size (``ehrprog.core.files.file_problem``)."""
    path = os.path.join(folder, relative)  # not pathlib: this runs on every file of every shard at load
    problem = file_problem(path, record.bytes)
    if problem is not None:
        raise InputError(f"shard {shard!r}: {relative} {problem}", file=path)
    return path


#: Files verified in this process: (path, size, modification time ns, SHA-256).
_VERIFIED: set[tuple[str, int, int, str]] = set()


def verify_file(folder: Path, shard: str, relative: str, record: FileRecord, contents: bool = False) -> Path | bytes:
    """:func:`check_size`, then the SHA-256 once per process (a file changed since it was verified
    is hashed again). With ``contents`` the file's bytes are returned, hashed as they are read
    (one read, where the caller would read the file anyway)."""
    path = Path(check_size(folder, shard, relative, record))
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, record.sha256)
    data = path.read_bytes() if contents else None
    if key not in _VERIFIED:
        digest = hashlib.sha256(data).hexdigest() if data is not None else sha256(path)
        if digest != record.sha256:
            raise InputError(f"shard {shard!r}: {relative} {CHANGED}", file=str(path))
        _VERIFIED.add(key)
    return data if data is not None else path


def is_saved_cohort(root: Path) -> bool:
    """Whether ``root`` holds a manifest of this format (not whether it is whole)."""
    try:
        raw = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and raw.get("format") == FORMAT


#: A killed shard writer's hidden folder inside ``shards/`` (its files are ehrprog's).
SHARD_TMP = re.compile(r"\.[A-Za-z0-9_][A-Za-z0-9_.-]*\.tmp-\d+")


def cohort_files(root: Path) -> set[str] | None:
    """The files ehrprog wrote in a cohort folder (relative POSIX paths): ``manifest.json``,
    ``codes.parquet``, each shard's ``shard.json`` and the files it lists, and the files in a
    killed shard writer's hidden ``shards/.NAME.tmp-PID``; ``None`` when ``root`` holds neither a
    manifest of this format nor a shard with a ``shard.json`` (a build's shards before its
    manifest)."""
    shards = root / "shards"
    folders = [d for d in shards.iterdir() if d.is_dir() and not d.is_symlink()] if shards.is_dir() else []
    records = {}
    for folder in folders:
        if SHARD_TMP.fullmatch(folder.name):
            continue
        try:
            meta = json.loads((folder / SHARD_META).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and isinstance(meta.get("files", {}), dict):
            records[folder.name] = meta.get("files", {})
    if not is_saved_cohort(root) and not records:
        return None
    from ehrprog.core.output import tree

    owned = {MANIFEST, "codes.parquet"}
    for name, files in records.items():
        owned |= {f"shards/{name}/{SHARD_META}"} | {f"shards/{name}/{relative}" for relative in files}
    for folder in folders:
        if SHARD_TMP.fullmatch(folder.name):
            owned |= {f"shards/{folder.name}/{relative}" for relative in tree(folder)}
    return owned


def same_folder(a: Path, b: Path) -> bool:
    """Whether two paths name the same folder (links resolved)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


__all__ = [
    "FORMAT",
    "MANIFEST",
    "SHARD_META",
    "SHARD_TMP",
    "Manifest",
    "ShardMeta",
    "cohort_files",
    "is_saved_cohort",
    "read_manifest",
    "read_shard_meta",
    "same_folder",
    "verify_file",
]
