"""bench/key_geometry.py: the self / leak coefficients against their closed forms."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def geometry():
    spec = importlib.util.spec_from_file_location("key_geometry",
                                                  ROOT / "bench" / "key_geometry.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("lam", [0.5, 3.0, 2000.0])
def test_orthonormal_keys_take_their_own_residual_and_leak_nothing(geometry, lam):
    basis = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64))[0]
    K1, K2 = basis[:, :4], basis[:, 4:9]
    own, leak = geometry.coefficients(K1, K2, torch.eye(12, dtype=torch.float64), lam, 0.0)
    assert own == pytest.approx(1 / (lam + 1))
    assert leak == pytest.approx(0.0, abs=1e-12)


def test_coefficients_match_a_dense_inverse(geometry):
    g = torch.Generator().manual_seed(3)
    K1 = torch.randn(10, 3, generator=g, dtype=torch.float64)
    K2 = torch.randn(10, 6, generator=g, dtype=torch.float64)
    M = torch.randn(10, 10, generator=g, dtype=torch.float64)
    C0 = M @ M.T / 10
    inverse = torch.linalg.inv(7.0 * C0 + K1 @ K1.T + 0.1 * torch.eye(10, dtype=torch.float64))
    own, leak = geometry.coefficients(K1, K2, C0, 7.0, 0.1)
    assert own == pytest.approx(torch.diagonal(K1.T @ inverse @ K1).mean().item())
    assert leak == pytest.approx((K2.T @ inverse @ K1).norm(dim=1).mean().item())
    copy_leak = geometry.coefficients(K1, K1[:, :1], C0, 7.0, 0.1)[1]
    assert copy_leak >= (K1[:, 0] @ inverse @ K1[:, 0]).item()   # a twin takes the whole edit
