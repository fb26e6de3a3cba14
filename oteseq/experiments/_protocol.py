"""The sequential-editing protocol of the paper (editing-anchors §6.3) and its one-time reference.

``n`` records are edited in ``T = ⌈n/B⌉`` batches of ``B``, weights never restored; then every
edited record is evaluated on the final model (the tables' "post" numbers). The pre-edit
numbers come from the unedited model, computed before the first edit (never on the edited
model, as EasyEdit #668 did). Optional curves evaluate the records edited so far every
``eval_every`` batches and general ability every ``general_every`` batches.
"""
from __future__ import annotations

import math
import time
from typing import Any, Literal, Mapping, Sequence

import torch

from .. import models
from ..editor import Editor
from ..errors import OptionError, OteseqError
from ..requests import Request
from ._result import PROTOCOL, Result, versions

EvalName = Literal["counterfact", "zsre"]
_RATES = ("efficacy", "generalization", "specificity", "score")


def _evaluator(evaluate: str):
    """The metric function for ``evaluate``, looked up at call time."""
    from .. import evaluate as ev
    if evaluate not in ("counterfact", "zsre"):
        raise OptionError(f"evaluate={evaluate!r}; use 'counterfact' or 'zsre'")
    return getattr(ev, evaluate)


def _requests(records: Sequence[Mapping[str, Any]], evaluate: str) -> list[Request]:
    make = Request.from_counterfact if evaluate == "counterfact" else Request.from_zsre
    return [make(r) for r in records]


def is_toy(model) -> bool:
    """Whether ``model`` is one of the packaged toy-world models."""
    from ..loading import toy_name
    return toy_name(model) is not None


def _general(model, tok, exclude) -> dict:
    """General ability: the toy suite (untouched facts, text NLL) or the GLUE-style suite."""
    if is_toy(model):
        from ..toy import general_ability
        from ..toy.versions import find
        version = find(model)
        return general_ability(model, tok, exclude=exclude, world=version.world(),
                               untouched=version.untouched)
    from ..evaluate import general_ability
    return general_ability(model, tok)


def _weights(model, layers) -> dict:
    return {l: models.read_weight(models.edited_module(model, l)).detach().to("cpu", torch.float64)
            for l in layers}


def _stats(model, tok, hparams, layers, stats, progress, timings) -> Mapping:
    if stats is not None:
        return stats
    from ..stats import second_moments
    start = time.perf_counter()
    C0 = second_moments(model, tok, list(layers), corpus=hparams.mom2_corpus,
                        n_samples=hparams.mom2_n_samples, progress=progress)
    timings["stats"] = time.perf_counter() - start
    return C0


