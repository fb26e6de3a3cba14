"""Reference: MEMIT's ``compute_z`` loop, one request at a time, a full forward per step.

Slow; the batched :func:`oteseq.values.compute_values` must reproduce it (tests, benchmark) and
falls back to it when neither replay of the upper blocks reproduces the model.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .. import hooks, models
from ..requests import Request
from . import prompts
from .target import TargetValues
from .._types import Model, Tokenizer


def one_at_a_time(model: Model, tok: Tokenizer, requests: Sequence[Request], layer: int, hp, *,
                  templates: Sequence[str]) -> TargetValues:
    """Reference: MEMIT's ``compute_z`` loop, one request at a time, a full forward per step
    with δ added by a hook and ``torch.optim.Adam``. Slow; used by tests and the benchmark."""
    parts = [_one(model, tok, req, layer, hp, templates) for req in requests]
    z_init = torch.stack([p[0] for p in parts], dim=1)
    delta = torch.stack([p[1] for p in parts], dim=1)
    return TargetValues(z=z_init + delta, z_init=z_init,
                        loss=torch.stack([p[2] for p in parts]),
                        steps=torch.tensor([p[3] for p in parts]))


def _one(model: Model, tok: Tokenizer, req: Request, layer: int, hp, templates):
    p = prompts.build_prompts(tok, [req], templates, getattr(hp, "fact_token", "subject_last"))
    dev = models.input_device(model)
    ids, mask, labels = (x.to(dev) for x in (p.input_ids, p.attention_mask, p.labels))
    m, state = p.per_request, {}
    delta = torch.zeros(models.weight_shape(models.edited_module(model, layer))[0], device=dev,
                        requires_grad=True)

    def inject(output):
        h = output[0] if isinstance(output, tuple) else output
        state.setdefault("z_init", h[0, p.lookup[0]].detach().float().clone())
        where = (torch.arange(m, device=h.device), p.lookup.to(h.device))
        h = h.index_put(where, delta.to(h.dtype).expand(m, -1), accumulate=True)
        return (h, *output[1:]) if isinstance(output, tuple) else h

    opt, steps = torch.optim.Adam([delta], lr=hp.v_lr), 0  # MEMIT's optimiser
    with hooks.Trace(models.block(model, layer), retain_output=False, edit_output=inject):
        for it in range(hp.v_num_grad_steps):
            opt.zero_grad()
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask,
                                           use_cache=False).logits.float(), dim=-1)
            tgt = labels[: m - 1]
            tok_logp = logp[: m - 1].gather(2, tgt.clamp(min=0)[..., None])[..., 0]
            nll = (-(tok_logp * (tgt != -100)).sum(1) / (tgt != -100).sum(1)).mean()
            kl_logp = logp[m - 1, p.lookup[m - 1]][None]
            if it == 0:
                kl_init = kl_logp.detach().clone()
            kl = torch.nn.functional.kl_div(kl_init, kl_logp, log_target=True,
                                            reduction="batchmean")
            z_norm = state["z_init"].norm()
            loss = nll + hp.kl_factor * kl + hp.v_weight_decay * (delta.norm() / z_norm ** 2)
            if loss < prompts.STOP_LOSS or it == hp.v_num_grad_steps - 1:
                break
            delta.grad = torch.autograd.grad(loss, delta)[0]  # no weight gradients
            opt.step()
            steps += 1
            if delta.norm() > hp.clamp_norm_factor * z_norm:
                with torch.no_grad():
                    delta[...] = delta * (hp.clamp_norm_factor * z_norm) / delta.norm()
    return state["z_init"], delta.detach(), loss.detach(), steps
