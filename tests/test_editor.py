"""Editor: edits land, revert is bit-exact, failures change nothing, state round-trips."""
from __future__ import annotations

import copy

import pytest
import torch
from test_values import REQUESTS, TEMPLATES, sharp_model
from tiny_models import ARCHS, tiny_model

from oteseq import keys, models, stats
from oteseq.editor import Editor
from oteseq.keywalk import KeyWalk
from oteseq.memory import LinearMemory
from oteseq.errors import (ConflictError, DeviceDtypeError, NonFiniteError, OteseqError,
                           RequestError, StateMismatchError, UnsupportedArchitectureError)
from oteseq.methods import Hparams
from oteseq.requests import Request

TEXTS = ["The capital of France is Paris.", "I think you will like it.",
         "Apple is a company. Microsoft is a company. Google makes search engines.",
         "Toko Yasuda plays the guitar. The Space Needle is in Seattle.",
         "The quick brown fox jumps over the lazy dog."] * 8
HP = Hparams(layers=(0, 1), lam=0.1, ridge=1e-2, v_lr=0.5, v_num_grad_steps=25,
             clamp_norm_factor=30.0, v_weight_decay=1e-3)
EDITS = REQUESTS[:2]  # subject last, one-token targets


def make_editor(arch="gpt2", method="memit-seq", **kwargs):
    model, tok = sharp_model(arch)
    C0 = stats.second_moments(model, tok, HP.layers, corpus=TEXTS, cache=False, progress=False)
    kwargs = {"hparams": HP, "stats": C0, "templates": TEMPLATES, "progress": False, **kwargs}
    return Editor(model, tok, method, **kwargs), model, tok


def top1(model, tok, req: Request) -> bool:
    ids = tok(req.text, return_tensors="pt").input_ids
    target = tok(" " + req.target, add_special_tokens=False).input_ids[0]
    with torch.no_grad():
        return int(model(input_ids=ids).logits[0, -1].argmax()) == target


