"""AlphaEdit's projector: closed form, the cache (memory and disk), and a setup that computes
nothing AlphaEdit does not use."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from oteseq import methods, projectors
from oteseq.memory import LinearMemory
from oteseq.memory import _algebra, _memory
from oteseq.ols import nullspace_projector

F64 = torch.float64


THRESHOLDS = (1e-3, 2e-2, 0.5, 5.0, 2.0)


def second_moment(d: int, rank: int, seed: int) -> torch.Tensor:
    """C0 = K0 K0ᵀ / N with eigenvalues spread over 1e-4 … 1e1 (some below 2e-2), none within
    20 % of a threshold the tests use (which side of it an eigenvalue falls is then clear)."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    spectrum = torch.logspace(-4, 1, d, dtype=F64)
    for t in THRESHOLDS:
        spectrum[(spectrum / t - 1).abs() < 0.2] *= 1.5
    spectrum[: d - rank] = 0.0
    return (Q * spectrum) @ Q.T


def closed_form(C0: torch.Tensor, threshold: float) -> torch.Tensor:
    eigenvalues, U = torch.linalg.eigh(C0)
    U0 = U[:, eigenvalues < threshold]
    return U0 @ U0.T


@settings(max_examples=30, deadline=None)
@given(d=st.integers(1, 24), data=st.data(), threshold=st.sampled_from(THRESHOLDS[:4]),
       seed=st.integers(0, 10_000))
def test_projector_equals_the_closed_form(d, data, threshold, seed):
    """Both branches (U0 U0ᵀ for rank ≤ d/2, I − U1 U1ᵀ above) give the closed form."""
    C0 = second_moment(d, data.draw(st.integers(0, d)), seed)
    P, rank = nullspace_projector(C0, threshold)
    expected = closed_form(C0, threshold)
    assert rank == int((torch.linalg.eigvalsh(C0) < threshold).sum())
    assert float((P - expected).abs().max()) <= 1e-12
    assert torch.equal(P, P.T)


@pytest.fixture
def fresh_cache(tmp_path):
    projectors.clear_memory_cache()
    yield tmp_path
    projectors.clear_memory_cache()


def test_cache_hit_returns_the_same_tensor_and_disk_hit_the_same_bits(fresh_cache):
    C0 = second_moment(12, 9, seed=1)
    P, rank = projectors.cached_projector(C0, 2e-2, cache_dir=fresh_cache)
    again, rank_again = projectors.cached_projector(C0.clone(), 2e-2, cache_dir=fresh_cache)
    assert again is P and rank_again == rank
    projectors.clear_memory_cache()
    from_disk, rank_disk = projectors.cached_projector(C0, 2e-2, cache_dir=fresh_cache)
    assert from_disk is not P and torch.equal(from_disk, P) and rank_disk == rank
    assert len(list((fresh_cache / "projectors").glob("*.safetensors"))) == 1


