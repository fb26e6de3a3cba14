"""Checks for chapter 8 (regularisers): RECT and one error-feedback step."""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from ._common import (Agreement, as_tensor, call, compare, generator, randn, relative_error,
                      report, tensor_pair)


def _rect_problems() -> list[dict]:
    problems = []
    for case, (d_out, d_in, keep) in enumerate([(5, 7, 0.2), (6, 4, 0.4), (3, 9, 1.0),
                                                (8, 8, 0.05)]):
        g = generator(800 + case)
        problems.append(dict(delta=randn(g, d_out, d_in), W=randn(g, d_out, d_in), keep=keep))
    return problems


def check_rect(fn: Callable) -> Agreement:
    """Check ``fn(delta, W, keep) -> Δ̂`` against :func:`oteseq.ols.rect`.

    RECT keeps the ``round(keep · d_out · d_in)`` entries of ``Δ`` with the largest relative
    change ``|Δ_ij / (W_ij + 1e-8)|`` and zeroes the others. Returns the largest relative error.
    """
    from oteseq.ols import rect

    name, errors = "check_rect", []
    for case, args in enumerate(_rect_problems()):
        expected = rect(args["delta"], args["W"], args["keep"])
        got = as_tensor(name, call(name, fn, args, case), expected, "update Δ̂")
        by_size = rect(args["delta"], torch.ones_like(args["W"]), args["keep"])
        if args["keep"] < 1 and relative_error(got, by_size) < 1e-6:
            hint = ("you ranked the entries by |Δ|; RECT ranks them by the RELATIVE change "
                    "|Δ / (W + 1e-8)|.")
        elif (got != 0).sum() != (expected != 0).sum():
            hint = (f"keep {int((expected != 0).sum())} entries (round(keep · numel)), you kept "
                    f"{int((got != 0).sum())}; the kept entries keep their value, the rest are 0.")
        else:
            hint = "keep the largest scores |Δ / (W + 1e-8)| (descending), not the smallest."
        errors.append(compare(name, got, expected, case, args, "oteseq.ols.rect", hint))
    return report(name, "oteseq.ols.rect", errors)


def _half(delta: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """A linear post-hoc operator (halve the update): smooth, so solve errors do not flip masks."""
    return 0.5 * delta


def _feedback_problems() -> list[dict]:
    from oteseq.ols import prune, rect

    ops = [partial(rect, keep=0.3), _half, prune, partial(rect, keep=0.5)]
    problems = []
    for case, (d_in, d_out, n, op) in enumerate(zip([7, 5, 6, 8], [5, 6, 4, 3], [2, 3, 1, 4],
                                                    ops)):
        g = generator(850 + case)
        K0, K_p = randn(g, d_in, 3 * d_in), randn(g, d_in, 3)
        K, W = randn(g, d_in, n), randn(g, d_out, d_in)
        A = K0 @ K0.T / K0.shape[1] + K_p @ K_p.T + K @ K.T
        scale = 4.0 if op is prune else 1.0          # large updates so PRUNE acts
        E = torch.zeros(d_out, d_in, dtype=torch.float64) if case == 1 else randn(g, d_out, d_in)
        problems.append(dict(W=W, A=A, K=K, V=scale * randn(g, d_out, n), E=E, op=op))
    return problems


def check_error_feedback_step(fn: Callable) -> Agreement:
    """Check ``fn(W, A, K, V, E, op) -> (Δ̂, E_new)`` against
    :func:`oteseq.ols.error_feedback_step`.

    Solve ``Δ A = (V − W K) Kᵀ − E``, apply ``Δ̂ = op(Δ, W)``, return ``(Δ̂, (Δ̂ − Δ) A)``.
    ``A`` already holds this batch's ``K Kᵀ``. Returns the largest relative error.
    """
    from oteseq.ols import error_feedback_step

    name, errors = "check_error_feedback_step", []
    for case, args in enumerate(_feedback_problems()):
        a = args
        delta_hat, E_new = error_feedback_step(a["W"], a["A"], a["K"], a["V"], a["E"], a["op"])
        out = call(name, fn, args, case)
        got_hat, got_E = tensor_pair(name, out, (delta_hat, "update Δ̂"),
                                     (E_new, "new error E"))
        no_feedback, _ = error_feedback_step(a["W"], a["A"], a["K"], a["V"], None, a["op"])
        if relative_error(got_hat, no_feedback) < 1e-6 and relative_error(delta_hat,
                                                                         no_feedback) > 1e-6:
            hint = "subtract the previous error from the right-hand side: R Kᵀ − E."
        else:
            hint = ("Δ solves Δ A = (V − W K) Kᵀ − E (A symmetric: torch.linalg.solve(A, "
                    "rhs.T).T); Δ̂ = op(Δ, W); the new error is (Δ̂ − Δ) A, not Δ̂ − Δ.")
        errors.append(max(
            compare(name, got_hat, delta_hat, case, args, "oteseq.ols.error_feedback_step's Δ̂",
                    hint),
            compare(name, got_E, E_new, case, args, "oteseq.ols.error_feedback_step's E_new",
                    hint)))
    return report(name, "oteseq.ols.error_feedback_step", errors)
