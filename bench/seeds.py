"""Mean ± std over seeds of the reproduction tables (``bench/reproduce.py --aggregate DIR``).

Reads ``DIR/seed*/table.json`` and writes ``DIR/summary.json``, ``DIR/summary.md`` (the paper's
table layout: mean ± sample std over seeds) and ``DIR/general.png`` (untouched-fact recall and
held-out text NLL against the number of edits, mean over seeds, one line per method: the toy
analogue of the paper's Figure 1, right).
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

RATES = ("efficacy", "generalization", "specificity", "score")


def _stat(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def _curve(rows: list[dict], key: str) -> list[tuple[int, float]]:
    """Mean over seeds of ``general[key]`` at each number of edits (0 = unedited)."""
    by_n: dict[int, list[float]] = {}
    for row in rows:
        for n, value in row["curve"]:
            by_n.setdefault(n, []).append(value[key])
    return sorted((n, statistics.fmean(v)) for n, v in by_n.items())


def summarise(tables: list[dict]) -> dict:
    """Per method label: mean/std of the post rates, general ability and SE-vs-OTE distance."""
    labels = [row["label"] for row in tables[0]["rows"]]
    out = {"seeds": [t["scale"]["seed"] for t in tables], "data": [t["data"] for t in tables],
           "model": tables[0]["model"], "model_description": tables[0].get("model_description"),
           "evaluate": tables[0].get("evaluate", "counterfact"), "scale": tables[0]["scale"],
           "pre": {k: _stat([t["pre"][k] for t in tables]) for k in RATES},
           "pre_general": {k: _stat([t["pre_general"][k] for t in tables])
                           for k in ("recall", "nll")}, "methods": {}}
    for label in labels:
        rows = [next(r for r in t["rows"] if r["label"] == label) for t in tables]
        entry = {k: _stat([r["post"][k] for r in rows]) for k in RATES}
        entry.update({f"general.{k}": _stat([(r["general"] or {}).get(k) for r in rows])
                      for k in ("recall", "nll")})
        entry["se_vs_ote"] = _stat([max(r["se_vs_ote"].values()) if r["se_vs_ote"] else None
                                    for r in rows])
        entry["edit_seconds"] = _stat([r["timings"].get("edit") for r in rows])
        out["methods"][label] = entry
    return out


def _fmt(s: dict, scale: float = 100.0, digits: int = 1) -> str:
    if s["mean"] is None:
        return "–"
    return f"{scale * s['mean']:.{digits}f} ± {scale * s['std']:.{digits}f}"


def markdown(summary: dict) -> str:
    """The mean ± std table, the setting spelled out above it."""
    sc = summary["scale"]
    lines = [f"Toy world ({summary['model']}: {summary['model_description']}), "
             f"{summary['evaluate']}-style records, {sc['n']} edits in batches of "
             f"{sc['batch_size']}, seeds {summary['seeds']}: mean ± std over seeds. "
             "**Toy-world numbers**, not the paper's GPT-2 XL / GPT-J / Llama-3 numbers.", "",
             "| Method | Eff. | Gen. | Spe. | Score | Untouched recall | Text NLL | "
             "max ‖W_seq−W_ote‖/‖W_ote−W0‖ |", "|---|---|---|---|---|---|---|---|"]
    pre, pg = summary["pre"], summary["pre_general"]
    lines.append(f"| unedited | {_fmt(pre['efficacy'])} | {_fmt(pre['generalization'])} | "
                 f"{_fmt(pre['specificity'])} | {_fmt(pre['score'])} | {_fmt(pg['recall'])} | "
                 f"{_fmt(pg['nll'], 1, 3)} | – |")
    for label, m in summary["methods"].items():
        lines.append(f"| {label} | {_fmt(m['efficacy'])} | {_fmt(m['generalization'])} | "
                     f"{_fmt(m['specificity'])} | {_fmt(m['score'])} | "
                     f"{_fmt(m['general.recall'])} | {_fmt(m['general.nll'], 1, 3)} | "
                     f"{_fmt(m['se_vs_ote'], 1, 3)} |")
    return "\n".join(lines) + "\n"


def _general_curves(folder: Path) -> dict[str, list[dict]]:
    """Per label and seed: [(n_edited, general)] from the runs' curves."""
    curves: dict[str, list[dict]] = {}
    for run in sorted(folder.glob("seed*/runs/*.json")):
        result = json.loads(run.read_text())
        label = result["config"].get("label") or result["config"]["method"]
        points = [(0, result["metrics"]["pre"]["general"])] if "general" in result["metrics"][
            "pre"] else []
        points += [(p["n_edited"], p["general"]) for p in result["metrics"]["curves"]
                   if "general" in p]
        if len(points) > 1:
            curves.setdefault(label, []).append({"curve": points})
    return curves


def plot_general(folder: Path, path: Path) -> None:
    """Untouched-fact recall and text NLL against edits, mean over seeds, one line a method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = _general_curves(folder)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, name in zip(axes, ("recall", "nll"),
                             ("recall of untouched facts", "held-out text NLL (nats/token)")):
        for label, rows in curves.items():
            ax.plot(*zip(*_curve(rows, key)), marker="o", markersize=3, label=label)
        ax.set_xlabel("number of edits")
        ax.set_ylabel(name)
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def aggregate(folder: Path) -> str:
    """Write summary.json / summary.md / general.png for ``folder``; returns the markdown."""
    tables = [json.loads(p.read_text()) for p in sorted(folder.glob("seed*/table.json"))]
    if not tables:
        raise SystemExit(f"no {folder}/seed*/table.json: run bench/reproduce.py --seed N first")
    summary = summarise(tables)
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    text = markdown(summary)
    (folder / "summary.md").write_text(text)
    plot_general(folder, folder / "general.png")
    return text