def weights(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def no_hooks(model) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("arch", ARCHS)
def test_edit_lands_and_revert_is_bit_exact(arch):
    ed, model, tok = make_editor(arch)
    before = weights(model)
    assert not any(top1(model, tok, r) for r in EDITS)
    report = ed.edit(EDITS)
    assert report.n_edits == 2 and set(report.update_norms) == {0, 1}
    assert all(top1(model, tok, r) for r in EDITS)
    assert no_hooks(model)
    ed.revert()
    assert_same(before, weights(model))
    assert ed.ids == [] and ed.n_edits == 0


def record_steps(monkeypatch) -> list[dict]:
    """Spy on LinearMemory.edit: each call's K, V, and W (float64) before and after."""
    steps, real = [], LinearMemory.edit

    def spy(self, K, V, ids=None):
        before = self.W64.clone()
        out = real(self, K, V, ids)
        steps.append({"K": K.double(), "V": V.double(), "W": before, "W_new": self.W64.clone()})
        return out

    monkeypatch.setattr(LinearMemory, "edit", spy)
    return steps


def dense_update(method: str, K, R, C0, P, lam: float, ridge: float) -> torch.Tensor:
    """The first step's update written out from the papers, with explicit inverses (float64):
    MEMIT Δ = R Kᵀ (lam C0 + K Kᵀ + ridge I)⁻¹; AlphaEdit (paper form) Δ = R Kᵀ P (K Kᵀ P +
    ridge I)⁻¹."""
    eye = torch.eye(K.shape[0], dtype=torch.float64)
    if method.startswith("alphaedit"):
        return R @ K.T @ P @ torch.linalg.inv(K @ K.T @ P + ridge * eye)
    return R @ K.T @ torch.linalg.inv(lam * C0 + K @ K.T + ridge * eye)


def half_rank_threshold(C0s: dict) -> float:
    """An absolute eigenvalue threshold that gives every layer a projector of rank ≈ d/2."""
    medians = [float(torch.linalg.eigvalsh(C.double()).median()) for C in C0s.values()]
    return max(medians)


@pytest.mark.parametrize("method", ["memit", "memit-seq", "alphaedit", "alphaedit-nocache"])
def test_every_method_lands_edits_that_equal_the_closed_form(method, monkeypatch):
    model, tok = sharp_model("gpt2")
    C0 = stats.second_moments(model, tok, HP.layers, corpus=TEXTS, cache=False, progress=False)
    hp = HP.replace(nullspace_threshold=half_rank_threshold(C0))
    ed = Editor(model, tok, method, hparams=hp, stats=C0, templates=TEMPLATES, progress=False)
    if method.startswith("alphaedit"):  # a projector that really removes directions
        assert all(0 < ed.rank_P[l] < C0[l].shape[0] for l in hp.layers), ed.rank_P
    before, steps = weights(model), record_steps(monkeypatch)
    ed.edit(EDITS)
    assert all(top1(model, tok, r) for r in EDITS), method
    assert len(steps) == len(hp.layers)
    for layer, step in zip(hp.layers, steps):
        W0 = ed.original_weight(layer).double()
        assert torch.equal(step["W"], W0)  # the first edit of each layer starts from W0
        R = step["V"] - W0 @ step["K"]
        eigval, eigvec = torch.linalg.eigh(C0[layer].double())
        U0 = eigvec[:, eigval < hp.nullspace_threshold]
        expected = dense_update(method, step["K"], R, C0[layer].double(), U0 @ U0.T, hp.lam,
                                hp.ridge)
        got = step["W_new"] - W0
        assert torch.linalg.norm(got - expected) <= 1e-8 * torch.linalg.norm(expected), layer
        assert torch.equal(models.read_weight(models.edited_module(model, layer)),
                           step["W_new"].float())
    changed = {k for k in before if not torch.equal(before[k], model.state_dict()[k])}
    assert changed == {"transformer.h.0.mlp.c_proj.weight", "transformer.h.1.mlp.c_proj.weight"}


@pytest.mark.parametrize("method", ["prune", "rect", "memit-seq-prune-err", "memit-seq-rect-err"])
def test_post_hoc_methods_change_only_the_edited_layers(method):
    ed, model, tok = make_editor(method=method)
    before = weights(model)
    report = ed.edit(EDITS)
    changed = {k for k in before if not torch.equal(before[k], model.state_dict()[k])}
    assert changed == {"transformer.h.0.mlp.c_proj.weight", "transformer.h.1.mlp.c_proj.weight"}
    assert all(report.update_norms[l] > 0 for l in HP.layers)


def test_rome_lands_each_edit_with_the_rank_one_closed_form(monkeypatch):
    from oteseq.editor import _ROME_LAM
    hp = HP.replace(layers=(0,))
    ed, model, tok = make_editor(method="rome", hparams=hp)
    steps = record_steps(monkeypatch)
    report = ed.edit(EDITS)
    assert report.n_edits == 2 and report.steps and set(report.update_norms) == {0}
    assert all(top1(model, tok, r) for r in EDITS)  # both, not one of two
    C0 = ed.stats[0].double()
    A0 = _ROME_LAM * C0 + hp.ridge * torch.eye(C0.shape[0], dtype=torch.float64)
    assert len(steps) == 2
    for step in steps:  # one key k per request: Δ = r (A0⁻¹k)ᵀ / (1 + kᵀA0⁻¹k) (rank one)
        k, r = step["K"], step["V"] - step["W"] @ step["K"]
        assert k.shape[1] == 1
        u = torch.linalg.solve(A0, k)
        expected = r @ u.T / (1.0 + float(k.T @ u))
        got = step["W_new"] - step["W"]
        assert torch.linalg.norm(got - expected) <= 1e-8 * torch.linalg.norm(expected)


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_failure_after_the_first_layer_changes_nothing(error, monkeypatch):
    ed, model, tok = make_editor()
    ed.edit([EDITS[0]])
    before, ids = weights(model), ed.ids

    real, calls = LinearMemory.edit, []

    def second_call_fails(self, *args, **kwargs):  # layer 1's solve, after layer 0 was written
        calls.append(self)
        if len(calls) == 2:
            assert not torch.equal(models.read_weight(models.edited_module(model, 0)),
                                   before["transformer.h.0.mlp.c_proj.weight"].T)
            raise error("injected")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LinearMemory, "edit", second_call_fails)
    with pytest.raises(error):
        ed.edit([EDITS[1]])
    assert_same(before, weights(model))
    assert ed.ids == ids and ed.memory(1).ids == ids and ed.n_edits == 1
    assert no_hooks(model)
    ed.edit([EDITS[1]])  # still usable
    assert top1(model, tok, EDITS[1])


