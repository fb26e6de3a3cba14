"""The toy world and its small GPT-2: facts, editing data and a shipped model that knows them.

``oteseq.load_model("toy")`` loads the model; this package generates the world it was trained
on (``world``), editing records in the real schemas (``counterfact``, ``zsre``, ``conflicts``),
general text and filler prefixes, and the general-ability suite. Training:
``python -m oteseq.toy train``; quality report: ``python -m oteseq.toy report``.
"""
from __future__ import annotations

from .corpus import context_prefixes, general_text, preservation_text
from .records import conflicts, counterfact, zsre
from ._world import RELATIONS, Relation, World, world



def __getattr__(name: str):
    # general_ability needs torch; load it on first use so that the data helpers stay light
    if name == "general_ability":
        from .ability import general_ability

        return general_ability
    raise AttributeError(f"module 'oteseq.toy' has no attribute {name!r}")


__all__ = ["RELATIONS", "Relation", "World", "conflicts", "context_prefixes", "counterfact",
           "general_ability", "general_text", "preservation_text", "world", "zsre"]
