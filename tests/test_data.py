"""oteseq.data: cache folder, atomic downloads, schema checks, offline errors, loaders.

No network: ``urllib.request.urlopen`` is replaced by fakes that serve bytes or fail.
The records are invented but follow the real CounterFact / zsRE / snippets schemas.
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import urllib.error
import urllib.request
import zipfile
from importlib import resources

import numpy as np
import pytest

import oteseq.data as data
from oteseq.data._glue import balanced_subset
from oteseq.data import cache as cache_module
from oteseq.errors import ChecksumError, OfflineError, OptionError

CF = [{"case_id": 7, "pararel_idx": 4242,
       "requested_rewrite": {"prompt": "The headquarters of {} is in", "relation_id": "P159",
                             "subject": "Norvanta Rail",
                             "target_new": {"str": "Lisbon", "id": "Q597"},
                             "target_true": {"str": "Oslo", "id": "Q585"}},
       "paraphrase_prompts": ["Some prefix. Norvanta Rail is headquartered in"],
       "neighborhood_prompts": ["The headquarters of Fjordline Bus is in"],
       "attribute_prompts": ["The headquarters of Helix Foods is in"],
       "generation_prompts": ["Norvanta Rail's main office is located in"]}]
CF.append(copy.deepcopy(CF[0]) | {"case_id": 8})
ZSRE = [{"subject": "Harbor Light Quartet", "src": "What label is Harbor Light Quartet signed to?",
         "pred": "Columbia", "rephrase": "Which record label does Harbor Light Quartet belong to?",
         "alt": "Blue Note", "answers": ["Verve"],
         "loc": "nq question: who painted the ceiling of the hall", "loc_ans": "a local artist",
         "cond": "Verve >> Blue Note || What label is Harbor Light Quartet signed to?"}]


class FakeResponse(io.BytesIO):
    def __init__(self, payload: bytes, length: int | None = None):
        super().__init__(payload)
        self.headers = {} if length is None else {"Content-Length": str(length)}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder; downloads fail loudly unless a test installs a server."""
    monkeypatch.setenv("OTESEQ_DATA", str(tmp_path))
    monkeypatch.delenv("OTESEQ_OFFLINE", raising=False)
    calls = []

    def no_network(url, timeout=None):
        calls.append(url)
        raise urllib.error.URLError("no network in tests")
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return tmp_path, calls


def serve(monkeypatch, files: dict[str, bytes], calls: list, short: int = 0):
    """Fake urlopen serving ``files`` by URL suffix; ``short`` bytes are cut off each reply."""
    def fake(url, timeout=None):
        calls.append(url)
        for suffix, payload in files.items():
            if url.endswith(suffix):
                return FakeResponse(payload[:len(payload) - short], len(payload))
        raise urllib.error.URLError(f"404 {url}")
    monkeypatch.setattr(urllib.request, "urlopen", fake)


def test_loads_from_prefilled_cache_without_network(cache):
    folder, calls = cache
    (folder / "counterfact.json").write_text(json.dumps(CF))
    (folder / "zsre_mend_eval.json").write_text(json.dumps(ZSRE))
    assert data.counterfact(1) == CF[:1]
    assert data.counterfact() == CF
    assert data.zsre()[0]["answers"] == ["Verve"]
    assert data.load("counterfact", 2) == CF and data.data_dir() == folder
    assert calls == []


def test_schema_error_names_record_and_field(cache):
    folder, _ = cache
    broken = copy.deepcopy(CF)
    del broken[1]["requested_rewrite"]["subject"]
    (folder / "multi_counterfact.json").write_text(json.dumps(broken))
    with pytest.raises(data.SchemaError, match=r"record 1 \(case_id 8\).*requested_rewrite"
                                               r"\.subject.*delete"):
        data.counterfact(multi=True)
    bad_type = copy.deepcopy(ZSRE)
    bad_type[0]["answers"] = "Verve"
    (folder / "zsre_mend_eval.json").write_text(json.dumps(bad_type))
    with pytest.raises(data.SchemaError, match=r"record 0\.answers: expected a list"):
        data.zsre()


def test_offline_error_says_what_to_download_and_where(cache, monkeypatch):
    folder, calls = cache
    with pytest.raises(OfflineError) as err:
        data.counterfact(5)
    message = str(err.value)
    assert "https://memit.baulab.info/data/dsets/counterfact.json" in message
    assert str(folder / "counterfact.json") in message and "oteseq.toy.counterfact" in message
    assert not list(folder.iterdir())  # no partial file left behind
    monkeypatch.setenv("OTESEQ_OFFLINE", "1")
    with pytest.raises(OfflineError, match="OTESEQ_OFFLINE"):
        data.zsre()
    assert len(calls) == 1  # the offline switch never touches the network


def test_atomic_download_once(cache, monkeypatch):
    folder, calls = cache
    serve(monkeypatch, {"/zsre_mend_eval.json": json.dumps(ZSRE).encode()}, calls)
    assert data.zsre() == ZSRE and data.zsre(1) == ZSRE
    assert calls == ["https://memit.baulab.info/data/dsets/zsre_mend_eval.json"]
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["zsre_mend_eval.json", "zsre_mend_eval.json.sha256"]
    digest = hashlib.sha256(json.dumps(ZSRE).encode()).hexdigest()
    assert (folder / names[1]).read_text().split() == [digest, names[0]]


