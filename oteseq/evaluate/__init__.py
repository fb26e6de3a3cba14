"""Evaluation of edited models: CounterFact, zsRE and general-ability metrics.

Every definition matches the ROME / MEMIT / AlphaEdit code (see each module's docstring for the
formula and the reference key it corresponds to). Rates are returned in [0, 1]; the papers print
them ×100.
"""
from ._counterfact import counterfact
from .glue import general_ability
from ._zsre import zsre

__all__ = ["counterfact", "general_ability", "zsre"]
