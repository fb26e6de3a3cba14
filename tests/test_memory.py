"""LinearMemory against dense closed forms computed the obvious way (float64 torch.linalg.solve)."""
from __future__ import annotations

import logging
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import oteseq
from oteseq.errors import (ConflictError, DeviceDtypeError, NonFiniteError, NotPSDError,
                           OteseqError, RequestError, ShapeError, SingularSystemError,
                           StateMismatchError, UnknownIdError)
from oteseq.memory import LinearMemory
from oteseq.memory import _algebra

F64 = torch.float64
FAST = settings(max_examples=25, deadline=None)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small matrices: one BLAS thread is faster on a shared machine, and bit-for-bit
    reproducibility (state round trips) holds for a fixed thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- references
def problem(d_in=8, d_out=5, n=12, seed=0, key_rank=None, c0_rank=None, scale=1.0):
    """Random (W0, C0, K, V, K0): C0 = K0 K0ᵀ / N; keys of rank ``key_rank`` if given."""
    g = torch.Generator().manual_seed(seed)
    # c0_rank < d_in gives C0 an exact null space
    K0 = torch.randn(d_in, c0_rank or 3 * d_in, generator=g, dtype=F64)
    C0 = K0 @ K0.T / K0.shape[1]
    W0 = torch.randn(d_out, d_in, generator=g, dtype=F64)
    basis = torch.randn(d_in, key_rank or d_in, generator=g, dtype=F64)
    K = basis @ torch.randn(basis.shape[1], n, generator=g, dtype=F64)
    V = scale * torch.randn(d_out, n, generator=g, dtype=F64)
    return W0, C0, K, V, K0


def ote(W0, C0, lam, K, V, ridge=0.0):
    """Dense OTE: ``W A = W0 (lam C0 + ridge I) + V Kᵀ``, ``A = lam C0 + ridge I + K Kᵀ``."""
    A = lam * C0 + ridge * torch.eye(C0.shape[0], dtype=F64) + K @ K.T
    return W0 + torch.linalg.solve(A, K @ (V - W0 @ K).T).T


def rel(a, b):
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def assert_same_state(a: dict, b: dict):
    assert a["metadata"] == b["metadata"]
    assert a["tensors"].keys() == b["tensors"].keys()
    for name, tensor in a["tensors"].items():
        assert torch.equal(tensor, b["tensors"][name]), name


def batches(n, cuts):
    edges = [0, *sorted(set(c for c in cuts if 0 < c < n)), n]
    return [(lo, hi) for lo, hi in zip(edges, edges[1:])]


# ----------------------------------------------------------------------------- aligned = OTE
@FAST
@given(d_in=st.integers(1, 8), d_out=st.integers(1, 5), n=st.integers(1, 14),
       cuts=st.lists(st.integers(1, 13), max_size=5), lam=st.floats(0.05, 10.0),
       key_rank=st.integers(1, 8), refresh=st.sampled_from([None, 1, 2, 1000]),
       seed=st.integers(0, 10_000))
def test_aligned_equals_ote_for_every_split(d_in, d_out, n, cuts, lam, key_rank, refresh, seed):
    W0, C0, K, V, _ = problem(d_in, d_out, n, seed, key_rank=min(key_rank, d_in))
    mem = LinearMemory(W0, C0, lam, refresh_every=refresh)
    for lo, hi in batches(n, cuts):
        delta = mem.edit(K[:, lo:hi], V[:, lo:hi])
        assert delta.shape == W0.shape
        assert rel(mem.W, ote(W0, C0, lam, K[:, :hi], V[:, :hi])) <= 1e-10


def test_refresh_recomputes_and_stays_on_ote():
    W0, C0, K, V, _ = problem(10, 4, 12, seed=1)
    mem = LinearMemory(W0, C0, 0.7, refresh_every=3)
    refreshed = []
    for j in range(12):
        mem.edit(K[:, j:j + 1], V[:, j:j + 1])
        refreshed.append(mem.last_report.refreshed)
        assert rel(mem.W, ote(W0, C0, 0.7, K[:, :j + 1], V[:, :j + 1])) <= 1e-10
    assert refreshed == [False, False, True] * 4