def test_pinned_digest_mismatch_never_lands(cache, monkeypatch):
    folder, calls = cache
    payload = json.dumps(ZSRE).encode()
    serve(monkeypatch, {"/zsre_mend_eval.json": payload}, calls)
    monkeypatch.setitem(cache_module.PINNED, "zsre_mend_eval.json", "0" * 64)
    with pytest.raises(ChecksumError, match="nothing was saved") as err:
        data.zsre()
    assert hashlib.sha256(payload).hexdigest() in str(err.value)
    assert not list(folder.iterdir())
    monkeypatch.setitem(cache_module.PINNED, "zsre_mend_eval.json",
                        hashlib.sha256(payload).hexdigest().upper())
    assert data.zsre() == ZSRE


def test_cached_file_changed_on_disk_is_caught(cache, monkeypatch):
    folder, calls = cache
    serve(monkeypatch, {"/zsre_mend_eval.json": json.dumps(ZSRE).encode()}, calls)
    assert data.zsre() == ZSRE
    changed = copy.deepcopy(ZSRE)
    changed[0]["alt"] = "Motown"
    (folder / "zsre_mend_eval.json").write_text(json.dumps(changed))
    with pytest.raises(ChecksumError, match="delete .*zsre_mend_eval.json"):
        data.zsre()
    assert len(calls) == 1


def test_partial_or_invalid_download_never_lands(cache, monkeypatch):
    folder, calls = cache
    payload = json.dumps(CF).encode()
    serve(monkeypatch, {"/counterfact.json": payload}, calls, short=10)
    with pytest.raises(OfflineError, match="truncated"):
        data.counterfact()
    assert not list(folder.iterdir())
    serve(monkeypatch, {"/counterfact.json": b'[{"case_id": "seven"}]'}, calls)
    with pytest.raises(data.SchemaError, match="case_id: expected an integer"):
        data.counterfact()
    assert not list(folder.iterdir())


def test_valid_cached_file_is_kept(cache, monkeypatch):
    folder, calls = cache
    (folder / "counterfact.json").write_text(json.dumps(CF))
    serve(monkeypatch, {"/counterfact.json": b"[]"}, calls)
    assert data.counterfact() == CF and calls == []


def test_attribute_snippets_and_tfidf(cache):
    folder, _ = cache
    sample = resources.files("oteseq.data").joinpath("fixtures/attribute_snippets_sample.json")
    (folder / "attribute_snippets.json").write_text(sample.read_text())
    snips = data.attribute_snippets()
    assert [s["name"] for s in snips["P159"]["Q597"]] == ["Norvanta Rail", "Fjordline Bus",
                                                           "Helix Foods"]
    np.save(folder / "idf.npy", np.array([1.0, 2.0]))
    (folder / "tfidf_vocab.json").write_text(json.dumps({"lisbon": 0, "oslo": 1}))
    encoded = data.tfidf().transform(["Lisbon Oslo"]).toarray()[0]
    assert np.allclose(encoded, np.array([1.0, 2.0]) / np.sqrt(5.0))
    (folder / "tfidf_vocab.json").write_text(json.dumps({"lisbon": 0}))
    with pytest.raises(data.SchemaError, match="1 tokens but idf.npy 2"):
        data.tfidf()
    (folder / "idf.npy").write_bytes(b"not numpy")
    with pytest.raises(data.SchemaError, match="idf.npy: not a numpy array file.*delete"):
        data.tfidf()


def _rte_zip(n_per_label: int) -> bytes:
    rows = ["index\tsentence1\tsentence2\tlabel"]
    for i in range(2 * n_per_label):
        label = "entailment" if i % 2 == 0 else "not_entailment"
        rows.append(f"{i}\t\"Quoted\" premise {i}\thypothesis {i}\t{label}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("RTE/dev.tsv", "\n".join(rows) + "\n")
    return buffer.getvalue()


def test_glue_rte_built_from_archive_with_glue_labels(cache, monkeypatch):
    folder, calls = cache
    serve(monkeypatch, {"/RTE.zip": _rte_zip(15)}, calls)
    items = data.glue("rte")
    assert len(items) == 30 - 10  # class-balanced subset minus the 10 reserved items
    for x in items:
        index = int(x["sentence1"].split()[2])
        assert x["label"] == index % 2  # entailment (even rows) -> 0, as in GLUE
    assert all(x["sentence1"].startswith('"Quoted"') for x in items)  # TSV quotes kept
    assert data.glue("rte") == items and len(calls) == 1  # cached


def test_glue_prefilled_and_bad_label(cache):
    folder, _ = cache
    sample = json.loads(resources.files("oteseq.data").joinpath(
        "fixtures/glue_sample.json").read_text())
    (folder / "glue").mkdir()
    (folder / "glue" / "mmlu.json").write_text(json.dumps(sample["mmlu"]))
    assert data.glue("mmlu") == sample["mmlu"]
    (folder / "glue" / "sst2.json").write_text(json.dumps([{"sentence": "x", "label": 2}]))
    with pytest.raises(data.SchemaError, match="label = 2"):
        data.glue("sst2")
    with pytest.raises(OfflineError, match="RTE.zip"):
        data.glue("rte")


def test_balanced_subset():
    items = [{"label": i % 3, "i": i} for i in range(30)] + [{"label": 0, "i": 99}]
    subset = balanced_subset(items, per_class=5, seed=37)
    assert sorted(x["label"] for x in subset) == [0] * 5 + [1] * 5 + [2] * 5
    assert subset == balanced_subset(items, per_class=5, seed=37)


def test_load_dispatcher(cache):
    toy = data.load("toy-counterfact", 3)
    assert len(toy) == 3 and "requested_rewrite" in toy[0]
    assert len(data.load("toy-zsre", 2)) == 2
    assert len(data.load("toy-conflicts", 4)) >= 1
    with pytest.raises(OptionError, match="known: counterfact, mcf"):
        data.load("wikipedia", 3)
    with pytest.raises(OptionError, match="needs n"):
        data.load("toy-zsre")
