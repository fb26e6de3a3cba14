"""What oteseq knows about a model beyond its architecture: a :class:`Profile`.

A profile supplies, for the models it matches, default hyperparameters, named corpora for C0
statistics, named context-template sets and a general-ability suite. The core (``stats``,
``methods``, the editor, ``evaluate``, ``experiments``) asks this registry and takes the plain
data it returns; it never tests which model it holds. The packaged toy models register theirs
from :mod:`oteseq.toy.profile`; register one for your own model with :func:`register`.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from ._types import Model

#: modules that register the profiles shipped with oteseq, imported on the first lookup.
BUILTIN = ("oteseq.toy.profile",)

@dataclass(frozen=True)
class Corpus:
    """Texts for C0: ``texts(n, seed)``; ``key(seed)`` names them in the statistics cache."""

    name: str
    default_n: int
    key: Callable[[int], str]
    texts: Callable[[int, int], list[str]]


@dataclass(frozen=True)
class Profile:
    """One model (or family) and what the core needs to know about it.

    ``matches(model_or_name)``: whether a loaded model or a name is this one; ``name``: the
    model's name in results; ``hparams``: default ``Hparams`` fields of the MEMIT-style methods;
    ``alphaedit_ridge``: AlphaEdit's ``alpha`` (None: the reference 10); ``corpora`` and
    ``templates``: named corpora and context-template sets (``Hparams.mom2_corpus``,
    ``Hparams.template_source``); ``general_ability(model, tok, exclude=ids)``: the
    general-ability suite to track while editing, reported under ``general_name``.
    """

    name: str
    matches: Callable[[Any], bool]
    hparams: Mapping[str, Any] = field(default_factory=dict)
    alphaedit_ridge: float | None = None
    corpora: tuple[Corpus, ...] = ()
    templates: Mapping[str, Callable[[], Sequence[str]]] = field(default_factory=dict)
    general_ability: Callable[..., dict] | None = None
    general_name: str = ""
    suites: Mapping[str, Callable[..., dict]] = field(default_factory=dict)


_REGISTRY: list[Profile] = []
_BUILTIN_LOADED = False


def register(profile: Profile) -> Profile:
    """Add ``profile`` (replacing one of the same name); later lookups try it first after the
    model's own match. Returns it."""
    _REGISTRY[:] = [p for p in _REGISTRY if p.name != profile.name]
    _REGISTRY.append(profile)
    return profile


def unregister(name: str) -> None:
    """Remove the profile called ``name`` (nothing happens if there is none)."""
    _REGISTRY[:] = [p for p in _REGISTRY if p.name != name]


def registered() -> tuple[Profile, ...]:
    """Every registered profile, the shipped ones first."""
    global _BUILTIN_LOADED
    if not _BUILTIN_LOADED:
        _BUILTIN_LOADED = True
        for module in BUILTIN:
            importlib.import_module(module)
    return tuple(_REGISTRY)


def find(model_or_name) -> Profile | None:
    """The profile of a loaded model or a name, or None."""
    return next((p for p in registered() if p.matches(model_or_name)), None)


def _lookup(model: Model, pick: Callable[[Profile], Any]) -> Any:
    """``pick(profile)`` for the model's own profile first, then for every other one."""
    own = find(model) if model is not None else None
    for profile in ([own] if own is not None else []) + list(registered()):
        found = pick(profile)
        if found is not None:
            return found
    return None


def corpus(name: str, model: Model | None = None) -> Corpus | None:
    """The corpus called ``name``: the model's own if its profile has one, else any profile's."""
    return _lookup(model, lambda p: next((c for c in p.corpora if c.name == name), None))


def templates(name: str, model: Model | None = None) -> Sequence[str] | None:
    """The context-template set called ``name`` (the model's own first), or None."""
    make = _lookup(model, lambda p: p.templates.get(name))
    return None if make is None else list(make())


def suite(name: str) -> Callable[..., dict] | None:
    """The general-ability suite called ``name``, ``suite(model, tok, **options) -> dict``."""
    return _lookup(None, lambda p: p.suites.get(name))


def names(kind: str) -> list[str]:
    """Registered names of ``"corpora"``, ``"templates"`` or ``"suites"``."""
    found: set[str] = set()
    for profile in registered():
        items = getattr(profile, kind)
        found |= {c.name for c in items} if kind == "corpora" else set(items)
    return sorted(found)


__all__ = ["BUILTIN", "Corpus", "Profile", "corpus", "find", "names", "register", "registered",
           "suite", "templates", "unregister"]
