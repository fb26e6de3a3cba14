"""Checks for chapter 13 (exercises and projects): recursive least squares with Woodbury, its
conflict-aware downdate, a forgetting factor, and the hit rate of edited constraints."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ._common import Agreement, as_tensor, call, compare, generator, randn, report


def _stream(case: int, d_in: int = 6, d_out: int = 4, n: int = 2, T: int = 4) -> dict:
    """``W0``, SPD ``C0``, ``lam`` and ``T`` batches ``(K_t, V_t)`` of ``n`` edits (float64)."""
    g = generator(1300 + case)
    K0 = randn(g, d_in, 3 * d_in)
    W0 = randn(g, d_out, d_in)
    batches = [(randn(g, d_in, n), randn(g, d_out, n)) for _ in range(T)]
    return dict(W0=W0, C0=K0 @ K0.T / K0.shape[1], lam=0.3 + case, batches=batches)


def _weighted_ote(W0, C0, lam, batches, gamma: float = 1.0) -> torch.Tensor:
    """``argmin_W Σ_s γ^{T−s}‖W K_s − V_s‖² + lam·tr((W−W0) C0 (W−W0)ᵀ)``, the obvious way."""
    T = len(batches)
    A, rhs = lam * C0.clone(), lam * W0 @ C0
    for s, (K, V) in enumerate(batches, start=1):
        A, rhs = A + gamma ** (T - s) * K @ K.T, rhs + gamma ** (T - s) * V @ K.T
    return torch.linalg.solve(A, rhs.T).T


def _call_stream(name: str, fn: Callable, p: dict, case: int, *extra):
    """``fn(W0, C0, lam, batches, *extra)`` on copies; catches in-place changes of the batches."""
    copies = [(K.clone(), V.clone()) for K, V in p["batches"]]
    args = {"W0": p["W0"], "C0": p["C0"], "lam": p["lam"]}
    out = call(name, lambda W0, C0, lam: fn(W0, C0, lam, copies, *extra), args, case)
    if any(not (torch.equal(K, K2) and torch.equal(V, V2))
           for (K, V), (K2, V2) in zip(p["batches"], copies)):
        raise AssertionError(f"{name}: your function modified the batches in place "
                             f"(problem {case}); work on copies")
    return out, args


def check_rls(fn: Callable) -> Agreement:
    """Check ``fn(W0, C0, lam, batches) -> W`` (recursive least squares) against
    :class:`oteseq.LinearMemory` (``accumulate=True``) fed the same batches.

    Each step: ``A⁻¹ ← A⁻¹ − A⁻¹K(I + KᵀA⁻¹K)⁻¹KᵀA⁻¹`` (Woodbury), ``W ← W + (V − W K)Kᵀ A⁻¹``
    with the *updated* ``A⁻¹``; ``A⁻¹`` starts at ``(lam C0)⁻¹``. Returns the largest error.
    """
    from oteseq.memory import LinearMemory

    name, errors = "check_rls", []
    for case in range(4):
        p = _stream(case, n=1 + case % 3)
        memory = LinearMemory(p["W0"], p["C0"], p["lam"])
        for K, V in p["batches"]:
            memory.edit(K, V)
        expected = memory.W.to(torch.float64)
        out, args = _call_stream(name, fn, p, case)
        got = as_tensor(name, out, expected, "W")
        misaligned = p["W0"].clone()
        for K, V in p["batches"]:
            A = p["lam"] * p["C0"] + K @ K.T
            misaligned = misaligned + torch.linalg.solve(A, ((V - misaligned @ K) @ K.T).T).T
        hint = ("you dropped the earlier keys: the inverse must carry every batch's K Kᵀ "
                "(A⁻¹ is updated, never reset)." if torch.allclose(got, misaligned, atol=1e-8)
                else "update A⁻¹ with Woodbury first, then W ← W + (V − W K) Kᵀ A⁻¹ with the "
                     "new A⁻¹; return W after the last batch.")
        errors.append(compare(name, got, expected, case, {**args, "T": len(p["batches"])},
                              "LinearMemory after the same batches", hint))
    return report(name, "LinearMemory after the same batches", errors)


def check_rls_replace(fn: Callable) -> Agreement:
    """Check ``fn(W, A_inv, K_old, V_old, K_new, V_new) -> (W_new, A_inv_new)``.

    Conflict-aware replacement in inverse form: ``A_new = A − K_old K_oldᵀ + K_new K_newᵀ``,
    ``W_new = W + ((V_new − W K_new)K_newᵀ − (V_old − W K_old)K_oldᵀ) A_new⁻¹``; ``A_inv_new``
    must be ``A_new⁻¹`` (one signed Woodbury update of rank 2m). Returns the largest error.
    """
    name, errors = "check_rls_replace", []
    for case in range(4):
        p, m = _stream(case, n=3, T=2), 1 + case % 2
        K = torch.cat([K for K, _ in p["batches"]], 1)
        V = torch.cat([V for _, V in p["batches"]], 1)
        A = p["lam"] * p["C0"] + K @ K.T
        W = _weighted_ote(p["W0"], p["C0"], p["lam"], p["batches"])
        g = generator(1350 + case)
        K_new, V_new = K[:, :m] + 0.1 * randn(g, K.shape[0], m), randn(g, V.shape[0], m)
        args = dict(W=W, A_inv=torch.linalg.inv(A), K_old=K[:, :m].clone(),
                    V_old=V[:, :m].clone(), K_new=K_new, V_new=V_new)
        out = call(name, fn, args, case)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise AssertionError(f"{name}: return a pair (W_new, A_inv_new), got "
                                 f"{type(out).__name__}")
        kept = [(K[:, m:], V[:, m:]), (K_new, V_new)]
        expected_W = _weighted_ote(p["W0"], p["C0"], p["lam"], kept)
        A_new = A - K[:, :m] @ K[:, :m].T + K_new @ K_new.T
        got_W = as_tensor(name, out[0], W, "W_new")
        got_inv = as_tensor(name, out[1], A, "A_inv_new")
        errors.append(max(
            compare(name, got_inv, torch.linalg.inv(A_new), case, args, "(A − K_old K_oldᵀ + "
                    "K_new K_newᵀ)⁻¹", "Woodbury with U = [K_new, K_old] and signs "
                    "S = diag(+I, −I): A⁻¹ − A⁻¹U(S⁻¹ + UᵀA⁻¹U)⁻¹UᵀA⁻¹."),
            compare(name, got_W, expected_W, case, args, "the one-time solution with the old "
                    "edits replaced", "the right-hand side has two terms, "
                    "(V_new − W K_new)K_newᵀ − (V_old − W K_old)K_oldᵀ, times the NEW A⁻¹.")))
    return report(name, "replacement in inverse form", errors)


def check_forgetting_rls(fn: Callable) -> Agreement:
    """Check ``fn(W0, C0, lam, batches, gamma) -> W_T`` (RLS with a forgetting factor).

    ``W_T`` must minimise ``Σ_s γ^{T−s}‖W K_s − V_s‖² + lam·tr((W−W0) C0 (W−W0)ᵀ)``: old edits
    fade geometrically, the anchor to ``W0`` does not. Tried at γ = 0, 0.5, 0.9 and 1.
    Returns the largest relative error.
    """
    name, errors = "check_forgetting_rls", []
    for case, gamma in enumerate((0.0, 0.5, 0.9, 1.0)):
        p = _stream(case)
        expected = _weighted_ote(p["W0"], p["C0"], p["lam"], p["batches"], gamma)
        out, args = _call_stream(name, fn, p, case, gamma)
        got = as_tensor(name, out, expected, "W")
        errors.append(compare(name, got, expected, case, {**args, "gamma": gamma},
                              f"the exponentially weighted one-time solution (γ={gamma})",
                              "A_t = γ A_{t−1} + (1 − γ) lam C0 + K_t K_tᵀ keeps the anchor "
                              "lam C0 whole; the step is Δ = (R K_tᵀ − (1 − γ) lam (W − W0) C0) "
                              "A_t⁻¹."))
    return report(name, "the forgetting-factor solution", errors)


def check_hit_rate(fn: Callable) -> Agreement:
    """Check ``fn(W, W0, K, V) -> float``: the fraction of edited constraints that still hold.

    Column j holds when the edited output is closer to its target than to the original output:
    ``‖W k_j − v_j‖ < ‖W k_j − W0 k_j‖`` (the linear analogue of P(new) > P(true)).
    """
    name, errors = "check_hit_rate", []
    for case in range(4):
        g = generator(1390 + case)
        W0, K = randn(g, 4, 6), randn(g, 6, 9)
        V = W0 @ K + 2 * randn(g, 4, 9)
        W = W0 + (case / 3) * torch.linalg.lstsq(K.T, (V - W0 @ K).T).solution.T
        W = W + 0.3 * randn(g, 4, 6)
        args = dict(W=W, W0=W0, K=K, V=V)
        expected = float(((W @ K - V).norm(dim=0) < (W @ K - W0 @ K).norm(dim=0)).double().mean())
        try:
            got = float(call(name, fn, args, case))
        except (TypeError, ValueError, RuntimeError):
            raise AssertionError(f"{name}: return one number (a float)") from None
        if abs(got - expected) > 1e-12:
            raise AssertionError(f"{name}: on problem {case} your hit rate is {got:.3f}, expected "
                                 f"{expected:.3f}. Hint: compare column norms (dim=0) of "
                                 f"W K − V and W K − W0 K; keys are columns.")
        errors.append(abs(got - expected))
    return report(name, "the hit rate", errors)


__all__ = ["check_forgetting_rls", "check_hit_rate", "check_rls", "check_rls_replace"]
