"""Pre-trained backbones on disk (Hugging Face layout) and vocabulary alignment.

A folder holds ``config.json`` (``model_type``, ``format``, ``architecture``), ``model.safetensors``
and ``vocab.json`` (the code string of every embedding row from 2 on, the special tokens, and the
per-code value statistics used for standardising). Loading reads JSON and safetensors only.

Alignment: the user's vocabulary rarely equals the one a model was pre-trained on. Each user code
takes the pre-trained row of the same code string; failing that, of the same OMOP concept
(``OMOP/313217`` matches a bare ``313217``, as cehrbert spells concept ids). Codes the pre-trained
vocabulary lacks start from the mean of the pre-trained code embeddings (and the mean MLM bias):
a neutral point that fine-tuning moves, rather than noise. Padding stays zero; the unknown row
keeps the pre-trained unknown row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from ehrprog.cohorts.fingerprint import SubjectFingerprint
from ehrprog.core.files import save_tensors
from ehrprog.networks.backbones.tokens import SPECIAL_TOKENS

FORMAT = "ehrprog.backbone/1"


def _key(code: str) -> str:
    return code[5:] if code.startswith("OMOP/") else code


def match_codes(user_codes: Sequence[str], pretrained_codes: Sequence[str]) -> np.ndarray:
    """For each user code, its pre-trained index (into ``pretrained_codes``) or -1."""
    exact = {code: i for i, code in enumerate(pretrained_codes)}
    by_key: dict[str, int] = {}
    for i, code in enumerate(pretrained_codes):
        by_key.setdefault(_key(code), i)
    return np.array([exact.get(code, by_key.get(_key(code), -1)) for code in user_codes], dtype=np.int64)


def align_rows(pretrained: torch.Tensor, pretrained_codes: Sequence[str], user_codes: Sequence[str]) -> tuple:
    """A vocabulary-indexed tensor (rows 0 padding, 1 unknown, 2.. codes) re-indexed to the user's
    codes; unseen codes get the mean of the pre-trained code rows. Returns ``(tensor, matched)``."""
    index = match_codes(user_codes, pretrained_codes)
    code_rows = pretrained[2:]
    fill = code_rows.mean(0) if len(code_rows) else torch.zeros_like(pretrained[0])
    out = fill.expand(len(user_codes) + 2, *pretrained.shape[1:]).clone()
    out[:2] = pretrained[:2]
    seen = index >= 0
    out[2:][torch.from_numpy(seen)] = code_rows[torch.from_numpy(index[seen])]
    return out, int(seen.sum())


#: What :func:`save_pretrained` writes, as its output marker names it.
CHECKPOINT_KIND = "pre-trained backbone"
#: The files of the layout (besides the output marker).
CHECKPOINT_FILES = (
    "config.json",
    "model.safetensors",
    "vocab.json",
    "pretraining_history.json",
    "pretraining_subjects.json",
)
#: The file of a checkpoint ``ehrprog pretrain`` wrote that fingerprints the subjects it read.
SUBJECTS_FILE = "pretraining_subjects.json"


def checkpoint_files(root: Path) -> set[str] | None:
    """The files ehrprog wrote in a pre-trained backbone folder: those its output marker lists,
    or, in a folder an earlier ehrprog wrote (``config.json`` of this format, no marker), the
    files of the layout; ``None`` for any other folder (a saved estimator, a Hugging Face model)."""
    from ehrprog.core.output import marked

    owned = marked(CHECKPOINT_KIND)(root)
    if owned is not None:
        return owned
    try:
        config = json.loads((root / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return set(CHECKPOINT_FILES) if isinstance(config, dict) and config.get("format") == FORMAT else None


def checkpoint_output(folder: str | Path, *, overwrite: bool = False, inputs: Sequence[str | Path] = ()):
    """The :class:`~ehrprog.core.output.OutputFolder` of a pre-trained backbone folder, checked (call
    it before the work that fills it: a saved estimator or another model's folder is refused)."""
    from ehrprog.core.output import OutputFolder

    return OutputFolder(folder, CHECKPOINT_KIND, owned=checkpoint_files, inputs=inputs, overwrite=overwrite).check()


def save_pretrained(
    module: torch.nn.Module,
    codes: Sequence[str],
    folder: str | Path,
    *,
    overwrite: bool = False,
    files: dict[str, str] | None = None,
    **extra: Any,
) -> Path:
    """Write ``module`` (a backbone with ``model_type`` and ``architecture()``) to ``folder``:
    ``config.json``, ``model.safetensors``, ``vocab.json`` and ``files`` (name -> text), whole
    or not at all (:class:`~ehrprog.core.output.OutputFolder`: a folder holding another model's
    files, or any file ehrprog did not write, is refused unless ``overwrite``, and then kept)."""
    out = checkpoint_output(folder, overwrite=overwrite)
    architecture = {k: v for k, v in module.architecture().items() if k != "checkpoint"}
    config = {"format": FORMAT, "model_type": module.model_type, "architecture": architecture, **extra}
    with out.writing() as root:
        (root / "config.json").write_text(json.dumps(config, indent=1))
        save_tensors({k: v.detach().contiguous() for k, v in module.state_dict().items()}, root / "model.safetensors")
        (root / "vocab.json").write_text(json.dumps({"codes": list(codes), "special_tokens": list(SPECIAL_TOKENS)}))
        for name, text in (files or {}).items():
            (root / name).write_text(text)
    return out.final


def read_pretrained(folder: str | Path, model_type: str) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]:
    """``(architecture, state_dict, codes)`` of an ehrprog backbone folder of ``model_type``.

    Raises:
        FileNotFoundError: a file of the layout is missing (named).
        ValueError: the folder holds another model type or format.
    """
    root = Path(folder)
    for name in ("config.json", "model.safetensors", "vocab.json"):
        if not (root / name).is_file():
            raise FileNotFoundError(
                f"{root}: no {name} (a pre-trained backbone folder holds config.json, "
                "model.safetensors and vocab.json; `ehrprog pretrain` writes one)"
            )
    config = json.loads((root / "config.json").read_text())
    if config.get("format") != FORMAT or config.get("model_type") != model_type:
        raise ValueError(
            f"{root / 'config.json'}: holds model_type {config.get('model_type')!r} "
            f"(format {config.get('format')!r}); this backbone reads {model_type!r} ({FORMAT})"
        )
    codes = json.loads((root / "vocab.json").read_text())["codes"]
    return config["architecture"], load_file(str(root / "model.safetensors")), codes


