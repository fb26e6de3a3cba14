"""General ability of a model of the toy world: fact recall and perplexity of general text.

The toy analogue of the GLUE-style checks run during sequential editing: recall over a fixed,
seeded sample of facts that no edit touches (all relations), and mean token NLL on held-out
general text. Everything is batched and runs on the model's device.
"""
from __future__ import annotations

import random
from typing import Collection, Hashable, Sequence

import torch

from ..errors import OptionError
from ..batching import pad_token_id, right_padded
from ..scoring import score_continuations
from ..models import input_device
from .corpus import general_text
from ._world import World
from .versions import default_world, toy_model
from .._types import Model, Tokenizer


def object_hits(model: Model, tok: Tokenizer, prompts: Sequence[str], objects: Sequence[str], *,
                batch_size: int = 128) -> torch.Tensor:
    """Whether the model's argmax reproduces every token of ``" " + object`` after its prompt.

    Teacher-forced exact match (CounterFact ``*_acc``, scored by
    :func:`oteseq.scoring.score_continuations`): a (len(prompts),) bool tensor on CPU.
    """
    scores = score_continuations(model, tok, list(prompts), [" " + o for o in objects],
                                 batch_size=batch_size)
    return torch.tensor([bool(s.correct.all()) for s in scores], dtype=torch.bool)


@torch.no_grad()
def mean_nll(model: Model, tok: Tokenizer, texts: Sequence[str], *, batch_size: int = 64) -> float:
    """Mean next-token negative log-likelihood (nats) over all predicted tokens of ``texts``."""
    total, count = 0.0, 0
    for start in range(0, len(texts), batch_size):
        rows = [tok(t)["input_ids"] for t in texts[start:start + batch_size]]
        ids, mask = right_padded(rows, pad_token_id(tok), input_device(model))
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:],
                                                reduction="none")
        keep = mask[:, 1:].bool()
        total += nll[keep].sum().item()
        count += int(keep.sum())
    return total / max(count, 1)


def fact_sample(w: World, n_facts: int, *, exclude: Collection[Hashable] = (),
                seed: int = 1234, untouched: str = "pair") -> list[tuple[str, str]]:
    """A fixed seeded sample of ``n_facts`` (subject, relation_id) pairs not in ``exclude``.

    ``untouched="subject"`` also leaves out every fact of a person named in ``exclude``.
    """
    if untouched not in ("pair", "subject"):
        raise OptionError(f"untouched={untouched!r}: use 'pair' or 'subject'")
    excluded = set(exclude)
    people = {k[0] for k in excluded if isinstance(k, tuple)} if untouched == "subject" else ()
    rng = random.Random(f"oteseq-toy-ability-{seed}")
    keys = sorted(w.facts)
    rng.shuffle(keys)
    return [k for k in keys if k not in excluded and k[0] not in people][:n_facts]


def general_ability(model: Model, tok: Tokenizer, *, exclude: Collection[Hashable] = (),
                    n_facts: int = 600,
                    n_texts: int = 200, batch_size: int = 128, world: World | None = None,
                    untouched: str | None = None) -> dict:
    """Recall of untouched facts (canonical prompt) and NLL of held-out general text.

    ``exclude`` holds (subject, relation_id) ids of edited facts (``Request.id``); the sample is
    drawn from the rest with a fixed seed, so runs are comparable; ``untouched="subject"`` draws
    only facts of people no edit touches. ``world`` and ``untouched`` default to the default toy
    model's (``load_model("toy")``). Returns
    ``{"recall": float, "recall_by_relation": {relation_id: float}, "nll": float}``.
    """
    w = world if world is not None else default_world()
    untouched = toy_model().untouched if untouched is None else untouched
    keys = fact_sample(w, n_facts, exclude=exclude, untouched=untouched)
    prompts = [w.relations[r].canonical.format(s) for s, r in keys]
    hits = object_hits(model, tok, prompts, [w.facts[k] for k in keys], batch_size=batch_size)
    by_relation = {rid: hits[[i for i, k in enumerate(keys) if k[1] == rid]].float().mean().item()
                   for rid in w.relations if any(k[1] == rid for k in keys)}
    nll = mean_nll(model, tok, general_text(n_texts, 0, "heldout", world=w),
                   batch_size=batch_size)
    return {"recall": hits.float().mean().item(), "recall_by_relation": by_relation, "nll": nll}


__all__ = ["fact_sample", "general_ability", "mean_nll", "object_hits"]
