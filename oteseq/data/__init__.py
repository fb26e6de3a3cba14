"""Data sets of the editing literature, downloaded once into a cache and checked.

``counterfact(n, multi=False)``, ``zsre(n)``, ``attribute_snippets()``, ``tfidf()``,
``glue(task)`` and the dispatcher ``load(name, n)``. Files go to ``$OTESEQ_DATA`` (default
``~/.cache/oteseq/data``); offline, an :class:`~oteseq.errors.OfflineError` says which file to
fetch from where, or points to the toy world (``oteseq.toy.counterfact(n)``).
"""
from .cache import data_dir
from .catalog import NAMES, load
from ._counterfact import attribute_snippets, counterfact, tfidf
from ._glue import glue
from ..schemas import SchemaError
from ._zsre import zsre

__all__ = ["NAMES", "SchemaError", "attribute_snippets", "counterfact", "data_dir", "glue",
           "load", "tfidf", "zsre"]
