"""What the book's chapters use besides the library: run setup and scale
(:mod:`.session`), the exercise checks (:mod:`.exercises`, by chapter in
:mod:`.exercise_checks`).

``oteseq.setup()``, ``oteseq.scale()`` and ``oteseq.exercises`` are re-exported (lazily) by
:mod:`oteseq`. ``import oteseq.book`` stays light: the checks load with ``oteseq.book.exercises``.
"""
from .session import Scale, scale, setup

__all__ = ["Scale", "scale", "setup"]
