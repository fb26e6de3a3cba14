"""Teacher-forced scoring of continuations, batched over every (prompt, continuation) pair.

Both CounterFact and zsRE metrics reduce to one forward pass over ``prompt + continuation``
token sequences: the logits at position ``len(prompt) + j - 1`` predict continuation token ``j``.
From those rows we read the negative log-likelihood of each continuation token and whether the
argmax equals it. Sequences are right-padded with an attention mask, sorted by length to keep
padding small, and run ``batch_size`` at a time on the model's device — never one prompt at a
time.

Tokenisation: the prompt is encoded with the tokenizer's defaults (a Llama BOS stays in front),
the continuation (which carries its own leading space, e.g. ``" Paris"``) without special tokens,
and the two id lists are concatenated. For GPT-2-style byte-level BPE this is the same split as
encoding ``prompt + " " + target`` in one piece, which is what the reference code scores; it
also avoids the reference's BOS-in-the-middle and off-by-one problems on Llama tokenizers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .batching import pad_token_id, right_padded
from .errors import OptionError, RequestError, ShapeError
from .models import input_device
from ._types import Model, Tokenizer


@dataclass(frozen=True)
class TokenScores:
    """Per-token results for one continuation: NLL in nats and argmax hits, both (T,) on CPU."""

    nll: torch.Tensor
    correct: torch.Tensor

    @property
    def mean_nll(self) -> float:
        """Mean over continuation tokens of −log p(token | prefix) — the reference 'prob'."""
        return float(self.nll.mean())


def encode_pairs(tok: Tokenizer, prompts: Sequence[str], continuations: Sequence[str]
                 ) -> list[tuple[list[int], list[int]]]:
    """Token ids ``(prompt_ids, continuation_ids)`` for each pair (each distinct string is
    encoded once); see the module docstring."""
    if len(prompts) != len(continuations):
        raise ShapeError(f"{len(prompts)} prompts but {len(continuations)} continuations; "
                         "pass one continuation per prompt")
    prompt_ids = {p: list(tok(p)["input_ids"]) for p in dict.fromkeys(prompts)}
    cont_ids = {c: list(tok(c, add_special_tokens=False)["input_ids"])
                for c in dict.fromkeys(continuations)}
    pairs = []
    for prompt, cont in zip(prompts, continuations):
        p_ids, c_ids = prompt_ids[prompt], cont_ids[cont]
        if not p_ids or not c_ids:
            raise RequestError(f"cannot score continuation {cont!r} after prompt {prompt!r}: "
                               "both must encode to at least one token")
        pairs.append((p_ids, c_ids))
    return pairs


@torch.no_grad()
def _score_chunk(model: Model, pairs, pad: int, device) -> list[TokenScores]:
    """One forward pass over a chunk of pairs; only the needed logit rows are normalised."""
    rows = [p + c for p, c in pairs]
    ids, mask = right_padded(rows, pad, device)
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    batch_idx, pos_idx, tgt = [], [], []
    for b, (p, c) in enumerate(pairs):
        batch_idx += [b] * len(c)
        pos_idx += range(len(p) - 1, len(p) - 1 + len(c))
        tgt += c
    picked = logits[torch.tensor(batch_idx, device=device), torch.tensor(pos_idx, device=device)]
    picked = picked.float()
    targets = torch.tensor(tgt, device=device)
    nll = -torch.log_softmax(picked, dim=-1).gather(1, targets[:, None])[:, 0]
    hit = picked.argmax(-1) == targets
    sizes = [len(c) for _, c in pairs]
    return [TokenScores(n.double().cpu(), h.cpu())
            for n, h in zip(nll.split(sizes), hit.split(sizes))]


def score_continuations(model: Model, tok: Tokenizer, prompts: Sequence[str],
                        continuations: Sequence[str], *,
                        batch_size: int = 64) -> list[TokenScores]:
    """Teacher-forced per-token NLL and argmax hits of each continuation after its prompt.

    ``continuations[i]`` is scored after ``prompts[i]`` and must carry its own leading space.
    Returns one :class:`TokenScores` per pair, in input order.
    """
    if batch_size < 1:
        raise OptionError(f"batch_size must be >= 1, got {batch_size}")
    pairs = encode_pairs(tok, prompts, continuations)
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    device, pad = input_device(model), pad_token_id(tok)
    results: list[TokenScores | None] = [None] * len(pairs)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        for i, scores in zip(chunk, _score_chunk(model, [pairs[i] for i in chunk], pad, device)):
            results[i] = scores
    return results  # type: ignore[return-value]


def continuation_nll(model: Model, tok: Tokenizer, prompts: Sequence[str],
                     continuations: Sequence[str], *,
                     batch_size: int = 64) -> torch.Tensor:
    """Mean-token NLL (nats) of each continuation after its prompt, a (n,) float64 tensor.

    NLL_i = −(1/T_i) Σ_j log p(c_ij | prompt_i, c_i,<j): the quantity CounterFact compares.
    """
    scores = score_continuations(model, tok, prompts, continuations, batch_size=batch_size)
    return torch.tensor([s.mean_nll for s in scores], dtype=torch.float64)


__all__ = ["TokenScores", "continuation_nll", "encode_pairs", "score_continuations"]