def test_nan_keys_change_nothing(monkeypatch):
    ed, model, tok = make_editor()
    before = weights(model)
    real = keys.compute_keys

    def nan_at_layer_1(*args, **kwargs):
        out = real(*args, **kwargs)
        return {l: K * float("nan") if l == 1 else K for l, K in out.items()}

    monkeypatch.setattr(keys, "compute_keys", nan_at_layer_1)
    real_read = KeyWalk.read

    def nan_at_step_1(self, i):  # the editor reads keys through KeyWalk when it can
        K, z_cur = real_read(self, i)
        return (K * float("nan") if i == 1 else K), z_cur

    monkeypatch.setattr(KeyWalk, "read", nan_at_step_1)
    with pytest.raises(NonFiniteError):
        ed.edit(EDITS)
    assert_same(before, weights(model))
    assert ed.ids == []


def test_save_load_continue_equals_an_uninterrupted_run(tmp_path):
    batches = [[REQUESTS[0]], [REQUESTS[1]], [REQUESTS[2], REQUESTS[3]]]
    ed, model, tok = make_editor()
    fresh = copy.deepcopy(model)
    for batch in batches:
        ed.edit(batch)
    ed2 = Editor(fresh, tok, "memit-seq", hparams=HP, stats=ed.stats, templates=TEMPLATES,
                 progress=False)
    ed2.edit(batches[0])
    ed2.save(tmp_path / "state")
    resumed_model = sharp_model("gpt2")[0]  # a new process would load the model afresh
    ed3 = Editor.load(tmp_path / "state", resumed_model, tok, stats=ed.stats, progress=False)
    assert ed3.templates == TEMPLATES and ed3.hparams == HP and ed3.ids == ed2.ids
    for batch in batches[1:]:
        ed3.edit(batch)
    assert_same(weights(model), weights(resumed_model))
    ed3.revert()  # the loaded editor still knows the original weights
    assert_same(weights(sharp_model("gpt2")[0]), weights(resumed_model))


def test_state_of_another_model_is_refused(tmp_path):
    ed, _, _ = make_editor()
    ed.edit([EDITS[0]])
    ed.save(tmp_path / "state")
    other, tok = tiny_model("gpt2", seed=1)
    with pytest.raises(StateMismatchError):
        Editor.load(tmp_path / "state", other, tok)


def test_conflicts_replace_latest_wins_or_error_changes_nothing():
    ed, model, tok = make_editor()
    old = EDITS[0]
    new = Request(old.prompt, old.subject, "French")  # same (subject, prompt) id
    ed.edit([old])
    report = ed.edit([new])
    assert report.conflicts == (old.id,)
    assert top1(model, tok, new) and not top1(model, tok, old)
    assert ed.memory(0).n_constraints == 1

    ed, model, tok = make_editor(on_conflict="error")
    ed.edit([old])
    before = weights(model)
    with pytest.raises(ConflictError):
        ed.edit([new])
    assert_same(before, weights(model))


def test_bad_inputs_are_named_errors():
    ed, model, tok = make_editor()
    with pytest.raises(RequestError, match="duplicate"):
        ed.edit([EDITS[0], Request(EDITS[0].prompt, EDITS[0].subject, "French")])
    with pytest.raises(RequestError):
        ed.edit(["The capital of France is"])
    with pytest.raises(OteseqError, match="do not exist"):
        make_editor(hparams=HP.replace(layers=(1, 7)))
    with pytest.raises(DeviceDtypeError):
        make_editor(stats={l: torch.zeros(128, 128, device="meta") for l in HP.layers})
    model.config.model_type = "bert"
    with pytest.raises(UnsupportedArchitectureError):
        Editor(model, tok, hparams=HP, stats={}, templates=TEMPLATES)


