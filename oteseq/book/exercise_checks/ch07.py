"""Checks for chapter 7 (the thread): the aligned sequential step and the Woodbury update."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ._common import Agreement, problems, run_check


def check_se_step(fn: Callable) -> Agreement:
    """Check ``fn(W, C0, K, V, lam, K_p) -> Δ`` against :func:`oteseq.ols.se_step`.

    One sequential step from the current ``W``: ``Δ = (V − W K) Kᵀ (lam C0 + K_p K_pᵀ + K Kᵀ)⁻¹``.
    Tried with earlier keys ``K_p`` (aligned) and with ``K_p=None`` (misaligned: no term).
    """
    from oteseq.ols import least_squares

    cases = [dict(W=p.W0, C0=p.C0, K=p.K, V=p.V, lam=p.lam, K_p=p.K_p) for p in problems()]
    cases.append({**cases[0], "K_p": None})
    return run_check("check_se_step", fn, least_squares.se_step, cases,
                     what="oteseq.ols.se_step",
                     hint="the residual is taken against the current W (R = V − W K), the "
                          "normal matrix is lam C0 + K_p K_pᵀ + K Kᵀ (drop the K_p term when "
                          "K_p is None), and the function returns the update Δ, not W + Δ.")


def check_woodbury(fn: Callable) -> Agreement:
    """Check ``fn(A_inv, K) -> (A + K Kᵀ)⁻¹`` (given ``A_inv = A⁻¹``) against a direct inverse.

    Woodbury: ``(A + K Kᵀ)⁻¹ = A⁻¹ − A⁻¹ K (I + Kᵀ A⁻¹ K)⁻¹ Kᵀ A⁻¹``, only an n × n solve.
    """
    cases = [dict(A_inv=torch.linalg.inv(p.lam * p.C0 + p.K_p @ p.K_p.T), K=p.K)
             for p in problems()]

    def direct(A_inv, K):
        return torch.linalg.inv(torch.linalg.inv(A_inv) + K @ K.T)

    return run_check("check_woodbury", fn, direct, cases, what="the directly inverted matrix",
                     hint="(A + K Kᵀ)⁻¹ = A⁻¹ − A⁻¹ K (I + Kᵀ A⁻¹ K)⁻¹ Kᵀ A⁻¹ with I of size "
                          "n × n.")
