"""One memory step as a pure function: (state, added columns, removed rows) -> (new state, Δ).

Nothing here mutates its inputs; :class:`~oteseq.memory.LinearMemory` commits the new state with
one assignment. The step solves ``Δ A' = R_s S B_sᵀ (− E)`` where ``A' = A + B_s S B_sᵀ`` is the
normal matrix after adding ``B_a`` and removing ``B_r`` (``S = ±1``); for a pure addition this
is ``Δ = R Bᵀ A'⁻¹``, for a retraction ``Δ = −R_r B_rᵀ A'⁻¹`` (``R = V − W K``: the current fit).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from oteseq.errors import NonFiniteError, ShapeError
from oteseq.memory import _algebra as alg
from oteseq.memory._config import DRIFT_GROWTH, DRIFT_TOL, StepReport, PostHoc
from oteseq.memory._inputs import Id
from oteseq.memory._state import MemoryState
from oteseq.memory._store import ConstraintStore


@dataclass(frozen=True)
class _System:
    """The solved normal system of one step."""

    X: torch.Tensor                  # A'⁻¹ B_s (d_in, m)
    A_inv: torch.Tensor | None       # A'⁻¹ (accumulate: committed; else only for feedback)
    L: torch.Tensor | None           # Cholesky factor of A' when it was refreshed densely
    drift: float = math.nan
    cond: float = math.nan


def step(st: MemoryState, K_a: torch.Tensor, V_a: torch.Tensor, ids_a: list[Id],
         remove_rows: list[int], report: dict,
         out: dict[str, torch.Tensor] | None = None,
         ) -> tuple[MemoryState, torch.Tensor, StepReport]:
    """Add ``(K_a, V_a)`` under ``ids_a`` and remove the active ``remove_rows``, atomically.

    ``out`` may name scratch buffers (``"A_inv"``, ``"W"``) of the right shape that nothing else
    uses; the new inverse and weight are then written there instead of into fresh memory.
    ``st``'s own tensors are never written.
    """
    out = out or {}
    aligned = st.options.accumulate
    store = st.store.changed(remove_rows, K_a, V_a, ids_a)
    if aligned and remove_rows:
        K_r, V_r = st.store.columns(remove_rows)
    else:
        K_r, V_r = K_a[:, :0], V_a[:, :0]
    K_s, V_s = torch.cat([K_a, K_r], dim=1), torch.cat([V_a, V_r], dim=1)
    summary = dict(n_added=K_a.shape[1], n_removed=len(remove_rows), n_active=store.n_active,
                   **report)
    if K_s.shape[1] == 0:
        return st.with_(store=store), torch.zeros_like(st.W), StepReport(**summary)
    signs = torch.cat([K_a.new_ones(K_a.shape[1]), K_r.new_full((K_r.shape[1],), -1.0)])
    B_s = alg.project(K_s, st.P)
    system = _solve(st, store, B_s, signs, out.get("A_inv") if aligned else None)
    refreshed = system.L is not None and aligned
    delta, W, E = _update(st, store, K_s, V_s, signs, system, refreshed, out.get("W"))
    A_inv = system.A_inv if aligned else st.A_inv
    new = st.with_(  # one memory layout, so a reloaded state continues bit for bit
        W=W.contiguous(), E=None if E is None else E.contiguous(), store=store,
        A_inv=A_inv if not isinstance(A_inv, torch.Tensor) else A_inv.contiguous(),
        steps=st.steps + 1,
        since_refresh=0 if refreshed else st.since_refresh + 1,
        n_refreshes=st.n_refreshes + refreshed,
        drift_floor=system.drift if refreshed else st.drift_floor)
    return new, delta, StepReport(**summary, drift=system.drift, capacitance_cond=system.cond,
                                  refreshed=refreshed)


def _solve(st: MemoryState, store: ConstraintStore, B_s: torch.Tensor,
           signs: torch.Tensor, out: torch.Tensor | None = None) -> _System:
    """``A'⁻¹ B_s`` by Woodbury from the maintained inverse, or by an exact refresh."""
    opt = st.options
    if not opt.accumulate:  # A_t = A0 + B_t B_tᵀ from the fixed A0⁻¹
        if st.A_inv is not None:
            U = st.A_inv @ B_s
            wb = alg.woodbury(st.A_inv, U, B_s, signs, need_inverse=opt.error_feedback)
            if wb is not None:
                return _System(wb.X, wb.A_inv, None, cond=wb.cond)
        L, A_inv = alg.dense_factor(st.A0, B_s)
        return _System(torch.cholesky_solve(B_s, L), A_inv, L)
    due = st.A_inv is None or (opt.refresh_every is not None
                               and st.since_refresh + 1 >= opt.refresh_every)
    K_new = store.columns()[0]
    if not due and st.A_inv is not None:   # (not due implies an inverse; said for the checker)
        wb = alg.woodbury(st.A_inv, st.A_inv @ B_s, B_s, signs, need_inverse=True, out=out)
        if wb is not None and wb.A_inv is not None:   # need_inverse=True: always kept
            drift = alg.forward_error(st.A0, st.P, K_new, wb.X, B_s, wb.A_inv)
            if drift <= max(DRIFT_TOL, DRIFT_GROWTH * st.drift_floor):
                return _System(wb.X, wb.A_inv, None, drift, wb.cond)
    L, A_inv = alg.dense_factor(st.A0, alg.project(K_new, st.P))
    X = torch.cholesky_solve(B_s, L)
    return _System(X, A_inv, L, alg.forward_error(st.A0, st.P, K_new, X, B_s, A_inv))


