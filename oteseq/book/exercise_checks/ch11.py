"""Checks for chapter 11 (editing a real model): the CounterFact rewrite metrics and the
batches of the sequential protocol."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ._common import Agreement, generator, randn, report

#: absolute tolerance on a rate or a probability difference (float64 inputs).
ATOL = 1e-9


def _rewrite_reference(nll_new: torch.Tensor, nll_true: torch.Tensor) -> tuple[float, float]:
    """Efficacy ``mean[NLL_true > NLL_new]`` and magnitude
    ``mean[exp(−NLL_new) − exp(−NLL_true)]``."""
    success = (nll_true > nll_new).double().mean()
    magnitude = (torch.exp(-nll_new) - torch.exp(-nll_true)).mean()
    return float(success), float(magnitude)


def _two_floats(name: str, out) -> tuple[float, float]:
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise AssertionError(f"{name}: return a pair (success, magnitude) of numbers, got "
                             f"{type(out).__name__}")
    try:
        return float(out[0]), float(out[1])
    except (TypeError, ValueError, RuntimeError):
        raise AssertionError(f"{name}: success and magnitude must be numbers (a float or a "
                             f"0-d tensor), got {type(out[0]).__name__}, "
                             f"{type(out[1]).__name__}") from None


def check_rewrite_metrics(fn: Callable) -> Agreement:
    """Check ``fn(nll_new, nll_true) -> (success, magnitude)`` on 1-D float64 tensors.

    ``nll_new[i]`` / ``nll_true[i]``: mean per-token NLL of the new / true target after prompt i.
    Success (efficacy) = fraction of prompts with ``P(new) > P(true)``, i.e. NLL_true > NLL_new;
    magnitude = mean of ``exp(−NLL_new) − exp(−NLL_true)``. Returns the largest absolute error.
    """
    name, errors = "check_rewrite_metrics", []
    for case in range(5):
        g = generator(1100 + case)
        n = 3 + 4 * case
        nll_new, nll_true = randn(g, n).abs() * 2, randn(g, n).abs() * 2
        if case == 4:  # a tie counts as a failure: P(new) must be strictly larger
            nll_true[:2] = nll_new[:2]
        args = {"nll_new": nll_new.clone(), "nll_true": nll_true.clone()}
        try:
            out = fn(*args.values())
        except AssertionError:
            raise
        except Exception as err:
            raise AssertionError(f"{name}: your function raised {type(err).__name__}: {err} "
                                 f"on problem {case} ({n} prompts)") from err
        got = _two_floats(name, out)
        expected = _rewrite_reference(nll_new, nll_true)
        if abs(got[0] - expected[0]) > ATOL:
            flipped = float((nll_true < nll_new).double().mean())
            hint = ("you counted the prompts where the TRUE target wins; success means "
                    "P(new) > P(true), i.e. NLL_true > NLL_new." if abs(got[0] - flipped) <= ATOL
                    else "success is the fraction of prompts with NLL_true > NLL_new (strictly).")
            raise AssertionError(f"{name}: on problem {case} ({n} prompts) your success is "
                                 f"{got[0]:.4f}, expected {expected[0]:.4f}. Hint: {hint}")
        if abs(got[1] - expected[1]) > ATOL:
            raise AssertionError(f"{name}: on problem {case} ({n} prompts) your magnitude is "
                                 f"{got[1]:.4f}, expected {expected[1]:.4f}. Hint: probabilities "
                                 f"are exp(−NLL); average exp(−NLL_new) − exp(−NLL_true).")
        errors.append(max(abs(got[0] - expected[0]), abs(got[1] - expected[1])))
    return report(name, "the CounterFact success and magnitude", errors)


def check_protocol_batches(fn: Callable) -> Agreement:
    """Check ``fn(records, batch_size) -> list of batches`` (lists of records).

    The paper's protocol: the records in their given order (no shuffle), consecutive chunks
    of ``batch_size``, the last one shorter when ``batch_size`` does not divide ``n``.
    Returns 0.0 (the comparison is exact).
    """
    name, errors = "check_protocol_batches", []
    for n, B in [(10, 5), (7, 3), (4, 10), (12, 1), (0, 3)]:
        records = [{"case_id": i} for i in range(n)]
        try:
            got = fn(list(records), B)
        except AssertionError:
            raise
        except Exception as err:
            raise AssertionError(f"{name}: your function raised {type(err).__name__}: {err} "
                                 f"for n={n}, batch_size={B}") from err
        expected = [records[i:i + B] for i in range(0, n, B)]
        got = [list(batch) for batch in got]
        if got != expected:
            sizes = [len(b) for b in got]
            raise AssertionError(
                f"{name}: for n={n}, batch_size={B} you made batches of sizes {sizes}, "
                f"expected {[len(b) for b in expected]} holding the records in their order. "
                "Hint: chunk the list as given — records[i:i + B] for i = 0, B, 2B, … — "
                "no shuffling, no dropped remainder, no empty batch.")
        errors.append(0.0)
    return report(name, "the protocol's batches", errors)
