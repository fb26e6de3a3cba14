"""bench/gpu.py: the smoke path edits a tiny random model on a CPU; the full run refuses
without CUDA and says what to do."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_path_runs_two_batches_and_reports_the_phases(gpu_bench, capsys, tmp_path,
                                                            monkeypatch):
    monkeypatch.setenv("OTESEQ_CACHE", str(tmp_path))
    totals = gpu_bench.main(["--smoke", "--cpu", "--method", "alphaedit", "--steps", "2"])
    out = capsys.readouterr().out
    assert out.count("batch ") == 2 and "values" in out and "peak GPU memory" in out
    assert 0 < totals["n_edits"] <= 10
    assert all(totals[phase] > 0 for phase in ("values", "keys", "solve"))
    assert totals["wall"] >= totals["values"] + totals["keys"] + totals["solve"] - 1e-6


def test_full_run_without_cuda_refuses_with_the_fix(gpu_bench, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="--smoke"):
        gpu_bench.main([])
