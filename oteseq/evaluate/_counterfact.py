"""CounterFact metrics exactly as ROME/MEMIT/AlphaEdit compute them (editing-anchors §6.1).

For every prompt two continuations are scored, ``" " + target_new`` and ``" " + target_true``,
by their mean-token NLL (:func:`oteseq.scoring.continuation_nll`):

Each rate is computed per prompt, averaged over the record's prompts, then over records
(reference key from ``summarize.py`` in brackets):

- ``efficacy`` [rewrite_success]: NLL_true > NLL_new on the rewrite prompt;
- ``efficacy_magnitude`` [rewrite_diff]: exp(−NLL_new) − exp(−NLL_true) on the rewrite prompt;
- ``generalization`` [paraphrase_success] and ``generalization_magnitude`` [paraphrase_diff]:
  the same on the paraphrase prompts;
- ``specificity`` [neighborhood_success]: NLL_true < NLL_new on the neighbourhood prompts;
- ``specificity_magnitude`` [neighborhood_diff]: exp(−NLL_true) − exp(−NLL_new) there;
- ``score`` [score]: harmonic mean of efficacy, generalization and specificity;
- ``fluency`` [ngram_entropy]: mean n-gram entropy of generated text, ×100 (≈600);
- ``consistency`` [reference_score]: TF-IDF cosine between the generated texts and Wikipedia
  snippets about other subjects with the new object.

Rates and magnitudes are returned in [0, 1] (magnitudes in [−1, 1]); the papers print them
×100. ``fluency`` is returned on the reference's printed scale (bits ×100, ≈600 for a healthy
GPT-2 XL) and ``consistency`` as a cosine in [0, 1] (papers: ×100). The score is the harmonic
mean of the three *aggregated* rates, as ``summarize.py`` computes it.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from .generation import consistency_texts, fluency_and_consistency
from ..scoring import continuation_nll
from .._types import Model, Tokenizer

GROUPS = (("efficacy", "rewrite"), ("generalization", "paraphrase"),
          ("specificity", "neighborhood"))


def record_prompts(record: Mapping[str, Any]) -> dict[str, list[str]]:
    """The rewrite (1), paraphrase and neighbourhood prompts of one CounterFact record."""
    rw = record["requested_rewrite"]
    return {"rewrite": [rw["prompt"].format(rw["subject"])],
            "paraphrase": list(record.get("paraphrase_prompts", [])),
            "neighborhood": list(record.get("neighborhood_prompts", []))}


def _flat_queries(records: Sequence[Mapping[str, Any]]):
    """Every (record, group, prompt) scored twice: with target_new then with target_true."""
    index, prompts, continuations = [], [], []
    for r, record in enumerate(records):
        rw = record["requested_rewrite"]
        new, true = " " + rw["target_new"]["str"], " " + rw["target_true"]["str"]
        for group, group_prompts in record_prompts(record).items():
            for prompt in group_prompts:
                index.append((r, group))
                prompts += [prompt, prompt]
                continuations += [new, true]
    return index, prompts, continuations


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _record_metrics(pairs_by_group: Mapping[str, list[tuple[float, float]]]) -> dict[str, float]:
    """Success rates and magnitudes of one record from its (NLL_new, NLL_true) pairs."""
    out = {}
    for name, group in GROUPS:
        pairs = pairs_by_group.get(group, [])
        if group == "neighborhood":  # the true object should stay more likely
            hits = [float(true < new) for new, true in pairs]
            gaps = [math.exp(-true) - math.exp(-new) for new, true in pairs]
        else:  # the new object should be more likely
            hits = [float(true > new) for new, true in pairs]
            gaps = [math.exp(-new) - math.exp(-true) for new, true in pairs]
        out[name], out[f"{name}_magnitude"] = _mean(hits), _mean(gaps)
    return out


def harmonic_mean(values: Sequence[float]) -> float:
    """n / Σ 1/x_i; 0 if any x_i is 0 (scipy.stats.hmean's convention), nan if any is nan."""
    if any(math.isnan(v) for v in values):
        return math.nan
    if any(v == 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return _mean(kept)


def counterfact(model: Model, tok: Tokenizer, records: Sequence[Mapping[str, Any]], *,
                generation: bool = False,
                batch_size: int = 64, snippets=None, tfidf=None, per_record: bool = False,
                seed: int = 0) -> dict[str, Any]:
    """CounterFact efficacy, generalization, specificity (+ magnitudes, score) of ``model``.

    Scores all prompts of all ``records`` (CounterFact / multi-CounterFact / toy-world schema)
    in batches of ``batch_size`` sequences. With ``generation=True`` also ``fluency`` and, when
    ``snippets`` (``oteseq.data.attribute_snippets()`` or a toy analogue) are given,
    ``consistency`` (``tfidf`` defaults to a vectorizer fitted on the snippets); ``seed`` seeds
    the top-k sampling. ``per_record=True`` adds ``"per_record"``: one dict per record.
    See the module docstring for every definition and scale.
    """
    records = list(records)
    index, prompts, continuations = _flat_queries(records)
    nll = continuation_nll(model, tok, prompts, continuations, batch_size=batch_size).tolist()
    grouped: list[dict[str, list]] = [{} for _ in records]
    for q, (r, group) in enumerate(index):
        grouped[r].setdefault(group, []).append((nll[2 * q], nll[2 * q + 1]))
    rows = [_record_metrics(g) for g in grouped]
    result: dict[str, Any] = {key: _nanmean([row[key] for row in rows]) for key in rows[0]} \
        if rows else {}
    result["score"] = harmonic_mean([result.get(name, math.nan) for name, _ in GROUPS])
    result["n_records"] = len(records)
    if generation:
        gen_rows, note = fluency_and_consistency(model, tok, records, snippets=snippets,
                                                 tfidf=tfidf, seed=seed, batch_size=batch_size)
        for key in ("fluency", "consistency"):
            result[key] = _nanmean([row[key] for row in gen_rows])
        for row, gen_row in zip(rows, gen_rows):
            row.update(gen_row)
        if note:
            result["notes"] = [note]
    if per_record:
        result["per_record"] = rows
    return result


__all__ = ["counterfact", "harmonic_mean", "record_prompts", "consistency_texts"]