def test_drift_check_triggers_an_exact_refresh(monkeypatch):
    from oteseq.memory import _step
    W0, C0, K, V, _ = problem(8, 3, 6, seed=33)
    mem = LinearMemory(W0, C0, 0.5, refresh_every=None)
    mem.edit(K[:, :3], V[:, :3], ids=[0, 1, 2])
    assert not mem.last_report.refreshed and mem.last_report.drift < 1e-10
    monkeypatch.setattr(_step, "DRIFT_TOL", -1.0)      # every Woodbury solve now "drifted"
    monkeypatch.setattr(_step, "DRIFT_GROWTH", -1.0)
    mem.edit(K[:, 3:], V[:, 3:], ids=[3, 4, 5])
    mem.retract([1])
    assert mem.last_report.refreshed
    keep = [0, 2, 3, 4, 5]
    assert rel(mem.W64, ote(W0, C0, 0.5, K[:, keep], V[:, keep])) <= 1e-10


def test_lam_zero_least_squares_after_enough_keys():
    W0, C0, K, V, _ = problem(6, 3, 14, seed=2)
    mem = LinearMemory(W0, C0, 0.0)
    mem.edit(K[:, :8], V[:, :8])             # first batch makes A = K Kᵀ nonsingular
    mem.edit(K[:, 8:], V[:, 8:])
    assert rel(mem.W, ote(W0, C0, 0.0, K, V)) <= 1e-10


def test_ridge_enters_a_and_the_anchor():
    W0, C0, K, V, _ = problem(7, 3, 9, seed=3)
    mem = LinearMemory(W0, C0, 0.5, ridge=2.0)
    for lo, hi in [(0, 4), (4, 9)]:
        mem.edit(K[:, lo:hi], V[:, lo:hi])
    assert rel(mem.W, ote(W0, C0, 0.5, K, V, ridge=2.0)) <= 1e-10


def test_incremental_accuracy_over_hundreds_of_updates():
    d_in, d_out, k, steps = 48, 16, 3, 300
    W0, C0, K, V, _ = problem(d_in, d_out, k * steps, seed=4)
    mem = LinearMemory(W0, C0, 0.3, refresh_every=None)
    for t in range(steps):
        mem.edit(K[:, k * t:k * (t + 1)], V[:, k * t:k * (t + 1)])
    assert mem.state_dict()["metadata"]["n_refreshes"] == 0   # Woodbury only, no refresh
    assert rel(mem.W64, ote(W0, C0, 0.3, K, V)) <= 1e-8


def test_w_is_returned_in_w0_dtype():
    W0, C0, K, V, _ = problem(5, 3, 4, seed=5)
    mem = LinearMemory(W0.float(), C0.float(), 1.0)
    mem.edit(K.float(), V.float())
    assert mem.W.dtype == torch.float32 and mem.W64.dtype == F64
    assert rel(mem.W64, ote(W0.float().double(), C0.float().double(), 1.0,
                            K.float().double(), V.float().double())) <= 1e-10


# ----------------------------------------------------------------------------- misaligned
def test_misaligned_is_memit_per_step_and_differs_from_ote():
    W0, C0, K, V, _ = problem(8, 4, 12, seed=6)
    lam = 1.5
    mem = LinearMemory(W0, C0, lam, accumulate=False)
    W = W0.clone()
    for lo, hi in [(0, 4), (4, 8), (8, 12)]:
        Kt, Vt = K[:, lo:hi], V[:, lo:hi]
        W = W + torch.linalg.solve(lam * C0 + Kt @ Kt.T, Kt @ (Vt - W @ Kt).T).T
        mem.edit(Kt, Vt)
        assert rel(mem.W64, W) <= 1e-10
    assert rel(mem.W64, ote(W0, C0, lam, K, V)) > 1e-2


