"""oteseq.stats: one-pass, float64, cached second moments C0 = (1/N) Σ k kᵀ."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch

import oteseq
from oteseq import models, stats
from oteseq.errors import OfflineError
from oteseq.hooks import Trace
from tiny_models import tiny_model

TEXTS = ["The capital of France is Paris.", "I think you will like it.",
         "Varnholm is a city in the north. Its mayor speaks Norwegian. " * 3,
         "Because I said so.", "Apple is a company. Microsoft is a company.", "",
         "The quick brown fox jumps over the lazy dog. The Space Needle is in Seattle."]
LAYERS = [0, 2]


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model_tok(request):
    return tiny_model(request.param)


def _moments(model, tok, layers=LAYERS, **kwargs):
    options = dict(corpus=TEXTS, max_tokens_per_seq=24, batch_tokens=64, cache=False,
                   progress=False)
    return stats.second_moments(model, tok, layers, **{**options, **kwargs})


def _manual(model, tok, layer, cap):
    """Σ k kᵀ / N, one unpadded text at a time, every token."""
    module = models.edited_module(model, layer)
    d_in = models.weight_shape(module)[1]
    total, count = torch.zeros(d_in, d_in, dtype=torch.float64), 0
    for text in TEXTS:
        ids = tok(text).input_ids[:cap]
        if not ids:
            continue
        with torch.no_grad(), Trace(module, retain_input=True) as trace:
            model(input_ids=torch.tensor([ids]))
        keys = trace.input[0].double()
        total += keys.T @ keys
        count += len(ids)
    return total / count, count


def _forward_counter(model):
    calls = []
    return calls, model.register_forward_pre_hook(lambda *a: calls.append(1))


def test_one_pass_equals_separate_passes_and_manual(model_tok):
    model, tok = model_tok
    calls, handle = _forward_counter(model)
    try:
        both = _moments(model, tok)
        n_batches = len(calls)
        single = {layer: _moments(model, tok, [layer])[layer] for layer in LAYERS}
    finally:
        handle.remove()
    assert n_batches > 1 and len(calls) == 3 * n_batches  # one pass for both layers
    for layer in LAYERS:
        C0 = both[layer]
        assert C0.dtype == torch.float64 and C0.device == models.module_device(
            models.edited_module(model, layer))
        assert torch.allclose(C0, single[layer], rtol=0, atol=1e-10)
        expected, count = _manual(model, tok, layer, cap=24)
        assert both.n_tokens == count
        torch.testing.assert_close(C0, expected, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(C0, C0.T, rtol=0, atol=0)
        assert torch.linalg.eigvalsh(C0).min() > -1e-10
    assert set(both) == set(LAYERS) and len(both) == 2 and both.corpus.startswith("texts-")


def test_batching_and_token_cap(model_tok):
    model, tok = model_tok
    small = _moments(model, tok, batch_tokens=24)
    large = _moments(model, tok, batch_tokens=10_000)
    torch.testing.assert_close(small[0], large[0], rtol=1e-5, atol=1e-7)
    capped = _moments(model, tok, max_tokens_per_seq=5)
    assert capped.n_tokens == sum(min(len(tok(t).input_ids), 5) for t in TEXTS)
    assert capped.max_tokens_per_seq == 5


def test_streamed_chunks_match_one_chunk(model_tok):
    model, tok = model_tok
    name = models.edited_name(model, 1)
    options = dict(max_tokens_per_seq=24, batch_tokens=64, progress=False)
    one, n_one, texts_one = stats.collect_sums(model, tok, TEXTS, [name], **options)
    many, n_many, texts_many = stats.collect_sums(model, tok, iter(TEXTS), [name], chunk_texts=2,
                                                  **options)
    assert (n_one, texts_one) == (n_many, texts_many) and texts_one == len(TEXTS)
    torch.testing.assert_close(one[name], many[name], rtol=1e-6, atol=1e-6)


def test_cache_hit_miss_partial(tmp_path):
    model, tok = tiny_model("gpt2")
    options = dict(cache=True, cache_dir=tmp_path)
    calls, handle = _forward_counter(model)
    try:
        first = _moments(model, tok, [0], **options)
        assert calls
        calls.clear()
        again = _moments(model, tok, [0], **options)
        assert calls == [] and torch.equal(again[0], first[0]) and again.n_tokens == first.n_tokens
        both = _moments(model, tok, [0, 1], **options)  # layer 0 cached, layer 1 computed
        assert len(calls) > 0 and torch.equal(both[0], first[0])
        for change in ({"max_tokens_per_seq": 23}, {"corpus": TEXTS[:-1]}, {"n_samples": 4}):
            calls.clear()
            other = _moments(model, tok, [0], **options, **change)
            assert calls, f"{change} must miss the cache"
            assert not torch.equal(other[0], first[0])
    finally:
        handle.remove()
    other_model, _ = tiny_model("gpt2", seed=1)
    assert not torch.equal(_moments(other_model, tok, [0], **options)[0], first[0])
    files = sorted(p.name for p in Path(tmp_path).rglob("*") if p.is_file())
    assert not [name for name in files if name.endswith(".tmp")]
    assert len([f for f in files if f.endswith(".safetensors")]) == 6
    assert len([f for f in files if f.endswith(".json")]) == 6


def test_tampered_sidecar_is_ignored(tmp_path):
    model, tok = tiny_model("gpt2")
    first = _moments(model, tok, [1], cache=True, cache_dir=tmp_path)
    sidecar = next(Path(tmp_path).rglob("*.json"))
    meta = json.loads(sidecar.read_text())
    meta["key"]["n_samples"] = 999
    sidecar.write_text(json.dumps(meta))
    calls, handle = _forward_counter(model)
    try:
        again = _moments(model, tok, [1], cache=True, cache_dir=tmp_path)
    finally:
        handle.remove()
    assert calls and torch.allclose(again[1], first[1], rtol=0, atol=1e-12)


def test_cache_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("OTESEQ_CACHE", str(tmp_path / "here"))
    assert stats.cache_root() == tmp_path / "here"
    monkeypatch.delenv("OTESEQ_CACHE")
    assert stats.cache_root() == Path.home() / ".cache" / "oteseq"
    assert stats.cache_root(tmp_path) == tmp_path


def test_named_corpora(monkeypatch):
    corpus_id, n, load = stats.resolve_corpus("toy", 3, seed=2)
    assert corpus_id == "toy-preserve-seed2-people5000" and n == 3   # the default toy's world
    assert load() == oteseq.toy.preservation_text(3, 2)
    with pytest.raises(ValueError, match="toy"):
        stats.resolve_corpus("c4", None)
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    with pytest.raises(OfflineError, match="pip install datasets.*corpus='toy'"):
        stats.resolve_corpus("wikitext", 10)[2]()


def test_offline_download_failure(monkeypatch):
    def load_dataset(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(OfflineError, match="wikimedia/wikipedia.*no network"):
        stats.resolve_corpus("wikipedia", 10)[2]()


def test_named_corpus_through_datasets(monkeypatch):
    rows = [{"text": text} for text in ["", " ", "first", "second", "third"]]

    class FakeData(list):
        def shuffle(self, seed, **kwargs):
            return FakeData(self[::-1]) if seed == 1 else self

    calls = []

    def load_dataset(path, config, split, streaming):
        calls.append((path, config, split, streaming))
        return FakeData(rows)

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    corpus_id, n, load = stats.resolve_corpus("wikitext", 2, seed=1)
    assert corpus_id == "wikitext-wikitext-103-raw-v1-seed1" and n == 2
    assert list(load()) == ["third", "second"]  # blank texts skipped, first n after the shuffle
    assert calls == [("Salesforce/wikitext", "wikitext-103-raw-v1", "train", False)]


def test_toy_corpus_end_to_end():
    model, tok = tiny_model("qwen2")
    result = stats.second_moments(model, tok, [1], corpus="toy", n_samples=6, cache=False,
                                  progress=False)
    assert result.corpus == "toy-preserve-seed0-people5000" and result.n_samples == 6
    assert result.n_tokens > 6
    assert result[1].shape == (64, 64)


def test_plumbing_never_names_a_device():
    root = Path(oteseq.__file__).parent
    for name in ("models.py", "hooks.py", "keys.py", "stats.py"):
        source = (root / name).read_text()
        assert '"cuda' not in source and "'cuda" not in source and ".cuda(" not in source


def test_results_live_on_each_edited_modules_device(monkeypatch):
    """Stand-in for a device_map split (this machine has one device): report the edited module
    of layer 2 as living on "meta"; its keys and C0 must be built there, layer 0's on the CPU."""
    from oteseq import keys
    from oteseq.requests import Request

    model, tok = tiny_model("gpt2")
    elsewhere, real = models.edited_module(model, 2), models.module_device
    monkeypatch.setattr(models, "module_device",
                        lambda m: torch.device("meta") if m is elsewhere else real(m))
    K = keys.compute_keys(model, tok, [Request("The capital of {} is", "Paris", "Rome")], [0, 2],
                          templates=["{}", "A day. {}"])
    C0 = _moments(model, tok, [0, 2])
    assert {layer: K[layer].device.type for layer in K} == {0: "cpu", 2: "meta"}
    assert {layer: C0[layer].device.type for layer in C0} == {0: "cpu", 2: "meta"}
