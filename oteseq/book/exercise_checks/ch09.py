"""Checks for chapter 9 (the broader class): one step of the reparametrised problem."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ._common import Agreement, problems, run_check


def check_reparam_step(fn: Callable) -> Agreement:
    """Check ``fn(W, K, V, B, G, K_p) -> Δ`` against :func:`oteseq.ols.reparam_step`.

    ``Δ`` minimises ``‖(W + Δ B) K − V‖² + ‖Δ B K_p‖² + tr(Δ B G Bᵀ Δᵀ)``; only the weight
    change ``Δ B`` is compared (``Δ`` is not unique when ``B`` is singular). ``B`` is a 0/1
    neuron mask or an orthogonal projector; ``G = lam C0`` or ``alpha I``.
    """
    from oteseq.ols import reparam

    cases = []
    for seed, p in enumerate(problems()):
        d_in = p.C0.shape[0]
        B = torch.diag((torch.arange(d_in) % 2 == seed % 2).to(torch.float64))
        if seed % 2:  # a projector onto a random subspace instead of a mask
            Q, _ = torch.linalg.qr(p.K_p[:, :1])
            B = torch.eye(d_in, dtype=torch.float64) - Q @ Q.T
        G = p.lam * p.C0 if seed < 2 else 0.5 * torch.eye(d_in, dtype=torch.float64)
        cases.append(dict(W=p.W0, K=p.K, V=p.V, B=B, G=G, K_p=p.K_p))
    return run_check("check_reparam_step", fn, reparam.reparam_step, cases,
                     what="oteseq.ols.reparam_step (compared as the weight change Δ B)",
                     hint="with B = Bᵀ = B² the normal equations are Δ (B M B) = R Kᵀ B with "
                          "M = K Kᵀ + K_p K_pᵀ + G; B M B is singular, so add (I − B) to it "
                          "before solving.", view=lambda x, a: x @ a["B"])