def test_misaligned_forgets_and_drifts_on_preserved_keys():
    """Linear model, fixed targets: the misaligned run keeps only the last batch's fit, yet its
    change on preserved keys K0 is far larger than a fresh edit of that batch from W0 and
    grows with the number of steps. (It is *not* larger than the aligned run's here: that one
    fits every edit.)"""
    d_in, d_out, k, T, lam = 12, 6, 2, 40, 1.0
    W0, C0, K, V, K0 = problem(d_in, d_out, k * T, seed=7)
    aligned, misaligned = (LinearMemory(W0, C0, lam, accumulate=a) for a in (True, False))
    drift = []
    for t in range(T):
        for mem in (aligned, misaligned):
            mem.edit(K[:, k * t:k * (t + 1)], V[:, k * t:k * (t + 1)])
        drift.append(float(torch.linalg.norm((misaligned.W64 - W0) @ K0)))
    last = slice(k * (T - 1), k * T)
    fresh = ote(W0, C0, lam, K[:, last], V[:, last])        # the batch it still fits, from W0
    assert drift[-1] > 1.5 * float(torch.linalg.norm((fresh - W0) @ K0))
    assert drift[-1] > 1.5 * drift[0]
    fit = {a: rel(m.W64 @ K[:, :k], V[:, :k]) for a, m in ((True, aligned), (False, misaligned))}
    assert fit[False] > 2 * fit[True]                        # the first batch is forgotten

    def objective(W):  # the OTE objective over all edits: OTE is its minimiser
        fit = torch.linalg.norm(W @ K - V) ** 2
        return float(fit + lam * torch.trace((W - W0) @ C0 @ (W - W0).T))
    assert objective(misaligned.W64) > 1.1 * objective(aligned.W64)


def test_misaligned_refuses_retract():
    W0, C0, K, V, _ = problem(4, 2, 2, seed=8)
    mem = LinearMemory(W0, C0, 1.0, accumulate=False)
    mem.edit(K, V, ids=["a", "b"])
    with pytest.raises(OteseqError, match="accumulate=True"):
        mem.retract(["a"])


# ----------------------------------------------------------------------------- AlphaEdit
def projector(C0, threshold):
    eigenvalues, U = torch.linalg.eigh(C0)
    U0 = U[:, eigenvalues < threshold]
    return U0 @ U0.T


@pytest.mark.parametrize("lam, refresh", [(0.0, 1000), (0.8, 1000), (0.8, 1)])
def test_alphaedit_equals_literal_formula_step_by_step(lam, refresh):
    d_in, d_out, alpha = 9, 4, 0.7
    W0, C0, K, V, _ = problem(d_in, d_out, 10, seed=9, c0_rank=5)
    P = projector(C0, 1e-8)
    assert 0 < int(torch.linalg.matrix_rank(P)) < d_in
    mem = LinearMemory(W0, C0, lam, projection=P, ridge=alpha, refresh_every=refresh)
    W, K_p = W0.clone(), K[:, :0]
    for lo, hi in [(0, 3), (3, 4), (4, 10)]:
        Kt, Vt = K[:, lo:hi], V[:, lo:hi]
        Q = (Kt @ Kt.T + K_p @ K_p.T + lam * C0) @ P + alpha * torch.eye(d_in, dtype=F64)
        W = W + torch.linalg.solve(Q.T, ((Vt - W @ Kt) @ Kt.T @ P).T).T   # R Kᵀ P Q⁻¹
        mem.edit(Kt, Vt)
        K_p = K[:, :hi]
        assert rel(mem.W64, W) <= 1e-10
        assert float(torch.linalg.norm((mem.W64 - W0) @ (torch.eye(d_in, dtype=F64) - P))) < 1e-10


def test_alphaedit_retract_equals_its_ote_over_remaining():
    """With P the memory is ridge regression on projected keys; retraction stays exact."""
    d_in, alpha, lam = 9, 0.5, 0.3
    W0, C0, K, V, _ = problem(d_in, 3, 8, seed=34, c0_rank=5)
    P = projector(C0, 1e-8)
    mem = LinearMemory(W0, C0, lam, projection=P, ridge=alpha)
    mem.edit(K[:, :5], V[:, :5], ids=list(range(5)))
    mem.edit(K[:, 5:], V[:, 5:], ids=list(range(5, 8)))
    mem.retract([0, 6])
    keep = [1, 2, 3, 4, 5, 7]
    B = P @ K[:, keep]
    A = alpha * torch.eye(d_in, dtype=F64) + lam * P @ C0 @ P + B @ B.T
    expected = W0 + torch.linalg.solve(A, B @ (V[:, keep] - W0 @ K[:, keep]).T).T
    assert rel(mem.W64, expected) <= 1e-10


