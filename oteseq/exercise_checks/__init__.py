"""Auto-checks for the exercises of individual chapters, re-exported by :mod:`oteseq.exercises`.

- :mod:`.ch06` — AlphaEdit: the null-space projector, the AlphaEdit step, its OTE;
- :mod:`.ch10` — conflicting edits: the de-conflicted set, replacement, retraction.

Each ``check_xxx(fn)`` calls the reader's function on a few seeded random float64 problems,
compares with the library (or a dense reference), raises :class:`AssertionError` with a hint when
they differ, and otherwise prints one success line and returns the largest relative error.
"""
