"""compute_values freezes the parameters while it optimises δ and restores every flag."""
from __future__ import annotations

import pytest
import torch
from test_values import REQUESTS, TEMPLATES, sharp_model

from oteseq import values
from oteseq.methods import Hparams
from oteseq.values import optimise

HP = Hparams(layers=(1,), v_num_grad_steps=3, clamp_norm_factor=30.0)


def test_parameters_are_frozen_inside_and_restored_after(monkeypatch):
    model, tok = sharp_model("gpt2")
    model.transformer.wte.weight.requires_grad_(False)  # a mixed set of flags comes back as it was
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    seen = []
    real = optimise._optimise

    def spy(*args, **kwargs):
        seen.append(any(p.requires_grad for p in model.parameters()))
        return real(*args, **kwargs)

    monkeypatch.setattr(optimise, "_optimise", spy)
    out = values.compute_values(model, tok, REQUESTS[:2], 1, HP, templates=TEMPLATES)
    assert seen == [False] and torch.isfinite(out.z).all()
    assert flags == {name: p.requires_grad for name, p in model.named_parameters()}

    def boom(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(optimise, "_optimise", boom)
    with pytest.raises(KeyboardInterrupt):
        values.compute_values(model, tok, REQUESTS[:2], 1, HP, templates=TEMPLATES)
    assert flags == {name: p.requires_grad for name, p in model.named_parameters()}
