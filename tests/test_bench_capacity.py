"""bench/capacity.py: the random-key law and the budget rule."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "capacity", Path(__file__).resolve().parents[1] / "bench" / "capacity.py")
capacity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(capacity)


@pytest.mark.parametrize("ratio", [0.05, 0.25])
def test_random_leak_over_self_depends_on_n_over_d(ratio):
    small = capacity.random_ratio(128, int(128 * ratio), 128.0, untouched=300)
    large = capacity.random_ratio(512, int(512 * ratio), 512.0, untouched=300)
    assert small == pytest.approx(large, rel=0.1)


def test_random_leak_grows_with_the_number_of_edits():
    ratios = [capacity.random_ratio(256, n, 256.0, untouched=200) for n in (8, 32, 128)]
    assert ratios[0] < ratios[1] < ratios[2]


def test_orthogonal_directions_leak_nothing_so_the_law_is_not_trivial():
    # keys in disjoint coordinates: the untouched ones take none of the edits' residuals
    import torch
    geometry = capacity._geometry()
    eye = torch.eye(16, dtype=torch.float64)
    own, leak = geometry.coefficients(eye[:, :4], eye[:, 4:], eye, 1.0, 0.0)
    assert leak == pytest.approx(0.0, abs=1e-12) and own == pytest.approx(0.5)


def test_budget_is_the_largest_n_within_the_reference():
    curve = [{"n": 25, "ratio": 0.3}, {"n": 100, "ratio": 0.58}, {"n": 300, "ratio": 0.9}]
    assert capacity.budget(curve, 0.6) == 100
    assert capacity.budget(curve, 0.2) == 0
    assert capacity.budget(curve, 1.0) == 300
