"""Checks for chapter 3 (editing as least squares): batch MEMIT and single-fact ROME."""
from __future__ import annotations

from collections.abc import Callable

from ._common import Agreement, problems, run_check


def check_memit(fn: Callable) -> Agreement:
    """Check ``fn(W, C0, K, V, lam) -> Δ`` (batch MEMIT) against :func:`oteseq.ols.se_step`.

    ``Δ`` minimises ``‖(W + Δ) K − V‖² + lam·tr(Δ C0 Δᵀ)``: ``Δ = R Kᵀ (lam C0 + K Kᵀ)⁻¹``.
    """
    from oteseq.ols import least_squares

    cases = [dict(W=p.W0, C0=p.C0, K=p.K, V=p.V, lam=p.lam) for p in problems()]
    return run_check("check_memit", fn, least_squares.se_step, cases,
                     what="oteseq.ols.se_step (no earlier keys)",
                     hint="Δ = (V − W K) Kᵀ (lam C0 + K Kᵀ)⁻¹; return the update, not W + Δ.")


def check_rome(fn: Callable) -> Agreement:
    """Check ``fn(W, C, k, v) -> Δ`` (one key, exact fit) against :func:`oteseq.ols.rome`.

    ``Δ`` minimises ``tr(Δ C Δᵀ)`` subject to ``(W + Δ) k = v``: ``Δ = (v − W k)(C⁻¹k)ᵀ/(kᵀC⁻¹k)``.
    ``k`` and ``v`` are 1-D vectors.
    """
    from oteseq.ols import constrained

    cases = [dict(W=p.W0, C=p.C0, k=p.K[:, 0].clone(), v=p.V[:, 0].clone())
             for p in problems()]
    return run_check("check_rome", fn, constrained.rome, cases, what="oteseq.ols.rome",
                     hint="u = C⁻¹ k (a solve, not an inverse), then Δ = (v − W k) uᵀ / (kᵀ u); "
                          "torch.outer builds the rank-one matrix from two vectors.")