def load_aligned(
    module: torch.nn.Module, state: dict[str, torch.Tensor], pretrained_codes: Sequence[str], user_codes: Sequence[str]
) -> dict[str, int]:
    """Load a pre-trained ``state`` into ``module`` (built for the user's vocabulary), re-aligning
    the parameters listed in ``module.vocab_parameters``. Every other tensor must match by name
    and shape; returns ``{"matched": ..., "unseen": ...}`` code counts."""
    own = module.state_dict()
    matched = 0
    aligned = {}
    for name, tensor in state.items():
        if name not in own:
            raise ValueError(f"pre-trained tensor {name!r} has no place in {type(module).__name__}")
        if name in module.vocab_parameters:
            tensor, matched = align_rows(tensor, pretrained_codes, user_codes)
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise ValueError(f"pre-trained {name!r} is {tuple(tensor.shape)}, the model's is {tuple(own[name].shape)}")
        aligned[name] = tensor
    missing = sorted(set(own) - set(aligned))
    if missing:
        raise ValueError(f"the checkpoint lacks {missing}")
    module.load_state_dict(aligned)
    return {"matched": matched, "unseen": len(user_codes) - matched}


def subjects_read(folder: str | Path) -> SubjectFingerprint | None:
    """The fingerprint of the subjects a checkpoint was pre-trained on (``pretraining_subjects.json``,
    written by :func:`~ehrprog.models.pretrain.pretrain`), or ``None`` when the folder records none
    (a checkpoint from elsewhere, or written before ehrprog recorded it)."""
    file = Path(folder) / SUBJECTS_FILE
    if not file.is_file():
        return None
    try:
        value = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{file}: unreadable ({error})") from error
    return SubjectFingerprint.from_json(value, str(file))


__all__ = [
    "CHECKPOINT_FILES",
    "CHECKPOINT_KIND",
    "FORMAT",
    "align_rows",
    "checkpoint_files",
    "checkpoint_output",
    "load_aligned",
    "match_codes",
    "read_pretrained",
    "save_pretrained",
    "subjects_read",
]
