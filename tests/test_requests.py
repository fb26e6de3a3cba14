"""Request normalisation, validation and conversion from the dataset schemas."""
import pytest

from oteseq import Request
from oteseq.errors import RequestError


def test_normalises_whitespace_and_default_id():
    req = Request("  The capital of {} is ", " Varnholm ", " Oslo", relation="P36")
    assert (req.prompt, req.subject, req.target) == ("The capital of {} is", "Varnholm", "Oslo")
    assert req.id == ("Varnholm", "P36")
    assert req.text == "The capital of Varnholm is"


def test_default_id_without_relation_uses_the_prompt():
    req = Request("{} plays the", "Ana Vel", "harp")
    assert req.id == ("Ana Vel", "{} plays the")


def test_explicit_id_is_kept_and_requests_are_frozen():
    req = Request("{} plays the", "Ana Vel", "harp", id="case-7")
    assert req.id == "case-7"
    with pytest.raises(AttributeError):
        req.target = "lute"


@pytest.mark.parametrize("prompt", ["no slot here", "{} and {}", ""])
def test_prompt_needs_exactly_one_slot(prompt):
    with pytest.raises(RequestError, match="exactly one"):
        Request(prompt, "Ana Vel", "harp")


@pytest.mark.parametrize("field", ["subject", "target"])
def test_empty_subject_or_target(field):
    kwargs = {"prompt": "{} plays the", "subject": "Ana Vel", "target": "harp", field: "  "}
    with pytest.raises(RequestError, match=f"empty {field}"):
        Request(**kwargs)


def test_from_counterfact_record():
    record = {"case_id": 3, "requested_rewrite": {
        "prompt": "The headquarters of {} is in", "relation_id": "P159", "subject": "Norvanta Rail",
        "target_new": {"str": "Lisbon", "id": "Q597"},
        "target_true": {"str": "Oslo", "id": "Q585"}}}
    req = Request.from_counterfact(record)
    assert req == Request("The headquarters of {} is in", "Norvanta Rail", "Lisbon",
                          relation="P159", target_true="Oslo")
    assert req.id == ("Norvanta Rail", "P159")


def test_from_zsre_record():
    record = {"subject": "Harbor Light Quartet",
              "src": "What label is Harbor Light Quartet signed to?",
              "answers": ["Verve"], "alt": "Blue Note", "rephrase": "x", "loc": "y", "loc_ans": "z"}
    req = Request.from_zsre(record)
    assert req.prompt == "What label is {} signed to?" and req.target == "Verve"
    with pytest.raises(RequestError, match="does not occur"):
        Request.from_zsre({**record, "subject": "Nobody"})


def test_submodules_are_reachable_as_attributes():
    import oteseq

    assert oteseq.methods.default_hparams is not None and oteseq.stats.second_moments is not None
    with pytest.raises(AttributeError, match="no attribute"):
        _ = oteseq.not_a_module