def test_identity_projection_without_ridge_is_memit_seq():
    W0, C0, K, V, _ = problem(7, 3, 9, seed=10)
    mem = LinearMemory(W0, C0, 1.2, projection=torch.eye(7, dtype=F64), ridge=0.0)
    for lo, hi in [(0, 2), (2, 9)]:
        mem.edit(K[:, lo:hi], V[:, lo:hi])
        assert rel(mem.W64, ote(W0, C0, 1.2, K[:, :hi], V[:, :hi])) <= 1e-10


def test_projection_without_ridge_or_lam_is_singular():
    W0, C0, K, V, _ = problem(6, 2, 3, seed=11, c0_rank=3)
    mem = LinearMemory(W0, C0, 0.0, projection=projector(C0, 1e-8))
    before = mem.state_dict()
    with pytest.raises(SingularSystemError, match="lam"):
        mem.edit(K, V)
    assert_same_state(before, mem.state_dict())


# ----------------------------------------------------------------------------- retract, conflicts
@FAST
@given(n=st.integers(2, 10), data=st.data(), seed=st.integers(0, 10_000),
       lam=st.floats(0.05, 5.0))
def test_retract_equals_ote_over_remaining(n, data, seed, lam):
    W0, C0, K, V, _ = problem(6, 3, n, seed)
    mem = LinearMemory(W0, C0, lam)
    cut = data.draw(st.integers(1, n), label="cut")
    mem.edit(K[:, :cut], V[:, :cut], ids=list(range(cut)))
    mem.edit(K[:, cut:], V[:, cut:], ids=list(range(cut, n)))
    gone = data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n), label="gone")
    mem.retract(gone)
    keep = [j for j in range(n) if j not in gone]
    assert sorted(mem.ids) == keep
    expected = ote(W0, C0, lam, K[:, keep], V[:, keep]) if keep else W0
    assert rel(mem.W64, expected) <= 1e-9


def test_replace_is_ote_over_deconflicted_set():
    W0, C0, K, V, _ = problem(8, 4, 6, seed=12)
    mem = LinearMemory(W0, C0, 1.0)
    mem.edit(K[:, :4], V[:, :4], ids=[("s", "r"), "b", "c", 7])
    V_new = torch.randn(4, 2, dtype=F64)
    mem.edit(K[:, 4:6], V_new, ids=["b", ("s", "r")])
    report = mem.last_report
    assert set(report.replaced) == {"b", ("s", "r")} and report.n_removed == 2
    Kd = torch.cat([K[:, 2:4], K[:, 4:6]], dim=1)
    Vd = torch.cat([V[:, 2:4], V_new], dim=1)
    assert rel(mem.W64, ote(W0, C0, 1.0, Kd, Vd)) <= 1e-10
    assert mem.n_constraints == 4


def test_replace_same_key_new_target_latest_wins():
    W0, C0, K, V, _ = problem(8, 4, 1, seed=13)
    mem = LinearMemory(W0, C0, 0.01)
    mem.edit(K, V, ids=["fact"])
    target = -V
    mem.edit(K, target, ids=["fact"])
    assert rel(mem.W64, ote(W0, C0, 0.01, K, target)) <= 1e-10
    assert rel(mem.W64 @ K, target) < 0.05        # the new fact, not the average


