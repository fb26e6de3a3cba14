"""Target values: the batched optimisation, by the suffix replay (and by the full-position
replay it falls back to), equals MEMIT's one-at-a-time loop; fallbacks happen, and are logged,
exactly when a replay does not reproduce the model."""
from __future__ import annotations

import logging

import pytest
import torch
from tiny_models import ARCHS, tiny_model

import oteseq
from oteseq import models, values
from oteseq.values import replay, suffix
from oteseq.editor import block_output_at_subject
from oteseq.errors import OptionError
from oteseq.methods import Hparams
from oteseq.requests import Request

TEMPLATES = ["{}", "I think you will like it. {}"]
# subject at the end of the prompt: the δ reaches the first target logit through the residual,
# so even a random 3-layer model can be pushed around
REQUESTS = [Request("The capital of {}", "France", "was"),
            Request("I think {}", "Toko Yasuda", "French"),
            Request("The quick brown fox jumps over {}", "the lazy dog", "Paris"),
            Request("{} is a company. Microsoft", "Apple", "the")]


def sharp_model(arch: str):
    """A tiny model whose logits are 30× sharper (final norm scaled), so losses can fall."""
    model, tok = tiny_model(arch)
    with torch.no_grad():
        models.final_norm(model).weight.mul_(30)
    return model, tok


def hp(steps: int) -> Hparams:
    return Hparams(layers=(0, 1), v_lr=0.5, v_num_grad_steps=steps, clamp_norm_factor=30.0,
                   kl_factor=0.0625, v_weight_decay=1e-3)


def count_suffix_calls(monkeypatch) -> list[int]:
    """Spy on the suffix replay: the returned list grows by one per replayed chunk-step."""
    calls, original = [], suffix.SuffixReplay.__call__

    def spy(self, *args):
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(suffix.SuffixReplay, "__call__", spy)
    return calls


def assert_same_values(got, ref):
    assert got.steps.tolist() == ref.steps.tolist()
    torch.testing.assert_close(got.z_init, ref.z_init, rtol=1e-5, atol=1e-5)  # batch shapes differ
    torch.testing.assert_close(got.z, ref.z, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.loss, ref.loss, rtol=1e-4, atol=1e-4)


def early_stopping_reference(model, tok, requests, layer, monkeypatch):
    """The reference loop with STOP_LOSS set so that some requests stop early, others not."""
    probe = values.one_at_a_time(model, tok, requests, layer, hp(4), templates=TEMPLATES)
    # stop halfway between the 2nd and 3rd smallest loss after 3 steps (no request sits on
    # the threshold there): some requests stop early, others run to the end
    low = probe.loss.sort().values
    monkeypatch.setattr(values.prompts, "STOP_LOSS", float(low[1] + low[2]) / 2)
    ref = values.one_at_a_time(model, tok, requests, layer, hp(10), templates=TEMPLATES)
    assert len(set(ref.steps.tolist())) > 1, "the test must exercise early stopping"
    return ref


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_equals_one_at_a_time_with_early_stopping(arch, monkeypatch, caplog):
    model, tok = sharp_model(arch)
    ref = early_stopping_reference(model, tok, REQUESTS, 1, monkeypatch)
    p = values.build_prompts(tok, REQUESTS, TEMPLATES)
    assert len(set(p.lookup.tolist())) > 2 and (p.attention_mask == 0).any()  # ragged rows
    calls = count_suffix_calls(monkeypatch)
    for replays in (("suffix",), ("full",)):
        for max_tokens in (10_000, 20):  # one chunk for all, and one request per chunk
            before = len(calls)
            got = values.compute_values(model, tok, REQUESTS, 1, hp(10), templates=TEMPLATES,
                                        max_tokens=max_tokens, replays=replays)
            assert_same_values(got, ref)
            assert (len(calls) > before) == (replays == ("suffix",))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # no fallback


def test_suffix_replay_on_the_toy_model(monkeypatch, caplog):
    """The toy model runs sdpa attention (a bool mask); δ two blocks below the top."""
    model, tok = oteseq.load_model("toy")
    requests = [Request.from_counterfact(r) for r in oteseq.toy.counterfact(3, 0)]
    layer = models.n_layers(model) - 3
    ref = values.one_at_a_time(model, tok, requests, layer, hp(4), templates=TEMPLATES)
    calls = count_suffix_calls(monkeypatch)
    got = values.compute_values(model, tok, requests, layer, hp(4), templates=TEMPLATES)
    assert calls and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert_same_values(got, ref)


def test_optimisation_lowers_the_loss_and_respects_the_clamp():
    model, tok = sharp_model("gpt2")
    start = values.compute_values(model, tok, REQUESTS, 0, hp(1), templates=TEMPLATES)
    h = hp(15).replace(clamp_norm_factor=5.0)
    end = values.compute_values(model, tok, REQUESTS, 0, h, templates=TEMPLATES)
    assert end.loss.sum() < start.loss.sum()
    assert (end.loss[:2] < 0.5 * start.loss[:2]).all()  # subject at the end: directly reachable
    ratio = (end.z - end.z_init).norm(dim=0) / end.z_init.norm(dim=0)
    assert (ratio <= 5.0 * (1 + 1e-5)).all()
    assert (start.steps == 0).all() and torch.equal(start.z, start.z_init)


