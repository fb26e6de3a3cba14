"""A step of the value optimisation runs a chunk's requests in parts of at most ``step_rows``
prompt rows, one autograd graph at a time, and gives the same target values as one part."""
from __future__ import annotations

import weakref

import pytest
import torch
from test_values import REQUESTS, TEMPLATES, early_stopping_reference, hp, sharp_model

from oteseq import values
from oteseq.errors import OptionError
from oteseq.values import optimise


def spy_forwards(monkeypatch) -> list[tuple[int, int]]:
    """(requests in the forward, prompt rows per request) for every replayed forward; each
    forward's graph must be gone (its δ rows unreferenced) before the next one starts."""
    seen, live, original = [], [], optimise._Chunk.forward

    def spy(self, active, delta, *args, **kwargs):
        assert all(ref() is None for ref in live), "a previous part's graph is still alive"
        seen.append((len(active), self.m))
        out = original(self, active, delta, *args, **kwargs)
        live.append(weakref.ref(delta))
        return out

    monkeypatch.setattr(optimise._Chunk, "forward", spy)
    return seen


def test_parts_bound_the_rows_per_forward_and_change_nothing(monkeypatch):
    model, tok = sharp_model("gpt2")
    ref = early_stopping_reference(model, tok, REQUESTS, 1, monkeypatch)
    whole = values.compute_values(model, tok, REQUESTS, 1, hp(10), templates=TEMPLATES,
                                  step_rows=10_000)
    seen = spy_forwards(monkeypatch)
    m = len(TEMPLATES) + 1  # the rewriting prompts and the KL prompt of each request
    parted = values.compute_values(model, tok, REQUESTS, 1, hp(10), templates=TEMPLATES,
                                   step_rows=m)
    assert seen and max(n for n, _ in seen) == 1 and {rows for _, rows in seen} == {m}
    assert len(seen) > 10  # several parts per step
    assert parted.steps.tolist() == whole.steps.tolist() == ref.steps.tolist()
    for name in ("z", "z_init", "loss"):
        torch.testing.assert_close(getattr(parted, name), getattr(whole, name),
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_step_rows_must_be_a_positive_int(bad):
    model, tok = sharp_model("gpt2")
    with pytest.raises(OptionError, match="step_rows"):
        values.compute_values(model, tok, REQUESTS[:1], 1, hp(2), templates=TEMPLATES,
                              step_rows=bad)
