"""Conformance checks any backbone must pass, for ehrprog's own and plugin authors' tests.

``check_backbone(spec)`` runs every check on a fresh module from the spec's factory and raises
``AssertionError`` naming the first broken rule::

    from ehrprog.plugins import get_backbone
    from ehrprog.testing import check_backbone

    def test_my_backbone_conforms():
        check_backbone(get_backbone("mine"))

Checks: output shape ``[B, V, D]`` with ``dim`` D; padding codes and padded visits change
nothing; masked visits are zero; the same seed gives the same module and outputs; the output
depends on the code embeddings, which are trainable, and gradients reach parameters; visit ``v``'s
embedding does not read later visits (causality); ``code_embeddings()`` is ``[vocab, D]``; a
save/load round trip through safetensors reproduces the outputs; and, where CUDA is present, the module runs there too.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ehrprog.plugins import BackboneSpec

CHECKS = (
    "shape",
    "padding",
    "masking",
    "determinism",
    "gradient",
    "causality",
    "code_embeddings",
    "save_load",
    "device",
)


def _batch(vocab: int, seed: int = 0, b: int = 3, v: int = 5, c: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(2, vocab, (b, v, c), generator=g)
    codes[:, :, -2:] = 0  # trailing padding codes
    visit_mask = torch.ones(b, v, dtype=torch.bool)
    visit_mask[0, -1] = False  # a padded visit
    codes[0, -1] = 0
    gaps = torch.rand(b, v, generator=g) * 400  # days between visits
    days = 18_000 + torch.cumsum(gaps, dim=1)
    age = 40 + torch.rand(b, 1, generator=g) * 40 + (days - days[:, :1]) / 365.25
    times = torch.stack(
        [(days - days[:, :1]) / 365.25, torch.cat([torch.zeros(b, 1), gaps[:, 1:]], 1) / 365.25, age / 100], -1
    )
    return {
        "codes": codes,
        "values": torch.randn(b, v, c, generator=g),
        "has_value": torch.rand(b, v, c, generator=g) > 0.5,
        "visit_mask": visit_mask,
        "times": times * visit_mask[..., None],
        "visit_days": days * visit_mask,
    }


def _make(spec: BackboneSpec, vocab: int, dim: int, seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return spec.factory(vocab_size=vocab, dim=dim, visit_encoder="attention", dropout=0.0).eval()


def _run(module: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    context = {k: batch[k] for k in ("times", "visit_days")}
    return module(batch["codes"], batch["values"], batch["has_value"], batch["visit_mask"], **context)


def check_backbone(spec: BackboneSpec, vocab: int = 40, dim: int = 16) -> list[str]:
    """Run every conformance check on ``spec``; return the names of the checks run.

    Raises:
        AssertionError: naming the backbone and the broken rule.
    """
    name = spec.name
    module = _make(spec, vocab, dim, seed=0)
    batch = _batch(vocab)
    done = []
    with torch.no_grad():
        out = _run(module, batch)
    b, v = batch["codes"].shape[:2]
    assert out.shape == (b, v, module.dim) and module.dim == dim, (
        f"{name}: output {tuple(out.shape)}, want {(b, v, dim)}"
    )
    done.append("shape")

    wider = dict(batch)
    pad = torch.zeros(b, v, 3, dtype=batch["codes"].dtype)
    wider["codes"] = torch.cat([batch["codes"], pad], dim=-1)
    wider["values"] = torch.cat([batch["values"], torch.randn(b, v, 3)], dim=-1)
    wider["has_value"] = torch.cat([batch["has_value"], torch.ones(b, v, 3, dtype=torch.bool)], dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(_run(module, wider), out, msg=lambda m: f"{name}: padding codes change output: {m}")
    done.append("padding")

    assert torch.all(out[0, -1] == 0), f"{name}: a masked (padded) visit must embed to zeros"
    done.append("masking")

    again = _make(spec, vocab, dim, seed=0)
    with torch.no_grad():
        torch.testing.assert_close(_run(again, batch), out, msg=lambda m: f"{name}: same seed, other output: {m}")
    done.append("determinism")

    trainable = _make(spec, vocab, dim, seed=0).train()
    table = trainable.code_embeddings()
    assert table.requires_grad, f"{name}: code embeddings must be trainable unless frozen"
    embedded = trainable.embed(batch["codes"], batch["values"], batch["has_value"]).detach().requires_grad_(True)
    context = {k: batch[k] for k in ("times", "visit_days")}
    out_embedded = trainable(
        batch["codes"], batch["values"], batch["has_value"], batch["visit_mask"], embedded, **context
    )
    (grad,) = torch.autograd.grad(out_embedded.sum(), embedded)
    assert grad[batch["codes"] > 0].abs().sum() > 0, f"{name}: output does not depend on the code embeddings"
    _run(trainable, batch).sum().backward()
    reached = [n for n, p in trainable.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert reached, f"{name}: no gradient reaches any parameter"
    done.append("gradient")

    # Causality: visit v's embedding depends on visits 0..v only (changing the last visit of
    # subject 1 must leave its earlier visits' embeddings unchanged).
    changed = {k: t.clone() for k, t in batch.items()}
    changed["codes"][1, -1] = torch.randint(2, vocab, (batch["codes"].shape[-1],))
    changed["values"][1, -1] = 3.0
    with torch.no_grad():
        later = _run(module, changed)
    torch.testing.assert_close(
        later[1, :-1], out[1, :-1], msg=lambda m: f"{name}: an earlier visit's embedding reads a later visit: {m}"
    )
    done.append("causality")

    table = module.code_embeddings()
    assert tuple(table.shape) == (vocab, dim), f"{name}: code_embeddings() is {tuple(table.shape)}, want {(vocab, dim)}"
    done.append("code_embeddings")

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        save_file({k: t.contiguous() for k, t in module.state_dict().items()}, str(path))
        reloaded = _make(spec, vocab, dim, seed=123)
        reloaded.load_state_dict(load_file(str(path)))
        with torch.no_grad():
            torch.testing.assert_close(_run(reloaded.eval(), batch), out, msg=lambda m: f"{name}: reload differs: {m}")
    done.append("save_load")

    if torch.cuda.is_available():
        moved = _make(spec, vocab, dim, seed=0).cuda()
        with torch.no_grad():
            on_gpu = _run(moved, {k: t.cuda() for k, t in batch.items()}).cpu()
        torch.testing.assert_close(on_gpu, out, rtol=1e-3, atol=1e-4)
        done.append("device")
    return done
