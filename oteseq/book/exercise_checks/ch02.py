"""Checks for chapter 2 (facts as key–value memories): the key at the subject's last token."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ._common import Agreement, as_tensor, report
from ..._types import Model, Tokenizer

#: float32 keys computed along another path differ by round-off only
KEY_TOLERANCE = 1e-4

_CASES = (("{} is a city in the north.", "Varnholm"),
          ("The capital of {} is", "France"),
          ("I think {} plays the guitar.", "Toko Yasuda"))


def check_subject_key(fn: Callable, model: Model | None = None, tok: Tokenizer | None = None) -> Agreement:
    """Check ``fn(model, tok, prompt, subject, layer) -> k``: the key ``k: (d_in,)`` — the input
    of layer ``layer``'s edited matrix at the subject's last token of the bare prompt.

    Compared with :func:`oteseq.keys.compute_keys` (template ``"{}"``) on a few prompts and
    every layer; ``model, tok`` default to the toy model. Returns the largest relative error.
    """
    from oteseq import keys, models
    from oteseq.requests import Request

    if model is None or tok is None:
        from oteseq.loading import load_model
        model, tok = load_model("toy")
    name, errors = "check_subject_key", []
    for case in range(models.n_layers(model)):
        prompt, subject = _CASES[case % len(_CASES)]
        req = Request(prompt=prompt, subject=subject, target="x", relation="check")
        expected = keys.compute_keys(model, tok, [req], [case], templates=["{}"])[case][:, 0]
        try:
            with torch.no_grad():
                got = fn(model, tok, prompt, subject, case)
        except AssertionError:
            raise
        except Exception as err:  # the reader's bug: say where, keep the traceback
            raise AssertionError(f"{name}: your function raised {type(err).__name__}: {err} "
                                 f"for prompt {prompt!r}, subject {subject!r}, layer {case}"
                                 ) from err
        got = as_tensor(name, got, expected, "key")
        expected = expected.detach().to(torch.float64)
        error = float(torch.linalg.norm(got.cpu() - expected.cpu()) / torch.linalg.norm(expected))
        if not error <= KEY_TOLERANCE:
            raise AssertionError(
                f"{name}: for {prompt.format(subject)!r} at layer {case} your key differs from "
                f"the edited matrix's input at the subject's last token by a relative error of "
                f"{error:.2e}. Hint: trace the INPUT of oteseq.models.edited_module(model, "
                f"layer) (oteseq.hooks.Trace(..., retain_input=True)) and take the token "
                f"oteseq.keys.subject_last_index(tok, prompt, subject).")
        errors.append(error)
    return report(name, "the edited matrix's input at the subject's last token", errors)


__all__ = ["check_subject_key"]
