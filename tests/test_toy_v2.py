"""The second toy model (``toy-v2``): room for the paper's 2,000 edits, real-schema context,
its version registry, one-fact-per-person records and untouched-person general ability."""
from __future__ import annotations

import json

import pytest
import torch

import oteseq
import oteseq.toy as toy
from oteseq.errors import OptionError
from oteseq.loading import toy_model_dir, toy_name
from oteseq.toy.ability import fact_sample
from oteseq.toy.report import BARS, recall_by_kind
from oteseq.toy.versions import VERSIONS, find, toy_model, world_of

MARGIN = 0.05


@pytest.fixture(scope="module")
def v2():
    import transformers

    transformers.logging.set_verbosity_error()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        model, tok = oteseq.load_model("toy-v2")
    yield model, tok
    torch.set_num_threads(threads)


def test_version_names_resolve_to_their_folders():
    assert toy_model("toy") is VERSIONS["toy-v2"]       # "toy" is the default version, v2
    assert toy_model_dir("toy") == toy_model_dir("toy-v2") != toy_model_dir("toy-v1")
    assert toy_name("toy") == "toy-v2" and toy_name("toy-v1") == "toy-v1"
    assert toy_name("gpt2-xl") is None and find("some/local/folder") is None
    with pytest.raises(OptionError, match="toy-v2"):
        toy_model("toy-v9")


def test_v2_world_has_room_for_2000_edits_of_distinct_people():
    w = toy_model("toy-v2").world()
    assert len(w.subjects) >= 5000 and len(w.facts) == 6 * len(w.subjects)
    records = toy.counterfact(2000, 0, world=w, distinct_subjects=True)
    people = [r["requested_rewrite"]["subject"] for r in records]
    assert len(set(people)) == 2000
    relations = {r["requested_rewrite"]["relation_id"] for r in records}
    assert relations == set(w.relations)
    untouched = set(w.subjects) - set(people)
    assert len(untouched) >= 3000


def test_distinct_people_are_refused_beyond_the_world():
    v1 = toy_model("toy-v1").world()
    with pytest.raises(OptionError, match="people"):
        toy.counterfact(1001, 0, world=v1, distinct_subjects=True)
    with pytest.raises(OptionError, match="people"):
        toy.zsre(5001, 0, distinct_subjects=True)


def test_distinct_people_records_are_deterministic_and_leave_old_records_alone():
    assert toy.zsre(30, 4, distinct_subjects=True) == toy.zsre(30, 4, distinct_subjects=True)
    # the default follows the default model: one fact per person on toy-v2
    assert toy.counterfact(30, 4) == toy.counterfact(30, 4, distinct_subjects=True)
    assert toy.counterfact(30, 4) != toy.counterfact(30, 4, distinct_subjects=False)
    fresh = [r for r in toy.conflicts(80, 2, distinct_subjects=True) if "conflicts_with" not in r]
    people = [r["requested_rewrite"]["subject"] for r in fresh]
    assert len(people) == len(set(people))


def test_untouched_by_person_drops_every_fact_of_an_edited_person():
    w = toy.world(0)
    edited = [(w.subjects[i], "P19") for i in range(40)]
    by_pair = fact_sample(w, 3000, exclude=edited)
    by_person = fact_sample(w, 3000, exclude=edited, untouched="subject")
    people = {s for s, _ in edited}
    assert any(s in people for s, _ in by_pair)
    assert not any(s in people for s, _ in by_person)
    assert not set(edited) & set(by_pair)
    with pytest.raises(OptionError):
        fact_sample(w, 10, untouched="relation")


def test_v2_files_are_small_and_half_precision(v2):
    from safetensors import safe_open

    folder = toy_model_dir("toy-v2")
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size <= 25 * 2**20
    with safe_open(folder / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    model, _ = v2
    assert toy_name(model) == "toy-v2" and world_of(model) == toy_model("toy-v2").world()


def test_v2_has_the_context_and_width_the_paper_regime_needs(v2):
    model, tok = v2
    cfg = model.config
    assert cfg.n_positions >= 512 and cfg.n_inner >= 2048
    layers = oteseq.methods.default_hparams(model, "memit-seq").layers
    assert len(layers) * cfg.n_inner >= 2 * 2000  # key dimensions: twice the paper's edits
    assert tok.pad_token_id == tok.eos_token_id and tok.padding_side == "right"


def test_v2_recall_on_a_sample_meets_the_bars(v2):
    model, tok = v2
    recall = recall_by_kind(model, tok, toy_model("toy-v2").world(), n_facts=60)
    for kind, bar in BARS.items():
        assert recall[kind] >= bar - MARGIN, (kind, recall)
    report = json.loads((toy_model_dir("toy-v2") / "quality_report.json").read_text())
    assert report["n_facts"] >= 6000 and all(report["passes"].values())


def test_real_schema_zsre_records_longer_than_128_tokens_evaluate_on_v2(v2):
    from importlib import resources

    model, tok = v2
    record = json.loads((resources.files("oteseq.data") / "fixtures" /
                         "zsre_sample.json").read_text())[0]
    long_prefix = " ".join(["The old road was quiet in the morning."] * 20)
    record = dict(record, loc=long_prefix + " " + record["loc"])
    assert len(tok(record["loc"])["input_ids"]) > 128
    scores = oteseq.evaluate.zsre(model, tok, [record])
    assert 0.0 <= scores["specificity"] <= 1.0
