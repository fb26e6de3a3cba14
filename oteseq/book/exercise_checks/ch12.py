"""Checks for chapter 12 (cost and scale): one recursive-least-squares step in inverse form."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ._common import (Agreement, as_tensor, call, compare, generator, randn, relative_error,
                      report, tensor_pair)


def _rls_problems() -> list[dict]:
    problems = []
    for case, (d_in, d_out, n, m) in enumerate([(7, 5, 2, 4), (5, 6, 1, 9), (8, 3, 4, 2),
                                                (6, 6, 6, 6)]):
        g = generator(1200 + case)
        K0, K_p = randn(g, d_in, 3 * d_in), randn(g, d_in, m)
        A = K0 @ K0.T / K0.shape[1] + K_p @ K_p.T
        problems.append(dict(W=randn(g, d_out, d_in), A_inv=torch.linalg.inv(A),
                             K=randn(g, d_in, n), V=randn(g, d_out, n)))
    return problems


def check_rls_step(fn: Callable) -> Agreement:
    """Check ``fn(W, A_inv, K, V) -> (W_new, A_inv_new)``: one aligned step in inverse form.

    ``A_new⁻¹ = (A + K Kᵀ)⁻¹`` (Woodbury: ``A⁻¹ − A⁻¹K (I + KᵀA⁻¹K)⁻¹ KᵀA⁻¹``) and
    ``W_new = W + (V − W K) Kᵀ A_new⁻¹``, compared with a direct inverse of ``A + K Kᵀ``.
    Returns the largest relative error.
    """
    name, errors = "check_rls_step", []
    for case, args in enumerate(_rls_problems()):
        W, K, V = args["W"], args["K"], args["V"]
        A_new = torch.linalg.inv(args["A_inv"]) + K @ K.T
        A_inv_new = torch.linalg.inv(A_new)
        W_new = W + (V - W @ K) @ K.T @ A_inv_new
        out = call(name, fn, args, case)
        got_W, got_inv = tensor_pair(name, out, (W_new, "new weight W_new"),
                                     (A_inv_new, "new inverse A_inv_new"))
        if relative_error(got_W, W + (V - W @ K) @ K.T @ args["A_inv"]) < 1e-6:
            hint = "the step uses the NEW inverse (A + K Kᵀ)⁻¹, which includes this batch."
        elif relative_error(got_W, W_new - W) < 1e-6:
            hint = "you returned the update Δ; return the edited weight W + Δ."
        else:
            hint = ("Woodbury: (A + K Kᵀ)⁻¹ = A⁻¹ − A⁻¹K (I + KᵀA⁻¹K)⁻¹ KᵀA⁻¹ with I of size "
                    "n × n; then W_new = W + (V − W K) Kᵀ (A + K Kᵀ)⁻¹.")
        errors.append(max(compare(name, got_inv, A_inv_new, case, args,
                                  "the directly inverted (A + K Kᵀ)⁻¹", hint),
                          compare(name, got_W, W_new, case, args, "the aligned step", hint)))
    return report(name, "one aligned step with a Woodbury-updated inverse", errors)
