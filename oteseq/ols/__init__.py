"""Closed forms of sequential knowledge editing as least squares, as small pure functions.

Everything here takes and returns torch tensors (notation of DESIGN.md §1: ``W`` (d_out, d_in),
keys ``K`` (d_in, n) as columns, values ``V`` (d_out, n)), computes in float64 on the input's
device and returns the dtype of the main input. Only ``torch`` and :mod:`oteseq.errors` are used.

Modules: :mod:`.linalg` (Cholesky solves), :mod:`.projection` (AlphaEdit's ``P``),
:mod:`.posthoc` (PRUNE, RECT, error feedback).
"""
from oteseq.ols.linalg import solve_spd
from oteseq.ols.posthoc import prune, rect
from oteseq.ols.projection import nullspace_projector

__all__ = ["nullspace_projector", "prune", "rect", "solve_spd"]
