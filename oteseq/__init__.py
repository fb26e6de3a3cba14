"""oteseq: sequential knowledge editing as ordinary least squares.

``import oteseq`` is cheap: submodules that need ``transformers`` load on first use.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> (module, attribute or None for the module itself)
_LAZY = {
    "ols": ("oteseq.ols", None),
    "errors": ("oteseq.errors", None),
    "LinearMemory": ("oteseq.memory", "LinearMemory"),
    "load_model": ("oteseq.loading", "load_model"),
    "toy": ("oteseq.toy", None),
    "Request": ("oteseq.requests", "Request"),
    "Editor": ("oteseq.editor", "Editor"),
    "evaluate": ("oteseq.evaluate", None),
    "data": ("oteseq.data", None),
    "experiments": ("oteseq.experiments", None),
    "exercises": ("oteseq.book.exercises", None),
    "setup": ("oteseq.book.session", "setup"),
    "scale": ("oteseq.book.session", "scale"),
}

# submodules reachable as attributes without an explicit import (``oteseq.methods`` ...)
_SUBMODULES = ("editor", "glue", "hooks", "keys", "loading", "memory", "methods", "models",
               "requests", "stats", "values")

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        _LAZY[name] = (f"oteseq.{name}", None)
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'oteseq' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__():
    return __all__
