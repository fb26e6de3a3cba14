"""Closed forms of sequential knowledge editing as least squares, as small pure functions.

Everything here takes and returns torch tensors (notation of DESIGN.md §1: ``W`` (d_out, d_in),
keys ``K`` (d_in, n) as columns, values ``V`` (d_out, n), residual ``R = V − W K``), computes in
float64 on the input's device and returns the dtype of the main input. Only ``torch`` and
:mod:`oteseq.errors` are imported; SPD systems are solved by Cholesky, never by an inverse.

Modules, bottom-up:

- :mod:`.linalg` — :func:`solve_spd` (Cholesky with named errors);
- :mod:`.least_squares` — :func:`ote`, :func:`se_step`, :func:`se`, :func:`ridge`,
  :func:`alphaedit_step`, :func:`forgetting_step`;
- :mod:`.projection` — :func:`nullspace_projector` (AlphaEdit's ``P``);
- :mod:`.reparam` — the broader class :func:`reparam_step`, :func:`reparam_ote`,
  :func:`neuron_mask`;
- :mod:`.constrained` — the equality-constrained limit :func:`equality_constrained`, :func:`rome`;
- :mod:`.posthoc` — :func:`prune`, :func:`rect`, :func:`error_feedback_step`;
- :mod:`.retraction` — :func:`downdate_step`, :func:`replace_step` (retraction, conflicts).
"""
from oteseq.ols.constrained import equality_constrained, rome
from oteseq.ols.least_squares import (alphaedit_step, forgetting_step, ote, ridge, se,
                                      se_step)
from oteseq.ols.linalg import solve_spd
from oteseq.ols.posthoc import error_feedback_step, prune, rect
from oteseq.ols.projection import nullspace_projector
from oteseq.ols.reparam import neuron_mask, reparam_ote, reparam_step
from oteseq.ols.retraction import downdate_step, replace_step

__all__ = [
    "alphaedit_step", "downdate_step", "equality_constrained", "error_feedback_step",
    "forgetting_step", "neuron_mask", "nullspace_projector", "ote", "prune", "rect",
    "reparam_ote", "reparam_step", "replace_step", "ridge", "rome", "se", "se_step",
    "solve_spd",
]
