"""What :class:`oteseq.editor.Editor` reads from the model: context templates, the unedited
weight, whether a target is already predicted, the block output at subjects, and parameters
holding NaN or infinity."""
from __future__ import annotations

from typing import Sequence

import torch

from . import hooks, keys, models, profiles
from .batching import pad_token_id, right_padded
from .errors import OptionError, StateMismatchError
from .memory import LinearMemory
from .requests import Request
from .scoring import score_continuations
from ._types import Model, Tokenizer



def templates(model: Model, tok: Tokenizer, hp, seed: int) -> list[str]:
    """Context templates for keys and values: sampled from the model, or a fixed set of
    prefixes a model profile supplies (as many as ``hp`` asks for)."""
    if hp.template_source != "sample":
        source = profiles.templates(hp.template_source, model)
        if source is None:
            raise OptionError(f"template_source={hp.template_source!r} is not a template set "
                              f"of a model profile; known: {profiles.names('templates')}")
        count = sum(n for _, n in hp.context_templates)
        return keys.context_templates(model, tok, source=source[:count])
    out = ["{}"]
    for length, count in hp.context_templates:
        out += keys.context_templates(model, tok, n=count, length=length, seed=seed)[1:]
    return out



def original_weight(mem: LinearMemory, module, layer: int) -> torch.Tensor:
    """The unedited matrix: the memory's W0, which must match the model now (or its W)."""
    now = models.read_weight(module)
    W0 = mem.state_dict()["tensors"]["W0"].to(now.dtype)
    if not (torch.equal(now, W0.to(now.device)) or torch.equal(now, mem.W.to(now.device))):
        raise StateMismatchError(f"layer {layer}: the model's weight is neither the saved original "
                                 "nor the saved edited one; load into a fresh copy of the model")
    return W0.cpu()



def already_predicted(model: Model, tok: Tokenizer, requests: list[Request]) -> list[bool]:
    """Whether greedy decoding after the prompt already gives every target token (teacher-forced
    argmax hits of ``" " + target`` after the prompt, :func:`oteseq.scoring`)."""
    scores = score_continuations(model, tok, [r.text for r in requests],
                                 [" " + r.target for r in requests])
    return [bool(s.correct.all()) for s in scores]



def block_output_at_subject(model: Model, tok: Tokenizer, requests: Sequence[Request], layer: int,
                            fact_token: str = "subject_last") -> torch.Tensor:
    """Residual output ``Z`` (d_model, n) of block ``layer`` at each bare prompt's fact token."""
    rows = [list(tok(r.text).input_ids) for r in requests]
    index = [keys.subject_last_index(tok, r.prompt, r.subject, mode=fact_token) for r in requests]
    ids, mask = right_padded(rows, pad_token_id(tok), models.input_device(model))
    with torch.no_grad(), hooks.Trace(models.block(model, layer), stop=True) as trace:
        model(input_ids=ids, attention_mask=mask, use_cache=False)
    out = trace.output
    rows_at = torch.arange(len(rows), device=out.device)
    return out[rows_at, torch.tensor(index, device=out.device)].float().T



def nonfinite_parameters(model: Model) -> list[str]:
    """Names of the model's parameters holding a NaN or an infinity."""
    with torch.no_grad():
        return [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]


__all__ = [
    "already_predicted", "block_output_at_subject", "nonfinite_parameters", "original_weight",
    "templates",
]
