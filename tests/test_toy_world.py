"""The toy world and its editing data: sizes, determinism, and the real record schemas."""
from __future__ import annotations

import json
from importlib import resources

import pytest

import oteseq.toy as toy
from oteseq.requests import Request
from oteseq.toy._world import world as cached_world
from oteseq.toy.versions import default_world

FRESH_WORLD = cached_world.__wrapped__  # bypasses the cache: a really new computation


def _fixture(name: str):
    return json.loads((resources.files("oteseq.data") / "fixtures" / name).read_text())


def _assert_same_schema(record, reference, path="record", extra=()):
    """Same keys (plus documented extras) and the same JSON types, recursively."""
    if isinstance(reference, dict):
        assert isinstance(record, dict), path
        assert set(record) - set(extra) == set(reference), f"{path}: {sorted(record)}"
        for key, value in reference.items():
            _assert_same_schema(record[key], value, f"{path}.{key}")
    elif isinstance(reference, list):
        assert isinstance(record, list) and record, f"{path} should be a non-empty list"
        for item in record:
            _assert_same_schema(item, reference[0], f"{path}[]")
    else:
        assert type(record) is type(reference), f"{path}: {type(record)} vs {type(reference)}"


def test_world_has_the_promised_size():
    w = toy.world(0)
    assert len(w.subjects) >= 1000 and len(set(w.subjects)) == len(w.subjects)
    assert len(w.relations) >= 6
    for rel in w.relations.values():
        assert len(rel.objects) >= 10 and len(set(rel.object_ids)) == len(rel.objects)
        assert any(" " in o for o in rel.objects) or rel.id in ("P1412", "P106", "P1303")
        assert len(rel.templates) >= 3 and len(rel.questions) >= 2
        for template in rel.templates + rel.questions + rel.generation:
            assert template.count("{}") == 1 and template == template.strip()
        assert all(q.endswith("?") for q in rel.questions)
    assert sum(" " in o for r in w.relations.values() for o in r.objects) >= 10
    assert len(w.facts) == len(w.subjects) * len(w.relations)
    for (_subject, rid), obj in list(w.facts.items())[:500]:
        assert obj in w.relations[rid].objects


def test_world_is_deterministic_and_seeded():
    a, b, c = FRESH_WORLD(0), FRESH_WORLD(0), FRESH_WORLD(1)
    assert a == b
    assert a.subjects != c.subjects
    assert dict(a.facts) != dict(c.facts)


def test_counterfact_records_have_the_real_schema():
    reference = _fixture("counterfact_sample.json")[0]
    records = toy.counterfact(25, seed=0)
    assert [r["case_id"] for r in records] == list(range(25))
    for record in records:
        _assert_same_schema(record, reference)


def test_counterfact_records_are_consistent_with_the_world():
    w = default_world()   # the default toy model's world, what records are drawn from
    records = toy.counterfact(40, seed=3)
    assert len({(r["requested_rewrite"]["subject"], r["requested_rewrite"]["relation_id"])
                for r in records}) == 40
    for record in records:
        rw = record["requested_rewrite"]
        subject, rel = rw["subject"], w.relations[rw["relation_id"]]
        assert rw["target_true"]["str"] == w.facts[(subject, rel.id)]
        assert rw["target_new"]["str"] in rel.objects
        assert rw["target_new"]["str"] != rw["target_true"]["str"]
        assert rw["target_new"]["id"] == rel.object_id(rw["target_new"]["str"])
        for prompt in record["paraphrase_prompts"] + record["generation_prompts"]:
            assert subject in prompt
        for key, obj in (("neighborhood_prompts", rw["target_true"]["str"]),
                         ("attribute_prompts", rw["target_new"]["str"])):
            holders = set(w.subjects_with(rel.id, obj)) - {subject}
            for prompt in record[key]:
                assert any(s in prompt for s in holders), (key, prompt)
        req = Request.from_counterfact(record)
        assert req.text == rw["prompt"].format(subject)
        assert (req.target, req.target_true, req.id) == (
            rw["target_new"]["str"], rw["target_true"]["str"], (subject, rel.id))


def test_zsre_records_have_the_real_schema_and_load_as_requests():
    reference = _fixture("zsre_sample.json")[0]
    w = default_world()
    for record in toy.zsre(30, seed=0):
        _assert_same_schema(record, reference, extra=("relation",))
        assert record["subject"] in record["src"] and record["subject"] in record["rephrase"]
        assert record["pred"] == w.facts[(record["subject"], record["relation"])]
        assert record["answers"] == [record["alt"]] and record["alt"] != record["pred"]
        assert record["loc"].startswith("nq question: ")
        req = Request.from_zsre(record)
        assert req.target == record["answers"][0]
        assert req.id == (record["subject"], record["relation"])


@pytest.mark.parametrize("make", [toy.counterfact, toy.zsre, toy.conflicts])
def test_records_are_deterministic_per_seed(make):
    assert make(20, seed=5) == make(20, seed=5)
    assert make(20, seed=5) != make(20, seed=6)


def test_asking_for_more_records_than_facts_is_an_error():
    with pytest.raises(ValueError, match="at most"):
        toy.counterfact(10**6)


def test_conflicts_re_edit_earlier_facts_with_new_targets():
    reference = _fixture("counterfact_sample.json")[0]
    records = toy.conflicts(200, seed=0)
    by_case = {r["case_id"]: r for r in records}
    conflicting = [r for r in records if "conflicts_with" in r]
    assert 20 <= len(conflicting) <= 80
    def key(record):
        rewrite = record["requested_rewrite"]
        return rewrite["subject"], rewrite["relation_id"]

    for record in records:
        _assert_same_schema(record, reference, extra=("conflicts_with",))
    for record in conflicting:
        earlier = by_case[record["conflicts_with"]]
        assert earlier["case_id"] < record["case_id"] and key(earlier) == key(record)
        assert (record["requested_rewrite"]["target_new"]
                != earlier["requested_rewrite"]["target_new"])
        between = [r for r in records if earlier["case_id"] < r["case_id"] < record["case_id"]]
        assert key(record) not in {key(r) for r in between}, "conflicts_with must be the latest"
    fresh = [key(r) for r in records if "conflicts_with" not in r]
    assert len(fresh) == len(set(fresh))


def test_general_text_and_prefixes():
    train, heldout = toy.general_text(50, 0, "train"), toy.general_text(50, 0, "heldout")
    assert train == toy.general_text(50, 0, "train") and train != heldout
    assert all(t.endswith(".") and len(t.split()) > 10 for t in train)
    w = toy.world(0)
    assert not any(s in " ".join(train) for s in w.subjects[:200])
    prefixes = toy.context_prefixes()
    assert len(prefixes) >= 5 and all(p and not p.endswith(".") for p in prefixes)
    with pytest.raises(ValueError):
        toy.general_text(3, 0, "test")


def test_preservation_text_mixes_facts_and_general_text():
    import oteseq

    texts = oteseq.toy.preservation_text(40, seed=3)
    assert len(texts) == 40 and texts == oteseq.toy.preservation_text(40, seed=3)
    w = default_world()
    objects = {o for rel in w.relations.values() for o in rel.objects}
    with_fact = [t for t in texts if any(t.endswith(f" {o}.") for o in objects)
                 and any(s in t for s in w.subjects)]
    assert 15 <= len(with_fact) <= 25  # half of the texts state a fact
