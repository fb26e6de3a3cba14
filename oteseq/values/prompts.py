"""The prompts of the value optimisation and each request's loss on them.

Rows of a batch: for request ``r``, one rewriting prompt per context template (template ×
prompt, then the target's tokens but the last) and the KL prompt ``"{subject} is a"``; request r
owns rows ``[r·m, r·m+m)``. Loss (MEMIT ``compute_z``, editing-anchors §3), per request:

    mean_p NLL(target | prompt_p) + kl_factor · KL(p_δ ‖ p_0) + v_weight_decay · ‖δ‖ / ‖z_init‖².
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .. import keys
from ..batching import pad_token_id, right_padded
from ..requests import Request
from .._types import Tokenizer

STOP_LOSS = 5e-2  # the reference's early-stopping threshold on the total loss
KL_PROMPT = "{} is a"


@dataclass(frozen=True)
class Prompts:
    """Token ids of every rewriting and KL prompt of a batch; request r owns rows [r·m, r·m+m)."""

    input_ids: torch.Tensor    # (P, T) right-padded
    attention_mask: torch.Tensor  # (P, T)
    lookup: torch.Tensor       # (P,) index of the subject's last token
    labels: torch.Tensor       # (P, T) target id where the logit scores a target token, else -100
    per_request: int           # m = number of templates + 1 (the last row is the KL prompt)


def build_prompts(tok: Tokenizer, requests: Sequence[Request], templates: Sequence[str],
                  fact_token: str = "subject_last") -> Prompts:
    """Rewriting prompts (template × prompt, then the target's tokens but the last) + KL prompt.

    Token ids are concatenated (prompt ids, then target ids), not re-tokenised from text, so
    the labels are exactly the target's tokens.
    """
    rows, lookups, label_rows = [], [], []
    for req in requests:
        target = tok(" " + req.target, add_special_tokens=False)["input_ids"]
        for template in [*(t.replace("{}", req.prompt) for t in templates), KL_PROMPT]:
            ids = tok(template.replace("{}", req.subject))["input_ids"]
            is_kl = template is KL_PROMPT
            labels = [-100] * len(ids) + ([] if is_kl else [-100] * (len(target) - 1))
            if not is_kl:
                labels[len(ids) - 1:] = target
                ids = ids + target[:-1]
            rows.append(ids)
            label_rows.append(labels)
            lookups.append(keys.subject_last_index(tok, template, req.subject, mode=fact_token))
    input_ids, attention_mask = right_padded(rows, pad_token_id(tok))
    labels, _ = right_padded(label_rows, -100)
    return Prompts(
        input_ids=input_ids, attention_mask=attention_mask, lookup=torch.tensor(lookups),
        labels=labels,
        per_request=len(templates) + 1)


def loss_log_probs(logits: torch.Tensor,
                   labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities the loss reads from ``logits`` (N, V): the first ``len(labels)`` rows
    score their label, (len(labels),); the other rows (KL prompts) give full rows, (N − n, V).

    One ``split`` (its backward concatenates; slicing would fill two (N, V) zero tensors) and
    :class:`_TokenLogProb` for the labels.
    """
    scored, kl = logits.split([len(labels), logits.shape[0] - len(labels)])
    return _TokenLogProb.apply(scored, labels), torch.log_softmax(kl, dim=-1)


class _TokenLogProb(torch.autograd.Function):
    """log softmax(x_i)[y_i] for each row i of x (n, V), labels y (n,) → (n,).

    Gradient: g_i · (onehot(y_i) − softmax(x_i)), built in place in one (n, V) tensor from the
    saved log-probabilities (autograd's gather and log-softmax backward allocate two).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits, dim=-1)
        ctx.save_for_backward(logp, labels)
        return logp.gather(1, labels[:, None])[:, 0]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logp, labels = ctx.saved_tensors
        grad_logits = logp.exp().mul_(-grad[:, None])
        return grad_logits.scatter_add_(1, labels[:, None], grad[:, None]), None


def request_losses(logp_rows: list[torch.Tensor], kl_logp: torch.Tensor,
                   kl_init: torch.Tensor, delta: torch.Tensor, z_init: torch.Tensor,
                   hp, m: int) -> torch.Tensor:
    """Total loss of each request: mean NLL over its m−1 rewriting prompts + KL + weight decay.

    ``logp_rows`` holds, per rewriting prompt, the log-probabilities of its target tokens;
    ``kl_logp``/``kl_init`` (n, vocab); ``delta``/``z_init`` (n, d_model). Returns (n,).
    """
    n = delta.shape[0]
    nll = torch.stack([-row.sum() / row.numel() for row in logp_rows]).view(n, m - 1).mean(1)
    kl = (kl_logp.exp() * (kl_logp - kl_init)).sum(-1)
    decay = delta.norm(dim=-1) / z_init.norm(dim=-1) ** 2
    return nll + hp.kl_factor * kl + hp.v_weight_decay * decay
