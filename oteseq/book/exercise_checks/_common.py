"""Shared machinery of the chapter checks: call the reader's function safely, compare, report.

The one contract of every ``check_xxx(fn, ...)``: call the reader's function on a few seeded
random problems, and either raise :class:`AssertionError` with a message that says which problem
differs and a hint, or print one success line and return the largest error as a
:class:`Agreement` (a float that a notebook cell does not display, since the line said it).
Printing is the point here: the checks are called from notebook cells, never from the library.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

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
    """The reader's ``value`` (a tensor or an array) as a float64 tensor with ``like``'s shape,
    or a helpful error."""
    if not isinstance(value, torch.Tensor):
        if isinstance(value, (tuple, list)) or not hasattr(value, "__array__"):
            raise AssertionError(f"{name}: your {what} is a {type(value).__name__}; return a "
                                 f"torch.Tensor of shape {tuple(like.shape)}")
        value = torch.as_tensor(value)
    if tuple(value.shape) != tuple(like.shape):
        raise AssertionError(f"{name}: your {what} has shape {tuple(value.shape)}, expected "
                             f"{tuple(like.shape)} (W is (d_out, d_in); keys are columns: "
                             f"K is (d_in, n), V is (d_out, n))")
    return value.detach().to(torch.float64)


def tensor_pair(name: str, out, first: tuple[torch.Tensor, str],
                second: tuple[torch.Tensor, str], meaning: str = "") -> tuple:
    """The reader's ``(a, b)`` as two float64 tensors shaped like ``first[0]`` and ``second[0]``
    (named ``first[1]``, ``second[1]``), or an error saying a pair is expected."""
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise AssertionError(f"{name}: return a pair ({first[1]}, {second[1]}){meaning}, got "
                             f"{type(out).__name__}")
    return as_tensor(name, out[0], *first), as_tensor(name, out[1], *second)


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


class Agreement(float):
    """The largest error a check found: a float for code (``assert check(fn) < 1e-8``) that a
    notebook cell ending in a check does not display (the success line was printed)."""

    def _ipython_display_(self) -> None:
        return None


def report(name: str, what: str, errors: Iterable[float]) -> Agreement:
    """Print the success line; return the largest relative error."""
    errors = list(errors)
    worst = max(errors)
    print(f"\u2713 {name}: your function matches {what} on {len(errors)} random problems "
          f"(largest relative error {worst:.0e}).")
    return Agreement(worst)


def run_check(name: str, fn: Callable, reference: Callable, problems: list[dict], *,
              what: str, hint: str,
              view: Callable[[torch.Tensor, dict], torch.Tensor] = lambda x, a: x) -> Agreement:
    """Compare ``fn(**problem)`` with ``reference(**problem)`` on every problem (one returned
    tensor each). ``view(result, problem)`` maps both results to what must agree (e.g. the
    weight change ``Δ B`` when ``Δ`` itself is not unique)."""
    errors = []
    for case, args in enumerate(problems):
        expected = reference(**args).to(torch.float64)
        got = as_tensor(name, call(name, fn, args, case), expected)
        errors.append(compare(name, view(got, args), view(expected, args), case, args, what,
                              hint))
    return report(name, what, errors)


@dataclass(frozen=True)
class Problem:
    """A random editing problem in the book's notation (all float64).

    ``W0`` (d_out, d_in), ``C0`` (d_in, d_in) SPD, ``K`` (d_in, n), ``V`` (d_out, n),
    ``K_p`` (d_in, m) earlier keys, ``lam`` > 0.
    """

    W0: torch.Tensor
    C0: torch.Tensor
    K: torch.Tensor
    V: torch.Tensor
    K_p: torch.Tensor
    lam: float


#: problem sizes by seed: square, tall, wide; n below and above d_in.
SHAPES = [dict(d_in=7, d_out=5, n=3, m=4), dict(d_in=4, d_out=6, n=6, m=2),
          dict(d_in=5, d_out=5, n=1, m=9), dict(d_in=8, d_out=3, n=8, m=1)]


def random_problem(seed: int, *, d_in: int = 7, d_out: int = 5, n: int = 3,
                   m: int = 4) -> Problem:
    """A seeded random :class:`Problem`; ``C0 = K0 K0ᵀ / N`` from ``N = 3·d_in`` random keys."""
    g = torch.Generator().manual_seed(10_000 + seed)
    K0 = torch.randn(d_in, 3 * d_in, generator=g, dtype=torch.float64)
    return Problem(W0=torch.randn(d_out, d_in, generator=g, dtype=torch.float64),
                   C0=K0 @ K0.T / K0.shape[1],
                   K=torch.randn(d_in, n, generator=g, dtype=torch.float64),
                   V=torch.randn(d_out, n, generator=g, dtype=torch.float64),
                   K_p=torch.randn(d_in, m, generator=g, dtype=torch.float64),
                   lam=float(0.1 + 4.9 * torch.rand(1, generator=g, dtype=torch.float64)))


def problems(n: int = 4) -> list[Problem]:
    """``n`` seeded random problems of varying shapes."""
    return [random_problem(seed, **SHAPES[seed % len(SHAPES)]) for seed in range(n)]
