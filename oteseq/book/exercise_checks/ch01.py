"""Checks for chapter 1 (introduction): one-time editing."""
from __future__ import annotations

from collections.abc import Callable

from ._common import Agreement, problems, run_check


def check_ote(fn: Callable) -> Agreement:
    """Check ``fn(W0, C0, K, V, lam) -> W`` against :func:`oteseq.ols.ote`.

    One-time editing: ``W`` minimises ``‖W K − V‖² + lam·tr((W − W0) C0 (W − W0)ᵀ)``;
    normal equations ``W (lam C0 + K Kᵀ) = lam W0 C0 + V Kᵀ``.
    """
    from oteseq.ols import least_squares

    cases = [dict(W0=p.W0, C0=p.C0, K=p.K, V=p.V, lam=p.lam) for p in problems()]
    return run_check("check_ote", fn, least_squares.ote, cases, what="oteseq.ols.ote",
                     hint="solve W A = lam W0 C0 + V Kᵀ with A = lam C0 + K Kᵀ; right-hand "
                          "solves use torch.linalg.solve(A, B.T).T since A is symmetric. "
                          "Return the edited weight W, not the update.")
