"""zsRE metrics as the ROME/MEMIT/AlphaEdit code computes them (editing-anchors §6.2).

All three are **token-level teacher-forced top-1 accuracy**: for the target tokens t₀ … t_{T−1}
of ``" " + answer``, token i counts as correct when the argmax after prompt + t_{<i} is t_i; a
record's value is the mean over its tokens, the reported value the mean over records.

================== ============================================= ======================
returned key       prompt → answer                               reference key
================== ============================================= ======================
``efficacy``       ``src`` → ``answers[0]`` (not ``alt``)        post_rewrite_acc
``generalization`` ``rephrase`` → ``answers[0]``                  post_paraphrase_acc
``specificity``    ``loc + "?"`` → ``loc_ans`` (gold answer,     post_neighborhood_acc
                   not the pre-edit prediction)
``score``          harmonic mean of the three
================== ============================================= ======================

``loc`` keeps its ``"nq question: "`` prefix, as the reference builds the neighbourhood prompt.
Values are in [0, 1]; the papers print them ×100. The reference encodes ``prompt +
decode(t_{<i})`` once per token and compares with the first token of ``encode(decode(t_i))``;
here one sequence per prompt carries the target ids themselves, which is the same whenever
decoding and re-encoding a token round-trips (always for GPT-2 text) and T times cheaper.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from ._counterfact import harmonic_mean
from ..scoring import score_continuations
from .._types import Model, Tokenizer

GROUPS = ("efficacy", "generalization", "specificity")


def record_queries(record: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(group, prompt, continuation with leading space) triples of one zsRE record."""
    answer = " " + record["answers"][0]
    return [("efficacy", record["src"], answer),
            ("generalization", record["rephrase"], answer),
            ("specificity", record["loc"] + "?", " " + record["loc_ans"])]


def zsre(model: Model, tok: Tokenizer, records: Sequence[Mapping[str, Any]], *,
         batch_size: int = 64,
         per_record: bool = False) -> dict[str, Any]:
    """zsRE efficacy, generalization, specificity (token accuracies) and their harmonic mean.

    ``records`` are raw MEND-eval records (``src``, ``answers``, ``rephrase``, ``loc``,
    ``loc_ans``) or toy-world records in the same schema. All prompts of all records are
    scored in batches of ``batch_size``. ``per_record=True`` adds one dict per record.
    """
    records = list(records)
    queries = [(r, group, prompt, cont) for r, record in enumerate(records)
               for group, prompt, cont in record_queries(record)]
    scores = score_continuations(model, tok, [q[2] for q in queries], [q[3] for q in queries],
                                 batch_size=batch_size)
    rows: list[dict[str, list[float]]] = [{g: [] for g in GROUPS} for _ in records]
    for (r, group, _, _), s in zip(queries, scores):
        rows[r][group] += s.correct.double().tolist()
    per = [{g: sum(v) / len(v) if v else math.nan for g, v in row.items()} for row in rows]
    result: dict[str, Any] = {}
    for group in GROUPS:
        kept = [row[group] for row in per if not math.isnan(row[group])]
        result[group] = sum(kept) / len(kept) if kept else math.nan
    result["score"] = harmonic_mean([result[g] for g in GROUPS])
    result["n_records"] = len(records)
    if per_record:
        result["per_record"] = per
    return result


__all__ = ["record_queries", "zsre"]