def test_a_target_already_predicted_is_skipped():
    ed, model, tok = make_editor()
    ed.edit([EDITS[0]])
    before = weights(model)
    report = ed.edit([Request(EDITS[0].prompt, EDITS[0].subject, EDITS[0].target, id="again")])
    assert report.n_edits == 0 and report.skipped == ("again",)
    assert_same(before, weights(model))


def test_retract_is_exact_for_the_memory():
    ed, model, tok = make_editor()
    ed.edit([EDITS[0]])
    after_first = weights(model)
    ed.edit([EDITS[1]])
    ed.retract([EDITS[1].id])
    assert ed.ids == [EDITS[0].id]
    for k, v in after_first.items():  # W is the OTE over the remaining edit (float tolerance)
        torch.testing.assert_close(model.state_dict()[k], v, rtol=1e-4, atol=1e-5)


def test_toy_memit_seq_keeps_earlier_edits_where_memit_forgets(monkeypatch):
    """4 batches of 10 toy edits: the batch-1 constraints W K1 ≈ V1 of every edited layer stay
    fitted under memit-seq and are overwritten under memit (relative residual, measured)."""
    import oteseq
    from oteseq.methods import default_hparams
    from oteseq.toy import context_prefixes

    model, tok = oteseq.load_model("toy")
    reqs = [Request.from_counterfact(r) for r in oteseq.toy.counterfact(40, seed=1)]
    hp = default_hparams("toy", "memit").replace(v_num_grad_steps=5)
    C0 = stats.second_moments(model, tok, hp.layers, corpus="toy", n_samples=200, cache=False,
                              progress=False)
    templates = keys.context_templates(model, tok, source=context_prefixes()[:2])
    real, seen = LinearMemory.edit, []

    def record(self, K, V, ids=None):
        seen.append((K.double(), V.double()))
        return real(self, K, V, ids)

    monkeypatch.setattr(LinearMemory, "edit", record)
    residual = {}
    for method in ("memit", "memit-seq"):
        ed = Editor(model, tok, method, hparams=hp, stats=C0, templates=templates, progress=False)
        seen.clear()
        ed.edit(reqs[:10])
        first = {layer: kv for layer, kv in zip(hp.layers, list(seen))}

        def rel(layer, first=first, ed=ed):
            K, V = first[layer]
            W, W0 = ed.memory(layer).W64, ed.original_weight(layer).double()
            return float((W @ K - V).norm() / (V - W0 @ K).norm())
        after_first = [rel(layer) for layer in hp.layers]
        for b in range(1, 4):
            ed.edit(reqs[10 * b: 10 * b + 10])
        residual[method] = (after_first, [rel(layer) for layer in hp.layers])
        ed.revert()
    # Measured (toy-preserve C0): both 0.14 after batch 1; after batch 4 memit-seq 0.15, memit 0.48.
    assert residual["memit"][0] == pytest.approx(residual["memit-seq"][0], rel=1e-6)
    first, final = residual["memit-seq"]
    assert all(b < 1.25 * a for a, b in zip(first, final))          # aligned: the fit is kept
    growth = {m: min(b - a for a, b in zip(*residual[m])) for m in residual}
    assert growth["memit"] > 10 * max(growth["memit-seq"], 1e-3)      # misaligned: overwritten


