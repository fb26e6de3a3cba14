"""A model dispatched by accelerate, with edited blocks offloaded to disk (weights on ``meta``,
loaded by hooks at each forward): each matrix is edited where accelerate keeps it, the edits
equal those on the plain model, and revert / rollback are exact."""
from __future__ import annotations

import pytest
import torch
from accelerate import dispatch_model
from test_editor import EDITS, HP, TEXTS, top1
from test_values import REQUESTS, TEMPLATES, sharp_model

from oteseq import models, stats
from oteseq.editor import Editor

DEVICE_MAP = {"transformer.wte": "cpu", "transformer.wpe": "cpu", "transformer.drop": "cpu",
              "transformer.h.0": "cpu", "transformer.h.1": "disk", "transformer.h.2": "disk",
              "transformer.ln_f": "cpu", "lm_head": "cpu"}


def editors(tmp_path):
    plain, tok = sharp_model("gpt2")
    C0 = stats.second_moments(plain, tok, HP.layers, corpus=TEXTS, cache=False, progress=False)
    dispatched, _ = sharp_model("gpt2")
    dispatched = dispatch_model(dispatched, device_map=DEVICE_MAP, offload_dir=str(tmp_path))
    assert dispatched.transformer.h[1].mlp.c_proj.weight.device.type == "meta"
    kw = dict(hparams=HP, stats=C0, templates=TEMPLATES, progress=False)
    return (Editor(plain, tok, "memit-seq", **kw), Editor(dispatched, tok, "memit-seq", **kw),
            plain, dispatched, tok)


def edited(model):
    return [models.read_weight(models.edited_module(model, l)) for l in HP.layers]


def test_offloaded_layers_are_edited_like_the_plain_model(tmp_path):
    ed_plain, ed_off, plain, dispatched, tok = editors(tmp_path)
    original = edited(dispatched)
    ed_plain.edit(EDITS)
    ed_off.edit(EDITS)
    assert all(top1(dispatched, tok, r) for r in EDITS)
    for a, b in zip(edited(plain), edited(dispatched)):
        assert float((a - b).abs().max()) <= 1e-4 * float(a.abs().max())
    assert dispatched.transformer.h[1].mlp.c_proj.weight.device.type == "meta"  # still offloaded
    ed_off.revert()
    assert all(torch.equal(a, b) for a, b in zip(original, edited(dispatched)))


def test_rollback_of_an_offloaded_layer_is_exact(tmp_path, monkeypatch):
    _, ed_off, _, dispatched, _ = editors(tmp_path)
    ed_off.edit([EDITS[0]])
    before = edited(dispatched)
    real = models.write_weight
    calls = []

    def fail_second(module, W):
        calls.append(module)
        if len(calls) == 2:
            raise RuntimeError("injected")
        real(module, W)

    monkeypatch.setattr(models, "write_weight", fail_second)
    with pytest.raises(RuntimeError):
        ed_off.edit([REQUESTS[2]])
    monkeypatch.undo()
    assert all(torch.equal(a, b) for a, b in zip(before, edited(dispatched)))
