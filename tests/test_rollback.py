"""The solver writes each step's A⁻¹ and W into reused buffers; snapshots must stay bit-exact.

A step reuses the buffers of the state before the current one unless something still holds
them (an Editor's snapshot, a kept state), so restoring a snapshot is bit-exact and every step
still equals the dense closed form.
"""
from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_editor import EDITS, make_editor, weights, assert_same
from test_values import REQUESTS

from oteseq import models
from oteseq.memory import LinearMemory

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def problem(d_in, d_out, n, seed):
    g = torch.Generator().manual_seed(seed)
    K0 = torch.randn(d_in, 2 * d_in, generator=g, dtype=F64)
    C0 = K0 @ K0.T / K0.shape[1]
    W0 = torch.randn(d_out, d_in, generator=g, dtype=F64)
    K = torch.randn(d_in, n, generator=g, dtype=F64)
    V = torch.randn(d_out, n, generator=g, dtype=F64)
    return W0, C0, K, V


def dense_ote(W0, C0, lam, K, V):
    A = lam * C0 + K @ K.T
    return W0 + torch.linalg.solve(A, K @ (V - W0 @ K).T).T


def tensors(mem):
    return {k: v.clone() for k, v in mem.state_dict()["tensors"].items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@settings(max_examples=25, deadline=None)
@given(d_in=st.integers(1, 12), d_out=st.integers(1, 6), sizes=st.lists(st.integers(1, 5),
       min_size=2, max_size=7), snap_at=st.integers(0, 6), lam=st.floats(0.1, 5.0),
       seed=st.integers(0, 10_000))
def test_steps_equal_the_dense_closed_form_and_snapshots_stay_exact(d_in, d_out, sizes, snap_at,
                                                                    lam, seed):
    W0, C0, K, V = problem(d_in, d_out, sum(sizes), seed)
    mem = LinearMemory(W0, C0, lam)
    snapshot, frozen, end = None, None, 0
    for t, size in enumerate(sizes):
        if t == snap_at:
            snapshot, frozen, n_then = copy.copy(mem), tensors(mem), end
        mem.edit(K[:, end:end + size], V[:, end:end + size])
        end += size
        expected = dense_ote(W0, C0, lam, K[:, :end], V[:, :end])
        assert float(torch.linalg.norm(mem.W64 - expected)) <= \
            1e-9 * max(1.0, float(torch.linalg.norm(expected)))
    if snapshot is not None:  # the later steps wrote into reused buffers, never into these
        assert same(tensors(snapshot), frozen)
        snapshot.edit(K[:, n_then:], V[:, n_then:])  # and the snapshot can go on by itself
        assert float(torch.linalg.norm(snapshot.W64 - mem.W64)) <= \
            1e-9 * max(1.0, float(torch.linalg.norm(mem.W64)))


def test_buffers_are_reused_only_when_nothing_holds_them():
    W0, C0, K, V = problem(16, 4, 12, seed=1)
    mem = LinearMemory(W0, C0, 1.0)
    pointers = []
    for j in range(4):
        mem.edit(K[:, 3 * j:3 * j + 3], V[:, 3 * j:3 * j + 3])
        pointers.append(mem._state.A_inv.data_ptr())
    assert pointers[3] == pointers[1] and pointers[2] != pointers[1]  # two buffers, alternating
    held = mem._state  # someone keeps the current state: its buffers are never written again
    kept = held.A_inv.clone()
    mem.edit(K[:, :2], V[:, :2], ids=["x", "y"])
    mem.edit(K[:, 2:4], V[:, 2:4], ids=["z", "w"])
    assert torch.equal(held.A_inv, kept)
    assert mem._state.A_inv.data_ptr() != held.A_inv.data_ptr()


def test_editor_rollback_after_a_failure_mid_edit_is_bit_exact(monkeypatch):
    """Fail after every layer's memory stepped (layer 1's weight write): weights and every
    memory's tensors are bit-exact, and the editor continues exactly like one that never
    saw the failed call."""
    ed, model, _ = make_editor()
    twin, twin_model, _ = make_editor()
    for editor in (ed, twin):
        editor.edit([EDITS[0]])
        editor.edit([EDITS[1]])  # from here on, every step reuses buffers
    before = weights(model)
    memories = {l: tensors(ed.memory(l)) for l in ed.layers}
    real_write, writes = models.write_weight, []

    def fail_on_last_layer(module, W):
        writes.append(module)
        if module is models.edited_module(model, ed.layers[-1]) and len(writes) == 2:
            raise RuntimeError("injected")
        real_write(module, W)

    monkeypatch.setattr(models, "write_weight", fail_on_last_layer)
    with pytest.raises(RuntimeError, match="injected"):
        ed.edit([REQUESTS[2]])
    monkeypatch.undo()
    assert len(writes) > 2  # the rollback wrote the old weights back
    assert_same(before, weights(model))
    for layer in ed.layers:
        assert same(tensors(ed.memory(layer)), memories[layer]), layer
    ed.edit([REQUESTS[3]])
    twin.edit([REQUESTS[3]])
    assert_same(weights(twin_model), weights(model))
    for layer in ed.layers:
        assert same(tensors(ed.memory(layer)), tensors(twin.memory(layer))), layer
