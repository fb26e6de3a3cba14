"""Checks for chapter 4 (the preservation term): the disturbance measured through C0."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ._common import Agreement, call, compare, generator, randn, report


def check_disturbance(fn: Callable) -> Agreement:
    """Check ``fn(delta, C0) -> ‖Δ K0‖_F / √N`` (a scalar) given only ``C0 = K0 K0ᵀ / N``.

    The reference is computed from the keys ``K0`` themselves on a few random float64 problems
    (``tr(Δ C0 Δᵀ) = ‖Δ K0‖² / N``). Returns the largest relative error.
    """
    name, errors = "check_disturbance", []
    for case in range(4):
        g = generator(400 + case)
        d_in, d_out, n = 5 + case, 3 + case, 20 + 7 * case
        K0, delta = randn(g, d_in, n), randn(g, d_out, d_in)
        args = {"delta": delta, "C0": K0 @ K0.T / n}
        expected = torch.linalg.norm(delta @ K0) / n ** 0.5
        got = call(name, fn, args, case)
        try:
            got = torch.as_tensor(got, dtype=torch.float64).reshape(())
        except (TypeError, ValueError, RuntimeError) as err:
            raise AssertionError(f"{name}: return one number (a float or a 0-d tensor), got "
                                 f"{type(got).__name__}") from err
        if abs(float(got) - float(expected) ** 2) < 1e-9 * float(expected) ** 2:
            hint = "you returned the square; take the square root of tr(Δ C0 Δᵀ)."
        else:
            hint = "‖Δ K0‖² / N = tr(Δ K0 K0ᵀ Δᵀ) / N = tr(Δ C0 Δᵀ); return its square root."
        errors.append(compare(name, got, expected, case, args, "‖Δ K0‖ / √N from the keys",
                              hint))
    return report(name, "‖Δ K0‖ / √N computed from the keys", errors)


__all__ = ["check_disturbance"]
