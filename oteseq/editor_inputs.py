"""Validation of what :class:`oteseq.editor.Editor` is given: layers, requests, hyperparameters,
templates, C0 statistics, a state file's model, and prompt lengths against the context.
Each failure is a named error of :mod:`oteseq.errors` that says what to do."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Sequence

import torch

from . import models
from .errors import DeviceDtypeError, NonFiniteError, OptionError, RequestError, StateMismatchError
from .requests import Request
from ._types import Model, Tokenizer



def checked_layers(model: Model, layers) -> tuple[int, ...]:
    count = models.n_layers(model)
    bad = [l for l in layers if not 0 <= l < count]
    if bad:
        raise OptionError(f"hparams.layers {list(layers)}: layer(s) {bad} do not exist, the model "
                          f"has layers 0..{count - 1}; choose layers in that range")
    return tuple(layers)



def checked_requests(requests) -> list[Request]:
    if isinstance(requests, (Request, str, bytes, dict)) or not isinstance(requests, Iterable):
        raise RequestError(f"edit takes a list of oteseq.Request, got {type(requests).__name__} "
                           f"{requests!r:.80}; wrap a single request as ed.edit([request])")
    requests = list(requests)
    bad = [r for r in requests if not isinstance(r, Request)]
    if bad:
        raise RequestError(f"{len(bad)} item(s) are not oteseq.Request, e.g. {bad[0]!r}; build "
                           "them with Request(prompt=..., subject=..., target=...)")
    ids = [r.id for r in requests]
    dups = [x for i, x in enumerate(ids) if x in ids[:i]]
    if dups:
        raise RequestError(f"duplicate request id(s) {sorted(set(map(str, dups)))} in one edit "
                           "call; keep one request per (subject, relation) or give distinct ids")
    return requests



def checked_hparams(hparams, model: Model, method):
    from .methods import Hparams, default_hparams
    if hparams is None:
        return default_hparams(model, method)
    if isinstance(hparams, dict):
        return Hparams.from_dict(hparams)
    if not isinstance(hparams, Hparams):
        raise OptionError(f"hparams must be an oteseq.methods.Hparams (or a dict of its fields), "
                          f"got {type(hparams).__name__}; start from "
                          "oteseq.methods.default_hparams(model, method).replace(...)")
    return hparams



def checked_templates(templates) -> list[str] | None:
    if templates is None:
        return None
    if isinstance(templates, (str, bytes)) or not isinstance(templates, Iterable):
        raise OptionError(f"templates must be a list of strings each holding one '{{}}', got "
                          f"{type(templates).__name__}")
    templates = list(templates)
    bad = [t for t in templates if not isinstance(t, str) or t.count("{}") != 1]
    if bad or not templates:
        raise OptionError(f"templates must be a non-empty list of strings each holding exactly "
                          f"one '{{}}' (where the prompt goes), e.g. ['{{}}', 'Today. {{}}']; "
                          f"bad: {bad[:3]!r}")
    return templates



def checked_stats(model: Model, tok: Tokenizer, hp, modules, stats, progress) -> dict:
    if stats is not None and not isinstance(stats, Mapping):
        raise OptionError(f"stats must map each edited layer to its C0 tensor ({{layer: C0}}), "
                          f"got {type(stats).__name__} {stats!r:.60}; compute it with "
                          "oteseq.stats.second_moments(model, tok, layers)")
    if stats is None:
        from . import stats as stats_module
        stats = stats_module.second_moments(model, tok, list(modules), corpus=hp.mom2_corpus,
                                            n_samples=hp.mom2_n_samples, progress=progress)
    missing = [l for l in modules if l not in stats]
    if missing:
        raise OptionError(f"stats has no C0 for layer(s) {missing}; pass second moments of every "
                          f"edited layer {list(modules)} (oteseq.stats.second_moments)")
    for layer, module in modules.items():
        if not isinstance(stats[layer], torch.Tensor):
            raise DeviceDtypeError(f"stats[{layer}] is a {type(stats[layer]).__name__}, not a "
                                   "tensor; pass C0 as a (d_in, d_in) torch.Tensor")
        if stats[layer].device != models.module_device(module):
            raise DeviceDtypeError(
                f"C0 of layer {layer} is on {stats[layer].device} but the edited matrix on "
                f"{models.module_device(module)}; move it: stats = {{l: C.to(device) ...}}")
    return {l: stats[l] for l in modules}



class LazyStats(dict):
    """C0 for a loaded editor, computed (from the cache) only if a revert needs it."""

    def __init__(self, model: Model, tok: Tokenizer, hp, modules, stats, progress):
        super().__init__()
        self._args = (model, tok, hp, modules, stats, progress)

    def __missing__(self, layer):
        self.update(checked_stats(*self._args))
        return dict.__getitem__(self, layer)



def check_same_model(meta: dict, model: Model) -> None:
    fingerprint = models.model_fingerprint(model)
    if meta["fingerprint"] != fingerprint:
        raise StateMismatchError(f"the state was saved for model {meta['model']!r} (fingerprint "
                                 f"{meta['fingerprint']}), not this one ({fingerprint}); load it "
                                 "into the model it was made for")
    names = [models.edited_name(model, l) for l in meta["hparams"]["layers"]]
    if names != meta["layer_names"]:
        raise StateMismatchError(f"saved layers {meta['layer_names']} differ from {names}")



def check_finite(x: torch.Tensor, what: str) -> None:
    if not torch.isfinite(x).all():
        raise NonFiniteError(f"{what} contain NaN or inf; nothing was changed. Lower v_lr or "
                             "check the model's dtype (fp16 overflow)")



def context_limit(model: Model) -> int | None:
    config = model.config
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None



def check_lengths(model: Model, tok: Tokenizer, requests: Sequence[Request],
                  templates: Sequence[str]) -> None:
    """Every template × prompt + target fits the model's context (else a RequestError naming
    the request and the excess, instead of an IndexError from the position embedding)."""
    limit = context_limit(model)
    if limit is None or not requests:
        return
    count = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    longest = max(templates or ["{}"], key=lambda t: count(t.replace("{}", "")))
    extra = count(longest.replace("{}", "")) + 2  # + BOS and a possible merge at the seam
    for i, r in enumerate(requests):
        target = count(" " + r.target)
        if count(r.text) + target + extra <= limit:
            continue
        need = max(len(tok(t.replace("{}", r.text))["input_ids"]) for t in templates or ["{}"])
        need += target
        if need > limit:
            raise RequestError(f"request {i} ({r.id!r}): the longest context template + prompt + "
                               f"target is {need} tokens, {need - limit} more than the model's "
                               f"context of {limit}; shorten the prompt or the target")


__all__ = [
    "LazyStats", "check_finite", "check_lengths", "check_same_model", "checked_hparams",
    "checked_layers", "checked_requests", "checked_stats", "checked_templates", "context_limit",
]
