"""Editing methods as configurations of one :class:`~oteseq.memory.LinearMemory`, and their
hyperparameters.

A method is *not* code: it is the choice of ``accumulate`` (carry the past keys ``K_p K_pᵀ``),
a projection ``P`` (AlphaEdit), a ridge ``alpha·I``, whether ``lam·C0`` enters the normal
matrix, a post-hoc operator (PRUNE / RECT) and error feedback. The editing loop is the same for
all of them (:mod:`oteseq.editor`).

Hyperparameters are a frozen :class:`Hparams`; :func:`default_hparams` gives the reference
values for GPT-2 XL, GPT-J and Llama-3-8B (editing-anchors §5) and chosen ones elsewhere.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch

from . import profiles
from .projectors import cached_projector
from .errors import OptionError
from .keys import FACT_TOKENS, FactToken
from ._types import Model

MethodName = Literal["memit", "memit-seq", "alphaedit", "alphaedit-nocache", "prune", "rect",
                     "memit-seq-prune-err", "memit-seq-rect-err", "rome"]


@dataclass(frozen=True)
class Method:
    """How one method configures each edited layer's LinearMemory."""

    accumulate: bool                 # carry K_p K_pᵀ forward (OTE-aligned) or not
    projection: bool = False         # AlphaEdit: edit only in the near null space P of C0
    uses_lam: bool = True            # lam·C0 in the normal matrix (AlphaEdit: C0 only via P)
    post: Literal["prune", "rect"] | None = None  # post-hoc operator on each step's update
    error_feedback: bool = False     # feed the operator's error into the next step
    one_by_one: bool = False         # ROME: one layer, one fact at a time, exact constraint


METHODS: dict[str, Method] = {
    "memit": Method(accumulate=False),
    "memit-seq": Method(accumulate=True),
    "alphaedit": Method(accumulate=True, projection=True, uses_lam=False),
    "alphaedit-nocache": Method(accumulate=False, projection=True, uses_lam=False),
    "prune": Method(accumulate=True, post="prune"),
    "rect": Method(accumulate=True, post="rect"),
    "memit-seq-prune-err": Method(accumulate=True, post="prune", error_feedback=True),
    "memit-seq-rect-err": Method(accumulate=True, post="rect", error_feedback=True),
    "rome": Method(accumulate=False, one_by_one=True),
}


def method(name: str) -> Method:
    """The :class:`Method` called ``name``; the error lists the known ones."""
    if name not in METHODS:
        raise OptionError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name]


