"""The chapter 2, 4 and 5 exercise checks accept the right answer and reject typical mistakes."""
from __future__ import annotations

import pytest
import torch

from oteseq import hooks, keys, models, ols
from oteseq.book.exercise_checks.ch02 import check_subject_key
from oteseq.book.exercise_checks.ch04 import check_disturbance
from oteseq.book.exercise_checks.ch05 import check_misaligned_se
from tiny_models import tiny_model


@pytest.fixture(scope="module")
def gpt2():
    return tiny_model("gpt2", seed=0)


def _key_at(model, tok, prompt, subject, layer, index):
    ids = torch.tensor([tok(prompt.format(subject)).input_ids])
    with torch.no_grad(), hooks.Trace(models.edited_module(model, layer),
                                      retain_input=True) as trace:
        model(ids)
    return trace.input[0, index]


def test_subject_key_accepts_the_input_at_the_subject_last_token(gpt2, capsys):
    model, tok = gpt2

    def right(model, tok, prompt, subject, layer):
        return _key_at(model, tok, prompt, subject, layer,
                       keys.subject_last_index(tok, prompt, subject))

    assert check_subject_key(right, model, tok) <= 1e-6
    assert "check_subject_key" in capsys.readouterr().out


def test_subject_key_rejects_the_last_token_and_the_output(gpt2):
    model, tok = gpt2

    def last_token(model, tok, prompt, subject, layer):
        return _key_at(model, tok, prompt, subject, layer, -1)

    def output(model, tok, prompt, subject, layer):
        ids = torch.tensor([tok(prompt.format(subject)).input_ids])
        with torch.no_grad(), hooks.Trace(models.mlp(model, layer)) as trace:
            model(ids)
        return trace.output[0, keys.subject_last_index(tok, prompt, subject)]

    with pytest.raises(AssertionError, match="relative error"):
        check_subject_key(last_token, model, tok)
    with pytest.raises(AssertionError, match="shape"):
        check_subject_key(output, model, tok)


def test_subject_key_reports_a_crash(gpt2):
    model, tok = gpt2
    with pytest.raises(AssertionError, match="raised ZeroDivisionError"):
        check_subject_key(lambda *args: 1 / 0, model, tok)


def test_disturbance_accepts_the_trace_form_and_rejects_its_square(capsys):
    assert check_disturbance(lambda d, C0: torch.trace(d @ C0 @ d.T).sqrt()) <= 1e-12
    assert "check_disturbance" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="square"):
        check_disturbance(lambda d, C0: torch.trace(d @ C0 @ d.T))
    with pytest.raises(AssertionError, match="one number"):
        check_disturbance(lambda d, C0: d @ C0)


def test_misaligned_se_accepts_plain_memit_and_rejects_memit_seq(capsys):
    def plain(W0, C0, batches, lam):
        return ols.se(W0, C0, batches, lam, aligned=False)

    def aligned(W0, C0, batches, lam):
        return ols.se(W0, C0, batches, lam, aligned=True)

    def last_only(W0, C0, batches, lam):
        return plain(W0, C0, batches, lam)[-1]

    assert check_misaligned_se(plain) <= 1e-10
    assert "check_misaligned_se" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="memit-seq"):
        check_misaligned_se(aligned)
    with pytest.raises(AssertionError, match="list"):
        check_misaligned_se(last_only)


def test_misaligned_se_rejects_in_place_updates():
    def in_place(W0, C0, batches, lam):
        W0 += 1.0
        return ols.se(W0, C0, batches, lam, aligned=False)

    with pytest.raises(AssertionError, match="in place"):
        check_misaligned_se(in_place)
