"""oteseq.evaluate on hand-built cases whose metric values are computed by hand.

The fake model is a bigram table: the next-token distribution depends only on the current
token, and its logits are log-probabilities, so every NLL is −log of a number written below.
The fake tokenizer splits on white space, so prompts and targets map to known tokens.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import transformers
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import f1_score, matthews_corrcoef
from transformers.modeling_outputs import CausalLMOutputWithPast

import oteseq.evaluate as ev
from oteseq.evaluate.generation import (fit_tfidf, ngram_entropy, tfidf_similarity,
                                        tfidf_vectorizer, word_tokens)
from oteseq.evaluate.glue import SPECS
from tiny_models import tiny_model


class WordTok:
    """White-space tokenizer over a fixed word list; id 0 is the end-of-text / pad token."""

    def __init__(self, words):
        self.vocab = {"<eos>": 0}
        for w in words:
            self.vocab.setdefault(w, len(self.vocab))
        self.words = {i: w for w, i in self.vocab.items()}
        self.pad_token_id = self.eos_token_id = 0

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [self.vocab[w] for w in text.split()]}

    def decode(self, ids, skip_special_tokens=False):
        return " ".join(self.words[i] for i in ids if not (skip_special_tokens and i == 0))


class Out(dict):
    __getattr__ = dict.__getitem__


class BigramConfig(transformers.PretrainedConfig):
    model_type = "oteseq-test-bigram"


class BigramLM(transformers.PreTrainedModel, transformers.GenerationMixin):
    """logits[t] = log p(· | token t); unlisted next words share the remaining probability.

    A transformers model (no cache: the next token depends on the current one only), so
    ``model.generate`` runs on it as on any causal LM."""

    config_class = BigramConfig

    def __init__(self, tok, table, floor=None):
        super().__init__(BigramConfig(vocab_size=len(tok.vocab), num_hidden_layers=1))
        n = len(tok.vocab)
        probs = torch.zeros(n, n, dtype=torch.float64)
        for prev, nxt in table.items():
            rest = 1.0 - sum(nxt.values())
            row = torch.full((n,), rest / (n - len(nxt)), dtype=torch.float64)
            for word, p in nxt.items():
                row[tok.vocab[word]] = p
            probs[tok.vocab[prev]] = row
        unlisted = probs.sum(1) == 0
        probs[unlisted] = 1.0 / n
        logits = probs.log() if floor is None else torch.where(probs > 0.5, 0.0, floor)
        self.table = torch.nn.Embedding.from_pretrained(logits.float())  # row t: logits after t

    def get_input_embeddings(self):
        return self.table

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None,
                use_cache=False, **kwargs):
        return CausalLMOutputWithPast(logits=self.table(input_ids))


# ---------------------------------------------------------------- CounterFact

CF_WORDS = ("The capital of X Y Z W is lies sits in at Paris Rome New York " +
            "sun rain").split()
CF_TABLE = {"is": {"Rome": 0.6, "Paris": 0.3, "New": 0.05},
            "in": {"Rome": 0.1, "Paris": 0.4}, "at": {"Rome": 0.5, "Paris": 0.25},
            "New": {"York": 0.9}}


def cf_record(case_id, subject, new, true, paraphrases, neighbours, generation=()):
    return {"case_id": case_id,
            "requested_rewrite": {"prompt": "The capital of {} is", "relation_id": "P36",
                                  "subject": subject, "target_new": {"str": new, "id": "Q1"},
                                  "target_true": {"str": true, "id": "Q2"}},
            "paraphrase_prompts": list(paraphrases), "neighborhood_prompts": list(neighbours),
            "generation_prompts": list(generation)}


CF_RECORDS = [cf_record(0, "X", "Rome", "Paris", ["X lies in", "X sits at"],
                        ["Y lies in", "Z sits at"]),
              cf_record(1, "W", "New York", "Rome", ["W lies in"], ["Z sits at"])]


@pytest.fixture(scope="module")
def cf_model():
    tok = WordTok(CF_WORDS)
    return BigramLM(tok, CF_TABLE), tok


def test_counterfact_hand_computed(cf_model):
    model, tok = cf_model
    got = ev.counterfact(model, tok, CF_RECORDS, batch_size=3, per_record=True)
    ny = math.sqrt(0.05 * 0.9)  # exp(−mean NLL) of " New York" after "is": geometric mean
    rec0 = {"efficacy": 1.0, "efficacy_magnitude": 0.6 - 0.3,
            "generalization": 0.5, "generalization_magnitude": ((0.1 - 0.4) + (0.5 - 0.25)) / 2,
            "specificity": 0.5, "specificity_magnitude": ((0.4 - 0.1) + (0.25 - 0.5)) / 2}
    # record 1: new = "New York", true = "Rome". "New" is unlisted after "at" and "in", so it
    # gets the uniform remainder of those rows: p(New | at) = .25/(n−2), p(New | in) = .5/(n−2).
    n = len(tok.vocab)
    p_new_at, p_new_in = 0.25 / (n - 2), 0.5 / (n - 2)
    rec1 = {"efficacy": 0.0, "efficacy_magnitude": ny - 0.6,
            "generalization": 1.0,  # √(.5/(n−2)·.9) ≈ .15 > p(Rome | in) = .1
            "generalization_magnitude": math.sqrt(p_new_in * 0.9) - 0.1,
            "specificity": 1.0,     # p(Rome | at) = .5 > √(.25/(n−2)·.9) ≈ .11
            "specificity_magnitude": 0.5 - math.sqrt(p_new_at * 0.9)}
    for want, have in zip([rec0, rec1], got["per_record"]):
        for key, value in want.items():
            assert have[key] == pytest.approx(value, abs=1e-6), key
    for key in rec0:
        assert got[key] == pytest.approx((rec0[key] + rec1[key]) / 2, abs=1e-6), key
    rates = [0.5, 0.75, 0.75]
    assert got["score"] == pytest.approx(3 / sum(1 / r for r in rates))
    assert got["n_records"] == 2


def test_counterfact_score_is_zero_when_a_rate_is_zero(cf_model):
    model, tok = cf_model
    got = ev.counterfact(model, tok, CF_RECORDS[1:])
    assert (got["efficacy"], got["generalization"]) == (0.0, 1.0) and got["score"] == 0.0


# ---------------------------------------------------------------- generation metrics

def test_ngram_entropy_by_hand():
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))  # bigrams ab, ba, ab
    h3 = 1.0                                                     # trigrams aba, bab
    assert ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * h3) / 2)
    assert ngram_entropy("one") == 0.0
    assert word_tokens("Hello, world. It isn't fine.") == [
        "Hello", ",", "world", ".", "It", "is", "n't", "fine", "."]


def test_tfidf_similarity_by_hand():
    vec = tfidf_vectorizer(np.array([1.0, 2.0, 3.0]), {"paris": 0, "rome": 1, "city": 2})
    # a = (1, 0, 3), b = (0, 2·2, 2·3) → cos = 18 / (√10 · √52)
    assert tfidf_similarity("Paris city", "Rome Rome city city", vec) == pytest.approx(
        18 / math.sqrt(10) / math.sqrt(52))
    assert math.isnan(tfidf_similarity("nothing known", "Paris", vec))
    texts = ["paris is a city", "rome is a city too", "a tower in paris"]
    fitted = TfidfVectorizer().fit(texts)
    rebuilt = tfidf_vectorizer(fitted.idf_, fitted.vocabulary_)
    assert np.allclose(rebuilt.transform(texts).toarray(), fitted.transform(texts).toarray())


def test_counterfact_generation_fluency_and_consistency():
    tok = WordTok(CF_WORDS)
    table = {"is": {"sun": 1.0}, "sun": {"rain": 1.0}, "rain": {"sun": 1.0}}
    model = BigramLM(tok, table, floor=-1e9)  # one token has all the mass: sampling is fixed
    record = cf_record(0, "X", "Rome", "Paris", [], [], generation=["The capital of X is"])
    record["requested_rewrite"]["target_new"]["id"] = "Q597"
    record["requested_rewrite"]["relation_id"] = "P159"
    snippets = {"P159": {"Q597": [{"name": "X", "text": "own text excluded"},
                                  {"name": "Y", "text": "sun and rain city"}]}}
    got = ev.counterfact(model, tok, [record], generation=True, snippets=snippets)
    text = "The capital of X is " + " ".join((["sun", "rain"] * 48)[:95])  # 5 + 95 = 100 tokens
    assert got["fluency"] == pytest.approx(100 * ngram_entropy(text))
    vec = fit_tfidf(["own text excluded", "sun and rain city"])
    encoded = vec.transform([text, "sun and rain city"]).toarray()
    cosine = encoded[0] @ encoded[1] / np.linalg.norm(encoded, axis=1).prod()
    assert 0 < got["consistency"] == pytest.approx(cosine)
    without = ev.counterfact(model, tok, [record], generation=True)
    assert math.isnan(without["consistency"]) and "consistency skipped" in without["notes"][0]


# ---------------------------------------------------------------- zsRE

def test_zsre_token_accuracy_by_hand():
    words = "Who made Acme ? was by Big Corp Inc Small nq question: who wrote it? Ann"
    tok = WordTok(words.split())
    table = {"Acme": {"Big": 0.7}, "Big": {"Inc": 0.6, "Corp": 0.3}, "by": {"Small": 0.8},
             "it?": {"Ann": 0.9}}
    model = BigramLM(tok, table)
    record = {"subject": "Acme", "src": "Who made Acme", "rephrase": "Acme was made by",
              "answers": ["Big Corp"], "alt": "Small", "loc": "nq question: who wrote it",
              "loc_ans": "Ann"}
    got = ev.zsre(model, tok, [record, record], batch_size=2, per_record=True)
    # efficacy: Big ✓ (after Acme), Corp ✗ (after Big the argmax is Inc) → 1/2
    # generalization: Big ✗ (after by: Small), Corp ✗ → 0;  specificity: Ann ✓ after "it?"
    assert (got["efficacy"], got["generalization"], got["specificity"]) == (0.5, 0.0, 1.0)
    assert got["score"] == 0.0 and len(got["per_record"]) == 2


# ---------------------------------------------------------------- batched == one at a time

@pytest.mark.parametrize("arch", ["gpt2", "llama"])  # llama: a tokenizer that adds BOS
def test_batched_equals_one_prompt_at_a_time(arch):
    from oteseq.toy import counterfact as toy_cf, zsre as toy_zsre
    model, tok = tiny_model(arch, seed=1)
    records = toy_cf(5, seed=3)
    batched = ev.counterfact(model, tok, records, batch_size=7, per_record=True)
    for record, row in zip(records, batched["per_record"]):
        single = ev.counterfact(model, tok, [record], batch_size=1)
        for key, value in row.items():
            assert single[key] == pytest.approx(value, abs=1e-5), key
    z_records = toy_zsre(4, seed=2)
    z_batched = ev.zsre(model, tok, z_records, batch_size=5, per_record=True)
    for record, row in zip(z_records, z_batched["per_record"]):
        assert ev.zsre(model, tok, [record], batch_size=1)["efficacy"] == row["efficacy"]


def test_greedy_generation_matches_transformers_generate():
    from oteseq.evaluate.generation import generate
    model, tok = tiny_model("gpt2", seed=2)
    prompts = ["The capital of France is", "I think you", "Apple"]
    new = generate(model, tok, prompts, max_new_tokens=5, top_k=None, batch_size=3)
    for prompt, ids in zip(prompts, new):
        enc = tok(prompt, return_tensors="pt")
        ref = model.generate(**enc, max_new_tokens=5, do_sample=False, eos_token_id=None,
                             pad_token_id=tok.eos_token_id)
        assert ref[0, enc["input_ids"].shape[1]:].tolist() == ids


def test_sampling_is_seeded_top_k_one_is_greedy_and_the_global_rng_is_untouched():
    from oteseq.evaluate.generation import generate
    model, tok = tiny_model("gpt2", seed=2)
    prompts = ["The capital of France is", "I think you", "Apple"]
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first = generate(model, tok, prompts, max_new_tokens=8, top_k=5, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert generate(model, tok, prompts, max_new_tokens=8, top_k=5, seed=0) == first
    assert generate(model, tok, prompts, max_new_tokens=8, top_k=5, seed=1) != first
    greedy = generate(model, tok, prompts, max_new_tokens=8, top_k=None)
    assert generate(model, tok, prompts, max_new_tokens=8, top_k=1, seed=3) == greedy
    sizes = [len(tok(p)["input_ids"]) for p in prompts]
    longest = max(sizes) + 2  # max_length counts the prompt
    new = generate(model, tok, prompts, max_length=longest, top_k=None)
    assert [s + len(n) for s, n in zip(sizes, new)] == [longest] * 3
    assert [n[:2] for n in new] == [g[:2] for g in greedy]


# ---------------------------------------------------------------- GLUE-style suite

GLUE_WORDS = ("p q h answer: Answer: Sentiment : Review True False positive negative Yes No "
              "maybe question: or False? A B C D :p :q :h").split()


def glue_model(next_word, after):
    tok = WordTok(GLUE_WORDS)
    table = {after: {next_word: 0.9}, next_word: {"<eos>": 0.99}}
    return BigramLM(tok, table), tok


def test_rte_true_means_entailment_label_zero():
    model, tok = glue_model("True", "answer:")  # always answers "True"
    items = [{"sentence1": "p", "sentence2": "h", "label": 0},   # entailment
             {"sentence1": "p", "sentence2": "q", "label": 1}]   # not_entailment
    got = ev.general_ability(model, tok, ["rte"], data={"rte": items})["rte"]
    for mode in ("generation", "likelihood"):
        assert got[mode]["correct"] == 1 and got[mode]["incorrect"] == 1, mode
    only_entailment = ev.general_ability(model, tok, ["rte"], data={"rte": items[:1]})
    assert only_entailment["rte"]["generation"]["accuracy"] == 1.0  # inverted code gives 0


def test_invalid_generation_counted_wrong():
    model, tok = glue_model("maybe", ":")  # SST-2 prompt ends with "Sentiment :"
    items = [{"sentence": "p", "label": 1}, {"sentence": "q", "label": 0},
             {"sentence": "h", "label": 1}]
    got = ev.general_ability(model, tok, ["sst2"], data={"sst2": items}, mode="generation")
    gen = got["sst2"]["generation"]
    assert (gen["correct"], gen["incorrect"], gen["invalid"], gen["accuracy"]) == (0, 0, 3, 0.0)
    assert gen["f1"] == f1_score([1, 0, 1], [-1, -1, -1], average="weighted", zero_division=0)
    assert "likelihood" not in got["sst2"]


def test_likelihood_tie_is_invalid():
    tok = WordTok(GLUE_WORDS)
    model = BigramLM(tok, {":": {"positive": 0.3, "negative": 0.3}})
    got = ev.general_ability(model, tok, ["sst2"], data={"sst2": [{"sentence": "p", "label": 1}]},
                             mode="likelihood")
    assert got["sst2"]["likelihood"]["invalid"] == 1


def test_likelihood_mode_metrics():
    tok = WordTok(GLUE_WORDS)
    model = BigramLM(tok, {":": {"positive": 0.3, "negative": 0.2}})
    items = [{"sentence": "p", "label": 1}, {"sentence": "q", "label": 0}]
    got = ev.general_ability(model, tok, ["sst2"], data={"sst2": items}, mode="likelihood")
    lik = got["sst2"]["likelihood"]
    assert (lik["correct"], lik["incorrect"], lik["invalid"]) == (1, 1, 0)
    assert lik["mcc"] == matthews_corrcoef([1, 0], [1, 1])


def test_parsers():
    assert SPECS["mmlu"].parse(" B\n\nQuestion") == 1
    assert SPECS["mmlu"].parse(" (C) Helium") == -1      # the letter must precede a newline
    assert SPECS["mmlu"].parse(" data\n") == 0           # the reference's quirk, kept
    assert SPECS["mrpc"].parse(" Yes, and no") == 1
    assert SPECS["cola"].parse(" I do not know") == 0     # "no" inside "not": as the reference
    assert SPECS["rte"].parse(" true or false") == 1     # "false" is tested first
    assert SPECS["rte"].parse(" True.") == 0 and SPECS["nli"].parse(" True") == 1
    assert SPECS["nli"].parse(" true") == -1             # NLI is case-sensitive
    assert SPECS["cola"].parse(" perhaps") == -1


def test_glue_prompts_match_reference_table():
    x = {"sentence": "S", "sentence1": "A", "sentence2": "B", "question": "Q",
         "choices": ["a", "b", "c", "d"]}
    assert SPECS["sst2"].prompt(x) == "Review :S\nSentiment :"
    assert SPECS["cola"].prompt(x).endswith("Sentence: S\nAnswer: ")
    assert SPECS["rte"].prompt(x) == "A\nquestion: B True or False?\nanswer:"
    assert SPECS["nli"].prompt(x) == "A entails the B True or False? Answer:"
    assert SPECS["mmlu"].prompt(x) == "Question: Q\n(A) a\n(B) b\n(C) c\n(D) d\nAnswer:"


def test_toy_general_ability_is_delegated():
    from oteseq.toy import general_ability as toy_ability
    model, tok = tiny_model("gpt2", seed=0)
    options = {"n_facts": 12, "n_texts": 3}
    assert ev.general_ability(model, tok, data="toy", suite_options=options) == toy_ability(
        model, tok, **options)


def test_all_six_tasks_run_on_the_sample_and_default_data_comes_from_the_cache(tmp_path,
                                                                               monkeypatch):
    import json
    from importlib import resources
    sample = json.loads(resources.files("oteseq.data").joinpath(
        "fixtures/glue_sample.json").read_text())
    model, tok = tiny_model("gpt2", seed=0)
    got = ev.general_ability(model, tok, data=sample, n=3)
    assert sorted(got) == sorted(SPECS)
    for task, result in got.items():
        assert result["n"] == min(3, len(sample[task]))
        for mode in ("generation", "likelihood"):
            counts = result[mode]
            assert counts["correct"] + counts["incorrect"] + counts["invalid"] == result["n"]
    monkeypatch.setenv("OTESEQ_DATA", str(tmp_path))
    (tmp_path / "glue").mkdir()
    (tmp_path / "glue" / "cola.json").write_text(json.dumps(sample["cola"]))
    assert ev.general_ability(model, tok, ["cola"]) == {"cola": got["cola"]}
