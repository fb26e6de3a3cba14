"""oteseq.models: the architecture table and the one weight orientation."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from oteseq import models
from oteseq.errors import LayerError, NonFiniteError, ShapeError, UnsupportedArchitectureError
from tiny_models import ARCHS, tiny_model

EDITED_TYPE = {"gpt2": Conv1D, "gptj": nn.Linear, "gpt_neox": nn.Linear, "llama": nn.Linear,
               "mistral": nn.Linear, "qwen2": nn.Linear}


@pytest.fixture(scope="module", params=ARCHS)
def arch_model(request):
    model, tok = tiny_model(request.param)
    return request.param, model, tok


def _bias(module):
    return module.bias if getattr(module, "bias", None) is not None else 0.0


def test_lookup_names_and_types(arch_model):
    arch, model, tok = arch_model
    assert models.n_layers(model) == model.config.num_hidden_layers == 3
    names = dict(model.named_modules())
    for layer in range(3):
        name = models.edited_name(model, layer)
        assert names[name] is models.edited_module(model, layer)
        assert isinstance(models.edited_module(model, layer), EDITED_TYPE[arch])
        assert models.block(model, layer) is names[models.arch_of(model).block.format(layer)]
        assert models.edited_module(model, layer) in list(models.mlp(model, layer).modules())
    d_model = model.config.hidden_size
    assert models.weight_shape(models.edited_module(model, 0))[0] == d_model
    assert models.final_norm(model).weight.shape == (d_model,)
    assert models.lm_head(model).weight.shape == (len(tok), d_model)
    assert models.embeddings(model) is model.get_input_embeddings()
    with pytest.raises(LayerError, match="layers 0..2") as err:
        models.edited_module(model, 3)
    assert isinstance(err.value, IndexError)  # callers catching the builtin keep working


def test_orientation_matches_forward(arch_model):
    _, model, _ = arch_model
    module = models.edited_module(model, 1)
    d_out, d_in = models.weight_shape(module)
    x = torch.randn(5, d_in)
    W = models.read_weight(module)
    assert W.shape == (d_out, d_in)
    torch.testing.assert_close(module(x), x @ W.T + _bias(module), rtol=1e-6, atol=1e-6)


def test_square_conv1d_orientation():
    torch.manual_seed(0)
    module = Conv1D(8, 8)  # d_in == d_out: a shape check alone could not tell the orientation
    with torch.no_grad():
        module.bias.normal_()
    x = torch.randn(4, 8)
    W = models.read_weight(module)
    torch.testing.assert_close(module(x), x @ W.T + module.bias)
    assert not torch.equal(W, module.weight)  # it really is the transpose
    W_new = torch.randn(8, 8)
    models.write_weight(module, W_new)
    torch.testing.assert_close(module(x), x @ W_new.T + module.bias)


def test_write_and_add_round_trip_bit_exact(arch_model):
    _, model, _ = arch_model
    module = models.edited_module(model, 0)
    before = module.weight.detach().clone()
    models.write_weight(module, models.read_weight(module))
    assert torch.equal(module.weight, before)
    delta = torch.randn(models.weight_shape(module), dtype=torch.float64)
    W0 = models.read_weight(module)
    models.add_to_weight(module, delta)
    assert torch.equal(models.read_weight(module), (W0.double() + delta).float())
    models.write_weight(module, W0)
    assert torch.equal(module.weight, before)
    assert module.weight.requires_grad and module.weight.is_leaf


def test_write_refusals_leave_weight_untouched():
    model, _ = tiny_model("gpt2")
    module = models.edited_module(model, 0)
    before = module.weight.detach().clone()
    d_out, d_in = models.weight_shape(module)
    with pytest.raises(ShapeError, match="d_out, d_in"):
        models.write_weight(module, torch.zeros(d_in, d_out))
    bad = torch.zeros(d_out, d_in)
    bad[0, 0] = float("nan")
    with pytest.raises(NonFiniteError):
        models.write_weight(module, bad)
    assert torch.equal(module.weight, before)


def test_write_casts_to_module_dtype():
    model, _ = tiny_model("llama")
    module = models.edited_module(model, 0).to(torch.bfloat16)
    W = torch.randn(models.weight_shape(module), dtype=torch.float64)
    models.write_weight(module, W)
    assert module.weight.dtype == torch.bfloat16
    assert torch.equal(models.read_weight(module), W.to(torch.bfloat16))


def test_unknown_architecture_lists_supported():
    model, _ = tiny_model("gpt2")
    model.config.model_type = "bert"
    with pytest.raises(UnsupportedArchitectureError, match="gpt_neox.*qwen2"):
        models.arch_of(model)
    with pytest.raises(UnsupportedArchitectureError):
        models.read_weight(nn.Embedding(3, 4))


def test_fingerprint_stable_distinct_and_edit_invariant():
    a, _ = tiny_model("gpt2", seed=0)
    a_again, _ = tiny_model("gpt2", seed=0)
    b, _ = tiny_model("gpt2", seed=1)
    c, _ = tiny_model("llama", seed=0)
    fa = models.model_fingerprint(a)
    assert fa == models.model_fingerprint(a_again)
    assert len({fa, models.model_fingerprint(b), models.model_fingerprint(c)}) == 3
    module = models.edited_module(a, 1)
    models.add_to_weight(module, torch.ones(models.weight_shape(module)))
    assert models.model_fingerprint(a) == fa
