"""Checks for chapter 3b (where target values come from): MEMIT's value loss and norm clamp."""
from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import torch

from ._common import Agreement, as_tensor, call, compare, generator, randn, report


def _loss_problem(case: int, vocab: int = 11, d: int = 6) -> dict:
    """One request: 1–4 rewriting prompts with 1–3 target tokens each, KL rows, δ, z_init."""
    g = generator(3500 + case)
    lengths = torch.randint(1, 4, (1 + case % 4,), generator=g).tolist()
    target_logp = [-torch.rand(n, generator=g, dtype=torch.float64) * 3 for n in lengths]
    kl_logp = torch.log_softmax(randn(g, vocab), 0)
    return dict(target_logp=target_logp, kl_logp=kl_logp,
                kl_ref=torch.log_softmax(randn(g, vocab), 0), delta=randn(g, d),
                z_init=randn(g, d) * 2, kl_factor=0.0625 * (1 + case),
                weight_decay=0.5 / (1 + case))


def _reference_loss(p: dict) -> torch.Tensor:
    """The package's loss (oteseq.values.request_losses) for this one request."""
    from oteseq.values import request_losses

    hp = SimpleNamespace(kl_factor=p["kl_factor"], v_weight_decay=p["weight_decay"])
    return request_losses(p["target_logp"], p["kl_logp"][None], p["kl_ref"][None],
                          p["delta"][None], p["z_init"][None], hp,
                          len(p["target_logp"]) + 1)[0]


def _loss_hint(got: float, p: dict) -> str:
    """What a wrong value most likely got wrong."""
    nll_sum = -sum(float(r.sum()) for r in p["target_logp"]) / len(p["target_logp"])
    kl_back = float((p["kl_ref"].exp() * (p["kl_ref"] - p["kl_logp"])).sum())
    kl = float((p["kl_logp"].exp() * (p["kl_logp"] - p["kl_ref"])).sum())
    nll = float(torch.stack([-r.mean() for r in p["target_logp"]]).mean())
    ratio = float(p["delta"].norm() / p["z_init"].norm() ** 2)
    wrong = {
        "average the NLL over each prompt's target tokens before averaging over prompts":
            nll_sum + p["kl_factor"] * kl + p["weight_decay"] * ratio,
        "the KL term is KL(p_δ ‖ p_0) = Σ exp(kl_logp)·(kl_logp − kl_ref), not the reverse":
            nll + p["kl_factor"] * kl_back + p["weight_decay"] * ratio,
        "the weight decay divides ‖δ‖ by ‖z_init‖² (MEMIT's formula), not ‖z_init‖":
            nll + p["kl_factor"] * kl + p["weight_decay"] * float(
                p["delta"].norm() / p["z_init"].norm()),
    }
    for hint, value in wrong.items():
        if abs(got - value) <= 1e-9 * max(1.0, abs(value)):
            return hint
    return ("loss = mean over prompts of (mean NLL of its target tokens) + kl_factor·KL(p_δ ‖ "
            "p_0) + weight_decay·‖δ‖/‖z_init‖²")


def check_value_loss(fn: Callable) -> Agreement:
    """Check ``fn(target_logp, kl_logp, kl_ref, delta, z_init, kl_factor, weight_decay)`` →
    the 0-d loss of one request against :func:`oteseq.values.request_losses`.

    ``loss = mean_j mean_t −target_logp[j][t] + kl_factor·Σ p_δ (log p_δ − log p_0)
    + weight_decay·‖δ‖/‖z_init‖²``. Returns the largest relative error.
    """
    name, errors = "check_value_loss", []
    for case in range(4):
        p = _loss_problem(case)
        expected = _reference_loss(p).reshape(())
        rows = [r.clone() for r in p["target_logp"]]
        out = call(name, lambda *a, _rows=rows: fn(_rows, *a), {k: v for k, v in p.items()
                                                   if k != "target_logp"}, case)
        if any(not torch.equal(a, b) for a, b in zip(rows, p["target_logp"])):
            raise AssertionError(f"{name}: your function modified target_logp in place "
                                 f"(problem {case}); work on copies")
        got = as_tensor(name, out.reshape(()) if isinstance(out, torch.Tensor) and
                        out.numel() == 1 else out, expected, "loss")
        errors.append(compare(name, got, expected, case, {"prompts": len(rows)},
                              "oteseq.values.request_losses", _loss_hint(float(got), p)))
    return report(name, "oteseq.values.request_losses", errors)


def _clamp_problem(case: int, n: int = 5, d: int = 4) -> dict:
    """Rows of δ inside, on and outside the ball ‖δ‖ ≤ factor·‖z_init‖."""
    g = generator(3600 + case)
    z_init = randn(g, n, d)
    direction = randn(g, n, d)
    direction = direction / direction.norm(dim=1, keepdim=True)
    factor = 0.25 * (1 + case)
    scale = torch.tensor([0.3, 1.0, 1.7, 4.0, 0.0][:n], dtype=torch.float64)[:, None]
    return dict(delta=direction * scale * factor * z_init.norm(dim=1, keepdim=True),
                z_init=z_init, factor=factor)


def check_clamp(fn: Callable) -> Agreement:
    """Check ``fn(delta, z_init, factor)`` → each row of ``delta`` (n, d) projected onto the
    ball ``‖δ_i‖ ≤ factor·‖z_init_i‖``: rows inside unchanged, rows outside rescaled onto the
    sphere. Tried with a row inside, on, outside the ball and a zero row. Returns the largest
    relative error."""
    name, errors = "check_clamp", []
    for case in range(4):
        p = _clamp_problem(case)
        limit = p["factor"] * p["z_init"].norm(dim=1, keepdim=True)
        norm = p["delta"].norm(dim=1, keepdim=True)
        expected = torch.where(norm > limit, p["delta"] * limit / norm.clamp(min=1e-300),
                               p["delta"])
        got = as_tensor(name, call(name, fn, p, case), expected, "clamped δ")
        inside = ((norm < limit) & (norm > 0))[:, 0]
        if not torch.isfinite(got).all():
            hint = "a zero row must stay zero: avoid dividing by its norm (0/0 is NaN)"
        elif torch.allclose(got.norm(dim=1)[inside], limit[:, 0][inside]):
            hint = "rows already inside the ball must stay as they are"
        else:
            hint = "rescale a row only when ‖δ_i‖ > factor·‖z_init_i‖, to that norm exactly"
        errors.append(compare(name, got, expected, case, p, "the projection onto the ball",
                              hint))
    return report(name, "the projection onto the ball ‖δ‖ ≤ factor·‖z_init‖", errors)


__all__ = ["check_clamp", "check_value_loss"]
