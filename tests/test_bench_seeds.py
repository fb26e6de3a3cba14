"""bench/seeds.py: mean ± std over seeds of reproduction tables, checked on made-up tables."""
from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def seeds():
    spec = importlib.util.spec_from_file_location("seeds", ROOT / "bench" / "seeds.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("seeds", module)
    spec.loader.exec_module(sys.modules["seeds"])
    return sys.modules["seeds"]


def _table(seed: int, eff: float) -> dict:
    rates = {"efficacy": eff, "generalization": eff - 0.1, "specificity": 0.7, "score": 0.6}
    row = {"label": "memit-seq", "post": rates, "general": {"recall": 0.9, "nll": 1.5 + seed},
           "se_vs_ote": {"1": 0.2 + seed, "2": 0.1}, "timings": {"edit": 10.0}}
    return {"scale": {"n": 4, "batch_size": 2, "seed": seed}, "data": f"seed {seed}",
            "model": "toy-v2", "model_description": "tiny", "evaluate": "counterfact",
            "pre": {k: 0.0 for k in rates}, "pre_general": {"recall": 1.0, "nll": 1.5},
            "rows": [row]}


def _run(seed: int) -> dict:
    curves = [{"batch": 1, "n_edited": 2, "general": {"recall": 0.9 - seed / 10, "nll": 1.6}}]
    return {"config": {"label": "memit-seq", "method": "memit-seq"},
            "metrics": {"pre": {"general": {"recall": 1.0, "nll": 1.5}}, "curves": curves}}


def test_summary_is_mean_and_sample_std_over_seeds(seeds, tmp_path):
    for seed, eff in ((0, 0.9), (1, 0.8), (2, 1.0)):
        folder = tmp_path / f"seed{seed}"
        (folder / "runs").mkdir(parents=True)
        (folder / "table.json").write_text(json.dumps(_table(seed, eff)))
        (folder / "runs" / "memit-seq.json").write_text(json.dumps(_run(seed)))
    text = seeds.aggregate(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    eff = summary["methods"]["memit-seq"]["efficacy"]
    assert eff["mean"] == pytest.approx(0.9) and eff["n"] == 3
    assert eff["std"] == pytest.approx(statistics.stdev([0.9, 0.8, 1.0]))
    nll = summary["methods"]["memit-seq"]["general.nll"]
    assert nll["mean"] == pytest.approx(2.5)
    assert summary["methods"]["memit-seq"]["se_vs_ote"]["mean"] == pytest.approx(1.2)
    assert summary["seeds"] == [0, 1, 2]
    assert "| memit-seq | 90.0 ± 10.0 |" in text
    assert (tmp_path / "general.png").stat().st_size > 1000
    curve = seeds._curve(seeds._general_curves(tmp_path)["memit-seq"], "recall")
    assert curve == [(0, 1.0), (2, pytest.approx(0.8))]


def test_no_tables_is_a_clear_error(seeds, tmp_path):
    with pytest.raises(SystemExit, match="seed"):
        seeds.aggregate(tmp_path)
