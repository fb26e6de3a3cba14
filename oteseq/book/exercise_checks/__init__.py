"""Auto-checks for the exercises, one module per chapter (``chNN``), listed by
:mod:`oteseq.book.exercises`; :mod:`._common` holds the one contract they share."""
