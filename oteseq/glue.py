"""Numbers for the book's prose, stored by the cell that computes them (myst-nb's glue).

A chapter never types a result into its Markdown. The cell that computes it calls
``oteseq.glue.glue("name", value)``; the prose writes ``{glue:text}`name:.1f``` and the
build pastes the stored value, so the text cannot drift from the outputs.

The value is stored the way ``myst_nb.glue(name, value, display=False)`` stores it (a hidden
``application/papermill.record/text/plain`` output with ``scrapbook`` metadata), written here
so a kernel without myst-nb (Colab) runs the chapter unchanged.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from numbers import Integral, Real

from oteseq.errors import OptionError

PREFIX = "application/papermill.record/"
NAME = re.compile(r"[A-Za-z][\w.-]*")


def plain(value) -> int | float | str | bool:
    """``value`` as a python scalar whose ``repr`` myst-nb can read back (``ast.literal_eval``).

    Tensors with one element and numpy scalars become ``int``/``float``; strings pass through.
    """
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        value = float(value)
        if not math.isfinite(value):
            raise OptionError(f"cannot glue the non-finite number {value}: compute a finite "
                              f"value or glue a string that says what happened")
        return value
    raise OptionError(f"cannot glue a {type(value).__name__}: glue numbers or strings (use "
                      f"{{glue:figure}} with myst_nb.glue for figures)")


def glue(name: str, value) -> None:
    """Store ``value`` under ``name`` for ``{glue:text}`name:fmt``` in the prose.

    Returns nothing, so a ``glue(...)`` on a cell's last line shows no output.
    """
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise OptionError(f"glue name {name!r}: use letters, digits, '_', '.', '-', starting "
                          f"with a letter (':' separates the format in the role)")
    value = plain(value)
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:          # plain python: nothing to store
        return
    if get_ipython() is not None:
        display({PREFIX + "text/plain": repr(value)}, raw=True,
                metadata={"scrapbook": {"name": name, "mime_prefix": PREFIX}})


def slug(label: str) -> str:
    """``"memit-seq (one-time)"`` → ``"memit-seq-one-time"``: a label usable in a glue name."""
    return re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()


def flatten(tree: Mapping, prefix: str = "") -> dict[str, int | float | str | bool]:
    """Every scalar leaf of nested mappings as ``{"prefix.a.b": value}``, keys slugged.

    Lists and ``None`` are skipped. ``prefix`` is used as given.
    """
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}.{slug(str(key))}" if prefix else slug(str(key))
        if isinstance(value, Mapping):
            flat.update(flatten(value, name))
        elif isinstance(value, (bool, str, Integral, Real)) and not (
                isinstance(value, float) and not math.isfinite(value)):
            flat[name] = value
    return flat


def glue_all(prefix: str, tree: Mapping) -> dict[str, int | float | str | bool]:
    """Glue every scalar leaf of ``tree`` as ``prefix.key.subkey``; returns what was glued."""
    flat = flatten(tree, prefix)
    for name, value in flat.items():
        glue(name, value)
    return flat


# ------------------------------------------------------------------ results tables
RATES = ("efficacy", "generalization", "specificity", "score", "recall")


def results_numbers(table: Mapping) -> dict[str, dict]:
    """``{label: {metric: value}}`` of a ``bench/reproduce.py`` table, in its printed units.

    Rates in per cent, text NLL in nats, ``distance`` the largest per-layer distance to the
    one-time weights, ``edit_seconds`` the editing time; ``unedited`` from the table's ``pre``.
    """
    rows = {"unedited": {**table["pre"], **table["pre_general"]}}
    for row in table["rows"]:
        rows[row["label"]] = {**row["post"], **(row.get("general") or {}),
                              "edit_seconds": row["timings"]["edit"]}
        if row.get("se_vs_ote"):
            rows[row["label"]]["distance"] = max(row["se_vs_ote"].values())
    for numbers in rows.values():
        numbers.pop("recall_by_relation", None)
        for key in RATES:
            if numbers.get(key) is not None:
                numbers[key] = 100 * numbers[key]
    return rows


def summary_numbers(summary: Mapping) -> dict[str, dict]:
    """``{label: {metric: mean, metric-std: std}}`` of a ``bench/reproduce.py --aggregate``
    summary (mean ± std over seeds), in the units of :func:`results_numbers`: rates in per
    cent, ``nll`` in nats, ``distance`` the largest per-layer distance to the one-time weights.
    """
    names = {"general.recall": "recall", "general.nll": "nll", "se_vs_ote": "distance"}
    rows = {"unedited": {**summary["pre"], **summary["pre_general"]}}
    rows.update(summary["methods"])
    numbers = {}
    for label, stats in rows.items():
        numbers[label] = {}
        for key, stat in stats.items():
            name = names.get(key, key)
            scale = 100 if name in RATES else 1
            numbers[label][name] = scale * stat["mean"]
            numbers[label][f"{name}-std"] = scale * stat["std"]
    return numbers


def glue_summary(prefix: str, summary: Mapping) -> dict[str, dict]:
    """Glue every mean and std of a seeds summary as ``prefix.label.metric`` and
    ``prefix.label.metric-std``, and its protocol as ``prefix.protocol.*``; returns them."""
    numbers = summary_numbers(summary)
    glue_all(prefix, numbers)
    scale = summary["scale"]
    glue_all(f"{prefix}.protocol", {"n": scale["n"], "batch-size": scale["batch_size"],
                                    "batches": scale["n"] // scale["batch_size"],
                                    "seeds": len(summary["seeds"])})
    return numbers


def glue_results(prefix: str, table: Mapping) -> dict[str, dict]:
    """Glue every number of a results table as ``prefix.label.metric`` (``ci.memit.efficacy``),
    its protocol as ``prefix.protocol.*`` and the ranges the prose quotes; returns the numbers."""
    numbers = results_numbers(table)
    glue_all(prefix, numbers)
    scale = table["scale"]
    glue_all(f"{prefix}.protocol", {**scale, "batches": scale["n"] // scale["batch_size"]})
    glue(f"{prefix}.wall-minutes", table["wall_seconds"] / 60)
    edited = [v for k, v in numbers.items() if k not in ("unedited", "memit-seq (one-time)")]
    for key in ("distance", "edit_seconds"):
        glue(f"{prefix}.{slug(key)}-min", min(v[key] for v in edited))
        glue(f"{prefix}.{slug(key)}-max", max(v[key] for v in edited))
    return numbers
