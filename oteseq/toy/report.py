"""Quality bars of a toy-world model: recall per prompt kind, perplexity and fluency.

``python -m oteseq.toy report`` runs :func:`quality_report` on the shipped model and writes
``model/quality_report.json``; the model card quotes those numbers.
"""
from __future__ import annotations

import math
import random
import re
from collections import Counter
from typing import Sequence

import torch

from ..batching import pad_token_id
from ..models import input_device
from .ability import mean_nll, object_hits
from .corpus import context_prefixes, fact_prompts, general_text
from ._world import World
from .._types import Model, Tokenizer

BARS = {"canonical": 0.97, "paraphrase": 0.90, "question": 0.80}


def recall_by_kind(model: Model, tok: Tokenizer, w: World, *, n_facts: int | None = None,
                   batch_size: int = 256) -> dict[str, float]:
    """Top-1 (all object tokens) recall of every prompt kind over ``n_facts`` facts (all: None).

    Kinds: canonical, paraphrase, question, nq (zsRE ``loc`` form), and ``prefixed``: the
    canonical prompt after a filler prefix, as used for key averaging.
    """
    keys = sorted(w.facts)
    if n_facts is not None:
        keys = random.Random(0).sample(keys, n_facts)
    prompts: dict[str, list[tuple[str, str]]] = {}
    for i, (s, rid) in enumerate(keys):
        obj = w.facts[(s, rid)]
        for kind, texts in fact_prompts(w, s, rid).items():
            prompts.setdefault(kind, []).extend((t, obj) for t in texts)
        prefix = context_prefixes()[i % len(context_prefixes())]
        canonical = w.relations[rid].canonical.format(s)
        prompts.setdefault("prefixed", []).append((f"{prefix}. {canonical}", obj))
    return {kind: object_hits(model, tok, [p for p, _ in items], [o for _, o in items],
                              batch_size=batch_size).float().mean().item()
            for kind, items in prompts.items()}


def ngram_entropy(text: str) -> float:
    """CounterFact fluency of one text: mean(2/3·H2, 4/3·H3), Hn the n-gram frequency entropy
    in bits. Words by a regex (``\\w+`` or one punctuation mark) instead of nltk's tokenizer."""
    words = re.findall(r"\w+|[^\w\s]", text.lower())

    def entropy(n: int) -> float:
        counts = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        total = sum(counts.values())
        return -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0

    return (2 / 3 * entropy(2) + 4 / 3 * entropy(3)) / 2


@torch.no_grad()
def greedy_continuations(model: Model, tok: Tokenizer, prompts: Sequence[str],
                         n_new: int = 32) -> list[str]:
    """Greedy continuations (prompt included), one prompt at a time (no padding effects)."""
    texts = []
    device = input_device(model)
    for prompt in prompts:
        ids = torch.tensor([tok(prompt)["input_ids"]], device=device)
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new,
                             do_sample=False, pad_token_id=pad_token_id(tok))
        texts.append(tok.decode(out[0], skip_special_tokens=True))
    return texts


def fluency(model: Model, tok: Tokenizer, w: World, *, n_texts: int = 12) -> dict[str, float]:
    """n-gram entropy of greedy continuations vs held-out real text vs the same words shuffled,
    and mean NLL of real vs shuffled held-out text."""
    real = general_text(n_texts, 1, "heldout", world=w, sentences_per_text=6)
    rng = random.Random(0)
    shuffled = [" ".join(rng.sample(t.split(), len(t.split()))) for t in real]
    starts = [" ".join(t.split()[:4]) for t in real]
    generated = greedy_continuations(model, tok, starts)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return {"entropy_generated": mean([ngram_entropy(t) for t in generated]),
            "entropy_real": mean([ngram_entropy(t) for t in real]),
            "entropy_shuffled": mean([ngram_entropy(t) for t in shuffled]),
            "nll_real": mean_nll(model, tok, real), "nll_shuffled": mean_nll(model, tok, shuffled),
            "example": generated[0]}


def quality_report(model: Model, tok: Tokenizer, w: World, *, n_facts: int | None = None) -> dict:
    """Recall per prompt kind, the bars they are held to, and fluency."""
    recall = recall_by_kind(model, tok, w, n_facts=n_facts)
    return {"n_facts": len(w.facts) if n_facts is None else n_facts, "recall": recall,
            "bars": BARS, "passes": {k: recall[k] >= bar for k, bar in BARS.items()},
            "fluency": fluency(model, tok, w)}


__all__ = ["BARS", "fluency", "greedy_continuations", "ngram_entropy", "quality_report",
           "recall_by_kind"]
