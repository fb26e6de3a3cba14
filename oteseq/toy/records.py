"""Toy-world editing data in the CounterFact, zsRE (MEND eval) and conflicting-edit forms.

Records are plain JSON-able dicts in the exact schemas of ``multi_counterfact.json`` and
``zsre_mend_eval.json`` (see ``oteseq/data/fixtures``), so ``Request.from_counterfact`` /
``Request.from_zsre`` and the evaluation code read them like the real files.
"""
from __future__ import annotations

import random
from typing import Any

from ..errors import OptionError
from .corpus import general_text, nq_question
from ._world import World
from .versions import default_world, toy_model

N_NEIGHBOURS = 10


def _resolved(world: World | None, distinct_subjects: bool | None) -> tuple[World, bool]:
    """The world and the one-fact-per-person choice, the default toy model's where not given."""
    w = world if world is not None else default_world()
    return w, toy_model().distinct_subjects if distinct_subjects is None else distinct_subjects


def _pairs(w: World, n: int, rng: random.Random,
           distinct_subjects: bool = False) -> list[tuple[str, str]]:
    """``n`` distinct (subject, relation_id) pairs drawn without replacement.

    ``distinct_subjects``: ``n`` different people, one relation each drawn at random (as in
    CounterFact, where records rarely share a subject: two edits of one person's facts share
    its key, and least squares can only average their values).
    """
    if distinct_subjects:
        if not 0 <= n <= len(w.subjects):
            raise OptionError(f"n={n}: the toy world has {len(w.subjects)} people, so at most "
                              "that many edits with distinct subjects; pass "
                              "distinct_subjects=False or a bigger world")
        relations = sorted(w.relations)
        return [(s, rng.choice(relations)) for s in rng.sample(w.subjects, n)]
    keys = sorted(w.facts)
    if not 0 <= n <= len(keys):
        raise OptionError(f"n={n}: the toy world has {len(keys)} facts; ask for at most that "
                          "many or build a bigger world with "
                          "oteseq.toy.world(seed, n_subjects=...)")
    return rng.sample(keys, n)


def _new_object(w: World, rid: str, avoid: set[str], rng: random.Random) -> str:
    """Another valid object of relation ``rid``, none of ``avoid``."""
    return rng.choice([o for o in w.relations[rid].objects if o not in avoid])


def _others(w: World, rid: str, obj: str, subject: str, rng: random.Random) -> list[str]:
    """Up to N_NEIGHBOURS other subjects whose true ``rid`` object is ``obj``."""
    others = [s for s in w.subjects_with(rid, obj) if s != subject]
    return rng.sample(others, min(N_NEIGHBOURS, len(others)))


def counterfact_record(w: World, case_id: int, subject: str, rid: str, new: str,
                       rng: random.Random, fillers: list[str]) -> dict[str, Any]:
    """One CounterFact record rewriting ``(subject, rid)`` from its true object to ``new``.

    Paraphrase prompts are a paraphrase template after an unrelated general sentence (as in
    CounterFact); neighbourhood prompts ask the same relation of subjects sharing the true
    object; attribute prompts of subjects whose true object is ``new``.
    """
    rel, true = w.relations[rid], w.facts[(subject, rid)]
    templates = rel.templates
    return {
        "case_id": case_id,
        "pararel_idx": case_id,
        "requested_rewrite": {
            "prompt": rel.canonical, "relation_id": rid, "subject": subject,
            "target_new": {"str": new, "id": rel.object_id(new)},
            "target_true": {"str": true, "id": rel.object_id(true)}},
        "paraphrase_prompts": [f"{rng.choice(fillers)} {p.format(subject)}"
                               for p in rel.paraphrases],
        "neighborhood_prompts": [rng.choice(templates).format(s)
                                 for s in _others(w, rid, true, subject, rng)],
        "attribute_prompts": [rng.choice(templates).format(s)
                              for s in _others(w, rid, new, subject, rng)],
        "generation_prompts": [g.format(subject) for g in rel.generation]
                              + [rel.paraphrases[0].format(subject)],
    }


def _fillers(seed: int) -> list[str]:
    return [t.split(". ")[0].rstrip(".") + "." for t in general_text(200, seed, "heldout")]


