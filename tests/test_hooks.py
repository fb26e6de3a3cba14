"""oteseq.hooks: tracing, output edits and early stops that leave no hook behind."""
from __future__ import annotations

import pytest
import torch

from oteseq import models
from oteseq.errors import ShapeError
from oteseq.hooks import StopForward, Trace, TraceDict, add_to_output, stop_after
from tiny_models import tiny_model


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def setup(request):
    model, tok = tiny_model(request.param)
    batch = tok(["The capital of France is", "I think you will like it. The"],
                return_tensors="pt", padding=True)
    return model, batch


def _no_hooks(model):
    """No forward (pre-)hook of any kind on any submodule."""
    return all(not m._forward_hooks and not m._forward_pre_hooks
               and not m._forward_hooks_with_kwargs and not m._forward_pre_hooks_with_kwargs
               for m in model.modules())


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def test_trace_input_output_matches_module(setup):
    model, batch = setup
    module = models.edited_module(model, 1)
    with Trace(module, retain_input=True) as trace:
        _logits(model, batch)
    assert trace.input.shape[:2] == batch["input_ids"].shape
    W = models.read_weight(module)
    bias = module.bias if module.bias is not None else 0.0
    torch.testing.assert_close(trace.output, trace.input @ W.T + bias)
    assert _no_hooks(model)


def test_trace_dict_block_tuple_outputs_and_stop(setup):
    model, batch = setup
    names = [models.arch_of(model).block.format(layer) for layer in (1, 0)]  # out of order
    calls = []
    handle = models.block(model, 2).register_forward_hook(lambda *a: calls.append(1))
    try:
        with TraceDict(model, names, stop=True) as traces:
            model(**batch)  # StopForward is raised inside and caught by the context
            pytest.fail("stop=True must end the forward pass")
    finally:
        handle.remove()
    assert calls == []  # block 2 never ran
    for name in names:
        assert traces[name].output.shape == (*batch["input_ids"].shape, model.config.hidden_size)
    with TraceDict(model, names) as full, Trace(models.block(model, 1), retain_input=True) as nxt:
        model(**batch)
    torch.testing.assert_close(full[names[1]].output, nxt.input)  # block 0 output feeds block 1
    torch.testing.assert_close(full[names[1]].output, traces[names[1]].output)
    assert _no_hooks(model)


def test_stop_after_and_no_hook_left_after_exception(setup):
    model, batch = setup
    with stop_after(models.block(model, 0)):
        model(**batch)
    assert _no_hooks(model)
    with pytest.raises(RuntimeError, match="boom"):
        with TraceDict(model, [models.edited_name(model, 0)], retain_input=True, stop=True):
            raise RuntimeError("boom")
    with pytest.raises(ZeroDivisionError):
        with add_to_output(models.block(model, 1), [(0, 1)], torch.zeros(1, 32)):
            raise ZeroDivisionError
    assert _no_hooks(model)


def test_foreign_hooks_are_kept(setup):
    model, batch = setup
    module = models.edited_module(model, 0)
    handle = module.register_forward_hook(lambda *a: None)
    try:
        with Trace(module, retain_input=True, stop=True):
            model(**batch)
        assert list(module._forward_hooks) == [handle.id]
    finally:
        handle.remove()


def test_edit_output_and_add_to_output_are_differentiable(setup):
    model, batch = setup
    block = models.block(model, 1)
    positions = [(0, 2), (1, 4), (1, 4)]
    delta = torch.randn(3, model.config.hidden_size, requires_grad=True)
    with Trace(block) as plain:
        base = model(**batch).logits
    with add_to_output(block, positions, delta), Trace(block) as traced:
        logits = model(**batch).logits
    expected = plain.output.detach().clone()
    expected[0, 2] += delta[0].detach()
    expected[1, 4] += delta[1].detach() + delta[2].detach()
    torch.testing.assert_close(traced.output.detach(), expected)
    torch.testing.assert_close(logits[0, :2], base[0, :2])  # earlier tokens unaffected
    assert not torch.allclose(logits[0, 2], base[0, 2])
    logits[0, 2].sum().backward()
    assert delta.grad is not None and delta.grad[0].abs().sum() > 0
    assert torch.equal(delta.grad[1], torch.zeros_like(delta.grad[1]))
    assert _no_hooks(model)


def test_add_to_output_shape_errors(setup):
    model, batch = setup
    with pytest.raises(ShapeError, match="one row per"):
        with add_to_output(models.block(model, 0), [(0, 1)], torch.zeros(2, 32)):
            pass
    with pytest.raises(ShapeError, match="width"):
        with add_to_output(models.block(model, 0), [(0, 1)], torch.zeros(1, 5)):
            model(**batch)
    assert _no_hooks(model)


def test_stop_forward_is_only_caught_by_contexts(setup):
    """A stop ends the forward pass inside the context, and nowhere else: the context swallows
    StopForward and nothing but StopForward."""
    model, batch = setup
    later = []
    counter = models.block(model, 1).register_forward_hook(lambda *_: later.append(1))
    try:
        with Trace(models.block(model, 0), stop=True) as trace:  # no exception escapes
            _logits(model, batch)
        assert trace.output is not None and later == []  # block 1 never ran

        with pytest.raises(RuntimeError, match="not a stop"):  # other errors pass through
            with Trace(models.block(model, 0), stop=True):
                raise RuntimeError("not a stop")
        with pytest.raises(RuntimeError, match="not a stop"):
            with TraceDict(model, [models.edited_name(model, 0)], stop=True):
                raise RuntimeError("not a stop")

        def raise_stop(*_):
            raise StopForward
        handle = models.block(model, 0).register_forward_hook(raise_stop)
        try:  # a StopForward from outside any context reaches the caller: the model keeps it
            with pytest.raises(StopForward):
                _logits(model, batch)
        finally:
            handle.remove()
        _logits(model, batch)  # and with no stop registered the pass runs to the end
        assert later == [1]
    finally:
        counter.remove()
    assert _no_hooks(model)
