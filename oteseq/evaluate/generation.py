"""Generation metrics of CounterFact: fluency (n-gram entropy) and consistency (TF-IDF cosine).

Text is produced like ROME's ``generate_fast``: one text per generation prompt, top-k sampling
with k = 5 (softmax, keep the 5 largest probabilities, renormalise, sample) until the text is
``max_length`` = 100 tokens long *including* the prompt, no stop at end-of-text; the returned
text includes the prompt, NFKD-normalised with ``"\\n\\n"`` replaced by a space. Here the
tokens come from ``model.generate`` (batched, left-padded with the tokenizer's pad id, its KV
cache), seeded inside a forked RNG so the caller's random state is untouched.

Word tokenisation: ``nltk.word_tokenize`` needs the punkt model, which cannot be downloaded
offline. We split sentences with a regular expression (``.``, ``!`` or ``?`` followed by white
space — punkt without its abbreviation list) and tokenise each with ``NLTKWordTokenizer``, the
word step that ``word_tokenize`` itself applies (no data files needed).
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from typing import Any, Mapping, Sequence

import torch

from ..errors import OptionError
from ..tfidf import fit_tfidf, tfidf_similarity, tfidf_vectorizer
from ..batching import pad_token_id
from ..models import input_device
from .._types import Model, Tokenizer

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _left_padded(rows: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, attention_mask)`` with every prompt ending at the last column (generation
    appends there)."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.as_tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def _generate_chunk(model: Model, prompt_ids: list[list[int]], n_new: int, pad: int, *,
                    top_k: int | None) -> list[list[int]]:
    """``n_new`` tokens after each prompt by ``model.generate``: top-k sampling (the global RNG,
    seeded by the caller), or greedy if ``top_k`` is None; no stop at end-of-text."""
    from transformers import GenerationConfig

    if n_new == 0:
        return [[] for _ in prompt_ids]
    ids, mask = _left_padded(prompt_ids, pad, input_device(model))
    config = GenerationConfig(max_new_tokens=n_new, do_sample=top_k is not None,
                              top_k=top_k, top_p=1.0, temperature=1.0, pad_token_id=pad,
                              eos_token_id=None, bos_token_id=None)
    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    return out[:, ids.shape[1]:].tolist()


def generate(model: Model, tok: Tokenizer, prompts: Sequence[str], *, max_length: int | None = 100,
             max_new_tokens: int | None = None, top_k: int | None = 5, seed: int = 0,
             batch_size: int = 64) -> list[list[int]]:
    """New token ids after each prompt: top-k sampling (greedy when ``top_k=None``), through
    ``model.generate`` with the tokenizer's pad id.

    Each sequence grows to ``max_length`` tokens including its prompt, or by ``max_new_tokens``.
    Sampling is seeded by ``seed`` inside a forked RNG, so the caller's random state is left as
    it was; deterministic given ``seed`` and the batch composition.
    """
    if max_length is None and max_new_tokens is None:
        raise OptionError("give max_length (tokens including the prompt) or max_new_tokens")
    encoded = [list(tok(p)["input_ids"]) for p in prompts]
    budgets = [max_new_tokens if max_new_tokens is not None else max(0, max_length - len(p))
               for p in encoded]
    device = input_device(model)
    out: list[list[int]] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(encoded), batch_size):
            chunk, chunk_budgets = (encoded[start:start + batch_size],
                                    budgets[start:start + batch_size])
            rows = _generate_chunk(model, chunk, max(chunk_budgets, default=0),
                                   pad_token_id(tok), top_k=top_k)
            out += [row[:budget] for row, budget in zip(rows, chunk_budgets)]
    return out


def generate_texts(model: Model, tok: Tokenizer, prompts: Sequence[str], *, max_length: int = 100,
                   top_k: int = 5,
                   seed: int = 0, batch_size: int = 64) -> list[str]:
    """One sampled text per prompt, prompt included, post-processed as ROME does."""
    new = generate(model, tok, prompts, max_length=max_length, top_k=top_k, seed=seed,
                   batch_size=batch_size)
    texts = [tok.decode(list(tok(p)["input_ids"]) + n, skip_special_tokens=True)
             for p, n in zip(prompts, new)]
    return [unicodedata.normalize("NFKD", t).replace("\n\n", " ") for t in texts]


def word_tokens(text: str) -> list[str]:
    """Words of ``text``: regex sentence split, then nltk's NLTKWordTokenizer (offline)."""
    from nltk.tokenize import NLTKWordTokenizer
    tokenizer = NLTKWordTokenizer()
    return [w for sentence in _SENTENCE_END.split(text) if sentence
            for w in tokenizer.tokenize(sentence)]


def ngram_entropy(text: str, ns: Sequence[int] = (2, 3),
                  weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """mean_n(w_n · H_n) in bits, H_n = −Σ_g f_g log₂ f_g over the n-gram frequencies f of text.

    With the defaults (2/3·H₂ + 4/3·H₃)/2, ROME's ``compute_n_gram_entropy``; a text with fewer
    than n words contributes H_n = 0 as in the reference.
    """
    words = word_tokens(text)
    weighted = []
    for n, weight in zip(ns, weights):
        counts = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        total = sum(counts.values())
        entropy = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
        weighted.append(weight * entropy)
    return sum(weighted) / len(weighted)


def consistency_texts(record: Mapping[str, Any], snippets) -> list[str]:
    """Snippet texts about *other* subjects with the record's (relation_id, target_new.id)."""
    rw = record["requested_rewrite"]
    samples = snippets.get(rw["relation_id"], {}).get(rw["target_new"].get("id"), [])
    return [s["text"] for s in samples if s["name"] != rw["subject"]]


def fluency_and_consistency(model: Model, tok: Tokenizer, records: Sequence[Mapping[str, Any]], *,
                            snippets=None,
                            tfidf=None, seed: int = 0, batch_size: int = 64
                            ) -> tuple[list[dict[str, float]], str | None]:
    """Per record ``fluency`` (mean n-gram entropy of its texts ×100) and ``consistency``.

    All generation prompts of all records are sampled together. Consistency needs ``snippets``
    (nested ``{relation_id: {target_id: [{"name", "text"}]}}``); without them it is nan and the
    returned note says why.
    """
    prompts = [p for r in records for p in r.get("generation_prompts", [])]
    texts = iter(generate_texts(model, tok, prompts, seed=seed, batch_size=batch_size))
    note = None
    if snippets is None:
        note = ("consistency skipped: no snippets given. For CounterFact pass "
                "snippets=oteseq.data.attribute_snippets() and tfidf=oteseq.data.tfidf(); "
                "the toy world has no snippets")
    elif tfidf is None:
        tfidf = fit_tfidf([s["text"] for by_target in snippets.values()
                           for samples in by_target.values() for s in samples])
    rows = []
    for record in records:
        own = [next(texts) for _ in record.get("generation_prompts", [])]
        fluency = 100 * sum(map(ngram_entropy, own)) / len(own) if own else math.nan
        consistency = math.nan
        if snippets is not None and own:
            reference = consistency_texts(record, snippets)
            consistency = tfidf_similarity(" ".join(own), " ".join(reference), tfidf) \
                if reference else math.nan
        rows.append({"fluency": fluency, "consistency": consistency})
    return rows, note


__all__ = ["consistency_texts", "fit_tfidf", "fluency_and_consistency", "generate",
           "generate_texts", "ngram_entropy", "tfidf_similarity", "tfidf_vectorizer",
           "word_tokens"]
