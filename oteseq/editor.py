"""``Editor``: the multi-layer sequential editing loop, one LinearMemory per edited matrix.

For a batch of requests (MEMIT, editing-anchors §4.2), with edited layers ``l_0 < … < l_{L−1}``:

1. target values ``Z*`` (d_model, n) at the last edited layer, before any weight changes
   (:func:`oteseq.values.compute_values`);
2. for ``i = 0 … L−1``, on the *current, partly edited* model: keys ``K_i`` (d_in, n) at layer
   ``l_i``, the current block output ``Z_cur`` at the last layer, the share of the residual
   ``R_i = (Z* − Z_cur)/(L − i)``, and the constraints ``W_i K_i ≈ V_i = W_i K_i + R_i`` handed
   to layer ``l_i``'s memory under the requests' ids; the memory's new ``W`` is written back.

Whatever happens inside ``edit`` — an exception, NaN, ``KeyboardInterrupt`` — the weights and
memories are restored to their state before the call. The editor keeps only the memories and
an exact CPU copy of the original edited matrices; never a copy of the model.
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch

from . import editor_inputs as inputs
from . import model_reads as reads
from . import editor_state, keys, methods, models
from ._timing import timed
from .model_reads import block_output_at_subject
from .errors import (ConflictError, CorruptStateError, NonFiniteError, OptionError, OteseqError,
                     RequestError, StateMismatchError)
from .keywalk import KeyWalk
from .keywalk import Unsupported as WalkUnsupported
from .memory import LinearMemory
from .memory._config import OnConflict
from .requests import Request
from .values import compute_values
from ._types import Model, Tokenizer

log = logging.getLogger(__name__)
FORMAT, VERSION = editor_state.FORMAT, editor_state.VERSION


@dataclass(frozen=True)
class EditReport:
    """What one :meth:`Editor.edit` did."""

    n_edits: int                            # requests written into the model
    ids: tuple = ()                         # their ids, in order
    losses: tuple[float, ...] = ()          # final value-optimisation loss per written request
    steps: tuple[int, ...] = ()             # Adam steps per written request
    update_norms: dict = field(default_factory=dict)  # layer -> ‖Δ‖_F of this call
    conflicts: tuple = ()                   # ids that were already active (handled by policy)
    skipped: tuple = ()                     # ids whose target the model already predicted
    timings: dict = field(default_factory=dict)  # seconds: values, keys, solve, total


class Editor:
    """Sequential knowledge editing of ``model`` with ``method`` (see :mod:`oteseq.methods`).

    ``hparams`` default to :func:`oteseq.methods.default_hparams`; ``stats`` maps each edited
    layer to ``C0`` (default: :func:`oteseq.stats.second_moments`, cached); ``templates`` are
    the context templates (default: sampled once with ``seed``, or a model profile's prefixes).
    """

    def __init__(self, model: Model, tok: Tokenizer, method: str = "memit-seq", *, hparams=None,
                 stats=None, on_conflict: OnConflict = "replace", progress: bool = True,
                 templates: Sequence[str] | None = None, seed: int = 0):
        models.arch_of(model)
        self.model, self.tok, self.method = model, tok, method
        self._config = methods.method(method)
        self.hparams = inputs.checked_hparams(hparams, model, method)
        templates = inputs.checked_templates(templates)
        if on_conflict not in ("replace", "accumulate", "error"):
            raise OptionError(f"on_conflict={on_conflict!r} is not a valid option; use "
                              "'replace', 'accumulate' or 'error'")
        self.on_conflict, self.progress = on_conflict, progress
        self.layers = inputs.checked_layers(model, self.hparams.layers)
        if self._config.one_by_one and len(self.layers) != 1:
            raise OptionError(f"ROME edits one layer; hparams.layers={self.layers}")
        self._modules = {l: models.edited_module(model, l) for l in self.layers}
        self._original = {l: models.read_weight(m).cpu() for l, m in self._modules.items()}
        self._C0 = inputs.checked_stats(model, tok, self.hparams, self._modules, stats, progress)
        self.templates = list(templates) if templates is not None else reads.templates(
            model, tok, self.hparams, seed)
        self.fingerprint = models.model_fingerprint(model)
        self.rank_P: dict[int, int | None] = {}
        self._memories = self._fresh_memories()
        self.n_edits = 0
        self.extra: dict = {}             # what the last save/load carried (Editor.save(extra=))
        self._weights_digest = None       # digest of the unedited parameters, made on first save

    # ----------------------------------------------------------------- editing
    def edit(self, requests: Iterable[Request]) -> EditReport:
        """Write ``requests`` into the model (atomically); see the module docstring."""
        requests = inputs.checked_requests(requests)
        inputs.check_lengths(self.model, self.tok, requests, self.templates)
        try:
            if self._config.one_by_one:  # ROME: one request after the other, atomic as a whole
                return self._atomic(lambda: _merge([self._edit_batch([r]) for r in requests]))
            return self._atomic(self._edit_batch, requests)
        except NonFiniteError as exc:
            bad = reads.nonfinite_parameters(self.model)
            if bad:  # the cause is the model itself, not v_lr, lam or C0
                raise NonFiniteError(f"the model's own weights contain NaN or inf ({len(bad)} "
                                     f"parameter(s), e.g. {bad[:3]}); nothing was changed. "
                                     "Reload the model (or find what wrote into it)") from exc
            raise

    def retract(self, ids: Sequence) -> dict:
        """Remove the constraints of the listed ``ids`` from every layer exactly (memit-seq-like
        methods only); returns ``{layer: ‖Δ‖_F}``."""
        if ids is None or isinstance(ids, (str, bytes, tuple, Request)) or \
                not isinstance(ids, Iterable):
            raise RequestError(f"retract takes a list of ids, got {type(ids).__name__} "
                               f"{ids!r:.80}; wrap one id as ed.retract([id]) — an id such as "
                               "(subject, relation) is one element")
        return self._atomic(self._retract, list(ids))

    def revert(self) -> None:
        """Restore the original edited matrices bit for bit and forget every edit."""
        fresh = self._fresh_memories()  # first: it may need C0, which may fail
        for layer, module in self._modules.items():
            models.write_weight(module, self._original[layer])
        self._memories, self.n_edits = fresh, 0

    @property
    def ids(self) -> list:
        """Ids of the active edits (those of the first edited layer's memory)."""
        return self._memories[self.layers[0]].ids

    def memory(self, layer: int) -> LinearMemory:
        """The :class:`LinearMemory` of an edited layer."""
        return self._memories[self._edited(layer)]

    @property
    def stats(self) -> dict[int, torch.Tensor]:
        """``C0`` (d_in, d_in) of each edited layer, as used by the memories (a new dict; pass
        it as ``stats=`` to another editor of the same model to skip recomputing it)."""
        return {layer: self._C0[layer] for layer in self.layers}

    def original_weight(self, layer: int) -> torch.Tensor:
        """The unedited matrix ``W0`` (d_out, d_in) of an edited layer: a CPU copy, exact to
        the bit (what :meth:`revert` writes back)."""
        return self._original[self._edited(layer)].clone()

    def _edited(self, layer: int) -> int:
        if layer not in self._modules:
            raise OptionError(f"layer {layer!r} is not edited by this editor; its layers are "
                              f"{list(self.layers)}")
        return layer

    def _atomic(self, operation, *args):
        weights = {l: models.read_weight(m) for l, m in self._modules.items()}
        for layer, W in weights.items():  # a weight changed behind the editor's back
            mine = self._memories[layer].W.to(W.device)
            if not torch.equal(W, mine):
                gap = float((W.double() - mine.double()).abs().max())
                raise StateMismatchError(
                    f"the weight of {models.edited_name(self.model, layer)} was changed outside "
                    f"the editor (max |difference| {gap:.3g}); this edit would overwrite that "
                    "change, so nothing was done. Undo it (ed.memory(layer).W is the editor's "
                    "weight), or build a new Editor on the changed model to adopt it")
        memories, n_edits = {l: copy.copy(m) for l, m in self._memories.items()}, self.n_edits
        try:
            return operation(*args)
        except BaseException:
            for layer, module in self._modules.items():
                models.write_weight(module, weights[layer])
            self._memories, self.n_edits = memories, n_edits
            raise

    def _edit_batch(self, requests: list[Request]) -> EditReport:
        hp, t = self.hparams, {"values": 0.0, "keys": 0.0, "solve": 0.0}
        with timed(t, "values"):
            known = reads.already_predicted(self.model, self.tok, requests)
            todo = [r for r, k in zip(requests, known) if not k]
            conflicts = tuple(r.id for r in todo if r.id in self._memories[self.layers[0]])
            if conflicts and self.on_conflict == "error":
                raise ConflictError(f"request id(s) {list(conflicts)} are already active and "
                                    "on_conflict='error'; retract them first or use 'replace'")
            if not todo:
                return EditReport(0, skipped=tuple(r.id for r in requests), timings=t)
            if conflicts and self.on_conflict == "replace" and self._config.accumulate:
                # Latest wins: drop the old constraints first, so the new targets are optimised
                # on the de-conflicted model. For fixed (K, V) this equals the memory's one-step
                # replace (OTE over the de-conflicted set); targets computed on a model that still
                # carries the old fact would have to fight it (clamped δ) and often lose.
                self._retract(list(dict.fromkeys(conflicts)))
            values = compute_values(self.model, self.tok, todo, self.layers[-1], hp,
                                    templates=self.templates, progress=self.progress)
            inputs.check_finite(values.z, "target values z*")
        ids, norms = [r.id for r in todo], {}
        with timed(t, "keys"):
            walk = self._key_walk(todo)
        for i, layer in enumerate(self.layers):
            with timed(t, "keys"):
                if walk is not None:
                    K, z_cur = walk.read(i)
                else:
                    K = keys.compute_keys(self.model, self.tok, todo, [layer],
                                          fact_token=hp.fact_token,
                                          templates=self._key_templates())[layer]
                    z_cur = block_output_at_subject(self.model, self.tok, todo, self.layers[-1],
                                                    hp.fact_token)
            with timed(t, "solve"):
                mem = self._memories[layer]
                R = (values.z.to(z_cur.device) - z_cur) / (len(self.layers) - i)
                V = mem.W64 @ K.to(mem.W64) + R.to(mem.W64)
                delta = mem.edit(K, V, ids)
                models.write_weight(self._modules[layer], mem.W)
                norms[layer] = float(torch.linalg.matrix_norm(delta))
            if walk is not None:
                with timed(t, "keys"):
                    walk.advance(i)
        self.n_edits += len(todo)
        return EditReport(len(todo), tuple(ids), tuple(values.loss.tolist()),
                          tuple(values.steps.tolist()), norms, conflicts,
                          tuple(r.id for r, k in zip(requests, known) if k), t)

    def _retract(self, ids: list) -> dict:
        norms = {}
        for layer in self.layers:
            delta = self._memories[layer].retract(ids)
            models.write_weight(self._modules[layer], self._memories[layer].W)
            norms[layer] = float(torch.linalg.matrix_norm(delta))
        return norms

    def _key_walk(self, todo: list[Request]):
        """The keys of every layer from one cached residual (:mod:`oteseq.keywalk`), or
        ``None`` (per-layer forwards) when the templates have no bare prompt."""
        try:
            return KeyWalk(self.model, self.tok, todo, self.layers,
                           fact_token=self.hparams.fact_token, templates=self._key_templates())
        except WalkUnsupported:
            return None

    def _key_templates(self):
        # ROME averages all its templates plainly; MEMIT: ½ bare prompt + ½ mean of prefixes
        return [self.templates] if self._config.one_by_one else self.templates

    def _fresh_memories(self) -> dict[int, LinearMemory]:
        memories = {}
        for layer, module in self._modules.items():
            kwargs, self.rank_P[layer] = methods.memory_options(self.method, self.hparams,
                                                                self._C0[layer])
            if self._config.one_by_one:  # the equality-constrained limit, see _ROME_LAM
                kwargs["lam"] = _ROME_LAM
            memories[layer] = LinearMemory(self._original[layer].to(models.module_device(module)),
                                           self._C0[layer], on_conflict=self.on_conflict,
                                           **kwargs)
        return memories

    # ----------------------------------------------------------------- persistence
    def save(self, path, *, extra: dict | None = None) -> None:
        """Save the editor into folder ``path``, crash-safe: a complete new version is written
        beside the old one and ``path/editor.json`` (the manifest: checksums, shapes, model
        fingerprint, method, hparams) is switched to it in one atomic step, so ``path`` always
        holds the old or the new state. ``extra`` (JSON-able) is stored in the manifest and
        given back as ``Editor.load(...).extra``. See :mod:`oteseq.editor_state`."""
        if extra is not None:
            try:
                json.dumps(extra, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise OptionError(f"extra must be JSON-able ({exc}); pass plain dicts, lists, "
                                  "strings and finite numbers") from None
        editor_state.write(self, path, extra)

    @classmethod
    def load(cls, path, model: Model, tok: Tokenizer, *, stats=None,
             progress: bool = True) -> "Editor":
        """The editor saved in ``path``, attached to ``model`` (unedited, or already carrying
        exactly the saved edits); its weights are set to the saved ones. ``stats`` (C0) are
        only needed by a later :meth:`revert` and are loaded from the cache when missing.

        Everything is checked before the model is touched: the file checksums, the model (its
        fingerprint and every unedited parameter), that the memories agree with the manifest's
        method, lam and ids, and the memories' invariants; failures raise
        :class:`~oteseq.errors.StateMismatchError` or its subclass
        :class:`~oteseq.errors.CorruptStateError`, naming what is wrong."""
        path = Path(path)
        meta = editor_state.read_manifest(path)
        try:
            return cls._load(path, meta, model, tok, stats, progress)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, OteseqError):
                raise
            raise CorruptStateError(f"{path / editor_state.MANIFEST}: a field is missing or "
                                    f"malformed ({type(exc).__name__}: {exc}); the save is "
                                    "damaged") from None

    @classmethod
    def _load(cls, path, meta, model: Model, tok: Tokenizer, stats, progress) -> "Editor":
        inputs.check_same_model(meta, model)
        ed = cls.__new__(cls)
        ed.model, ed.tok, ed.method = model, tok, meta["method"]
        ed._config = methods.method(ed.method)
        ed.hparams = methods.Hparams.from_dict(meta["hparams"])
        ed.on_conflict, ed.progress, ed.templates = meta["on_conflict"], progress, meta["templates"]
        ed.layers = inputs.checked_layers(model, ed.hparams.layers)
        if "weights" in meta:
            editor_state.check_weights(meta["weights"], model, ed.layers)
        ed._weights_digest = meta.get("weights")
        ed._modules = {l: models.edited_module(model, l) for l in ed.layers}
        ed.fingerprint, ed.n_edits = meta["fingerprint"], int(meta["n_edits"])
        ed.rank_P = {int(l): r for l, r in meta["rank_P"].items()}
        folder = editor_state.state_folder(path, meta)
        verify = meta["version"] == editor_state.LEGACY_VERSION  # v2: files checked above
        ed._memories = {l: LinearMemory.load(folder / f"layer_{l}", verify=verify,
                                             device=models.module_device(m))
                        for l, m in ed._modules.items()}
        editor_state.check_memories(meta, ed._memories, folder)
        ed._original = {}
        for layer, module in ed._modules.items():
            ed._original[layer] = reads.original_weight(ed._memories[layer], module, layer)
        ed._C0 = inputs.LazyStats(model, tok, ed.hparams, ed._modules, stats, progress)
        ed.extra = meta.get("extra") or {}
        for layer, module in ed._modules.items():
            models.write_weight(module, ed._memories[layer].W)
        return ed


_ROME_LAM = 1e-6
"""ROME as a memory: ``accumulate=False`` and ``lam → 0`` give ``Δ = R (C0⁻¹k)ᵀ/(lam + kᵀC0⁻¹k)``,
the equality-constrained rank-one update of :func:`oteseq.ols.rome` up to a relative
``lam/(kᵀC0⁻¹k)`` (≈ 1e-6/d_in). Unlike the reference, the residual and the denominator use
the template-averaged key k̄ rather than the bare prompt's key."""


def _merge(reports: list[EditReport]) -> EditReport:
    """One report for several one-request ROME steps."""
    norms: dict = {}
    for r in reports:
        for layer, value in r.update_norms.items():
            norms[layer] = norms.get(layer, 0.0) + value
    cat = lambda name: tuple(x for r in reports for x in getattr(r, name))  # noqa: E731
    timings = {k: sum(r.timings.get(k, 0.0) for r in reports) for k in ("values", "keys", "solve")}
    return EditReport(sum(r.n_edits for r in reports), cat("ids"), cat("losses"), cat("steps"),
                      norms, cat("conflicts"), cat("skipped"), timings)


__all__ = ["EditReport", "Editor", "block_output_at_subject"]
