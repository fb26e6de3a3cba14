"""bench/value_levers.py: every setting runs, its switches take effect, and all are undone."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from oteseq import models
from oteseq.values import prompts, suffix

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():  # the script puts bench/ on sys.path itself (for shapes and value_steps)
    spec = importlib.util.spec_from_file_location("value_levers",
                                                  ROOT / "bench" / "value_levers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_setting_runs_and_is_undone(bench):
    originals = (suffix._token_maps, models.fused_equivalent, prompts.loss_log_probs)
    for setting in bench.SETTINGS:
        assert bench.per_step_cpu(setting, "tiny", 2, 3) > 0
    assert (suffix._token_maps, models.fused_equivalent, prompts.loss_log_probs) == originals


def test_the_unpacked_setting_keeps_the_mlps_only(bench):
    shapes = bench.sys.modules["shapes"]
    model = shapes.random_gpt2("tiny", shapes.toy_tokenizer())
    blocks, mask = [1, 2, 3], torch.ones(2, 3, dtype=torch.bool)
    packed = bench._mlp_only(model, blocks, mask, mask)
    assert [m for m, _ in packed] == [models.mlp(model, j) for j in blocks]
    assert len(suffix._token_maps(model, blocks, mask, mask)) > len(packed)
