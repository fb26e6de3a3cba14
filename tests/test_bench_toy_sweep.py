"""The sweep's rule: closeness to all bars, passing settings ranked by Score."""
import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "toy_sweep", Path(__file__).resolve().parents[1] / "bench" / "toy_sweep.py")
toy_sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(toy_sweep)


def row(eff, gen, recall, nll, score, name=""):
    return {"name": name, "post": {"efficacy": eff, "generalization": gen, "score": score},
            "pre_general": {"recall": 0.8, "nll": 2.0},
            "general": {"recall": recall * 0.8, "nll": nll * 2.0}}


def test_closeness_is_the_tightest_bar():
    assert toy_sweep.closeness(row(0.95, 0.85, 0.90, 1.03, 0.9)) == pytest.approx(1.0)
    assert toy_sweep.closeness(row(0.475, 0.85, 0.9, 1.0, 0.9)) == pytest.approx(0.5)
    assert toy_sweep.closeness(row(1.0, 1.0, 0.45, 1.0, 0.9)) == pytest.approx(0.5)
    assert toy_sweep.closeness(row(1.0, 1.0, 1.0, 2.06, 0.9)) == pytest.approx(0.5)
    assert toy_sweep.passes(row(0.96, 0.9, 0.95, 1.0, 0.9))
    assert not toy_sweep.passes(row(0.94, 0.9, 0.95, 1.0, 0.9))


def test_best_prefers_score_among_passing_else_closeness():
    passing = [row(0.96, 0.9, 0.95, 1.0, 0.80, "a"), row(0.99, 0.9, 0.91, 1.0, 0.85, "b")]
    failing = row(1.0, 1.0, 0.5, 1.0, 0.99, "c")
    assert toy_sweep.best(passing + [failing])["name"] == "b"
    # nothing passes: an editor that preserves but barely edits loses to a balanced one
    balanced = row(0.93, 0.83, 0.88, 1.0, 0.80, "balanced")
    timid = row(0.30, 0.40, 0.99, 1.0, 0.40, "timid")
    assert toy_sweep.best([timid, balanced, failing])["name"] == "balanced"