class _Timer:
    """Sums wall-clock seconds per phase into a dict."""

    def __init__(self, totals: dict):
        self.totals = totals

    def run(self, phase: str, fn, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.totals[phase] = self.totals.get(phase, 0.0) + time.perf_counter() - start


def _config(model, method, hparams, batch_size, n, seed, evaluate, data, eval_every,
            general_every, on_conflict, protocol) -> dict:
    from ..loading import toy_name
    toy = toy_name(model)
    name = ("toy" if toy == "toy-v1" else toy) if toy else str(getattr(model.config,
                                                                       "name_or_path", ""))
    return {"method": method, "hparams": hparams.to_dict(), "batch_size": batch_size, "n": n,
            "n_batches": math.ceil(n / batch_size) if n else 0, "seed": seed, "model": name,
            "fingerprint": models.model_fingerprint(model), "data": data, "evaluate": evaluate,
            "on_conflict": on_conflict, "protocol": protocol,
            "curves": {"eval_every": eval_every, "general_every": general_every,
                       "records": "edited so far", "general": "toy" if is_toy(model) else "glue"}}


def run_sequential(model, tok, records: Sequence[Mapping[str, Any]], *, method: str,
                   batch_size: int, hparams=None, stats=None, eval_every: int | None = None,
                   general_every: int | None = None, evaluate: EvalName = "counterfact",
                   seed: int = 0, progress: bool = True, on_conflict: str = "replace",
                   restore: bool = True, templates=None, data: str | None = None,
                   protocol: str = PROTOCOL, final_checks: Mapping | None = None) -> Result:
    """Edit ``records`` in ⌈n/B⌉ batches of ``batch_size`` with ``method``, then evaluate all.

    ``records`` are CounterFact- or zsRE-schema dicts (``evaluate`` says which). Pre-edit
    metrics of all records are computed on the unedited model before any edit; post-edit
    metrics of all records on the final model. Every ``eval_every`` batches the records edited
    so far are evaluated, every ``general_every`` batches general ability (toy model: recall of
    facts outside all the run's (subject, relation) pairs, text NLL; other models: GLUE-style).
    ``restore=True`` reverts the edited matrices at the end (also after an error), so several
    methods can run on one model. ``final_checks`` maps names to ``fn(model, tok) -> dict``
    run on the final model (``metrics["final_checks"]``). Weights before and after stay on the
    result (not in JSON).
    """
    if batch_size < 1:
        raise OptionError(f"batch_size={batch_size}; give a positive number of edits per batch")
    score, records = _evaluator(evaluate), list(records)
    requests = _requests(records, evaluate)
    torch.manual_seed(seed)
    timings: dict[str, float] = {"stats": 0.0}
    clock, start = _Timer(timings), time.perf_counter()
    from ..methods import default_hparams
    hparams = hparams if hparams is not None else default_hparams(model, method)
    C0 = _stats(model, tok, hparams, hparams.layers, stats, progress, timings)
    ed = Editor(model, tok, method, hparams=hparams, stats=C0, on_conflict=on_conflict,
                progress=False, templates=templates, seed=seed)
    config = _config(model, method, hparams, batch_size, len(records), seed, evaluate,
                     data, eval_every, general_every, on_conflict, protocol)
    try:
        W0 = _weights(model, ed.layers)
        pre = clock.run("evaluation", score, model, tok, records)
        curves, batches = [], []
        if general_every:
            pre["general"] = clock.run("general", _general, model, tok, [r.id for r in requests])
        _edit_all(ed, model, tok, records, requests, batch_size, score, clock, eval_every,
                  general_every, curves, batches, progress)
        post = clock.run("evaluation", score, model, tok, records)
        checks = {name: clock.run("evaluation", fn, model, tok)
                  for name, fn in (final_checks or {}).items()}
        weights = _weights(model, ed.layers)
    finally:
        if restore:
            ed.revert()
    timings["total"] = time.perf_counter() - start
    metrics = {"pre": pre, "post": post, "curves": curves, "final_checks": checks}
    return Result(config, versions(), timings, metrics, batches, weights, W0)


def _edit_all(ed, model, tok, records, requests, B, score, clock, eval_every, general_every,
              curves, batches, progress) -> None:
    """The loop over batches; fills ``curves``, ``batches`` and the timings."""
    from tqdm.auto import tqdm
    T = math.ceil(len(requests) / B)
    for t in tqdm(range(1, T + 1), desc=f"{ed.method} batches", disable=not progress):
        report = clock.run("edit", ed.edit, requests[(t - 1) * B: t * B])
        for phase in ("values", "keys", "solve"):
            clock.totals[phase] = clock.totals.get(phase, 0.0) + report.timings.get(phase, 0.0)
        batches.append({"batch": t, "n_edits": report.n_edits, "skipped": len(report.skipped),
                        "conflicts": len(report.conflicts),
                        "update_norms": {str(l): v for l, v in report.update_norms.items()}})
        last = t == T
        point = {"batch": t, "n_edited": min(t * B, len(requests))}
        if eval_every and (t % eval_every == 0 or last):
            m = clock.run("evaluation", score, model, tok, records[:t * B])
            point.update({k: m[k] for k in _RATES if k in m})
        if general_every and (t % general_every == 0 or last):
            # the same untouched facts at every point: all of the run's pairs are excluded
            point["general"] = clock.run("general", _general, model, tok,
                                         [r.id for r in requests])
        if len(point) > 2:
            curves.append(point)


def run_one_time(model, tok, records: Sequence[Mapping[str, Any]], *, method: str = "memit-seq",
                 **options) -> Result:
    """One-time editing (OTE): all ``n`` records in a single batch (the paper's E2000 column).

    Same options as :func:`run_sequential` except ``batch_size`` (= n) and ``eval_every``.
    """
    options.pop("eval_every", None)
    n = max(len(records), 1)
    return run_sequential(model, tok, records, method=method, batch_size=n, eval_every=None,
                          **options)


def weight_distance(sequential: Result, one_time: Result) -> dict[int, float]:
    """Per edited layer, ``‖W_seq − W_ote‖_F / ‖W_ote − W0‖_F``: how far sequential
    editing ends from one-time editing, relative to the size of the one-time update.

    For fixed keys and values per layer the two are equal (recursive least squares), so this
    would be ~1e-15 in float64. In the network the keys of later layers and the target values
    depend on the edits made before them, so the ratio measures how far the model departs from
    the exact linear equivalence. Both results must keep their weights (same process).
    """
    if not sequential.weights or not one_time.weights:
        raise OteseqError("a result loaded from JSON has no weights; compare results returned "
                          "by run_sequential / run_one_time in the same session")
    out = {}
    for layer, W_ote in one_time.weights.items():
        W0 = one_time.W0[layer]
        out[layer] = float(torch.linalg.matrix_norm(sequential.weights[layer] - W_ote)
                           / torch.linalg.matrix_norm(W_ote - W0))
    return out


__all__ = ["is_toy", "run_one_time", "run_sequential", "weight_distance"]
