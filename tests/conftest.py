"""pytest hooks for the notebook tests (nbval).

1. Outputs that legitimately differ between runs — stderr, HTML and JavaScript reprs — are never
   compared (the recipe from the nbval documentation).
2. A cell tagged ``skip-execution`` (myst-nb's tag for student stubs and GPU-only cells) is
   skipped by nbval too, so one tag serves the book and the tests.
"""
from __future__ import annotations

import pytest

SKIP_COMPARE = ("stderr", "text/html", "application/javascript",
                "application/vnd.jupyter.widget-view+json")


def _is_nbval(obj) -> bool:
    return type(obj).__module__.startswith("nbval")


def pytest_collectstart(collector):
    if _is_nbval(collector) and hasattr(collector, "skip_compare"):
        collector.skip_compare = tuple(collector.skip_compare) + SKIP_COMPARE


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="cell tagged skip-execution")
    for item in items:
        cell = getattr(item, "cell", None)
        if _is_nbval(item) and cell is not None:
            if "skip-execution" in cell.get("metadata", {}).get("tags", []):
                item.add_marker(skip)