def test_accumulate_keeps_both_and_retract_removes_all_columns():
    W0, C0, K, V, _ = problem(8, 4, 3, seed=14)
    mem = LinearMemory(W0, C0, 0.5, on_conflict="accumulate")
    mem.edit(K[:, :2], V[:, :2], ids=["x", "y"])
    mem.edit(K[:, :1], -V[:, :1], ids=["x"])      # a contradicting fact on the same key
    assert mem.last_report.conflicts == ("x",) and mem.n_constraints == 3
    both_K = torch.cat([K[:, :2], K[:, :1]], dim=1)
    both_V = torch.cat([V[:, :2], -V[:, :1]], dim=1)
    assert rel(mem.W64, ote(W0, C0, 0.5, both_K, both_V)) <= 1e-10   # the compromise
    mem.retract(["x"])
    assert mem.ids == ["y"]
    assert rel(mem.W64, ote(W0, C0, 0.5, K[:, 1:2], V[:, 1:2])) <= 1e-10


def test_error_policy_raises_and_changes_nothing():
    W0, C0, K, V, _ = problem(6, 3, 3, seed=15)
    mem = LinearMemory(W0, C0, 1.0, on_conflict="error")
    mem.edit(K[:, :2], V[:, :2], ids=["a", "b"])
    before = mem.state_dict()
    with pytest.raises(ConflictError, match="retract"):
        mem.edit(K[:, 2:], V[:, 2:], ids=["a"])
    with pytest.raises(ConflictError):
        mem.edit(K[:, :2], V[:, :2], ids=["c", "c"])
    assert_same_state(before, mem.state_dict())


def test_duplicates_in_one_call_last_wins_and_warns(caplog):
    W0, C0, K, V, _ = problem(6, 3, 3, seed=16)
    mem = LinearMemory(W0, C0, 1.0)
    with caplog.at_level(logging.WARNING, logger="oteseq.memory"):
        mem.edit(K, V, ids=["a", "b", "a"])
    assert "more than once" in caplog.text
    report = mem.last_report
    assert report.duplicates_dropped == ("a",) and report.n_added == 2
    assert rel(mem.W64, ote(W0, C0, 1.0, K[:, 1:], V[:, 1:])) <= 1e-10


def test_auto_ids_skip_active_ones():
    W0, C0, K, V, _ = problem(5, 2, 3, seed=17)
    mem = LinearMemory(W0, C0, 1.0)
    mem.edit(K[:, :1], V[:, :1], ids=["edit-1"])
    mem.edit(K[:, 1:], V[:, 1:])
    assert mem.ids == ["edit-1", "edit-0", "edit-2"]


# ----------------------------------------------------------------------------- post + feedback
def halve_small(delta, W):
    """A deterministic post-hoc operator: zero the entries below the median magnitude."""
    return torch.where(delta.abs() >= delta.abs().median(), delta, torch.zeros_like(delta))


@pytest.mark.parametrize("refresh", [1000, 2])
def test_error_feedback_leaves_only_the_last_truncation(refresh):
    W0, C0, K, V, _ = problem(8, 5, 12, seed=18)
    lam, ridge = 0.5, 1.0
    mem = LinearMemory(W0, C0, lam, ridge=ridge, post=halve_small, error_feedback=True,
                       refresh_every=refresh)
    for lo, hi in [(0, 3), (3, 7), (7, 12)]:
        mem.edit(K[:, lo:hi], V[:, lo:hi])
        A = lam * C0 + ridge * torch.eye(8, dtype=F64) + K[:, :hi] @ K[:, :hi].T
        E = mem.E
        # W_t = W_OTE,t + (Δ̂_t − Δ_t), and E_t = (Δ̂_t − Δ_t) A_t
        gap = mem.W64 - ote(W0, C0, lam, K[:, :hi], V[:, :hi], ridge=ridge)
        assert float(torch.linalg.norm(gap - torch.linalg.solve(A, E.T).T)) <= 1e-9 * (
            1 + float(torch.linalg.norm(gap)))


@pytest.mark.parametrize("post", ["prune", "rect"])
def test_feedback_keeps_posthoc_trajectory_near_ote(post):
    d_in, d_out, k, T = 10, 6, 2, 25
    W0, C0, K, V, _ = problem(d_in, d_out, k * T, seed=19, scale=20.0)
    W0 = 0.5 * W0
    runs = {fb: LinearMemory(W0, C0, 1.0, ridge=1.0, post=post, error_feedback=fb)
            for fb in (False, True)}
    for t in range(T):
        for mem in runs.values():
            mem.edit(K[:, k * t:k * (t + 1)], V[:, k * t:k * (t + 1)])
    target = ote(W0, C0, 1.0, K, V, ridge=1.0)
    plain, fed = (rel(runs[fb].W64, target) for fb in (False, True))
    assert fed < 0.5 * plain