@dataclass(frozen=True)
class Hparams:
    """Everything an edit needs besides the model (defaults: MEMIT on GPT-2 XL)."""

    layers: tuple[int, ...] = (13, 14, 15, 16, 17)  # edited blocks; z* lives at the last one
    lam: float = 20000.0             # mom2_update_weight: weight of lam·C0 (keep K0's outputs)
    v_lr: float = 0.5                # Adam learning rate of the value offsets δ
    v_num_grad_steps: int = 20       # at most this − 1 Adam steps per request
    clamp_norm_factor: float = 0.75  # ‖δ‖ ≤ factor·‖z_init‖: targets stay near the data
    kl_factor: float = 0.0625        # keep "{subject} is a" predictions (essence drift)
    v_weight_decay: float = 0.5      # penalty v_weight_decay·‖δ‖/‖z_init‖²
    fact_token: FactToken = "subject_last"  # token whose key and residual are edited
    context_templates: tuple[tuple[int, int], ...] = ((10, 5),)  # (tokens, count) prefixes
    template_source: str = "sample"  # prefixes sampled from the model, or a profile's set
    mom2_corpus: str = "wikipedia"   # text for C0 (stats.second_moments corpus name)
    mom2_n_samples: int = 100000     # texts for C0 (MEMIT counts articles)
    nullspace_threshold: float = 2e-2  # AlphaEdit: eigenvalues of C0 below it span P
    ridge: float = 0.0               # alpha·I in the normal matrix (AlphaEdit L2; 1 for _err)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        object.__setattr__(self, "context_templates",
                           tuple(tuple(int(v) for v in pair) for pair in self.context_templates))
        if not self.layers or list(self.layers) != sorted(set(self.layers)):
            raise OptionError(f"layers={self.layers}: give distinct layers in increasing order")
        if self.template_source != "sample" and \
                self.template_source not in profiles.names("templates"):
            raise OptionError(f"template_source={self.template_source!r}: use 'sample' or a "
                              f"template set of a model profile {profiles.names('templates')}")
        if self.fact_token not in FACT_TOKENS:
            raise OptionError(f"fact_token={self.fact_token!r}: use one of {FACT_TOKENS}")
        for name, (kind, low, strict) in _NUMERIC.items():
            _check_number(name, getattr(self, name), kind, low, strict)
        for pair in self.context_templates:
            if len(pair) != 2 or pair[0] < 1 or pair[1] < 0:
                raise OptionError(f"context_templates={self.context_templates}: give (tokens ≥ "
                                  "1, count ≥ 0) pairs, e.g. ((10, 5),)")

    def to_dict(self) -> dict:
        """JSON-able fields (tuples become lists)."""
        return {k: (list(map(list, v)) if k == "context_templates" else
                    list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Hparams":
        """Inverse of :meth:`to_dict`; unknown keys are an error (nothing is silently ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise OptionError(f"unknown hyperparameter(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes) -> "Hparams":
        """A copy with some fields changed (validated like :meth:`from_dict`)."""
        return Hparams.from_dict({**self.to_dict(), **changes})


_NUMERIC = {  # field: (type, lower bound, whether the bound itself is excluded)
    "lam": (float, 0.0, False), "v_lr": (float, 0.0, True), "v_num_grad_steps": (int, 1, False),
    "clamp_norm_factor": (float, 0.0, True), "kl_factor": (float, 0.0, False),
    "v_weight_decay": (float, 0.0, False), "mom2_n_samples": (int, 1, False),
    "nullspace_threshold": (float, 0.0, False), "ridge": (float, 0.0, False),
}


def _check_number(name: str, value: object, kind: type, low: float, strict: bool) -> None:
    """A finite ``kind`` (an int also passes as a float, a bool never) above ``low``."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or (kind is int and not isinstance(value, int)):
        wanted = "an int" if kind is int else "a number"
        raise OptionError(f"Hparams.{name}={value!r} is not {wanted}")
    if not math.isfinite(value) or value < low or (strict and value == low):
        bound = f"> {low}" if strict else f"≥ {low}"
        raise OptionError(f"Hparams.{name}={value!r}: it must be a finite number {bound}")


def memory_options(name: str, hp: Hparams, C0: torch.Tensor) -> tuple[dict, int | None]:
    """Keyword arguments of ``LinearMemory(W0, C0, **kwargs)`` for method ``name``, and rank(P).

    AlphaEdit: ``lam = 0`` (C0 enters only through ``P``), ``ridge = alpha``. The ``_err``
    variants add ``ridge·I`` (the reference's ``+I``). RECT keeps 20 % of the entries (the
    original RECT and the ``_err`` reference; ``MEMIT_seq_rect`` kept 40 %) — a fixed string
    operator, so the memory stays saveable. AlphaEdit's ``P`` comes from
    :func:`oteseq.projectors.cached_projector` (computed once per ``C0`` and threshold).
    """
    m = method(name)
    kwargs = dict(lam=hp.lam if m.uses_lam else 0.0, accumulate=m.accumulate, ridge=hp.ridge,
                  error_feedback=m.error_feedback)
    rank = None
    if m.projection:
        kwargs["projection"], rank = cached_projector(C0, hp.nullspace_threshold)
    if m.post is not None:
        kwargs["post"] = m.post
    return kwargs, rank


# ---------------------------------------------------------------- default hyperparameters
_REFERENCE = {  # editing-anchors §5 (MEMIT / AlphaEdit rows)
    "gpt2-xl": dict(layers=(13, 14, 15, 16, 17), lam=20000.0, v_num_grad_steps=20),
    "gpt-j-6b": dict(layers=(3, 4, 5, 6, 7, 8), lam=15000.0, v_num_grad_steps=25),
    "meta-llama-3-8b": dict(layers=(4, 5, 6, 7, 8), lam=15000.0, v_lr=0.1, v_num_grad_steps=25),
}
# No official settings exist for the smaller GPT-2s. Chosen: the XL band (layers 13–17 of 48,
# 27–35 % of the depth), ending at the ROME layer where one exists (medium 8, large 12), and
# lam scaled with d_ff (XL: 20000 at d_ff = 6400), since tr(C0) grows with the width.
_CHOSEN = {
    "gpt2": dict(layers=(2, 3, 4), lam=9600.0),
    "gpt2-medium": dict(layers=(5, 6, 7, 8), lam=12800.0),
    "gpt2-large": dict(layers=(8, 9, 10, 11, 12), lam=16000.0),
}
_ROME_LAYER = {"gpt2-medium": 8, "gpt2-large": 12, "gpt2-xl": 17, "gpt-j-6b": 5,
               "meta-llama-3-8b": 5}
_ALIASES = {"eleutherai/gpt-j-6b": "gpt-j-6b", "gpt-j": "gpt-j-6b",
            "meta-llama/meta-llama-3-8b": "meta-llama-3-8b",
            "meta-llama/meta-llama-3-8b-instruct": "meta-llama-3-8b",
            "meta-llama-3-8b-instruct": "meta-llama-3-8b", "llama-3-8b": "meta-llama-3-8b",
            "openai-community/gpt2": "gpt2", "openai-community/gpt2-medium": "gpt2-medium",
            "openai-community/gpt2-large": "gpt2-large", "openai-community/gpt2-xl": "gpt2-xl"}
def model_key(model_or_name) -> str:
    """The lower-case name used to look up defaults: a hub id's last part, ``"toy"``..."""
    name = model_or_name if isinstance(model_or_name, str) else str(
        getattr(model_or_name.config, "name_or_path", "") or "")
    name = name.strip().rstrip("/").lower()
    name = _ALIASES.get(name, name)
    return _ALIASES.get(name.rsplit("/", 1)[-1], name.rsplit("/", 1)[-1])


def _generic(model: Model) -> dict:
    """Layers at 27–35 % of the depth (GPT-2 XL's band), for models without defaults."""
    from . import models
    depth = models.n_layers(model)
    first, last = int(0.27 * depth), max(int(0.27 * depth), round(0.35 * depth))
    return dict(layers=tuple(range(first, min(last, depth - 1) + 1)))


def default_hparams(model_or_name, method_name: str = "memit-seq") -> Hparams:
    """Hyperparameters for a model (object or name) and a method.

    GPT-2 XL, GPT-J-6B, Llama-3-8B: the reference values (MEMIT's and AlphaEdit's released
    hyperparameters). gpt2 / gpt2-medium / gpt2-large: chosen (see ``_CHOSEN``). The packaged
    toy models and any model with a registered profile (:mod:`oteseq.profiles`): the
    profile's defaults. Other models: the XL band of layers scaled to the depth. Method changes:
    AlphaEdit ridge 10 (or the profile's); ``_err`` ridge 1 (the reference's +I); ROME one
    layer (the reference's), clamp 4 (3 for gpt2-medium) and 21 templates.
    """
    m = method(method_name)
    profile = profiles.find(model_or_name)
    key = profile.name if profile is not None else model_key(model_or_name)
    if profile is not None:
        base = dict(profile.hparams)
    elif key in _REFERENCE or key in _CHOSEN:
        base = dict(_REFERENCE.get(key) or _CHOSEN[key])
    elif not isinstance(model_or_name, str):
        base = _generic(model_or_name)
    else:
        known = sorted([*_REFERENCE, *_CHOSEN, *(p.name for p in profiles.registered())])
        raise OptionError(f"no default hyperparameters for {model_or_name!r}; known: {known}. "
                          "Pass the model object (layers are then scaled to its depth) or "
                          "Hparams(...) yourself")
    if m.projection:
        own = None if profile is None else profile.alphaedit_ridge
        base["ridge"] = 10.0 if own is None else own
    if m.error_feedback:
        base["ridge"] = 1.0
    if m.one_by_one:
        base.update(layers=(_ROME_LAYER.get(key, base["layers"][-1]),),
                    clamp_norm_factor=3.0 if key == "gpt2-medium" else 4.0,
                    context_templates=((5, 10), (10, 10)))
        if key == "meta-llama-3-8b":
            base["v_weight_decay"] = 1e-3
    return Hparams(**base)


__all__ = ["METHODS", "Hparams", "Method", "MethodName", "default_hparams", "memory_options",
           "method", "model_key"]
