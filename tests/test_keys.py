"""oteseq.keys: fact-token indices, context templates, batched template-averaged keys."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from oteseq import keys, models
from oteseq.errors import OptionError, OptionTypeError, RequestError
from oteseq.hooks import Trace
from oteseq.requests import Request
from tiny_models import ARCHS, tiny_model, tiny_tokenizer

TRICKY = [  # (prompt, subject): at the start, at the end, repeated, unseen word, punctuation
    ("{} is located in", "Paris"),
    ("The mayor of {}", "Varnholm"),
    ("Paris is in France, and {} is in Paris", "Paris"),
    ("The capital of {} is", "Varnholm Nord"),
    ("{}'s mother tongue is", "Danielle Darrieux"),
    ("I think {}, you know", "you"),
]


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "bos"])
def tok(request):
    return tiny_tokenizer(bos=request.param)


@pytest.mark.parametrize("prompt,subject", TRICKY)
def test_subject_span_decodes_to_subject(tok, prompt, subject):
    ids = tok(prompt.format(subject)).input_ids
    first = keys.subject_last_index(tok, prompt, subject, mode="subject_first")
    last = keys.subject_last_index(tok, prompt, subject)
    assert 0 <= first <= last < len(ids)
    assert tok.decode(ids[first: last + 1]).strip() == subject
    assert keys.subject_last_index(tok, prompt, subject, mode="last") == len(ids) - 1
    # the filled text gives the same answer (first occurrence of the subject)
    if prompt.find(subject) < 0 or prompt.find(subject) > prompt.index("{}"):
        assert keys.subject_last_index(tok, prompt.format(subject), subject) == last


@pytest.mark.parametrize("prompt,subject", TRICKY)
def test_length_fallback_agrees_with_offsets(tok, prompt, subject):
    text, start, end = keys._subject_span(prompt, subject)
    offsets = tok(text, return_offsets_mapping=True).offset_mapping
    by_offsets = keys._span_by_offsets(offsets, start, end)
    assert keys._span_by_lengths(tok, text, start, end) == by_offsets


def test_index_errors(tok):
    with pytest.raises(RequestError, match="does not occur"):
        keys.subject_last_index(tok, "The capital of Norway is", "Varnholm")
    with pytest.raises(RequestError, match="several"):
        keys.subject_last_index(tok, "{} and {}", "Paris")
    with pytest.raises(OptionError, match="subject_last"):
        keys.subject_last_index(tok, "{} is", "Paris", mode="middle")


def test_context_templates_deterministic():
    model, tok = tiny_model("gpt2")
    first = keys.context_templates(model, tok, n=5, length=6, seed=3)
    assert first == keys.context_templates(model, tok, n=5, length=6, seed=3)
    assert first != keys.context_templates(model, tok, n=5, length=6, seed=4)
    assert len(first) == 6 and first[0] == "{}"
    for template, word in zip(first[1:], keys.SEED_WORDS):
        assert template.startswith(word) and template.endswith(". {}")
        assert template.count("{") == template.count("}") == 1
    ids = keys._sample(model, [5, 7], 4, torch.Generator().manual_seed(0), top_k=5)
    assert len(ids) == 6 and ids[:2] == [5, 7]
    fixed = keys.context_templates(model, tok, source=["A day", "Then it rained.", "x {y}"])
    assert fixed == ["{}", "A day. {}", "Then it rained. {}", "x  y. {}"]


def test_template_groups():
    assert keys.template_groups(["{}", "A. {}", "B. {}"]) == [["{}"], ["A. {}", "B. {}"]]
    assert keys.template_groups(["{}"]) == [["{}"]]
    with pytest.raises(OptionTypeError, match="list of template strings") as err:
        keys.template_groups("{}")
    assert isinstance(err.value, TypeError)
    assert keys.template_groups([["{}"], ["A. {}"], ["B. {}", "C. {}"]])[2] == ["B. {}", "C. {}"]
    with pytest.raises(RequestError):
        keys.template_groups(["no slot"])


REQUESTS = [Request("The capital of {} is", "Varnholm", "Oslo"),
            Request("{} is located in", "Paris", "Rome"),
            Request("I think {} plays the", "Toko Yasuda", "piano")]


def _manual_io(model, tok, text_template, subject, layer):
    """Input and output of the edited module at the subject's last token, one unpadded text."""
    index = keys.subject_last_index(tok, text_template, subject)
    ids = torch.tensor([tok(text_template.format(subject)).input_ids])
    with torch.no_grad(), Trace(models.edited_module(model, layer), retain_input=True) as trace:
        model(input_ids=ids)
    return trace.input[0, index], trace.output[0, index]


