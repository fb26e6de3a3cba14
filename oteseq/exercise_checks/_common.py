"""Shared machinery of the chapter checks: call the reader's function safely, compare, report.

Printing is the point here: the checks are called from notebook cells, never from the library.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

#: relative error ``‖got − expected‖ / ‖expected‖`` accepted by every check (float64 inputs).
TOLERANCE = 1e-6


def generator(seed: int) -> torch.Generator:
    """A CPU generator for the seeded random problems of one check."""
    return torch.Generator().manual_seed(20_000 + seed)


def randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    """Standard normal float64 tensor of ``shape`` from ``g``."""
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def describe(args: dict) -> str:
    """``"W (5, 7), K (7, 3), alpha=0.5"`` for an argument dict."""
    parts = []
    for key, value in args.items():
        if isinstance(value, torch.Tensor):
            parts.append(f"{key} {tuple(value.shape)}")
        elif isinstance(value, float):
            parts.append(f"{key}={value:.3g}")
        else:
            parts.append(f"{key}={value!r}")
    return ", ".join(parts)


def call(name: str, fn: Callable, args: dict, case: int):
    """``fn(*args.values())`` on copies of the tensors; an exception or an in-place change of an
    input becomes an :class:`AssertionError` that says which problem and what to do."""
    if not callable(fn):
        raise AssertionError(f"{name} expects your function, got {type(fn).__name__}")
    copies = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    try:
        out = fn(*copies.values())
    except AssertionError:
        raise
    except Exception as err:  # the reader's bug: say where, keep the traceback
        raise AssertionError(f"{name}: your function raised {type(err).__name__}: {err} on "
                             f"problem {case} ({describe(args)})") from err
    for key, value in args.items():
        if isinstance(value, torch.Tensor) and not torch.equal(value, copies[key]):
            raise AssertionError(f"{name}: your function modified its input {key} in place "
                                 f"(problem {case}); work on a copy: W + delta, not W += delta")
    return out


def as_tensor(name: str, value, like: torch.Tensor, what: str = "result") -> torch.Tensor:
    """The reader's ``value`` as a float64 tensor with ``like``'s shape, or a helpful error."""
    if not isinstance(value, torch.Tensor):
        raise AssertionError(f"{name}: your {what} is a {type(value).__name__}; return a "
                             f"torch.Tensor of shape {tuple(like.shape)}")
    if tuple(value.shape) != tuple(like.shape):
        raise AssertionError(f"{name}: your {what} has shape {tuple(value.shape)}, expected "
                             f"{tuple(like.shape)} (W is (d_out, d_in); keys are columns: "
                             f"K is (d_in, n), V is (d_out, n))")
    return value.detach().to(torch.float64)


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """``‖got − expected‖ / ‖expected‖`` (denominator floored at 1e-12)."""
    scale = max(float(torch.linalg.norm(expected)), 1e-12)
    return float(torch.linalg.norm(got - expected)) / scale


def compare(name: str, got: torch.Tensor, expected: torch.Tensor, case: int, args: dict,
            what: str, hint: str) -> float:
    """Relative error of ``got``; an :class:`AssertionError` naming the problem when too large."""
    error = relative_error(got, expected)
    if not error <= TOLERANCE:  # `not <=` also catches NaN
        raise AssertionError(f"{name}: on random problem {case} ({describe(args)}) your result "
                             f"differs from {what} by a relative error of {error:.2e} "
                             f"(tolerance {TOLERANCE:.0e}). Hint: {hint}")
    return error


def report(name: str, what: str, errors: Iterable[float]) -> float:
    """Print the success line; return the largest relative error."""
    errors = list(errors)
    worst = max(errors)
    print(f"\u2713 {name}: your function matches {what} on {len(errors)} random problems "
          f"(largest relative error {worst:.0e}).")
    return worst
