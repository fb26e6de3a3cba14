"""Auto-checks for the book's exercises: ``oteseq.exercises.check_xxx(fn)``.

Each check calls the reader's function on a few random float64 problems, compares the result
with the library's closed form (or, where the library has none, with the formula computed the
obvious way), and either raises :class:`AssertionError` with a message that says what differs
and what to look at, or prints one success line. Printing is the point of this module: it is
called from notebook cells, never from the library.

The reader's function receives fresh copies of the inputs, so a function that modifies its
arguments in place is caught (and told) rather than silently corrupting the reference.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .exercise_checks._common import call, describe, relative_error

#: relative error ``‖got − expected‖ / ‖expected‖`` accepted by every check (float64 inputs).
TOLERANCE = 1e-6
#: number of random problems each check tries.
N_PROBLEMS = 4


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


def _shapes(seed: int) -> dict[str, int]:
    """Problem sizes that vary with the seed (square, tall, wide; n below and above d_in)."""
    return [dict(d_in=7, d_out=5, n=3, m=4), dict(d_in=4, d_out=6, n=6, m=2),
            dict(d_in=5, d_out=5, n=1, m=9), dict(d_in=8, d_out=3, n=8, m=1)][seed % 4]


def _as_tensor(name: str, value, like: torch.Tensor) -> torch.Tensor:
    """The reader's return value as a float64 tensor of ``like``'s shape, or a helpful error."""
    if isinstance(value, (tuple, list)):
        raise AssertionError(f"{name} returned a {type(value).__name__}; return one tensor "
                             f"of shape {tuple(like.shape)}")
    try:
        got = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise AssertionError(f"{name} returned {type(value).__name__}, not a tensor; "
                             f"return a torch.Tensor of shape {tuple(like.shape)}") from None
    if tuple(got.shape) != tuple(like.shape):
        raise AssertionError(f"{name} returned shape {tuple(got.shape)}, expected "
                             f"{tuple(like.shape)}. Remember: W is (d_out, d_in) and keys are "
                             f"columns, K is (d_in, n) and V is (d_out, n).")
    return got.to(torch.float64)


def _run(name: str, fn: Callable, reference: Callable, problems: list[dict], *, what: str,
         hint: str, view: Callable[[torch.Tensor, dict], torch.Tensor] = lambda x, a: x) -> None:
    """Compare ``fn(**problem)`` with ``reference(**problem)`` on every problem.

    ``view(result, problem)`` maps both results to what must agree (e.g. the weight change
    ``Δ B`` when ``Δ`` itself is not unique). Prints one success line with the largest
    relative error; returns nothing, so a notebook cell ending in a check shows only that line.
    """
    if not callable(fn):
        raise AssertionError(f"{name} expects your function, got {type(fn).__name__}")
    worst = 0.0
    for seed, args in enumerate(problems):
        expected = reference(**args).to(torch.float64)
        got = _as_tensor(f"{name}: your function {getattr(fn, '__name__', '')}",
                         call(name, fn, args, seed), expected)
        error = relative_error(view(got, args), view(expected, args))
        if not error <= TOLERANCE:  # `not <=` also catches NaN
            raise AssertionError(f"{name}: on random problem {seed} ({describe(args)}) your "
                                 f"result differs from {what} by a relative error of "
                                 f"{error:.2e} (tolerance {TOLERANCE:.0e}). Hint: {hint}")
        worst = max(worst, error)
    print(f"\u2713 {name}: your function matches {what} on {len(problems)} random problems "
          f"(largest relative error {worst:.0e}).")


def _problems(n: int = N_PROBLEMS) -> list[Problem]:
    return [random_problem(seed, **_shapes(seed)) for seed in range(n)]


# --------------------------------------------------------------------------- the checks


def check_ote(fn: Callable) -> None:
    """Check ``fn(W0, C0, K, V, lam) -> W`` against :func:`oteseq.ols.ote`.

    One-time editing: ``W`` minimises ``‖W K − V‖² + lam·tr((W − W0) C0 (W − W0)ᵀ)``;
    normal equations ``W (lam C0 + K Kᵀ) = lam W0 C0 + V Kᵀ``.
    """
    from oteseq.ols import least_squares

    problems = [dict(W0=p.W0, C0=p.C0, K=p.K, V=p.V, lam=p.lam) for p in _problems()]
    _run("check_ote", fn, least_squares.ote, problems, what="oteseq.ols.ote",
                hint="solve W A = lam W0 C0 + V Kᵀ with A = lam C0 + K Kᵀ; right-hand "
                     "solves use torch.linalg.solve(A, B.T).T since A is symmetric. Return "
                     "the edited weight W, not the update.")


def check_se_step(fn: Callable) -> None:
    """Check ``fn(W, C0, K, V, lam, K_p) -> Δ`` against :func:`oteseq.ols.se_step`.

    One sequential step from the current ``W``: ``Δ = (V − W K) Kᵀ (lam C0 + K_p K_pᵀ + K Kᵀ)⁻¹``.
    Tried with earlier keys ``K_p`` (aligned) and with ``K_p=None`` (misaligned: no term).
    """
    from oteseq.ols import least_squares

    problems = [dict(W=p.W0, C0=p.C0, K=p.K, V=p.V, lam=p.lam, K_p=p.K_p) for p in _problems()]
    problems.append({**problems[0], "K_p": None})
    _run("check_se_step", fn, least_squares.se_step, problems,
                what="oteseq.ols.se_step",
                hint="the residual is taken against the current W (R = V − W K), the normal "
                     "matrix is lam C0 + K_p K_pᵀ + K Kᵀ (drop the K_p term when K_p is None), "
                     "and the function returns the update Δ, not W + Δ.")


def check_woodbury(fn: Callable) -> None:
    """Check ``fn(A_inv, K) -> (A + K Kᵀ)⁻¹`` (given ``A_inv = A⁻¹``) against a direct inverse.

    Woodbury: ``(A + K Kᵀ)⁻¹ = A⁻¹ − A⁻¹ K (I + Kᵀ A⁻¹ K)⁻¹ Kᵀ A⁻¹``, only an n × n solve.
    """
    problems = []
    for p in _problems():
        A = p.lam * p.C0 + p.K_p @ p.K_p.T
        problems.append(dict(A_inv=torch.linalg.inv(A), K=p.K))

    def direct(A_inv, K):
        return torch.linalg.inv(torch.linalg.inv(A_inv) + K @ K.T)

    _run("check_woodbury", fn, direct, problems, what="the directly inverted matrix",
                hint="(A + K Kᵀ)⁻¹ = A⁻¹ − A⁻¹ K (I + Kᵀ A⁻¹ K)⁻¹ Kᵀ A⁻¹ with I of size n × n.")


def check_memit(fn: Callable) -> None:
    """Check ``fn(W, C0, K, V, lam) -> Δ`` (batch MEMIT) against :func:`oteseq.ols.se_step`.

    ``Δ`` minimises ``‖(W + Δ) K − V‖² + lam·tr(Δ C0 Δᵀ)``: ``Δ = R Kᵀ (lam C0 + K Kᵀ)⁻¹``.
    """
    from oteseq.ols import least_squares

    problems = [dict(W=p.W0, C0=p.C0, K=p.K, V=p.V, lam=p.lam) for p in _problems()]
    _run("check_memit", fn, least_squares.se_step, problems,
                what="oteseq.ols.se_step (no earlier keys)",
                hint="Δ = (V − W K) Kᵀ (lam C0 + K Kᵀ)⁻¹; return the update, not W + Δ.")


def check_rome(fn: Callable) -> None:
    """Check ``fn(W, C, k, v) -> Δ`` (one key, exact fit) against :func:`oteseq.ols.rome`.

    ``Δ`` minimises ``tr(Δ C Δᵀ)`` subject to ``(W + Δ) k = v``: ``Δ = (v − W k)(C⁻¹k)ᵀ/(kᵀC⁻¹k)``.
    ``k`` and ``v`` are 1-D vectors.
    """
    from oteseq.ols import constrained

    problems = [dict(W=p.W0, C=p.C0, k=p.K[:, 0].clone(), v=p.V[:, 0].clone())
                for p in _problems()]
    _run("check_rome", fn, constrained.rome, problems, what="oteseq.ols.rome",
                hint="u = C⁻¹ k (a solve, not an inverse), then Δ = (v − W k) uᵀ / (kᵀ u); "
                     "torch.outer builds the rank-one matrix from two vectors.")


def check_reparam_step(fn: Callable) -> None:
    """Check ``fn(W, K, V, B, G, K_p) -> Δ`` against :func:`oteseq.ols.reparam_step`.

    ``Δ`` minimises ``‖(W + Δ B) K − V‖² + ‖Δ B K_p‖² + tr(Δ B G Bᵀ Δᵀ)``; only the weight
    change ``Δ B`` is compared (``Δ`` is not unique when ``B`` is singular). ``B`` is a 0/1
    neuron mask or an orthogonal projector; ``G = lam C0`` or ``alpha I``.
    """
    from oteseq.ols import reparam

    problems = []
    for seed, p in enumerate(_problems()):
        d_in = p.C0.shape[0]
        B = torch.diag((torch.arange(d_in) % 2 == seed % 2).to(torch.float64))
        if seed % 2:  # a projector onto a random subspace instead of a mask
            Q, _ = torch.linalg.qr(p.K_p[:, :1])
            B = torch.eye(d_in, dtype=torch.float64) - Q @ Q.T
        G = p.lam * p.C0 if seed < 2 else 0.5 * torch.eye(d_in, dtype=torch.float64)
        problems.append(dict(W=p.W0, K=p.K, V=p.V, B=B, G=G, K_p=p.K_p))
    _run("check_reparam_step", fn, reparam.reparam_step, problems,
                what="oteseq.ols.reparam_step (compared as the weight change Δ B)",
                hint="with B = Bᵀ = B² the normal equations are Δ (B M B) = R Kᵀ B with "
                     "M = K Kᵀ + K_p K_pᵀ + G; B M B is singular, so add (I − B) to it "
                     "before solving.", view=lambda x, a: x @ a["B"])


# ----------------------------------------------------- chapter checks kept in their own modules


def _chapter_checks() -> dict[str, Callable]:
    """``check_*`` functions of :mod:`oteseq.exercise_checks` chapter modules (``chNN``)."""
    import importlib
    import pkgutil

    import oteseq.exercise_checks as package

    found = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("ch"):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            found.update({name: getattr(module, name) for name in dir(module)
                          if name.startswith("check_") and callable(getattr(module, name))})
    return found


globals().update({name: fn for name, fn in _chapter_checks().items() if name not in globals()})
