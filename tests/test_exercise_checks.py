"""The chapter checks of oteseq.exercise_checks: a correct solution passes, a wrong one fails
with an AssertionError whose message helps (names the mistake or the formula)."""
from __future__ import annotations

import pytest
import torch

from oteseq import ols
from oteseq.exercise_checks import ch06

# ----------------------------------------------------------------------------- chapter 6


def projector(C0, threshold):
    eigenvalues, U = torch.linalg.eigh(C0)
    U_hat = U[:, eigenvalues < threshold]
    return U_hat @ U_hat.T


def alphaedit_reference_form(W, K, V, P, alpha, K_p):
    M = K @ K.T if K_p is None else K @ K.T + K_p @ K_p.T
    B = M @ P + alpha * torch.eye(P.shape[0], dtype=P.dtype)
    return torch.linalg.solve(B.T, ((V - W @ K) @ K.T @ P).T).T


def alphaedit_ote(W0, P, K, V, alpha):
    return W0 + ols.ridge(torch.zeros_like(W0), P @ K, V - W0 @ K, alpha)


@pytest.mark.parametrize("check, solution", [
    (ch06.check_nullspace_projector, projector),
    (ch06.check_alphaedit_step, alphaedit_reference_form),
    (ch06.check_alphaedit_ote, alphaedit_ote),
])
def test_correct_solutions_pass(check, solution, capsys):
    worst = check(solution)
    assert 0.0 <= worst < 1e-8
    assert capsys.readouterr().out.startswith("\u2713 " + check.__name__)


def _identity_when_empty(C0, threshold):
    P = projector(C0, threshold)
    return P if P.abs().max() > 0 else torch.eye(C0.shape[0], dtype=C0.dtype)


def _complement(C0, threshold):
    return torch.eye(C0.shape[0], dtype=C0.dtype) - projector(C0, threshold)


@pytest.mark.parametrize("check, wrong, message", [
    (ch06.check_nullspace_projector, _complement, "ABOVE the threshold"),
    (ch06.check_nullspace_projector, lambda C0, t: projector(C0, 10 * t), "eigh"),
    (ch06.check_nullspace_projector, lambda C0, t: _identity_when_empty(C0, t), "zero matrix"),
    (ch06.check_alphaedit_step,
     lambda W, K, V, P, a, K_p: alphaedit_reference_form(W, K, V, P, a, None), "K_p K_pᵀ P"),
    (ch06.check_alphaedit_step,
     lambda W, K, V, P, a, K_p: alphaedit_reference_form(W, P @ K, V, P, a, K_p), "R = V − W K"),
    (ch06.check_alphaedit_step,
     lambda W, K, V, P, a, K_p: W + alphaedit_reference_form(W, K, V, P, a, K_p), "return Δ"),
    (ch06.check_alphaedit_ote, lambda W0, P, K, V, a: alphaedit_ote(W0, P, K, V, a) - W0,
     "returned the update D"),
    (ch06.check_alphaedit_ote,
     lambda W0, P, K, V, a: W0 + ols.ridge(torch.zeros_like(W0), P @ K, V, a), "V − W0 K"),
])
def test_wrong_solutions_fail_with_a_hint(check, wrong, message):
    with pytest.raises(AssertionError, match=message):
        check(wrong)


def test_shape_mistakes_and_exceptions_are_explained():
    with pytest.raises(AssertionError, match="shape"):
        ch06.check_nullspace_projector(lambda C0, t: projector(C0, t)[:, :1])
    with pytest.raises(AssertionError, match="raised ZeroDivisionError"):
        ch06.check_nullspace_projector(lambda C0, t: 1 / 0)
    with pytest.raises(AssertionError, match="torch.Tensor"):
        ch06.check_alphaedit_ote(lambda *args: 0.0)


def test_in_place_modification_is_caught():
    def in_place(W0, P, K, V, alpha):
        W0 += ols.ridge(torch.zeros_like(W0), P @ K, V - W0 @ K, alpha)
        return W0

    with pytest.raises(AssertionError, match="in place"):
        ch06.check_alphaedit_ote(in_place)
