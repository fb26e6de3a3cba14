"""Checks for chapter 10 (conflicting edits): the de-conflicted set, replacement, retraction."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ._common import (TOLERANCE, Agreement, as_tensor, call, compare, describe, generator, randn,
                      relative_error, report, tensor_pair)


def _edit_problem(case: int, d_in: int = 6, d_out: int = 4, n: int = 5, m: int = 2) -> dict:
    """``W`` = OTE over ``n`` active edits (``A`` its normal matrix); ``m`` of them are ``old``,
    to be removed or replaced by ``m`` new columns with nearly the same keys."""
    g = generator(300 + case)
    K0 = randn(g, d_in, 3 * d_in)
    W0, K, V = randn(g, d_out, d_in), randn(g, d_in, n), randn(g, d_out, n)
    lam = 0.5 + case
    A = lam * K0 @ K0.T / K0.shape[1] + K @ K.T
    W = W0 + torch.linalg.solve(A, ((V - W0 @ K) @ K.T).T).T
    K_new = K[:, :m] + 0.05 * randn(g, d_in, m)
    return dict(W0=W0, C0=K0 @ K0.T / K0.shape[1], lam=lam, K=K, V=V, W=W, A=A,
                K_old=K[:, :m].clone(), V_old=V[:, :m].clone(), K_new=K_new,
                V_new=randn(g, d_out, m))


def _dense_ote(p: dict, K: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """The one-time solution over the edits ``(K, V)``, computed the obvious way."""
    A = p["lam"] * p["C0"] + K @ K.T
    return p["W0"] + torch.linalg.solve(A, ((V - p["W0"] @ K) @ K.T).T).T


def _pair(name: str, out, like_W: torch.Tensor, like_A: torch.Tensor) -> tuple:
    return tensor_pair(name, out, (like_W, "W_new"), (like_A, "A_new"),
                       " — the edited weight and the updated normal matrix —")


def check_retract(fn: Callable) -> Agreement:
    """Check ``fn(W, A, K_old, V_old) -> (W_new, A_new)``: remove the edits ``(K_old, V_old)``.

    ``W`` is the one-time solution over the active edits with normal matrix ``A``; ``W_new`` must
    be the one-time solution over the others (dense reference), ``A_new = A − K_old K_oldᵀ``.
    Returns the largest relative error.
    """
    name, errors = "check_retract", []
    for case in range(4):
        p = _edit_problem(case, m=1 + case % 2)
        args = {k: p[k] for k in ("W", "A", "K_old", "V_old")}
        m = p["K_old"].shape[1]
        expected_W = _dense_ote(p, p["K"][:, m:], p["V"][:, m:])
        expected_A = p["A"] - p["K_old"] @ p["K_old"].T
        W_new, A_new = _pair(name, call(name, fn, args, case), p["W"], p["A"])
        error_A = compare(name, A_new, expected_A, case, args, "A − K_old K_oldᵀ",
                          "the retracted keys leave the normal matrix: A_new = A − K_old K_oldᵀ.")
        if relative_error(W_new, 2 * p["W"] - expected_W) < TOLERANCE:
            hint = "the sign of the update is flipped: Δ A_new = (W K_old − V_old) K_oldᵀ."
        elif relative_error(W_new, expected_W - p["W"]) < TOLERANCE:
            hint = "you returned the update Δ; return the new weight W + Δ."
        else:
            hint = ("solve Δ A_new = (W K_old − V_old) K_oldᵀ with the NEW matrix "
                    "A_new = A − K_old K_oldᵀ, then return W + Δ.")
        errors.append(max(error_A, compare(name, W_new, expected_W, case, args,
                                           "the one-time solution over the remaining edits",
                                           hint)))
    return report(name, "the one-time solution over the remaining edits", errors)


def check_replace(fn: Callable) -> Agreement:
    """Check ``fn(W, A, K_old, V_old, K_new, V_new) -> (W_new, A_new)``: latest wins.

    ``W_new`` must be the one-time solution over the de-conflicted set (the old columns swapped
    for the new ones; dense reference), ``A_new = A − K_old K_oldᵀ + K_new K_newᵀ``.
    Returns the largest relative error.
    """
    name, errors = "check_replace", []
    for case in range(4):
        p = _edit_problem(case, m=1 + case % 2)
        args = {k: p[k] for k in ("W", "A", "K_old", "V_old", "K_new", "V_new")}
        m = p["K_old"].shape[1]
        K_d = torch.cat([p["K"][:, m:], p["K_new"]], dim=1)
        V_d = torch.cat([p["V"][:, m:], p["V_new"]], dim=1)
        expected_W = _dense_ote(p, K_d, V_d)
        expected_A = p["A"] - p["K_old"] @ p["K_old"].T + p["K_new"] @ p["K_new"].T
        W_new, A_new = _pair(name, call(name, fn, args, case), p["W"], p["A"])
        error_A = compare(name, A_new, expected_A, case, args, "A − K_old K_oldᵀ + K_new K_newᵀ",
                          "remove the old keys and add the new ones to the normal matrix.")
        accumulated = _dense_ote(p, torch.cat([p["K"], p["K_new"]], 1),
                                 torch.cat([p["V"], p["V_new"]], 1))
        if relative_error(W_new, accumulated) < TOLERANCE:
            hint = ("this is plain accumulation (the compromise): the old constraint is still "
                    "in; subtract (V_old − W K_old) K_oldᵀ from the right-hand side.")
        else:
            hint = ("Δ A_new = (V_new − W K_new) K_newᵀ − (V_old − W K_old) K_oldᵀ with "
                    "A_new = A − K_old K_oldᵀ + K_new K_newᵀ; return W + Δ.")
        errors.append(max(error_A, compare(name, W_new, expected_W, case, args,
                                           "the one-time solution over the de-conflicted set",
                                           hint)))
    return report(name, "the one-time solution over the de-conflicted set", errors)


def _deconflict_problems() -> list[dict]:
    problems = []
    for case, ids in enumerate([
            [("Ada", "born"), ("Bo", "born"), ("Ada", "born"), ("Cy", "job")],
            ["a", "b", "c"],
            [("x", "r"), ("x", "r"), ("x", "r")],
            [1, 2, 1, 3, 2, 4, 1]]):
        g = generator(400 + case)
        n = len(ids)
        problems.append(dict(ids=ids, K=randn(g, 5, n), V=randn(g, 3, n)))
    return problems


def _latest(ids: list, K: torch.Tensor, V: torch.Tensor, keep: str = "last") -> tuple:
    position = {}
    for j, x in enumerate(ids):
        if keep == "last" or x not in position:
            position[x] = j
    cols = sorted(position.values())
    return K[:, cols], V[:, cols]


def check_deconflict(fn: Callable) -> Agreement:
    """Check ``fn(ids, K, V) -> (K_d, V_d)``: one column per id, the latest one (latest wins).

    ``ids[j]`` names column ``j`` of ``K`` (d_in, n) and ``V`` (d_out, n), in edit order. The
    column order of the answer is free: compared are the column count and the statistics the
    one-time solution depends on, ``K_d K_dᵀ`` and ``V_d K_dᵀ``. Returns the largest error.
    """
    name, errors = "check_deconflict", []
    for case, args in enumerate(_deconflict_problems()):
        K_e, V_e = _latest(args["ids"], args["K"], args["V"])
        out = call(name, fn, args, case)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise AssertionError(f"{name}: return a pair (K_d, V_d), got {type(out).__name__}")
        K_d, V_d = (x if isinstance(x, torch.Tensor) else None for x in out)
        if K_d is None or V_d is None or K_d.ndim != 2 or V_d.ndim != 2:
            raise AssertionError(f"{name}: return two 2-D tensors, keys (d_in, n_d) and values "
                                 f"(d_out, n_d)")
        if K_d.shape[1] != K_e.shape[1] or V_d.shape[1] != K_e.shape[1]:
            raise AssertionError(
                f"{name}: on problem {case} ({describe(args)}) you returned {K_d.shape[1]} key "
                f"and {V_d.shape[1]} value columns for {K_e.shape[1]} distinct ids; keep "
                f"exactly one column per id")
        K_f, V_f = _latest(args["ids"], args["K"], args["V"], keep="first")
        got = torch.cat([K_d @ K_d.T, V_d @ K_d.T], dim=0).to(torch.float64)
        first = torch.cat([K_f @ K_f.T, V_f @ K_f.T], dim=0)
        hint = ("latest wins: keep the LAST column of each id" if relative_error(got, first)
                < TOLERANCE else "keep, for each id, its last column of K and the same column "
                "of V (the values must stay paired with their keys)")
        errors.append(compare(name, got, torch.cat([K_e @ K_e.T, V_e @ K_e.T], dim=0), case,
                              args, "the de-conflicted set (compared as K Kᵀ and V Kᵀ)", hint))
    return report(name, "the de-conflicted set (compared as K Kᵀ and V Kᵀ)", errors)