@pytest.mark.parametrize("arch", ARCHS)
def test_keys_equal_manual_forward(arch):
    model, tok = tiny_model(arch)
    layers = [0, 2]
    io = keys.module_io_at_subject(model, tok, REQUESTS, layers, templates=["{}"], batch_size=2)
    K = keys.compute_keys(model, tok, REQUESTS, layers, templates=["{}"])
    for layer in layers:
        d_out, d_in = models.weight_shape(models.edited_module(model, layer))
        assert K[layer].shape == (d_in, 3) and K[layer].dtype == torch.float32
        torch.testing.assert_close(K[layer], io[layer].keys)
        for i, request in enumerate(REQUESTS):
            k, y = _manual_io(model, tok, request.prompt, request.subject, layer)
            torch.testing.assert_close(K[layer][:, i], k, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(io[layer].outputs[:, i], y, rtol=1e-5, atol=1e-6)


def test_prefix_averaging_formula():
    model, tok = tiny_model("llama")
    templates = ["{}", "A day. {}", "Then it rained hard. {}"]
    K = keys.compute_keys(model, tok, REQUESTS, [1], templates=templates)[1]
    single = [keys.compute_keys(model, tok, REQUESTS, [1], templates=[t])[1] for t in templates]
    torch.testing.assert_close(K, 0.5 * single[0] + 0.25 * (single[1] + single[2]))
    grouped = keys.compute_keys(model, tok, REQUESTS, [1], templates=[[t] for t in templates])[1]
    torch.testing.assert_close(grouped, sum(single) / 3)
    last = keys.compute_keys(model, tok, REQUESTS[:1], [1], templates=["{}"], fact_token="last")[1]
    k_last = _manual_io_last(model, tok, REQUESTS[0].text, 1)
    torch.testing.assert_close(last[:, 0], k_last, rtol=1e-5, atol=1e-6)


def _manual_io_last(model, tok, text, layer):
    with torch.no_grad(), Trace(models.edited_module(model, layer), retain_input=True) as trace:
        model(input_ids=torch.tensor([tok(text).input_ids]))
    return trace.input[0, -1]


def test_one_forward_per_chunk_stopped_after_last_layer():
    model, tok = tiny_model("gpt2")
    calls, late = [], []
    handles = [model.register_forward_pre_hook(lambda *a: calls.append(1)),
               models.block(model, 2).register_forward_pre_hook(lambda *a: late.append(1))]
    try:
        templates = keys.context_templates(model, tok, source=["A day", "B", "C", "D", "E"])
        calls.clear()
        K = keys.compute_keys(model, tok, REQUESTS, [0, 1], templates=templates, batch_size=64)
        assert len(calls) == 1 and late == []  # 3 x 6 texts in one pass; block 2 never ran
        keys.compute_keys(model, tok, REQUESTS, [0, 1], templates=templates, batch_size=5)
        assert len(calls) == 1 + 4  # ceil(18 / 5)
    finally:
        for handle in handles:
            handle.remove()
    assert K[0].shape == (128, 3)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_no_requests_gives_empty_keys():
    model, tok = tiny_model("gptj")
    io = keys.module_io_at_subject(model, tok, [], [1], templates=["{}"])
    assert io[1].keys.shape == (128, 0) and io[1].outputs.shape == (32, 0)


WORDS = ["The", "capital", "of", "Paris", "is", "in", "Varnholm", "you", "I", "think", "'s",
         "Danielle", "Darrieux", "Norwegian", ",", "city", "north"]


@given(words=st.lists(st.sampled_from(WORDS), min_size=0, max_size=6),
       subject=st.lists(st.sampled_from(WORDS[3:]), min_size=1, max_size=3),
       slot=st.integers(0, 6), bos=st.booleans())
@settings(max_examples=40, deadline=None)
def test_subject_span_property(words, subject, slot, bos):
    """Anywhere the slot is, the tokens first..last decode to the subject (modulo spaces)."""
    tok = tiny_tokenizer(bos=bos)
    words = list(words)
    words.insert(min(slot, len(words)), "{}")
    prompt, subject_text = " ".join(words), " ".join(subject)
    ids = tok(prompt.replace("{}", subject_text)).input_ids
    first = keys.subject_last_index(tok, prompt, subject_text, mode="subject_first")
    last = keys.subject_last_index(tok, prompt, subject_text)
    assert tok.decode(ids[first: last + 1]).strip() == subject_text
    assert 0 < first if bos else 0 <= first