def _update(st: MemoryState, store: ConstraintStore, K_s: torch.Tensor, V_s: torch.Tensor,
            signs: torch.Tensor, system: _System, refreshed: bool,
            out: torch.Tensor | None = None,
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(Δ̂, W + Δ̂, E_new)``; on an exact refresh ``W = W0 + (V − W0 K)(A⁻¹ B)ᵀ`` directly."""
    opt = st.options
    if opt.exact and refreshed:
        assert system.L is not None   # a refreshed system carries its Cholesky factor
        K, V = store.columns()
        W = st.W0 + alg.ote_update(st.W0, K, V, st.P, system.L)
        return W - st.W, _finite(W, "the edited weight"), st.E
    R = V_s - st.W @ K_s
    delta = (R * signs) @ system.X.T                                   # R_s S B_sᵀ A'⁻¹
    if opt.error_feedback:
        # a memory with error feedback always carries E, and its systems keep the inverse
        assert st.E is not None and system.A_inv is not None
        delta = delta - st.E @ system.A_inv                            # − E A'⁻¹ (A' symmetric)
    post = _post_operator(opt.post)
    delta_hat = delta if post is None else _checked_post(post(delta, st.W), st.W)
    E = st.E
    if opt.error_feedback:  # E = (Δ̂ − Δ) A', with A' = A0 + B Bᵀ over the system's keys
        K_sys = store.columns()[0] if opt.accumulate else K_s
        E = _finite(alg.apply_normal(st.A0, st.P, K_sys, (delta_hat - delta).T).T, "E")
    fits = out is not None and out.shape == st.W.shape and out.dtype == st.W.dtype
    W = torch.add(st.W, delta_hat, out=out) if fits else st.W + delta_hat
    return delta_hat, _finite(W, "the edited weight (W + Δ)"), E


def _post_operator(post: object) -> PostHoc | None:
    if post is None or callable(post):
        return post
    from oteseq import ols

    operators: dict[str, PostHoc] = {"prune": ols.prune, "rect": ols.rect}
    return operators[str(post)]


def _checked_post(delta_hat: object, W: torch.Tensor) -> torch.Tensor:
    if not isinstance(delta_hat, torch.Tensor) or delta_hat.shape != W.shape:
        shape = getattr(delta_hat, "shape", type(delta_hat).__name__)
        raise ShapeError(f"post returned {shape}, expected a tensor of W's shape "
                         f"{tuple(W.shape)}; a post operator maps (Δ, W) to Δ̂ of Δ's shape")
    return delta_hat.to(torch.float64)


def _finite(x: torch.Tensor, name: str) -> torch.Tensor:
    # one reduction pass, no (d_out, d_in) bool tensor: min and max propagate NaN, show ±inf
    low, high = torch.aminmax(x) if x.numel() else (x.new_zeros(()), x.new_zeros(()))
    if not (math.isfinite(float(low)) and math.isfinite(float(high))):
        raise NonFiniteError(f"{name} is not finite (overflow or a near-singular system); nothing "
                             f"was changed — raise lam or ridge, or check K and V for huge values")
    return x