def test_changing_the_threshold_or_c0_misses(fresh_cache, monkeypatch):
    C0 = second_moment(12, 9, seed=2)
    calls = []
    real = projectors.nullspace_projector
    monkeypatch.setattr(projectors, "nullspace_projector",
                        lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    P, rank = projectors.cached_projector(C0, 2e-2, cache_dir=fresh_cache)
    projectors.cached_projector(C0, 2e-2, cache_dir=fresh_cache)
    assert calls == [2e-2]
    P_big, rank_big = projectors.cached_projector(C0, 2.0, cache_dir=fresh_cache)
    assert calls == [2e-2, 2.0] and rank_big > rank
    assert torch.equal(P_big, closed_form(C0, 2.0).to(P_big)) or \
        float((P_big - closed_form(C0, 2.0)).abs().max()) <= 1e-12
    changed = C0.clone()
    changed[0, 0] += 1e-9
    projectors.cached_projector(changed, 2e-2, cache_dir=fresh_cache)
    assert calls == [2e-2, 2.0, 2e-2]
    assert len(list((fresh_cache / "projectors").glob("*.safetensors"))) == 3


def test_a_damaged_cache_file_is_recomputed(fresh_cache):
    C0 = second_moment(8, 6, seed=3)
    P, _ = projectors.cached_projector(C0, 2e-2, cache_dir=fresh_cache)
    (file,) = (fresh_cache / "projectors").glob("*.safetensors")
    file.write_bytes(b"not a safetensors file")
    projectors.clear_memory_cache()
    again, _ = projectors.cached_projector(C0, 2e-2, cache_dir=fresh_cache)
    assert torch.equal(again, P)


def test_alphaedit_setup_forms_no_p_c0_p_and_factorises_nothing(monkeypatch, fresh_cache):
    """lam = 0: A0 = ridge·I exactly, A0⁻¹ = I / ridge without a Cholesky."""
    monkeypatch.setenv("OTESEQ_CACHE", str(fresh_cache))
    d, ridge = 10, 10.0
    C0 = second_moment(d, 7, seed=4)
    hp = methods.Hparams(layers=(0,), ridge=ridge)
    kwargs, rank = methods.memory_options("alphaedit", hp, C0)
    assert kwargs["lam"] == 0.0 and rank == int(torch.linalg.matrix_rank(kwargs["projection"]))

    def forbidden(*args, **kw):
        raise AssertionError("a dense factorisation ran during AlphaEdit's setup")
    monkeypatch.setattr(_algebra, "dense_factor", forbidden)
    products = []
    real_matmul = torch.Tensor.__matmul__
    monkeypatch.setattr(torch.Tensor, "__matmul__",
                        lambda a, b: products.append((a.shape, b.shape)) or real_matmul(a, b))
    mem = LinearMemory(torch.randn(3, d, dtype=F64), C0, **kwargs)
    monkeypatch.undo()
    assert not [p for p in products if p == ((d, d), (d, d))]  # no P @ C0 @ P
    assert isinstance(mem._state.A0, _algebra.ScaledIdentity)  # no d² entries kept
    state = mem.state_dict()["tensors"]
    assert torch.equal(state["A0"], ridge * torch.eye(d, dtype=F64))
    assert torch.equal(state["A_inv"], torch.eye(d, dtype=F64) / ridge)


def test_a_memory_shares_the_cached_projector_and_copies_any_other(fresh_cache):
    """The cached P (exactly symmetric float64) is kept by reference: one copy per layer, not
    two; a P that is not exactly symmetric, or not float64, is symmetrised into a copy."""
    d = 12
    C0 = second_moment(d, 9, seed=5)
    P, _ = projectors.cached_projector(C0, 2e-2, cache_dir=fresh_cache)
    assert torch.equal((P + P.T) / 2, P)  # so sharing gives the bits a copy would have
    W0 = torch.randn(3, d, dtype=F64, generator=torch.Generator().manual_seed(0))
    assert LinearMemory(W0, C0, 0.0, projection=P, ridge=10.0)._state.P is P
    nudged = P.clone()
    nudged[0, 1] = torch.nextafter(nudged[0, 1], torch.tensor(1.0, dtype=F64))
    for other in (nudged, P.float(), P.T.contiguous().T):
        kept = LinearMemory(W0, C0, 0.0, projection=other, ridge=10.0)._state.P
        assert kept is not other and kept.dtype == F64 and torch.equal(kept, kept.T)


def test_a0_ridge_identity_is_kept_compact_and_changes_no_bit(monkeypatch, fresh_cache,
                                                             tmp_path):
    """AlphaEdit's A0 = ridge·I, and A0⁻¹ until the first step, are held as ScaledIdentity (no
    d² entries); edits, a refresh, a retraction and a save/load give the bits dense ones give."""
    d, g = 16, torch.Generator().manual_seed(6)
    C0 = second_moment(d, 12, seed=6)
    P, _ = projectors.cached_projector(C0, 2e-2, cache_dir=fresh_cache)
    W0 = torch.randn(5, d, dtype=F64, generator=g)
    batches = [(torch.randn(d, 3, dtype=F64, generator=g), torch.randn(5, 3, dtype=F64,
                                                                      generator=g))
               for _ in range(4)]

    def run(mem):
        for i, (K, V) in enumerate(batches):
            mem.edit(K, V, [f"{i}-{j}" for j in range(3)])
        mem.retract(["1-0", "2-2"])
        return mem

    fresh = LinearMemory(W0, C0, 0.0, projection=P, ridge=10.0, refresh_every=3)
    assert isinstance(fresh._state.A_inv, _algebra.ScaledIdentity)  # I / ridge until a step
    compact = run(fresh)
    assert isinstance(compact._state.A0, _algebra.ScaledIdentity)
    assert isinstance(compact._state.A_inv, torch.Tensor)
    assert compact._state.n_refreshes >= 1  # the dense refresh path ran
    monkeypatch.setattr(_algebra, "compact", lambda A0: A0)
    initial = _memory._initial_inverse
    monkeypatch.setattr(_memory, "_initial_inverse", lambda A0: _algebra.dense(initial(A0)))
    dense = run(LinearMemory(W0, C0, 0.0, projection=P, ridge=10.0, refresh_every=3))
    monkeypatch.undo()
    assert isinstance(dense._state.A0, torch.Tensor)
    for name in ("W", "A_inv"):
        assert torch.equal(getattr(compact._state, name), getattr(dense._state, name)), name
    K, Y = batches[0][0], torch.randn(d, 2, dtype=F64, generator=g)  # the drift check's product
    assert torch.equal(_algebra.apply_normal(compact._state.A0, P, K, Y),
                       _algebra.apply_normal(dense._state.A0, P, K, Y))
    compact.save(tmp_path / "m")
    loaded = LinearMemory.load(tmp_path / "m")
    assert isinstance(loaded._state.A0, _algebra.ScaledIdentity)
    assert torch.equal(loaded.state_dict()["tensors"]["A0"], 10.0 * torch.eye(d, dtype=F64))
