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
from typing import Any, Callable, Literal, Mapping, Sequence

import torch

from .. import models, profiles
from .._timing import timed
from ..editor import Editor
from ..errors import OptionError, OteseqError
from ..requests import Request
from ._result import PROTOCOL, Result, _finite, versions
from .._types import Model, Tokenizer

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


def _general(model: Model, tok: Tokenizer, exclude) -> dict:
    """General ability: the model profile's suite (the toy models: untouched facts, text NLL),
    else the GLUE-style suite."""
    profile = profiles.find(model)
    if profile is not None and profile.general_ability is not None:
        return profile.general_ability(model, tok, exclude=exclude)
    from ..evaluate import general_ability
    return general_ability(model, tok)


def _weights(model: Model, layers) -> dict:
    return {l: models.read_weight(models.edited_module(model, l)).detach().to("cpu", torch.float64)
            for l in layers}


def _stats(model: Model, tok: Tokenizer, hparams, layers, stats, progress, timings) -> Mapping:
    if stats is not None:
        return stats
    from ..stats import second_moments
    with timed(timings, "stats"):
        return second_moments(model, tok, list(layers), corpus=hparams.mom2_corpus,
                              n_samples=hparams.mom2_n_samples, progress=progress)


class _Timer:
    """Sums wall-clock seconds per phase into a dict."""

    def __init__(self, totals: dict):
        self.totals = totals

    def run(self, phase: str, fn, *args, **kwargs):
        with timed(self.totals, phase):
            return fn(*args, **kwargs)


def _config(model: Model, method, hparams, batch_size, n, seed, evaluate, data, eval_every,
            general_every, on_conflict, protocol) -> dict:
    profile = profiles.find(model)
    name = profile.name if profile else str(getattr(model.config, "name_or_path", ""))
    general = profile.general_name if profile and profile.general_ability else "glue"
    return {"method": method, "hparams": hparams.to_dict(), "batch_size": batch_size, "n": n,
            "n_batches": math.ceil(n / batch_size) if n else 0, "seed": seed, "model": name,
            "fingerprint": models.model_fingerprint(model), "data": data, "evaluate": evaluate,
            "on_conflict": on_conflict, "protocol": protocol,
            "curves": {"eval_every": eval_every, "general_every": general_every,
                       "records": "edited so far", "general": general}}