def test_post_output_is_checked():
    W0, C0, K, V, _ = problem(5, 3, 2, seed=20)
    mem = LinearMemory(W0, C0, 1.0, post=lambda delta, W: delta[:, :1])
    with pytest.raises(ShapeError, match="post"):
        mem.edit(K, V)
    assert torch.equal(mem.W64, W0) and mem.ids == [] and mem.last_report is None


# ----------------------------------------------------------------------------- state
def part1(mem, K, V):
    """Edits, a replace, a retract (dead rows in the store), an auto id."""
    mem.edit(K[:, 0:3], V[:, 0:3], ids=["a", "b", "c"])
    mem.edit(K[:, 3:5], V[:, 3:5], ids=["d", "b"])
    if mem.options.accumulate:
        mem.retract(["a"])
    mem.edit(K[:, 5:6], V[:, 5:6])


def part2(mem, K, V):
    mem.edit(K[:, 6:8], V[:, 6:8], ids=["c", "e"])
    if mem.options.accumulate:
        mem.retract(["d", "edit-0"])
    for j in range(8, 12):
        mem.edit(K[:, j:j + 1], V[:, j:j + 1])


@pytest.mark.parametrize("options", [dict(), dict(refresh_every=2),
                                     dict(post="rect", error_feedback=True, ridge=1.0),
                                     dict(accumulate=False, post="prune", error_feedback=True)])
def test_state_round_trip_continues_identically(options, tmp_path):
    W0, C0, K, V, _ = problem(9, 4, 12, seed=21, scale=5.0)
    uninterrupted = LinearMemory(W0.float(), C0, 0.8, **options)
    part1(uninterrupted, K, V)
    saved = uninterrupted.state_dict()
    uninterrupted.save(tmp_path / "mem")
    loaded = LinearMemory(W0.float(), C0, 0.8, **options)
    loaded.load_state_dict(saved)
    from_disk = LinearMemory.load(tmp_path / "mem")
    part2(uninterrupted, K, V)
    for mem in (loaded, from_disk):
        assert torch.equal(mem.W64, saved["tensors"]["W"]) and mem.W.dtype == torch.float32
        part2(mem, K, V)
        assert torch.equal(mem.W, uninterrupted.W) and torch.equal(mem.W64, uninterrupted.W64)
        assert_same_state(mem.state_dict(), uninterrupted.state_dict())
    assert (tmp_path / "mem" / "memory.json").is_file()


