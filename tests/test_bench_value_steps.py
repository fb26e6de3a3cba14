"""bench/value_steps.py: one timing per Adam step, the optimiser left as it was, same z*."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from oteseq import model_reads, values
from oteseq.methods import default_hparams
from oteseq.values import optimise

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():  # the script puts bench/ on sys.path itself (for shapes)
    spec = importlib.util.spec_from_file_location("value_steps", ROOT / "bench" / "value_steps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_timing_per_step_and_the_optimiser_restored(bench):
    original = optimise._RowAdam.step
    per_step, (wall, cpu), timed = bench.step_times("tiny", 3, 4)
    assert optimise._RowAdam.step is original
    assert len(per_step) == int(timed.steps.max()) == 3  # a random model never stops early
    assert all(w >= 0 and c >= 0 for w, c in per_step)
    assert sum(w for w, _ in per_step) <= wall and sum(c for _, c in per_step) <= cpu + 1e-6
    # the stamps do not change the optimisation: z* equals an untimed run on the same model
    shapes = sys.modules["shapes"]
    tok = shapes.toy_tokenizer()
    model = shapes.random_gpt2("tiny", tok)
    hp = default_hparams(model, "alphaedit").replace(
        mom2_corpus="toy", template_source="toy", v_num_grad_steps=4)
    plain = values.compute_values(model, tok, shapes.toy_requests(3), hp.layers[-1], hp,
                                  templates=model_reads.templates(model, tok, hp, seed=0))
    assert torch.equal(plain.z, timed.z)