def run_sequential(model: Model, tok: Tokenizer, records: Sequence[Mapping[str, Any]], *,
                   method: str,
                   batch_size: int, hparams=None, stats=None, eval_every: int | None = None,
                   general_every: int | None = None, evaluate: EvalName = "counterfact",
                   seed: int = 0, progress: bool = True, on_conflict: str = "replace",
                   restore: bool = True, templates=None, data: str | None = None,
                   protocol: str = PROTOCOL, final_checks: Mapping | None = None,
                   split_repeated: bool = False, on_batch: OnBatch | None = None,
                   editor: Editor | None = None, partial: Result | None = None) -> Result:
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

    For checkpointed runs (the command line): ``split_repeated=True`` ends a batch early before
    a record whose id is already in it (a record and its re-edit are edited one after the
    other; recorded in ``config["batching"]``). ``on_batch(editor, t, partial)`` is called
    after the pre-edit evaluation (``t = 0``) and after every batch ``t`` with the result so
    far (``metrics["post"]`` is None). ``editor`` + ``partial`` (a restored :class:`Editor`
    and the partial result saved with it) continue a stopped run after its
    ``len(partial.batches)`` finished batches; the other arguments must be the original ones.
    """
    if batch_size < 1:
        raise OptionError(f"batch_size={batch_size}; give a positive number of edits per batch")
    if (editor is None) != (partial is None):
        raise OptionError("give editor= and partial= together (a restored editor and the "
                          "partial result saved with it), or neither")
    score, records = _evaluator(evaluate), list(records)
    requests = _requests(records, evaluate)
    bounds = _bounds(requests, batch_size, split_repeated)
    torch.manual_seed(seed)
    timings: dict[str, float] = dict(partial.timings) if partial else {"stats": 0.0}
    clock = _Timer(timings)
    start = time.perf_counter() - timings.pop("total", 0.0)
    from ..methods import default_hparams
    hparams = hparams if hparams is not None else default_hparams(model, method)
    if editor is None:
        C0 = _stats(model, tok, hparams, hparams.layers, stats, progress, timings)
        editor = Editor(model, tok, method, hparams=hparams, stats=C0, on_conflict=on_conflict,
                        progress=False, templates=templates, seed=seed)
    ed = editor
    config = _config(model, method, hparams, batch_size, len(records), seed, evaluate,
                     data, eval_every, general_every, on_conflict, protocol)
    if split_repeated:
        config.update(n_batches=len(bounds), batching="split before a repeated id")
    if partial is not None:
        _check_partial(partial, config, len(bounds))
    run = _Run(ed, model, tok, records, requests, bounds, score, clock, eval_every,
               general_every, progress, on_batch, config, start)
    try:
        if partial is None:
            W0 = _weights(model, ed.layers)
            run.pre = clock.run("evaluation", score, model, tok, records)
            if general_every:
                run.pre["general"] = clock.run("general", _general, model, tok,
                                               [r.id for r in requests])
            run.report(0)
        else:
            W0 = {l: ed.original_weight(l).to(torch.float64) for l in ed.layers}
            run.pre = partial.metrics["pre"]
            run.curves, run.batches = list(partial.metrics["curves"]), list(partial.batches)
        run.edit_all()
        post = clock.run("evaluation", score, model, tok, records)
        checks = {name: clock.run("evaluation", fn, model, tok)
                  for name, fn in (final_checks or {}).items()}
        weights = _weights(model, ed.layers)
    finally:
        if restore:
            ed.revert()
    timings["total"] = time.perf_counter() - start
    metrics = {"pre": run.pre, "post": post, "curves": run.curves, "final_checks": checks}
    return Result(config, versions(), timings, metrics, run.batches, weights, W0)


OnBatch = Callable[[Editor, int, Result], None]


def batches_of(requests: Sequence[Request], size: int) -> list[list[Request]]:
    """Consecutive batches of at most ``size`` requests; a batch ends early before a request
    whose id is already in it, so a record and its re-edit are edited one after the other."""
    return [list(requests[a:b]) for a, b in _bounds(requests, size, True)]


def _bounds(requests: Sequence[Request], size: int, split: bool) -> list[tuple[int, int]]:
    """(start, stop) of every batch: fixed slices of ``size``, or split before repeated ids."""
    if not split:
        return [(a, min(a + size, len(requests))) for a in range(0, len(requests), size)]
    out, first, ids = [], 0, set()
    for i, r in enumerate(requests):
        if i - first == size or r.id in ids:
            out.append((first, i))
            first, ids = i, set()
        ids.add(r.id)
    return out + [(first, len(requests))] if len(requests) > first else out


def _check_partial(partial: Result, config: dict, n_batches: int) -> None:
    """A partial result continues only the run it came from."""
    keys = ("method", "batch_size", "n", "n_batches", "seed", "model", "fingerprint", "data",
            "evaluate", "on_conflict", "protocol", "hparams")
    saved = {k: partial.config.get(k) for k in keys}
    now = _finite({k: config.get(k) for k in keys})  # as JSON holds it: lists, str keys
    differ = [k for k in keys if saved[k] != now[k]]
    if differ:
        raise OptionError(f"partial result is from another run (differs in {', '.join(differ)}); "
                          "continue it with the settings it was started with")
    if len(partial.batches) > n_batches or partial.metrics.get("post") is not None:
        raise OptionError("partial result is already complete; there is nothing to continue")


class _Run:
    """The loop over batches; fills ``curves``, ``batches`` and the timings."""

    def __init__(self, ed, model: Model, tok: Tokenizer, records, requests, bounds, score, clock,
                 eval_every,
                 general_every, progress, on_batch, config, start):
        self.ed, self.model, self.tok, self.records, self.requests = ed, model, tok, records, \
            requests
        self.bounds, self.score, self.clock, self.progress = bounds, score, clock, progress
        self.eval_every, self.general_every, self.on_batch = eval_every, general_every, on_batch
        self.config, self.start = config, start
        self.pre: dict = {}
        self.curves: list = []
        self.batches: list = []

    def report(self, t: int) -> None:
        """Hand the result so far to ``on_batch``."""
        if self.on_batch is None:
            return
        timings = {**self.clock.totals, "total": time.perf_counter() - self.start}
        metrics = {"pre": self.pre, "post": None, "curves": list(self.curves), "final_checks": {}}
        self.on_batch(self.ed, t, Result(dict(self.config), versions(), timings, metrics,
                                         list(self.batches)))

    def edit_all(self) -> None:
        from tqdm.auto import tqdm
        ed, clock, T, done = self.ed, self.clock, len(self.bounds), len(self.batches)
        for t in tqdm(range(done + 1, T + 1), desc=f"{ed.method} batches",
                      disable=not self.progress, initial=done, total=T):
            first, stop = self.bounds[t - 1]
            report = clock.run("edit", ed.edit, self.requests[first:stop])
            for phase in ("values", "keys", "solve"):
                clock.totals[phase] = clock.totals.get(phase, 0.0) + report.timings.get(phase,
                                                                                        0.0)
            self.batches.append({
                "batch": t, "first": first, "size": stop - first, "n_edits": report.n_edits,
                "skipped": len(report.skipped), "conflicts": len(report.conflicts),
                "mean_loss": sum(report.losses) / max(len(report.losses), 1),
                "timings": dict(report.timings),
                "update_norms": {str(l): v for l, v in report.update_norms.items()}})
            self._curve_point(t, stop, t == T)
            self.report(t)

    def _curve_point(self, t: int, stop: int, last: bool) -> None:
        clock, model, tok = self.clock, self.model, self.tok
        point = {"batch": t, "n_edited": stop}
        if self.eval_every and (t % self.eval_every == 0 or last):
            m = clock.run("evaluation", self.score, model, tok, self.records[:stop])
            point.update({k: m[k] for k in _RATES if k in m})
        if self.general_every and (t % self.general_every == 0 or last):
            # the same untouched facts at every point: all of the run's pairs are excluded
            point["general"] = clock.run("general", _general, model, tok,
                                         [r.id for r in self.requests])
        if len(point) > 2:
            self.curves.append(point)


def run_one_time(model: Model, tok: Tokenizer, records: Sequence[Mapping[str, Any]], *,
                 method: str = "memit-seq",
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


__all__ = ["batches_of", "run_one_time", "run_sequential", "weight_distance"]
