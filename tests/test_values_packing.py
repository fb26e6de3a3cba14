"""The suffix replay runs each upper block's per-token maps (MLP, attention projections) on the
needed suffix tokens only, and GPT-2's GELU as torch's fused kernel: the hidden states at those
tokens and δ's gradient equal those of the same replay with neither, the attention projections
are packed indeed, and the activations are restored afterwards."""
from __future__ import annotations

import pytest
import torch
from tiny_models import ARCHS, tiny_model

from oteseq import models, values
from oteseq.values import optimise, suffix
from oteseq.requests import Request

TEMPLATES = ["{}", "I think you will like it. {}"]
REQUESTS = [Request("The capital of {}", "France", "was"),
            Request("I think {}", "Toko Yasuda", "French the capital"),
            Request("{} is a company. Microsoft", "Apple", "the")]


def replayed(chunk, delta, weights, every: int = 1):
    """The replay's hidden states at every ``every``-th needed token (the last block's MLP runs
    on those only), and d(Σ weights·h)/dδ."""
    rep, n = chunk.replay, chunk.count
    rows = torch.arange(n * chunk.m)
    owner = torch.arange(n).repeat_interleave(chunk.m)
    pos_r, step = (x[::every] for x in rep.needed.nonzero(as_tuple=True))
    delta = delta.clone().requires_grad_(True)
    h = rep(rows, owner, delta, pos_r, step + rep.lookup[pos_r])
    return h.detach(), torch.autograd.grad((h * weights[: len(h)]).sum(), delta)[0]


@pytest.mark.parametrize("arch", ARCHS)
def test_packed_maps_equal_the_unpacked_replay(arch, monkeypatch):
    model, tok = tiny_model(arch)
    p = values.build_prompts(tok, REQUESTS, TEMPLATES)
    with optimise.frozen_parameters(model):
        chunk = optimise._Chunk(model, 0, p, 0, len(REQUESTS))
        chunk.use("suffix")
        assert not chunk.replay.needed.all()  # some suffix slots are padding
        torch.manual_seed(0)
        d = models.weight_shape(models.edited_module(model, 0))[0]
        delta, weights = torch.randn(len(REQUESTS), d), torch.randn(1000, d)
        packed_inputs = []
        attention = [m for m in models.linear_maps(models.block(model, 1))
                     if m not in set(models.mlp(model, 1).modules())]
        handles = [m.register_forward_hook(lambda mod, args, out: packed_inputs.append(
            args[0].ndim)) for m in attention]  # a forward hook sees the packed arguments
        got = [replayed(chunk, delta, weights, every) for every in (1, 2)]
        for handle in handles:
            handle.remove()
        assert attention and packed_inputs and set(packed_inputs) == {2}  # (tokens, d): packed
        monkeypatch.setattr(suffix, "_token_maps", lambda *args: [])
        for every, (h, grad) in zip((1, 2), got):
            h_ref, grad_ref = replayed(chunk, delta, weights, every)
            torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(grad, grad_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "gptj"])  # the archs whose MLP uses NewGELUActivation
def test_fused_activations_equal_the_model_s_and_are_restored(arch, monkeypatch):
    model, tok = tiny_model(arch)
    acts = [m for m in models.mlp(model, 1).modules() if models.fused_equivalent(m)]
    assert acts
    x = torch.randn(50, 64) * 3
    torch.testing.assert_close(models.fused_equivalent(acts[0])(x), acts[0](x),
                               rtol=1e-6, atol=1e-6)
    p = values.build_prompts(tok, REQUESTS, TEMPLATES)
    with optimise.frozen_parameters(model):
        chunk = optimise._Chunk(model, 0, p, 0, len(REQUESTS))
        chunk.use("suffix")
        torch.manual_seed(0)
        d = models.weight_shape(models.edited_module(model, 0))[0]
        delta, weights = torch.randn(len(REQUESTS), d), torch.randn(1000, d)
        calls = []
        monkeypatch.setattr(torch.nn.functional, "gelu", lambda *a, _f=torch.nn.functional.gelu,
                            **k: calls.append(1) or _f(*a, **k))
        h, grad = replayed(chunk, delta, weights)
        assert calls and not any("forward" in vars(m) for m in model.modules())
        monkeypatch.setattr(models, "fused_equivalent", lambda module: None)
        h_ref, grad_ref = replayed(chunk, delta, weights)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-5, atol=1e-5)
