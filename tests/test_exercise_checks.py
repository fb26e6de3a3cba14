"""The chapter checks of oteseq.book.exercise_checks: a correct solution passes, a wrong one fails
with an AssertionError whose message helps (names the mistake or the formula)."""
from __future__ import annotations

import pytest
import torch

from oteseq import ols
from oteseq.book.exercise_checks import ch06, ch10

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


# ---------------------------------------------------------------------------- chapter 10


def retract(W, A, K_old, V_old):
    delta, A_new = ols.downdate_step(W, A, K_old, V_old)
    return W + delta, A_new


def replace(W, A, K_old, V_old, K_new, V_new):
    delta, A_new = ols.replace_step(W, A, K_old, V_old, K_new, V_new)
    return W + delta, A_new


def deconflict(ids, K, V):
    last = {x: j for j, x in enumerate(ids)}
    columns = sorted(last.values())
    return K[:, columns], V[:, columns]


def accumulate_instead(W, A, K_old, V_old, K_new, V_new):
    A_acc = A + K_new @ K_new.T
    W_acc = W + torch.linalg.solve(A_acc, ((V_new - W @ K_new) @ K_new.T).T).T
    return W_acc, A_acc - K_old @ K_old.T


@pytest.mark.parametrize("check, solution", [
    (ch10.check_retract, retract),
    (ch10.check_replace, replace),
    (ch10.check_deconflict, deconflict),
    (ch10.check_deconflict, lambda ids, K, V: tuple(x.flip(1) for x in deconflict(ids, K, V))),
])
def test_correct_chapter10_solutions_pass(check, solution, capsys):
    assert 0.0 <= check(solution) < 1e-8
    assert capsys.readouterr().out.startswith("\u2713 " + check.__name__)


@pytest.mark.parametrize("check, wrong, message", [
    (ch10.check_retract, lambda W, A, K, V: (2 * W - retract(W, A, K, V)[0], A - K @ K.T),
     "sign of the update"),
    (ch10.check_retract, lambda W, A, K, V: (retract(W, A, K, V)[0] - W, A - K @ K.T),
     "returned the update"),
    (ch10.check_retract, lambda W, A, K, V: (retract(W, A, K, V)[0], A), "A_new = A − K_old"),
    (ch10.check_retract, lambda W, A, K, V: retract(W, A, K, V)[0], "return a pair"),
    (ch10.check_replace, accumulate_instead, "plain accumulation"),
    (ch10.check_replace, lambda W, A, Ko, Vo, Kn, Vn: (W, A - Ko @ Ko.T + Kn @ Kn.T),
     "V_new − W K_new"),
    (ch10.check_deconflict, lambda ids, K, V: (K, V), "one column per id"),
    (ch10.check_deconflict,
     lambda ids, K, V: tuple(x.flip(1) for x in deconflict(ids[::-1], K.flip(1), V.flip(1))),
     "LAST column"),
    (ch10.check_deconflict, lambda ids, K, V: (deconflict(ids, K, V)[0],
                                               deconflict(ids, K, V)[1].flip(1)), "paired"),
])
def test_wrong_chapter10_solutions_fail_with_a_hint(check, wrong, message):
    with pytest.raises(AssertionError, match=message):
        check(wrong)
