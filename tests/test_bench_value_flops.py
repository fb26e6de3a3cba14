"""bench/value_flops.py: the FLOP count written out by hand for a small case."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load():
    spec = importlib.util.spec_from_file_location("value_flops", ROOT / "bench" / "value_flops.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flops_by_hand():
    c = dict(layers=3, upper=2, d=2, vocab=5, reference=10, suffix=4, loss=3, capture=8)
    ref, ote = load().flops(c, steps=2)
    block, head, mlp = 24 * 4, 2 * 2 * 5, 16 * 4  # 96, 20, 64
    assert ref == 2 * 10 * (3 * block + head) + 1 * 10 * (2 * block + head)
    step = 4 * 2 * block - (4 - 3) * mlp + 3 * head  # last block's MLP at the 3 loss positions
    assert ote == 8 * 3 * block + 3 * step
