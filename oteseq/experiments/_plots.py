"""Figures of results: metric against the number of edits, and methods side by side."""
from __future__ import annotations

from typing import Sequence

from ._result import Result


def metric_value(point: dict, metric: str):
    """``point[metric]``; a dotted name reaches inside (``"general.recall"``)."""
    value = point
    for part in metric.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _label(result: Result) -> str:
    return result.config.get("label") or result.method


def plot_curves(results: Sequence[Result], metric: str, ax=None):
    """``metric`` of the records edited so far (or ``general.*``) against the number of edits,
    one line per result, starting from the unedited model. Returns the figure."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots()
    for result in results:
        pre = metric_value(result.metrics["pre"], metric)
        points = [(p["n_edited"], metric_value(p, metric)) for p in result.metrics["curves"]]
        points = ([(0, pre)] if pre is not None else []) + [p for p in points if p[1] is not None]
        if points:
            ax.plot(*zip(*points), marker="o", markersize=3, label=_label(result))
    ax.set_xlabel("number of edits")
    ax.set_ylabel(metric)
    ax.legend(fontsize="small")
    return ax.figure


def plot_methods(results: Sequence[Result], metrics: Sequence[str], ax=None):
    """Post-edit ``metrics`` (all edited records, final model) as grouped bars, one group per
    result. Returns the figure."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots()
    width = 0.8 / max(len(metrics), 1)
    for j, metric in enumerate(metrics):
        values = [metric_value(r.metrics["post"], metric) for r in results]
        ax.bar([i + j * width for i in range(len(results))],
               [float("nan") if v is None else v for v in values], width, label=metric)
    ax.set_xticks([i + width * (len(metrics) - 1) / 2 for i in range(len(results))])
    ax.set_xticklabels([_label(r) for r in results], rotation=30, ha="right")
    ax.legend(fontsize="small")
    return ax.figure


__all__ = ["metric_value", "plot_curves", "plot_methods"]
