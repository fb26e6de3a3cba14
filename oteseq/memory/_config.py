"""Options of a :class:`~oteseq.memory.LinearMemory`, validated in one place; its step report."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from oteseq.errors import OptionError
from oteseq.ols._checks import check_nonnegative

PostName = Literal["prune", "rect"]
OnConflict = Literal["replace", "accumulate", "error"]
PostHoc = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

DEFAULT_REFRESH_EVERY = 1000
"""Steps between exact refreshes (Cholesky of ``A``); the drift check may refresh earlier."""
DRIFT_TOL, DRIFT_GROWTH = 1e-10, 100.0
"""Refresh when the estimated relative error of a Woodbury solve exceeds
``max(DRIFT_TOL, DRIFT_GROWTH · that of the last exact solve)`` (the latter: ill-conditioned A)."""


@dataclass(frozen=True)
class MemoryOptions:
    """How a memory turns a batch of constraints into an update (see ``LinearMemory``)."""

    accumulate: bool = True              # carry K_p K_pᵀ forward (MEMIT-seq) or not (MEMIT)
    ridge: float = 0.0                   # alpha: adds alpha·I to A (or AlphaEdit's L2 with P)
    post: PostName | PostHoc | None = None  # post-hoc operator on each step's update
    error_feedback: bool = False         # feed the post-hoc error into the next step
    on_conflict: OnConflict = "replace"  # what an edit with an already active id does
    refresh_every: int | None = DEFAULT_REFRESH_EVERY  # None: refresh on drift only

    @property
    def post_name(self) -> str | None:
        """``"prune"``, ``"rect"``, ``None``, or ``"callable"`` for a user function."""
        return self.post if self.post is None or isinstance(self.post, str) else "callable"

    @property
    def exact(self) -> bool:
        """Whether ``W = W0 + M A⁻¹`` holds, so a refresh may recompute ``W`` from scratch."""
        return self.accumulate and self.post is None and not self.error_feedback


def _option_error(name: str, value: object, allowed: str) -> OptionError:
    return OptionError(f"{name}={value!r} is not a valid option; use {allowed}")


def make_options(*, accumulate: bool, ridge: float, post: object, error_feedback: bool,
                 on_conflict: str, refresh_every: int | None) -> MemoryOptions:
    """Validate every keyword option of ``LinearMemory`` and freeze them."""
    if not isinstance(accumulate, bool):
        raise _option_error("accumulate", accumulate, "True (MEMIT-seq) or False (plain MEMIT)")
    if not isinstance(error_feedback, bool):
        raise _option_error("error_feedback", error_feedback, "True or False")
    if post is not None and not callable(post) and post not in get_args(PostName):
        raise _option_error("post", post, "None, 'prune', 'rect' or a callable (Δ, W) -> Δ̂")
    if on_conflict not in get_args(OnConflict):
        raise _option_error("on_conflict", on_conflict, "'replace', 'accumulate' or 'error'")
    if refresh_every is not None and (isinstance(refresh_every, bool)
                                      or not isinstance(refresh_every, int) or refresh_every < 1):
        raise _option_error("refresh_every", refresh_every,
                            "a positive number of steps, or None to refresh on drift only")
    return MemoryOptions(accumulate=accumulate, ridge=nonnegative(ridge, "ridge"),
                         post=post,  # type: ignore[arg-type]  # checked above
                         error_feedback=error_feedback,
                         on_conflict=on_conflict,  # type: ignore[arg-type]  # checked above
                         refresh_every=refresh_every)


def nonnegative(x: object, name: str) -> float:
    """A penalty weight (``lam``, ``ridge``) must be a finite number ≥ 0."""
    return check_nonnegative(x, name, "preservation" if name == "lam" else "ridge")


@dataclass(frozen=True)
class StepReport:
    """What one ``edit`` or ``retract`` of a memory did (``LinearMemory.last_report``); not to be
    confused with :class:`oteseq.editor.EditReport`, what one ``Editor.edit`` did."""

    n_added: int                          # constraint columns added
    n_removed: int                        # constraint columns removed (replaced or retracted)
    replaced: tuple = ()                  # active ids whose old constraints were replaced
    retracted: tuple = ()                 # ids removed by retract
    duplicates_dropped: tuple = ()        # ids given twice in one call (earlier columns dropped)
    conflicts: tuple = ()                 # ids of the call that were already active
    n_active: int = 0                     # constraint columns active after the step
    drift: float = float("nan")           # estimated relative error of this step's solve
    capacitance_cond: float = float("nan")  # condition number of the small Woodbury system
    refreshed: bool = False               # whether A⁻¹ (and W, when exact) was recomputed