def test_save_replaces_an_existing_save(tmp_path):
    W0, C0, K, V, _ = problem(5, 2, 4, seed=22)
    mem = LinearMemory(W0, C0, 1.0)
    mem.save(tmp_path)
    mem.edit(K, V)
    mem.save(tmp_path)
    assert torch.equal(LinearMemory.load(tmp_path).W64, mem.W64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memory.json", "memory.safetensors"]


@pytest.mark.parametrize("change", [dict(lam=2.0), dict(ridge=1.0), dict(accumulate=False),
                                    dict(on_conflict="error"), dict(d_in=6)])
def test_load_state_with_other_shapes_or_options_is_refused(change):
    W0, C0, K, V, _ = problem(5, 2, 3, seed=23)
    mem = LinearMemory(W0, C0, 1.0)
    mem.edit(K, V)
    saved = mem.state_dict()
    d_in = change.pop("d_in", 5)
    W0b, C0b, *_ = problem(d_in, 2, 3, seed=23)
    other = LinearMemory(W0b, C0b, change.pop("lam", 1.0), **change)
    before = other.state_dict()
    with pytest.raises(StateMismatchError):
        other.load_state_dict(saved)
    assert_same_state(before, other.state_dict())


def test_state_of_another_weight_is_refused():
    W0, C0, K, V, _ = problem(5, 2, 3, seed=24)
    saved = LinearMemory(W0, C0, 1.0).state_dict()
    with pytest.raises(StateMismatchError, match="W0"):
        LinearMemory(W0 + 1.0, C0, 1.0).load_state_dict(saved)


def test_custom_post_cannot_be_saved():
    W0, C0, *_ = problem(4, 2, 1, seed=25)
    with pytest.raises(OteseqError, match="prune"):
        LinearMemory(W0, C0, 1.0, post=halve_small).state_dict()


# ----------------------------------------------------------------------------- atomicity
def test_failures_leave_every_tensor_unchanged(monkeypatch):
    W0, C0, K, V, _ = problem(7, 3, 8, seed=26)
    mem = LinearMemory(W0, C0, 1.0, refresh_every=3)
    mem.edit(K[:, :4], V[:, :4], ids=["a", "b", "c", "d"])
    before = mem.state_dict()
    bad_V = V[:, 4:6].clone()
    bad_V[0, 1] = math.nan
    with pytest.raises(NonFiniteError):
        mem.edit(K[:, 4:6], bad_V, ids=["a", "e"])
    assert_same_state(before, mem.state_dict())

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    ops = [lambda m: m.edit(K[:, 4:6], V[:, 4:6], ids=["b", "e"]), lambda m: m.retract(["e"])]
    for name in ("woodbury", "dense_factor", "forward_error"):
        mem.load_state_dict(before)
        with monkeypatch.context() as patch:
            patch.setattr(_algebra, name, interrupt)
            for op in ops * 3:  # reaches the dense refresh within refresh_every steps
                snapshot = mem.state_dict()
                try:
                    op(mem)
                except KeyboardInterrupt:
                    assert_same_state(snapshot, mem.state_dict())
                    break
            else:
                pytest.fail(f"_algebra.{name} was never called")


def test_interrupt_mid_step_with_feedback(monkeypatch):
    W0, C0, K, V, _ = problem(6, 3, 6, seed=27)
    calls = []

    def post(delta, W):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return halve_small(delta, W)
    mem = LinearMemory(W0, C0, 1.0, post=post, error_feedback=True)
    twin = LinearMemory(W0, C0, 1.0, post=halve_small, error_feedback=True)  # never interrupted
    mem.edit(K[:, :3], V[:, :3])
    twin.edit(K[:, :3], V[:, :3])
    W, E = mem.W.clone(), mem.E.clone()
    with pytest.raises(KeyboardInterrupt):
        mem.edit(K[:, 3:], V[:, 3:])
    assert torch.equal(mem.W, W) and torch.equal(mem.E, E)
    assert mem.ids == ["edit-0", "edit-1", "edit-2"] and mem.n_constraints == 3
    # the hidden state (A⁻¹, the constraint store) is untouched too: the next step equals the
    # twin's, which never saw the interrupted call
    mem.edit(K[:, 3:], V[:, 3:])
    twin.edit(K[:, 3:], V[:, 3:])
    assert torch.equal(mem.W, twin.W) and torch.equal(mem.E, twin.E) and mem.ids == twin.ids


# ----------------------------------------------------------------------------- bad inputs
def bad_calls(K, V):
    """(exception, call) pairs on a memory with d_in = 5, d_out = 2 and active id "a"."""
    nan_K = K.clone()
    nan_K[0, 0] = math.inf
    return [
        (ShapeError, lambda m: m.edit(K[:4], V)),
        (ShapeError, lambda m: m.edit(K, V[:1])),
        (ShapeError, lambda m: m.edit(K, V[:, :1])),
        (ShapeError, lambda m: m.edit(K, V, ids=["x"])),
        (NonFiniteError, lambda m: m.edit(nan_K, V)),
        (DeviceDtypeError, lambda m: m.edit(K.long(), V)),
        (DeviceDtypeError, lambda m: m.edit(K.to("meta"), V)),
        (DeviceDtypeError, lambda m: m.edit(K.numpy(), V)),
        (RequestError, lambda m: m.edit(K[:, :1], V[:, :1], ids=[["list", "id"]])),
        (RequestError, lambda m: m.edit(K[:, :1], V[:, :1], ids="a")),
        (UnknownIdError, lambda m: m.retract(["a", "nope"])),
        (RequestError, lambda m: m.retract(("a", "b"))),
    ]


@pytest.mark.parametrize("case", range(12))
def test_bad_input_raises_named_error_and_changes_nothing(case):
    W0, C0, K, V, _ = problem(5, 2, 3, seed=28)
    mem = LinearMemory(W0, C0, 1.0)
    mem.edit(K[:, :1], V[:, :1], ids=["a"])
    before = mem.state_dict()
    error, call = bad_calls(K, V)[case]
    with pytest.raises(error):
        call(mem)
    assert_same_state(before, mem.state_dict())


def test_singular_first_batch_names_the_fix_and_changes_nothing():
    W0, C0, K, V, _ = problem(6, 2, 3, seed=29)
    mem = LinearMemory(W0, C0, 0.0)
    before = mem.state_dict()
    with pytest.raises(SingularSystemError, match="lam"):
        mem.edit(K, V)
    assert_same_state(before, mem.state_dict())


def test_retracting_the_only_constraints_at_lam_zero_is_singular():
    W0, C0, K, V, _ = problem(3, 2, 5, seed=30)
    mem = LinearMemory(W0, C0, 0.0)
    mem.edit(K, V, ids=list(range(5)))
    before = mem.state_dict()
    with pytest.raises(SingularSystemError):
        mem.retract([0, 1, 2, 3])
    assert_same_state(before, mem.state_dict())


@pytest.mark.parametrize("make, error", [
    (lambda W0, C0: LinearMemory(W0, C0 + torch.triu(torch.ones_like(C0), 1), 1.0), NotPSDError),
    (lambda W0, C0: LinearMemory(W0, C0 - 3 * torch.eye(5, dtype=F64), 1.0), NotPSDError),
    (lambda W0, C0: LinearMemory(W0, C0 - 0.9 * torch.diag(C0.diagonal()) +
                                 0.5 * torch.ones_like(C0), 1.0), NotPSDError),
    (lambda W0, C0: LinearMemory(W0, C0, -1.0), NotPSDError),
    (lambda W0, C0: LinearMemory(W0, C0, 1.0, ridge=-0.1), NotPSDError),
    (lambda W0, C0: LinearMemory(W0, C0[:4, :4], 1.0), ShapeError),
    (lambda W0, C0: LinearMemory(W0[0], C0, 1.0), ShapeError),
    (lambda W0, C0: LinearMemory(W0.long(), C0, 1.0), DeviceDtypeError),
    (lambda W0, C0: LinearMemory(W0, C0.to("meta"), 1.0), DeviceDtypeError),
    (lambda W0, C0: LinearMemory(W0 * math.nan, C0, 1.0), NonFiniteError),
    (lambda W0, C0: LinearMemory(W0, C0, 1.0, projection=2 * torch.eye(5, dtype=F64)), NotPSDError),
    (lambda W0, C0: LinearMemory(W0, C0, 1.0, projection=torch.eye(4, dtype=F64)), ShapeError),
    (lambda W0, C0: LinearMemory(W0, C0, 1.0, on_conflict="merge"), OteseqError),
    (lambda W0, C0: LinearMemory(W0, C0, 1.0, post="svd"), OteseqError),
    (lambda W0, C0: LinearMemory(W0, C0, 1.0, refresh_every=0), OteseqError),
    (lambda W0, C0: LinearMemory(W0, C0, 1.0, accumulate="yes"), OteseqError),
])
def test_bad_construction_raises_named_error(make, error):
    W0, C0, *_ = problem(5, 2, 1, seed=31)
    with pytest.raises(error):
        make(W0, C0)


def test_public_names():
    assert oteseq.LinearMemory is LinearMemory
    W0, C0, K, V, _ = problem(4, 2, 2, seed=32)
    mem = oteseq.LinearMemory(W0, C0, 1.0)
    assert mem.edit(K, V, ids=None).dtype == F64 and "edit-0" in mem
    assert mem.retract([]).abs().max() == 0 and mem.last_report.n_removed == 0
