"""The sequential protocol (oteseq.experiments) and the committed reproduction table."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_model

import oteseq.evaluate
from oteseq import experiments, methods, models, stats

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["The capital of France is Paris.", "Toko Yasuda plays the guitar.",
         "Apple is a company. Google makes search engines.", "The quick brown fox jumps."]
FACTS = [("France", "The capital of {} is", "Seattle", "Paris", "P36"),
         ("Toko Yasuda", "{} plays the", "company", "guitar", "P1303"),
         ("Apple", "{} is a", "city", "company", "P31"),
         ("Danielle Darrieux", "The mother tongue of {} is", "Norwegian", "French", "P103")]


def _record(case_id, subject, prompt, new, true, relation) -> dict:
    return {"case_id": case_id,
            "requested_rewrite": {"prompt": prompt, "subject": subject, "relation_id": relation,
                                  "target_new": {"str": new}, "target_true": {"str": true}},
            "paraphrase_prompts": [f"I think that {prompt.format(subject)}"],
            "neighborhood_prompts": ["Therefore the answer is", "The Space Needle is in"],
            "generation_prompts": []}


RECORDS = [_record(i, *fact) for i, fact in enumerate(FACTS)]


@pytest.fixture(scope="module")
def setting():
    model, tok = tiny_model("gpt2", seed=0)
    hp = methods.default_hparams(model, "memit-seq").replace(v_num_grad_steps=4, lam=10.0,
                                                              ridge=1.0)
    C0 = stats.second_moments(model, tok, list(hp.layers), corpus=TEXTS, cache=False,
                              progress=False)
    return model, tok, hp, {l: C0[l] for l in hp.layers}


def _run(setting, batch_size=2, **kw):
    model, tok, hp, C0 = setting
    return experiments.run_sequential(model, tok, RECORDS, method="memit-seq",
                                      batch_size=batch_size, hparams=hp, stats=C0,
                                      templates=["{}"], progress=False, **kw)


def _edited(model, layers) -> dict:
    return {l: models.read_weight(models.edited_module(model, l)).clone() for l in layers}


@pytest.fixture(scope="module")
def two_batches(setting):
    before = _edited(setting[0], setting[2].layers)
    result = _run(setting, eval_every=1)
    return result, before


def test_run_sequential_records_config_versions_timings(setting, two_batches):
    result, before = two_batches
    cfg = result.config
    assert (cfg["n"], cfg["batch_size"], cfg["n_batches"]) == (4, 2, 2)
    assert cfg["protocol"] == "edit-all-then-evaluate-all" and cfg["curves"]["eval_every"] == 1
    assert cfg["hparams"] == setting[2].to_dict() and cfg["method"] == "memit-seq"
    assert cfg["fingerprint"] == models.model_fingerprint(setting[0])
    assert set(result.versions) == {"oteseq", "torch", "transformers", "python"}
    for phase in ("values", "keys", "solve", "edit", "evaluation", "total"):
        assert result.timings[phase] > 0, phase
    assert result.timings["values"] + result.timings["keys"] <= result.timings["edit"] + 1e-6
    assert [b["batch"] for b in result.batches] == [1, 2]
    assert sum(b["n_edits"] + b["skipped"] for b in result.batches) == 4
    assert [p["n_edited"] for p in result.metrics["curves"]] == [2, 4]
    assert result.metrics["post"]["n_records"] == result.metrics["pre"]["n_records"] == 4
    # the update moved the weights, and restore=True put them back bit for bit
    assert any(not torch.equal(result.weights[l], result.W0[l]) for l in result.weights)
    after = _edited(setting[0], setting[2].layers)
    assert all(torch.equal(before[l], after[l]) for l in before)


def test_result_json_round_trip(two_batches, tmp_path):
    result, _ = two_batches
    path = tmp_path / "sub" / "r.json"
    experiments.save_result(result, path)
    loaded = experiments.load_result(path)
    assert loaded.to_dict() == json.loads(path.read_text()) == json.loads(
        json.dumps(result.to_dict()))
    assert loaded.config == result.config and loaded.metrics["curves"] == \
        result.metrics["curves"]
    assert not list(path.parent.glob(".*.tmp"))
    with pytest.raises(oteseq.errors.StateMismatchError):
        experiments.Result.from_dict({"format": "other"})


def test_single_batch_equals_one_time_and_distance_formula(setting, two_batches):
    model, tok, hp, C0 = setting
    one = _run(setting, batch_size=4)
    ote = experiments.run_one_time(model, tok, RECORDS, hparams=hp, stats=C0, templates=["{}"],
                                   progress=False)
    assert ote.config["batch_size"] == 4 and ote.config["n_batches"] == 1
    assert max(experiments.weight_distance(one, ote).values()) <= 1e-6
    seq, _ = two_batches
    for layer, d in experiments.weight_distance(seq, ote).items():
        expected = (torch.linalg.norm(seq.weights[layer] - ote.weights[layer])
                    / torch.linalg.norm(ote.weights[layer] - ote.W0[layer]))
        assert math.isclose(d, float(expected), rel_tol=1e-9)
    with pytest.raises(oteseq.errors.OteseqError):
        experiments.weight_distance(experiments.Result.from_dict(seq.to_dict()), ote)


def test_pre_edit_metrics_come_from_the_unedited_model(setting, monkeypatch):
    model, tok, hp, _ = setting
    original, calls = _edited(model, hp.layers), []
    score = oteseq.evaluate.counterfact

    def spy(m, t, records, **kw):
        now = _edited(m, hp.layers)
        calls.append(all(torch.equal(now[l], original[l]) for l in now))
        return score(m, t, records, **kw)

    monkeypatch.setattr(oteseq.evaluate, "counterfact", spy)
    general = []
    monkeypatch.setattr(experiments._protocol, "_general",
                        lambda m, t, exclude: general.append(list(exclude)) or {"recall": 1.0})
    edited = lambda m, t: {"edited": not all(  # noqa: E731
        torch.equal(w, original[l]) for l, w in _edited(m, hp.layers).items())}
    result = _run(setting, general_every=2, final_checks={"final": edited})
    assert result.metrics["final_checks"] == {"final": {"edited": True}}
    assert calls[0] is True and calls[-1] is False  # pre on W0, post on the edited model
    assert result.metrics["pre"]["efficacy"] == score(model, tok, RECORDS)["efficacy"]
    ids = [("France", "P36"), ("Toko Yasuda", "P1303"), ("Apple", "P31"),
           ("Danielle Darrieux", "P103")]
    assert general == [ids, ids]  # before any edit (all records excluded) and after batch 2
    assert [p["batch"] for p in result.metrics["curves"]] == [2]


def test_plots_return_figures(two_batches):
    import matplotlib
    matplotlib.use("Agg")
    result, _ = two_batches
    fig = experiments.plot_curves([result], "efficacy")
    assert len(fig.axes[0].lines) == 1 and len(fig.axes[0].lines[0].get_xdata()) == 3
    fig = experiments.plot_methods([result, result], ["efficacy", "specificity"])
    assert len(fig.axes[0].patches) == 4


def _reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "bench" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("reproduce", module)  # dataclasses look their module up there
    spec.loader.exec_module(sys.modules["reproduce"])
    return sys.modules["reproduce"]


@pytest.mark.parametrize("scale", ["ci", "paper"])
def test_committed_table_matches_current_defaults(scale):
    """toy-v1's stored tables: when its defaults change, rerun
    `python bench/reproduce.py --model toy-v1 --scale <scale>`."""
    reproduce = _reproduce()
    path = reproduce.results_dir("toy-v1", "counterfact", scale, 0) / "table.json"
    table = json.loads(path.read_text())
    want = reproduce.SCALES[scale]
    assert table["scale"] == {"n": want.n, "batch_size": want.batch_size, "seed": want.seed,
                              "eval_every": want.eval_every, "general_every": want.general_every}
    rows = table["rows"]
    assert [r["method"] for r in rows] == [*reproduce.METHODS, reproduce.ONE_TIME_METHOD]
    for row in rows:
        cfg = row["config"]
        assert cfg["hparams"] == methods.default_hparams("toy-v1", row["method"]).to_dict(), \
            f"{row['method']}: hparams changed; rerun bench/reproduce.py --model toy-v1"
        # written when "toy" named toy-v1
        assert (cfg["n"], cfg["seed"], cfg["model"]) == (want.n, want.seed, "toy")
        assert cfg["protocol"] == experiments.PROTOCOL
    sizes = [want.batch_size] * len(reproduce.METHODS) + [want.n]
    assert [r["batch_size"] for r in rows] == sizes
    for name in ("table.md", "curves.png", "methods.png"):
        assert (path.parent / name).is_file(), name


@pytest.mark.parametrize("evaluate", ["counterfact", "zsre"])
def test_stored_toy_v2_tables_match_current_defaults(evaluate):
    """toy-v2's stored budget runs (read by the chapters): when its defaults change, rerun
    `python bench/reproduce.py --scale budget --seed S` for S = 0, 1, 2 (and --evaluate zsre)."""
    reproduce = _reproduce()
    want = reproduce.SCALES_V2["budget"]
    for seed in (0, 1, 2):
        table = json.loads((reproduce.results_dir("toy", evaluate, "budget", seed)
                            / "table.json").read_text())
        assert table["scale"]["n"] == want.n and table["scale"]["seed"] == seed
        for row in table["rows"]:
            cfg = row["config"]
            assert cfg["model"] == "toy-v2"
            assert cfg["hparams"] == methods.default_hparams("toy-v2", row["method"]).to_dict(), \
                f"{row['method']}: toy-v2 hparams changed; rerun bench/reproduce.py --scale budget"


def test_conflict_outcome_compares_latest_with_replaced_target(setting):
    model, tok, _, _ = setting
    first = _record(0, *FACTS[0])
    again = _record(2, "France", "The capital of {} is", "Norwegian", "Paris", "P36")
    again["conflicts_with"] = 0
    records = [first, _record(1, *FACTS[1]), again]
    assert experiments.latest_pairs(records) == [(again, first)]
    out = experiments.conflict_outcome(model, tok, records)
    prompts = ["The capital of France is", "I think that The capital of France is"]
    nll = oteseq.scoring.continuation_nll(
        model, tok, [p for p in prompts for _ in (0, 1)], [" Norwegian", " Seattle"] * 2).tolist()
    wins = [nll[0] < nll[1], nll[2] < nll[3]]
    assert out["n_pairs"] == 1 and out["latest_wins"] == sum(wins) / 2
    assert math.isclose(out["p_latest"], (math.exp(-nll[0]) + math.exp(-nll[2])) / 2)
    assert experiments.conflict_outcome(model, tok, records[:2])["n_pairs"] == 0


def test_on_batch_and_resume_from_a_partial_result_equal_an_uninterrupted_run(setting,
                                                                               two_batches):
    """on_batch sees t = 0 (pre-edit metrics only), 1, 2; continuing from the editor and the
    t = 1 partial result (through JSON) ends with the uninterrupted run's metrics and weights."""
    model, tok, hp, C0 = setting
    whole, _ = two_batches
    seen = []

    def stop_after_batch_1(editor, t, partial):
        seen.append((t, len(partial.batches), partial.metrics["post"]))
        if t == 1:
            state = {l: editor.memory(l).state_dict() for l in editor.layers}
            seen.append((editor, json.loads(json.dumps(partial.to_dict())), state))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(setting, eval_every=1, restore=False, on_batch=stop_after_batch_1)
    assert seen[:2] == [(0, 0, None), (1, 1, None)]
    editor, saved, _ = seen[2]
    partial = experiments.Result.from_dict(saved)
    with pytest.raises(oteseq.errors.OptionError, match="batch_size"):
        _run(setting, batch_size=3, eval_every=1, editor=editor, partial=partial)
    with pytest.raises(oteseq.errors.OptionError, match="together"):
        _run(setting, eval_every=1, editor=editor)
    ts = []
    rest = _run(setting, eval_every=1, editor=editor, partial=partial,
                on_batch=lambda ed, t, p: ts.append(t))
    assert ts == [2] and rest.to_dict()["metrics"] == whole.to_dict()["metrics"]
    assert [b["batch"] for b in rest.batches] == [1, 2]
    assert all(torch.equal(rest.weights[l], whole.weights[l]) for l in whole.weights)
    assert all(torch.equal(rest.W0[l], whole.W0[l]) for l in whole.W0)


def test_split_repeated_ends_a_batch_before_a_re_edit_and_is_recorded(setting):
    records = [RECORDS[0], RECORDS[1], RECORDS[0], RECORDS[2]]
    result = _run_records(setting, records, batch_size=3, split_repeated=True)
    assert [(b["first"], b["size"]) for b in result.batches] == [(0, 2), (2, 2)]
    assert result.config["n_batches"] == 2 and "repeated" in result.config["batching"]
    assert [b["conflicts"] for b in result.batches] == [0, 1]
    plain = _run(setting, batch_size=3)
    assert "batching" not in plain.config and plain.config["n_batches"] == 2


def _run_records(setting, records, **kw):
    model, tok, hp, C0 = setting
    return experiments.run_sequential(model, tok, records, method="memit-seq", hparams=hp,
                                      stats=C0, templates=["{}"], progress=False, **kw)