def test_toy_replace_lets_the_latest_target_win():
    """A re-edit of the same (subject, relation) on the toy model: with on_conflict="replace"
    the old constraint is retracted before the new targets are optimised, so the model
    predicts the latest target (it used to keep predicting the first one)."""
    import collections

    import oteseq
    from oteseq.methods import default_hparams

    model, tok = oteseq.load_model("toy-v1")
    v1 = oteseq.toy.versions.toy_model("toy-v1")
    chains = collections.defaultdict(list)
    for record in oteseq.toy.conflicts(60, seed=0, world=v1.world(),
                                       distinct_subjects=v1.distinct_subjects):
        chains[record["requested_rewrite"]["subject"], record["requested_rewrite"]["relation_id"]
               ].append(Request.from_counterfact(record))
    chain = chains["Greta Stanhe", "P108"]  # three targets; kept the first before the fix
    hp = default_hparams(model, "memit-seq")
    C0 = stats.second_moments(model, tok, hp.layers, corpus="toy", n_samples=200, cache=False,
                              progress=False)
    ed = Editor(model, tok, "memit-seq", hparams=hp, stats=C0, progress=False)

    def top1(req):
        with torch.no_grad():
            logits = model(tok(req.text, return_tensors="pt").input_ids).logits[0, -1]
        return tok.decode([int(logits.argmax())]).strip()

    try:
        for i, req in enumerate(chain):
            report = ed.edit([req])
            assert report.conflicts == ((req.id,) if i else ())
            assert top1(req) == tok.decode(tok(" " + req.target).input_ids[:1]).strip(), i
        assert ed.ids.count(chain[-1].id) == 1
    finally:
        ed.revert()


def test_cli_runs_a_small_sequential_experiment(tmp_path, monkeypatch):
    import json

    from oteseq.__main__ import main

    monkeypatch.setenv("OTESEQ_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    code = main(["edit", "--model", "toy", "--data", "toy-counterfact", "--n", "4", "--batch", "2",
                 "--out", str(out), "--eval", "--no-progress", "--hparams",
                 '{"v_num_grad_steps": 2, "mom2_n_samples": 100}'])
    assert code == 0
    result = json.loads((out / "results.json").read_text())
    assert len(result["batches"]) == 2 and result["config"]["method"] == "memit-seq"
    assert {"values", "keys", "solve", "total"} <= set(result["timings"])
    assert 0.0 <= result["metrics"]["post"]["efficacy"] <= 1.0
    assert result["config"]["protocol"] and result["complete"]
    assert (out / "plot.png").stat().st_size > 0


def test_bfloat16_model_is_edited_in_its_dtype_and_reverted_exactly():
    model, tok = sharp_model("llama")
    model = model.to(torch.bfloat16)
    C0 = stats.second_moments(model, tok, HP.layers, corpus=TEXTS, cache=False, progress=False)
    ed = Editor(model, tok, "memit-seq", hparams=HP, stats=C0, templates=TEMPLATES,
                progress=False)
    before = weights(model)
    ed.edit(EDITS)
    assert all(top1(model, tok, r) for r in EDITS)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    ed.revert()
    assert_same(before, weights(model))


def test_alphaedit_ridge_is_the_reference_one_except_on_the_toy_model():
    """The reference ridge (10) for real models and toy-v2 (chosen by its sweep); toy-v1's small
    keys take 1 (ridge 10 left its efficacy at 26 %, oteseq/toy/versions.py)."""
    from oteseq.methods import default_hparams
    assert default_hparams("gpt2-xl", "alphaedit").ridge == 10.0
    assert default_hparams("gpt2", "alphaedit-nocache").ridge == 10.0
    assert default_hparams("toy-v1", "alphaedit").ridge == 1.0
    assert default_hparams("toy-v1", "memit-seq").ridge == 0.0
    assert default_hparams("toy", "alphaedit").ridge == default_hparams("toy-v2", "alphaedit").ridge
    assert default_hparams("toy-v2", "alphaedit").ridge == 10.0


def test_bad_options_raise_option_error_naming_the_choices():
    from oteseq.errors import OptionError
    from oteseq.methods import default_hparams
    with pytest.raises(OptionError, match="choose one of") as info:
        default_hparams("toy", "memit-fast")
    assert isinstance(info.value, ValueError)
    with pytest.raises(OptionError, match="on_conflict"):
        LinearMemory(torch.zeros(2, 3), torch.eye(3), 1.0, on_conflict="merge")
