"""The one wall-clock timer: add a block's seconds to a phase of a totals dict."""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def timed(totals: dict, phase: str) -> Iterator[None]:
    """Add the wall-clock seconds of the block to ``totals[phase]`` (also when it raises)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        totals[phase] = totals.get(phase, 0.0) + time.perf_counter() - start


__all__ = ["timed"]
