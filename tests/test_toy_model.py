"""The first shipped toy-world GPT-2 (``toy-v1``): loading offline, what it knows, and the
training recipe. ``toy-v2``, the default ``"toy"``, has its own tests (test_toy_v2.py)."""
from __future__ import annotations

import json

import pytest
import torch

import oteseq
import oteseq.toy as toy
from oteseq.errors import OfflineError
from oteseq.loading import toy_model_dir
from oteseq.toy.report import BARS, recall_by_kind
from oteseq.toy import versions
from oteseq.toy.train import TrainConfig, train

MARGIN = 0.05  # sample of 60 facts: allowed shortfall against the model-card bars


@pytest.fixture(scope="module")
def toy_model():
    import transformers

    transformers.logging.set_verbosity_error()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest, and CI machines are shared
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        model, tok = oteseq.load_model("toy-v1")
    yield model, tok, versions.toy_model("toy-v1").world()
    torch.set_num_threads(threads)


def test_shipped_files_are_small_and_half_precision():
    folder = toy_model_dir("toy-v1")
    files = [p for p in folder.iterdir() if p.is_file()]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in files}
    assert sum(p.stat().st_size for p in files) <= 10 * 2**20
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}


def test_loads_offline_as_float32_gpt2_with_gpt2_padding(toy_model):
    from transformers import GPT2LMHeadModel
    from transformers.pytorch_utils import Conv1D

    model, tok, w = toy_model
    assert isinstance(model, GPT2LMHeadModel) and not model.training
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert isinstance(model.transformer.h[0].mlp.c_proj, Conv1D)
    cfg = model.config
    assert cfg.n_layer >= 6 and cfg.n_inner * (cfg.n_layer - 1) >= 5000
    assert tok.pad_token_id == tok.eos_token_id and tok.padding_side == "right"


def test_subjects_split_into_several_tokens_and_targets_take_a_leading_space(toy_model):
    _, tok, w = toy_model
    lengths = [len(tok(" " + s)["input_ids"]) for s in w.subjects[:300]]
    assert min(lengths) >= 2
    objects = [o for r in w.relations.values() for o in r.objects]
    assert any(len(tok(" " + o)["input_ids"]) >= 2 for o in objects)
    assert tok.convert_ids_to_tokens(tok(" " + objects[0])["input_ids"])[0].startswith("Ġ")


def test_predicts_a_fact(toy_model):
    model, tok, w = toy_model
    subject, rid = sorted(w.facts)[0]
    ids = tok(w.relations[rid].canonical.format(subject), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=4, do_sample=False,
                             pad_token_id=tok.eos_token_id)
    assert tok.decode(out[0, ids.shape[1]:]).startswith(" " + w.facts[(subject, rid)])


def test_recall_on_a_sample_of_facts_meets_the_bars(toy_model):
    model, tok, w = toy_model
    recall = recall_by_kind(model, tok, w, n_facts=60)
    for kind, bar in BARS.items():
        assert recall[kind] >= bar - MARGIN, (kind, recall)


def test_general_ability_skips_excluded_facts(toy_model):
    model, tok, w = toy_model
    from oteseq.toy.ability import fact_sample

    first = fact_sample(w, 50)
    assert set(fact_sample(w, 50, exclude=first[:10])).isdisjoint(first[:10])
    scores = toy.general_ability(model, tok, exclude=first[:10], n_facts=60, n_texts=20,
                                 world=w, untouched="pair")
    assert set(scores) == {"recall", "recall_by_relation", "nll"}
    assert scores["recall"] >= BARS["canonical"] - 0.1
    assert set(scores["recall_by_relation"]) <= set(w.relations)
    assert 0 < scores["nll"] < 3.0


def test_unknown_local_model_is_an_offline_error(tmp_path):
    with pytest.raises(OfflineError, match="toy"):
        oteseq.load_model(str(tmp_path / "no-such-model"))


def test_training_recipe_runs_on_a_tiny_world(tmp_path):
    cfg = TrainConfig(n_subjects=20, vocab_size=400, n_layer=2, n_embd=32, n_head=2, n_inner=64,
                      n_positions=64, seq_len=32, batch_size=16, steps=40, lr=5e-3, warmup=5,
                      n_general=100, eval_every=40, eval_facts=20, checkpoint=False,
                      threads=1)
    _, _, report = train(cfg, tmp_path)
    losses = [loss for _, loss in report["loss_curve"]]
    assert losses[-1] < losses[0] - 1.0
    assert json.loads((tmp_path / "training_report.json").read_text())["config"]["steps"] == 40
    model, tok = oteseq.load_model(str(tmp_path))
    assert model.config.n_layer == 2 and tok.pad_token_id == tok.eos_token_id
