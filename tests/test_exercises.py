"""oteseq.exercises: every check accepts a correct solution and rejects wrong ones."""
from __future__ import annotations

import pytest
import torch

from oteseq import exercises


def solve_right(A, B):
    """``X A = B`` for symmetric ``A``."""
    return torch.linalg.solve(A, B.T).T


def ote(W0, C0, K, V, lam):
    return solve_right(lam * C0 + K @ K.T, lam * W0 @ C0 + V @ K.T)


def se_step(W, C0, K, V, lam, K_p=None):
    A = lam * C0 + K @ K.T + (0.0 if K_p is None else K_p @ K_p.T)
    return solve_right(A, (V - W @ K) @ K.T)


def woodbury(A_inv, K):
    AK = A_inv @ K
    inner = torch.eye(K.shape[1], dtype=K.dtype) + K.T @ AK
    return A_inv - AK @ torch.linalg.solve(inner, AK.T)


def memit(W, C0, K, V, lam):
    return se_step(W, C0, K, V, lam)


def rome(W, C, k, v):
    u = torch.linalg.solve(C, k)
    return torch.outer(v - W @ k, u) / (k @ u)


def reparam_step(W, K, V, B, G, K_p):
    M = K @ K.T + K_p @ K_p.T + G
    eye = torch.eye(B.shape[0], dtype=B.dtype)
    return solve_right(B @ M @ B + eye - B, (V - W @ K) @ K.T @ B)


CORRECT = {
    "check_ote": ote,
    "check_se_step": se_step,
    "check_woodbury": woodbury,
    "check_memit": memit,
    "check_rome": rome,
    "check_reparam_step": reparam_step,
}

WRONG = {  # a plausible mistake for each
    "check_ote": lambda W0, C0, K, V, lam: ote(W0, C0, K, V, lam) - W0,          # returns Δ
    "check_se_step": lambda W, C0, K, V, lam, K_p=None: se_step(W, C0, K, V, lam),  # drops K_p
    "check_woodbury": lambda A_inv, K: A_inv - A_inv @ K @ K.T @ A_inv,           # no inner inverse
    "check_memit": lambda W, C0, K, V, lam: solve_right(lam * C0 + K @ K.T, V @ K.T),  # V not R
    "check_rome": lambda W, C, k, v: torch.outer(v - W @ k, k) / (k @ k),        # ignores C
    "check_reparam_step": lambda W, K, V, B, G, K_p: se_step(W, G, K, V, 1.0, K_p),  # ignores B
}


CORE = ("ch01", "ch03", "ch07", "ch09")  # the closed-form checks on random problems


def test_every_check_is_covered():
    public = {name for name in exercises.__all__ if name.startswith("check_")
              and getattr(exercises, name).__module__.rsplit(".", 1)[1] in CORE}
    assert public == set(CORRECT) == set(WRONG)


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_check_accepts_a_correct_solution(name, capsys):
    worst = getattr(exercises, name)(CORRECT[name])
    assert isinstance(worst, exercises.Agreement) and 0.0 <= worst <= exercises.TOLERANCE
    line = capsys.readouterr().out
    assert line.startswith(f"\u2713 {name}: your function matches")
    assert float(line.rsplit("error ", 1)[1].rstrip(").\n")) <= exercises.TOLERANCE


@pytest.mark.parametrize("name", sorted(WRONG))
def test_check_rejects_a_wrong_solution(name):
    with pytest.raises(AssertionError, match=name):
        getattr(exercises, name)(WRONG[name])


def test_wrong_shape_is_explained():
    with pytest.raises(AssertionError, match=r"shape \(7, 5\), expected \(5, 7\)"):
        exercises.check_ote(lambda W0, C0, K, V, lam: ote(W0, C0, K, V, lam).T)


def test_in_place_modification_is_caught():
    def in_place(W0, C0, K, V, lam):
        W0 += 0.0 * W0 + 1.0
        return W0

    with pytest.raises(AssertionError, match="modified its input W0 in place"):
        exercises.check_ote(in_place)


def test_a_raising_solution_is_reported_with_the_problem():
    with pytest.raises(AssertionError, match="raised ZeroDivisionError"):
        exercises.check_ote(lambda *args: 1 / 0)


def test_numpy_answers_are_accepted_half_precision_is_not():
    exercises.check_ote(lambda *a: ote(*a).numpy())
    with pytest.raises(AssertionError, match="relative error"):
        exercises.check_ote(lambda *a: ote(*a).to(torch.float16))


def test_nan_is_rejected():
    with pytest.raises(AssertionError, match="relative error"):
        exercises.check_se_step(lambda *a: se_step(*a) * float("nan"))


def test_every_chapter_check_is_listed():
    """``oteseq.exercises`` lists each ``check_*`` of every chapter module, and only those."""
    import importlib
    import pkgutil

    from oteseq.book import exercise_checks

    found = {}
    for info in pkgutil.iter_modules(exercise_checks.__path__):
        if info.name.startswith("ch"):
            module = importlib.import_module(f"{exercise_checks.__name__}.{info.name}")
            found.update({name: fn for name, fn in vars(module).items()
                          if name.startswith("check_") and callable(fn)})
    assert len(found) > 20
    assert {name for name in exercises.__all__ if name.startswith("check_")} == set(found)
    for name, fn in found.items():
        assert getattr(exercises, name) is fn


def test_oteseq_exercises_is_the_book_module():
    import oteseq
    from oteseq.book import exercises as book_exercises

    assert oteseq.exercises is book_exercises
    assert oteseq.exercises.check_ote is book_exercises.check_ote


def test_a_notebook_cell_ending_in_a_check_displays_only_the_line():
    from IPython.core.formatters import DisplayFormatter

    data, _ = DisplayFormatter().format(exercises.check_ote(CORRECT["check_ote"]))
    assert data == {}
