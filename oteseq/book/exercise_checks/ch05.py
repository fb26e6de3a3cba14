"""Checks for chapter 5 (sequential collapse): plain MEMIT applied batch after batch."""
from __future__ import annotations

from collections.abc import Callable

import torch

from oteseq import ols
from ._common import Agreement, as_tensor, compare, generator, randn, report


def _problem(case: int, d_in: int = 7, d_out: int = 4, n: int = 2, steps: int = 4) -> dict:
    """W0, C0 (from 3·d_in random keys), ``steps`` batches of ``n`` keys and values, lam."""
    g = generator(500 + case)
    K0 = randn(g, d_in, 3 * d_in)
    batches = [(randn(g, d_in, n), randn(g, d_out, n)) for _ in range(steps)]
    return dict(W0=randn(g, d_out, d_in), C0=K0 @ K0.T / K0.shape[1], batches=batches,
                lam=0.5 + case)


def check_misaligned_se(fn: Callable) -> Agreement:
    """Check ``fn(W0, C0, batches, lam) -> [W0, W1, …, WT]``: plain MEMIT batch after batch,
    ``Δ_t = (V_t − W_{t−1} K_t) K_tᵀ (lam C0 + K_t K_tᵀ)⁻¹`` (no earlier keys).

    Compared with :func:`oteseq.ols.se` (``aligned=False``) on a few random float64 problems.
    Returns the largest relative error.
    """
    name, errors = "check_misaligned_se", []
    for case in range(4):
        p = _problem(case, steps=2 + case)
        out = _call(name, fn, p, case)
        expected = ols.se(p["W0"], p["C0"], p["batches"], p["lam"], aligned=False)
        if not isinstance(out, (list, tuple)) or len(out) != len(expected):
            raise AssertionError(f"{name}: return the list [W0, W1, …, WT] of {len(expected)} "
                                 f"weights for {len(p['batches'])} batches, got a "
                                 f"{type(out).__name__}")
        aligned = ols.se(p["W0"], p["C0"], p["batches"], p["lam"], aligned=True)
        for t, (got, want) in enumerate(zip(out, expected)):
            got = as_tensor(name, got, want, f"W_{t}")
            hint = ("you carried the earlier keys forward (that is memit-seq); plain MEMIT "
                    "solves with lam C0 + K_t K_tᵀ only."
                    if float(torch.linalg.norm(got - aligned[t])) < 1e-9 * float(
                        torch.linalg.norm(aligned[t]) + 1) else
                    "each step starts from the CURRENT weights: R_t = V_t − W_{t−1} K_t.")
            errors.append(compare(name, got, want, case, {"W0": p["W0"], "C0": p["C0"],
                                                          "lam": p["lam"]},
                                  f"oteseq.ols.se(..., aligned=False)[{t}]", hint))
    return report(name, "plain MEMIT applied batch after batch (oteseq.ols.se, aligned=False)",
                  errors)


def _call(name: str, fn: Callable, p: dict, case: int):
    """``fn`` on copies of the problem; errors and in-place changes become AssertionErrors."""
    batches = [(K.clone(), V.clone()) for K, V in p["batches"]]
    W0, C0 = p["W0"].clone(), p["C0"].clone()
    try:
        out = fn(W0, C0, batches, p["lam"])
    except AssertionError:
        raise
    except Exception as err:  # the reader's bug: say where, keep the traceback
        raise AssertionError(f"{name}: your function raised {type(err).__name__}: {err} on "
                             f"problem {case}") from err
    if not (torch.equal(W0, p["W0"]) and torch.equal(C0, p["C0"])):
        raise AssertionError(f"{name}: your function modified W0 or C0 in place (problem "
                             f"{case}); work on copies, e.g. W = W + delta")
    return out


__all__ = ["check_misaligned_se"]
