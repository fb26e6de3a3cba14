"""pytest hooks for the notebook tests (nbval).

1. Outputs that legitimately differ between runs — stderr, HTML and JavaScript reprs, widget
   views — are never compared (the recipe from the nbval documentation).
2. A cell tagged ``skip-execution`` (myst-nb's tag for student stubs and GPU-only cells) is
   skipped by nbval too, so one tag serves the book and the tests.

Both act in ``pytest_collection_modifyitems``, a session-wide hook: a hook bound to a collector
(``pytest_collectstart``) would only reach notebooks under ``tests/``, not those in ``book/``.
Chapter stubs also carry ``nbval-skip``, so a run that does not load this file still skips them.
"""
from __future__ import annotations

import pytest

SKIP_COMPARE = ("stderr", "text/html", "application/javascript",
                "application/vnd.jupyter.widget-view+json")


def _is_nbval(obj) -> bool:
    return type(obj).__module__.startswith("nbval")


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="cell tagged skip-execution")
    for item in items:
        if not _is_nbval(item):
            continue
        notebook = item.parent
        if not set(SKIP_COMPARE) <= set(notebook.skip_compare):
            notebook.skip_compare = tuple(notebook.skip_compare) + SKIP_COMPARE
        if "skip-execution" in item.cell.get("metadata", {}).get("tags", []):
            item.add_marker(skip)
