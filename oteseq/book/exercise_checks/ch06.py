"""Checks for chapter 6 (AlphaEdit): the projector, one AlphaEdit step, AlphaEdit's OTE."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ._common import Agreement, as_tensor, call, compare, generator, randn, relative_error, report


def _spd_with_gap(g: torch.Generator, d: int, n_small: int) -> torch.Tensor:
    """Symmetric PSD ``C0`` with ``n_small`` eigenvalues in [1e-4, 1e-3] and the rest in
    [0.1, 10]: far from the thresholds the checks use, so the projector is unambiguous."""
    Q, _ = torch.linalg.qr(randn(g, d, d))
    small = 1e-4 + 9e-4 * torch.rand(n_small, generator=g, dtype=torch.float64)
    large = 10 ** (-1 + 2 * torch.rand(d - n_small, generator=g, dtype=torch.float64))
    return Q @ torch.diag(torch.cat([small, large])) @ Q.T


def _projector_problems() -> list[dict]:
    problems = []
    for case, (d, n_small, threshold) in enumerate([(6, 2, 2e-2), (9, 5, 2e-2), (5, 0, 2e-2),
                                                    (8, 3, 0.05)]):
        C0 = _spd_with_gap(generator(case), d, n_small)
        problems.append(dict(C0=C0, threshold=threshold))
    return problems


def check_nullspace_projector(fn: Callable) -> Agreement:
    """Check ``fn(C0, threshold) -> P`` against :func:`oteseq.ols.nullspace_projector`.

    ``P = U0 U0ᵀ`` where ``U0`` holds the eigenvectors of ``C0`` whose eigenvalue is below
    ``threshold`` (absolute rule). One problem has no such direction: then ``P = 0``.
    Returns the largest relative error.
    """
    from oteseq.ols import nullspace_projector

    name, errors = "check_nullspace_projector", []
    for case, args in enumerate(_projector_problems()):
        expected, _ = nullspace_projector(args["C0"], args["threshold"])
        got = as_tensor(name, call(name, fn, args, case), expected, "projector P")
        eye = torch.eye(expected.shape[0], dtype=torch.float64)
        if expected.abs().max() > 0 and relative_error(got, eye - expected) < 1e-6:
            hint = ("you kept the eigenvectors ABOVE the threshold; AlphaEdit keeps those "
                    "below it (the directions preserved keys almost never use).")
        elif expected.abs().max() == 0:
            hint = ("no eigenvalue is below the threshold here, so P must be the zero matrix "
                    "(an empty U0 gives U0 @ U0.T = 0).")
        else:
            hint = ("eigh returns eigenvalues in ascending order and eigenvectors as COLUMNS: "
                    "U0 = U[:, eigenvalues < threshold], P = U0 @ U0.T.")
        errors.append(compare(name, got, expected, case, args, "oteseq.ols.nullspace_projector",
                              hint))
    return report(name, "oteseq.ols.nullspace_projector", errors)


def _alphaedit_problems(with_past: bool = True) -> list[dict]:
    problems = []
    sizes = [(7, 5, 2, 3), (8, 4, 3, 0), (6, 6, 1, 4), (9, 3, 4, 2)]
    for case, (d_in, d_out, n, m) in enumerate(sizes):
        g = generator(100 + case)
        C0 = _spd_with_gap(g, d_in, n_small=d_in // 2 + 1)
        Q = torch.linalg.eigh(C0)[1][:, : d_in // 2 + 1]
        args = dict(W=randn(g, d_out, d_in), K=randn(g, d_in, n), V=randn(g, d_out, n),
                    P=Q @ Q.T, alpha=float(0.1 + 9.9 * torch.rand(1, generator=g,
                                                               dtype=torch.float64)))
        if with_past:
            args["K_p"] = randn(g, d_in, m) if m else None
        problems.append(args)
    return problems


def check_alphaedit_step(fn: Callable) -> Agreement:
    """Check ``fn(W, K, V, P, alpha, K_p) -> Δ`` against :func:`oteseq.ols.alphaedit_step`.

    ``Δ = R Kᵀ P (K_p K_pᵀ P + K Kᵀ P + alpha I)⁻¹`` with ``R = V − W K``; ``K_p`` may be
    ``None`` (no earlier edits: drop the term). Returns the largest relative error.
    """
    from oteseq.ols import alphaedit_step

    name, errors = "check_alphaedit_step", []
    for case, args in enumerate(_alphaedit_problems()):
        a = args
        expected = alphaedit_step(a["W"], a["K"], a["V"], a["P"], a["alpha"], K_p=a["K_p"])
        got = as_tensor(name, call(name, fn, args, case), expected, "update Δ")
        no_past = alphaedit_step(a["W"], a["K"], a["V"], a["P"], a["alpha"])
        if a["K_p"] is not None and relative_error(got, no_past) < 1e-6:
            hint = "you left out the earlier keys: the normal matrix has a K_p K_pᵀ P term."
        else:
            hint = ("the residual is R = V − W K (against the current W, keys not projected); "
                    "Δ = R Kᵀ P (K_p K_pᵀ P + K Kᵀ P + alpha I)⁻¹ — the matrix is not "
                    "symmetric, so use torch.linalg.solve(M.T, (R @ K.T @ P).T).T; return Δ.")
        errors.append(compare(name, got, expected, case, args, "oteseq.ols.alphaedit_step", hint))
    return report(name, "oteseq.ols.alphaedit_step", errors)


def check_alphaedit_ote(fn: Callable) -> Agreement:
    """Check ``fn(W0, P, K, V, alpha) -> W``: the one-shot problem AlphaEdit-with-``K_p`` solves.

    ``W = W0 + D`` with ``D`` minimising ``‖(W0 + D) K − V‖² + alpha‖D‖²`` over ``D = D P``:
    ridge regression of ``V − W0 K`` on the projected keys ``P K``,
    ``D = (V − W0 K)(P K)ᵀ (P K (P K)ᵀ + alpha I)⁻¹``. Returns the largest relative error.
    """
    from oteseq.ols import alphaedit_step

    name, errors = "check_alphaedit_ote", []
    for case, args in enumerate(_alphaedit_problems(with_past=False)):
        args = dict(W0=args["W"], P=args["P"], K=args["K"], V=args["V"], alpha=args["alpha"])
        a = args
        expected = a["W0"] + alphaedit_step(a["W0"], a["K"], a["V"], a["P"], a["alpha"])
        got = as_tensor(name, call(name, fn, args, case), expected, "weight W")
        if relative_error(got, expected - a["W0"]) < 1e-6:
            hint = "you returned the update D; return the edited weight W0 + D."
        else:
            hint = ("regress the residual V − W0 K (not V) on the projected keys X = P K: "
                    "D = (V − W0 K) Xᵀ (X Xᵀ + alpha I)⁻¹, then return W0 + D.")
        errors.append(compare(name, got, expected, case, args,
                              "ridge regression on projected keys", hint))
    return report(name, "ridge regression on projected keys (AlphaEdit's OTE)", errors)
