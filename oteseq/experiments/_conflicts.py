"""Which target wins when a later edit contradicts an earlier one (DESIGN §2, conflicts).

Records come in edit order (``oteseq.toy.conflicts``); a record with ``"conflicts_with"``
re-edits the (subject, relation) of an earlier record with another target. On the final
model, for every such pair still in force (the latest record per key against the record it
replaced), we compare the two targets on the latest record's rewrite and paraphrase prompts.
Plain accumulation keeps both constraints on (nearly) the same key, so it should end at a
compromise; replacement removes the old constraint, so the latest target should win.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence
from .._types import Model, Tokenizer


def latest_pairs(records: Sequence[Mapping[str, Any]]) -> list[tuple[dict, dict]]:
    """(latest record, the record it replaced) for each re-edited (subject, relation)."""
    by_id = {r["case_id"]: r for r in records}
    latest: dict[tuple, dict] = {}
    for r in records:
        rw = r["requested_rewrite"]
        latest[(rw["subject"], rw["relation_id"])] = r
    return [(r, by_id[r["conflicts_with"]]) for r in latest.values() if "conflicts_with" in r]


def conflict_outcome(model: Model, tok: Tokenizer, records: Sequence[Mapping[str, Any]], *,
                     batch_size: int = 64) -> dict:
    """Share of prompts where the latest target beats the replaced one, and the mean
    per-token probabilities exp(−NLL) of both, over every re-edited (subject, relation).

    Returns ``{"n_pairs", "latest_wins", "p_latest", "p_earlier"}`` (rates in [0, 1]).
    """
    from ..evaluate._counterfact import record_prompts
    from ..scoring import continuation_nll
    prompts, conts = [], []
    for new, old in latest_pairs(records):
        groups = record_prompts(new)
        for prompt in groups["rewrite"] + groups["paraphrase"]:
            prompts += [prompt, prompt]
            conts += [" " + new["requested_rewrite"]["target_new"]["str"],
                      " " + old["requested_rewrite"]["target_new"]["str"]]
    if not prompts:
        return {"n_pairs": 0, "latest_wins": math.nan, "p_latest": math.nan,
                "p_earlier": math.nan}
    nll = continuation_nll(model, tok, prompts, conts, batch_size=batch_size).tolist()
    latest, earlier = nll[0::2], nll[1::2]
    n = len(latest)
    return {"n_pairs": len(latest_pairs(records)),
            "latest_wins": sum(a < b for a, b in zip(latest, earlier)) / n,
            "p_latest": sum(math.exp(-a) for a in latest) / n,
            "p_earlier": sum(math.exp(-b) for b in earlier) / n}


__all__ = ["conflict_outcome", "latest_pairs"]
