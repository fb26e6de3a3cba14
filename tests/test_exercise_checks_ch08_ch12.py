"""The chapter 8 and 12 checks: a correct solution passes, a wrong one fails with a helpful
AssertionError."""
from __future__ import annotations

import pytest
import torch

from oteseq.book.exercise_checks import ch08, ch12

# ----------------------------------------------------------------------------- chapter 8


def rect_by_threshold(delta, W, keep):
    scores = (delta / (W + 1e-8)).abs()
    n_keep = round(keep * delta.numel())
    if n_keep == 0:
        return torch.zeros_like(delta)
    threshold = scores.flatten().topk(n_keep).values[-1]
    return torch.where(scores >= threshold, delta, torch.zeros_like(delta))


def rect_by_size(delta, W, keep):          # wrong: absolute, not relative change
    return rect_by_threshold(delta, torch.ones_like(W), keep)


def rect_smallest(delta, W, keep):         # wrong: keeps the smallest scores
    scores = (delta / (W + 1e-8)).abs().flatten()
    kept = scores.argsort()[: round(keep * scores.numel())]
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask[kept] = True
    return torch.where(mask.view_as(delta), delta, torch.zeros_like(delta))


def feedback_step(W, A, K, V, E, op):
    delta = torch.linalg.solve(A, ((V - W @ K) @ K.T - E).T).T
    delta_hat = op(delta, W)
    return delta_hat, (delta_hat - delta) @ A


def feedback_ignores_E(W, A, K, V, E, op):  # wrong: no feedback
    return feedback_step(W, A, K, V, torch.zeros_like(E), op)


def feedback_unscaled_error(W, A, K, V, E, op):  # wrong: E_new = Δ̂ − Δ
    delta = torch.linalg.solve(A, ((V - W @ K) @ K.T - E).T).T
    delta_hat = op(delta, W)
    return delta_hat, delta_hat - delta


def feedback_returns_one(W, A, K, V, E, op):  # wrong: only Δ̂
    return feedback_step(W, A, K, V, E, op)[0]


@pytest.mark.parametrize("check, solution", [
    (ch08.check_rect, rect_by_threshold),
    (ch08.check_error_feedback_step, feedback_step),
])
def test_correct_solutions_pass(check, solution, capsys):
    worst = check(solution)
    assert 0.0 <= worst < 1e-8
    assert capsys.readouterr().out.startswith("\u2713 " + check.__name__)


@pytest.mark.parametrize("check, wrong, phrase", [
    (ch08.check_rect, rect_by_size, "RELATIVE"),
    (ch08.check_rect, rect_smallest, "largest"),
    (ch08.check_error_feedback_step, feedback_ignores_E, "previous error"),
    (ch08.check_error_feedback_step, feedback_unscaled_error, "(Δ̂ − Δ) A"),
    (ch08.check_error_feedback_step, feedback_returns_one, "pair"),
])
def test_wrong_solutions_fail_with_a_hint(check, wrong, phrase):
    with pytest.raises(AssertionError, match=None) as info:
        check(wrong)
    assert phrase in str(info.value)


def test_checks_are_exposed_by_oteseq_exercises():
    from oteseq import exercises
    assert exercises.check_rect is ch08.check_rect
    assert exercises.check_error_feedback_step is ch08.check_error_feedback_step


# ---------------------------------------------------------------------------- chapter 12


def rls_step(W, A_inv, K, V):
    AK = A_inv @ K
    gain = torch.linalg.solve(torch.eye(K.shape[1], dtype=K.dtype) + K.T @ AK, AK.T)
    return W + (V - W @ K) @ gain, A_inv - AK @ gain


def rls_old_inverse(W, A_inv, K, V):       # wrong: the step uses A⁻¹ before the update
    _, A_inv_new = rls_step(W, A_inv, K, V)
    return W + (V - W @ K) @ K.T @ A_inv, A_inv_new


def rls_returns_update(W, A_inv, K, V):    # wrong: Δ instead of W + Δ
    W_new, A_inv_new = rls_step(W, A_inv, K, V)
    return W_new - W, A_inv_new


def rls_wrong_woodbury(W, A_inv, K, V):    # wrong: forgets the identity in the n × n system
    AK = A_inv @ K
    gain = torch.linalg.solve(K.T @ AK + 1e-3 * torch.eye(K.shape[1], dtype=K.dtype), AK.T)
    return W + (V - W @ K) @ gain, A_inv - AK @ gain


def test_rls_correct_solution_passes(capsys):
    assert 0.0 <= ch12.check_rls_step(rls_step) < 1e-8
    assert capsys.readouterr().out.startswith("\u2713 check_rls_step")


@pytest.mark.parametrize("wrong, phrase", [
    (rls_old_inverse, "NEW inverse"),
    (rls_returns_update, "update Δ"),
    (rls_wrong_woodbury, "Woodbury"),
    (lambda W, A_inv, K, V: W, "pair"),
])
def test_rls_wrong_solutions_fail_with_a_hint(wrong, phrase):
    with pytest.raises(AssertionError) as info:
        ch12.check_rls_step(wrong)
    assert phrase in str(info.value)


def test_ch12_check_is_exposed_by_oteseq_exercises():
    from oteseq import exercises
    assert exercises.check_rls_step is ch12.check_rls_step
