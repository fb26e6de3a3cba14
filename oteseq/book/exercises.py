"""Auto-checks for the book's exercises: ``oteseq.exercises.check_xxx(fn)``.

Every check has one contract (:mod:`.exercise_checks._common`): it calls the reader's function
on a few seeded random float64 problems (on fresh copies of the inputs, so an in-place change
is caught and told), compares with the library's closed form or the formula computed the
obvious way, and either raises :class:`AssertionError` saying what differs and what to look at,
or prints one success line and returns the largest error. The checks live by chapter in
:mod:`.exercise_checks`; this module lists them all.
"""
from __future__ import annotations

from .exercise_checks._common import TOLERANCE, Agreement, Problem, random_problem
from .exercise_checks.ch01 import check_ote
from .exercise_checks.ch02 import check_subject_key
from .exercise_checks.ch03 import check_memit, check_rome
from .exercise_checks.ch03b import check_clamp, check_value_loss
from .exercise_checks.ch04 import check_disturbance
from .exercise_checks.ch05 import check_misaligned_se
from .exercise_checks.ch06 import (check_alphaedit_ote, check_alphaedit_step,
                                   check_nullspace_projector)
from .exercise_checks.ch07 import check_se_step, check_woodbury
from .exercise_checks.ch08 import check_error_feedback_step, check_rect
from .exercise_checks.ch09 import check_reparam_step
from .exercise_checks.ch10 import check_deconflict, check_replace, check_retract
from .exercise_checks.ch11 import check_protocol_batches, check_rewrite_metrics
from .exercise_checks.ch12 import check_rls_step
from .exercise_checks.ch13 import (check_forgetting_rls, check_hit_rate, check_rls,
                                   check_rls_replace)

__all__ = [
    "Agreement", "Problem", "TOLERANCE", "check_alphaedit_ote", "check_alphaedit_step",
    "check_clamp", "check_deconflict", "check_disturbance", "check_error_feedback_step",
    "check_forgetting_rls", "check_hit_rate", "check_memit", "check_misaligned_se",
    "check_nullspace_projector", "check_ote", "check_protocol_batches", "check_rect",
    "check_reparam_step", "check_replace", "check_retract", "check_rewrite_metrics", "check_rls",
    "check_rls_replace", "check_rls_step", "check_rome", "check_se_step", "check_subject_key",
    "check_value_loss", "check_woodbury", "random_problem",
]