def test_z_init_is_the_block_output_at_the_bare_prompt():
    model, tok = tiny_model("llama")  # BOS-prepending tokenizer
    got = values.compute_values(model, tok, REQUESTS, 1, hp(1), templates=TEMPLATES).z_init
    torch.testing.assert_close(got, block_output_at_subject(model, tok, REQUESTS, 1))


def test_prompt_rows_carry_the_target_tokens():
    _, tok = tiny_model("llama")
    p = values.build_prompts(tok, REQUESTS, TEMPLATES)
    assert p.per_request == len(TEMPLATES) + 1 and p.input_ids.shape[0] == 4 * p.per_request
    for r, req in enumerate(REQUESTS):
        target = tok(" " + req.target, add_special_tokens=False).input_ids
        for j in range(p.per_request):
            row = r * p.per_request + j
            pos = torch.nonzero(p.labels[row] != -100)[:, 0].tolist()
            if j == p.per_request - 1:  # the KL prompt has no labels
                assert pos == []
                continue
            assert p.labels[row, pos].tolist() == target
            # logits at position t score token t + 1: the inputs after pos[0] are the target
            assert p.input_ids[row, pos[0] + 1: pos[-1] + 1].tolist() == target[:-1]
            assert pos[0] >= int(p.lookup[row])


def test_no_hooks_and_no_weight_gradients_are_left_behind():
    model, tok = sharp_model("gpt_neox")
    values.compute_values(model, tok, REQUESTS[:2], 0, hp(3), templates=TEMPLATES)
    values.one_at_a_time(model, tok, REQUESTS[:1], 0, hp(3), templates=TEMPLATES)
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    assert all(p.grad is None for p in model.parameters())


def test_a_wrong_suffix_replay_is_caught_and_the_full_replay_used(monkeypatch, caplog):
    model, tok = sharp_model("llama")
    original = suffix.SuffixReplay.__call__

    def off_by_a_little(self, *args):  # what an unhandled architecture detail would do
        out = original(self, *args)
        return out + 0.05 * torch.nn.functional.one_hot(torch.tensor(0), out.shape[-1])

    monkeypatch.setattr(suffix.SuffixReplay, "__call__", off_by_a_little)
    got = values.compute_values(model, tok, REQUESTS, 1, hp(4), templates=TEMPLATES)
    ref = values.one_at_a_time(model, tok, REQUESTS, 1, hp(4), templates=TEMPLATES)
    assert_same_values(got, ref)
    assert "suffix replay" in caplog.text and "one-request-at-a-time" not in caplog.text


def test_a_replay_mismatch_falls_back_to_the_reference_loop(monkeypatch, caplog):
    model, tok = sharp_model("qwen2")

    def mismatch(*args):
        raise replay.ReplayMismatch("injected")

    monkeypatch.setattr(replay, "check", mismatch)
    got = values.compute_values(model, tok, REQUESTS[:2], 0, hp(3), templates=TEMPLATES)
    ref = values.one_at_a_time(model, tok, REQUESTS[:2], 0, hp(3), templates=TEMPLATES)
    assert torch.equal(got.z, ref.z) and "one-request-at-a-time" in caplog.text
    assert "suffix replay" in caplog.text and "full replay" in caplog.text


def test_block_arguments_the_suffix_replay_does_not_know_are_refused():
    index = torch.tensor([[1, 2], [3, 3]])
    allowed = torch.ones(2, 1, 2, 5, dtype=torch.bool)
    known = {"attention_mask": None, "cache": object(), "use_cache": True,
             "position_ids": torch.arange(4)[None]}
    out = suffix._suffix_arguments(0, known, index, allowed, "sdpa")
    assert "cache" not in out and out["position_ids"].tolist() == index.tolist()
    assert out["attention_mask"] is allowed and out["use_cache"] is False
    for extra in ({"alibi": torch.zeros(2, 4)}, {"cache_position": torch.arange(4)},
                  {"attention_mask": torch.zeros(2, 1, 4, 4, dtype=torch.int64)}):
        with pytest.raises(suffix.Unsupported):
            suffix._suffix_arguments(0, {**known, **extra}, index, allowed, "sdpa")
    with pytest.raises(suffix.Unsupported):  # eager attention needs the captured float mask
        suffix._suffix_arguments(0, known, index, allowed, "eager")


def test_an_unknown_replay_is_an_option_error():
    model, tok = tiny_model("gpt2")
    with pytest.raises(OptionError, match="unknown replay 'fast'"):
        values.compute_values(model, tok, REQUESTS[:1], 1, hp(2), templates=TEMPLATES,
                              replays=("fast",))


def test_loss_log_probs_equal_log_softmax_and_gather_with_their_gradient():
    torch.manual_seed(0)
    logits = (torch.randn(7, 50, dtype=torch.float64) * 3).requires_grad_(True)
    labels = torch.tensor([3, 0, 49, 3, 17])
    weights = torch.randn(5, dtype=torch.float64), torch.randn(2, 50, dtype=torch.float64)
    tok, kl = values.prompts.loss_log_probs(logits, labels)
    grad = torch.autograd.grad((tok * weights[0]).sum() + (kl * weights[1]).sum(), logits)[0]
    logp = torch.log_softmax(logits, dim=-1)
    tok_ref, kl_ref = logp[:5].gather(1, labels[:, None])[:, 0], logp[5:]
    grad_ref = torch.autograd.grad((tok_ref * weights[0]).sum() + (kl_ref * weights[1]).sum(),
                                   logits)[0]
    torch.testing.assert_close(tok, tok_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kl, kl_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-12, atol=1e-12)