def counterfact(n: int, seed: int = 0, *, world: World | None = None,
                distinct_subjects: bool | None = None) -> list[dict[str, Any]]:
    """``n`` toy-world records in the (multi-)CounterFact schema, distinct (subject, relation)
    (``distinct_subjects``: distinct people).

    ``target_new`` is another object of the same relation, drawn at random; ``seed`` fixes the
    choice of facts, targets and prompts. ``world`` and ``distinct_subjects`` default to those
    of the default toy model (``load_model("toy")``, :mod:`oteseq.toy.versions`); pass
    ``world=toy_model("toy-v1").world()`` for records the older model knows.
    """
    w, distinct_subjects = _resolved(world, distinct_subjects)
    rng = random.Random(f"oteseq-toy-counterfact-{seed}")
    fillers = _fillers(seed)
    return [counterfact_record(w, i, s, rid, _new_object(w, rid, {w.facts[(s, rid)]}, rng), rng,
                               fillers)
            for i, (s, rid) in enumerate(_pairs(w, n, rng, distinct_subjects))]


def zsre(n: int, seed: int = 0, *, world: World | None = None,
         distinct_subjects: bool | None = None) -> list[dict[str, Any]]:
    """``n`` toy-world records in the zsRE (MEND eval) schema (``distinct_subjects``: one
    record per person).

    ``src`` / ``rephrase`` are two question forms of the fact; the edit target ``answers[0]``
    (= ``alt``) is a new object, ``pred`` the true one (what the unedited model answers);
    ``loc`` / ``loc_ans`` an ``nq question:`` about another subject's fact and its true answer.
    An extra key ``relation`` (the relation id) makes ``Request.from_zsre`` give the request the
    id (subject, relation_id), as for CounterFact records.
    """
    w, distinct_subjects = _resolved(world, distinct_subjects)
    rng = random.Random(f"oteseq-toy-zsre-{seed}")
    keys = sorted(w.facts)
    records = []
    for subject, rid in _pairs(w, n, rng, distinct_subjects):
        rel, true = w.relations[rid], w.facts[(subject, rid)]
        new = _new_object(w, rid, {true}, rng)
        src, rephrase = (q.format(subject) for q in rng.sample(rel.questions, 2))
        loc_subject, loc_rid = rng.choice([k for k in rng.sample(keys, 8) if k[0] != subject])
        loc_question = rng.choice(w.relations[loc_rid].questions).format(loc_subject)
        records.append({"subject": subject, "src": src, "pred": true, "rephrase": rephrase,
                        "alt": new, "answers": [new], "loc": nq_question(loc_question),
                        "loc_ans": w.facts[(loc_subject, loc_rid)],
                        "cond": f"{true} >> {new} || {src}", "relation": rid})
    return records


def conflicts(n: int, seed: int = 0, *, rate: float = 0.25, world: World | None = None,
              distinct_subjects: bool | None = None) -> list[dict[str, Any]]:
    """``n`` CounterFact-schema records in edit order, about a ``rate`` share of them conflicts.

    A conflicting record edits a (subject, relation_id) that an earlier record already edited,
    with a different ``target_new`` (neither the earlier target nor the true object). It carries
    one extra key, ``"conflicts_with"``: the ``case_id`` of the latest earlier record for the
    same (subject, relation_id), whose edit it should replace (latest wins). ``target_true``
    stays the world's true object. Ordinary records have no extra key. ``distinct_subjects``:
    the ordinary records are about different people (defaults as in :func:`counterfact`).
    """
    w, distinct_subjects = _resolved(world, distinct_subjects)
    rng = random.Random(f"oteseq-toy-conflicts-{seed}")
    fresh = iter(_pairs(w, n, rng, distinct_subjects))
    fillers = _fillers(seed)
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    records: list[dict[str, Any]] = []
    for case_id in range(n):
        if latest and case_id > 1 and rng.random() < rate:
            key = rng.choice(sorted(latest))
            earlier = latest[key]
            avoid = {w.facts[key], earlier["requested_rewrite"]["target_new"]["str"]}
            record = counterfact_record(w, case_id, *key, _new_object(w, key[1], avoid, rng),
                                        rng, fillers)
            record["conflicts_with"] = earlier["case_id"]
        else:
            key = next(fresh)
            record = counterfact_record(w, case_id, *key,
                                        _new_object(w, key[1], {w.facts[key]}, rng), rng, fillers)
        latest[key] = record
        records.append(record)
    return records


__all__ = ["conflicts", "counterfact", "counterfact_record", "zsre"]
