"""The broader class: updates ``Δ B`` through a fixed linear map ``B`` with a Tikhonov term ``G``.

Members: ``B = I, G = lam C0`` (MEMIT), ``B = P, G = alpha I`` (AlphaEdit), ``B`` a 0/1 neuron
mask (NSE), and sums of such ``G``. Every member's SE with ``K_p`` equals its OTE.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from oteseq.errors import ShapeError
from oteseq.ols._checks import (Keys, cat_batches, check_keys, check_kv, check_square,
                                check_symmetric, to_f64)
from oteseq.ols.least_squares import gram
from oteseq.ols.linalg import solve_spd64


def neuron_mask(indices: Sequence[int] | torch.Tensor, d: int, *,
                dtype: torch.dtype = torch.float64,
                device: torch.device | str | None = None) -> torch.Tensor:
    """NSE-style mask ``B = diag(m)``, ``m_i = 1`` for the selected key neurons, else 0.

    ``Δ B`` changes only the columns of ``W`` (d_out, d_in) that read the selected neurons.
    Shapes: ``indices`` into ``range(d)`` → ``B`` (d, d).
    """
    idx = torch.as_tensor(indices, dtype=torch.long).flatten()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= d):
        raise ShapeError(f"neuron indices must lie in [0, {d}), got min {int(idx.min())}, "
                         f"max {int(idx.max())}; d is the key dimension d_in")
    mask = torch.zeros(d, dtype=dtype, device=device)
    mask[idx.to(mask.device)] = 1.0
    return torch.diag(mask)


def range_basis(B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of ``B`` on its range: ``B = U diag(s) Zᵀ`` with ``s > 0`` (rank r).

    Rank tolerance ``s > max(s)·d·eps``. Returns ``U`` (d, r), ``s`` (r,), ``Z`` (d, r).
    """
    U, s, Zh = torch.linalg.svd(B)
    tol = float(s.max()) * max(B.shape) * torch.finfo(B.dtype).eps if s.numel() else 0.0
    r = int((s > tol).sum())
    return U[:, :r], s[:r], Zh[:r].T


def reparam_step(W: torch.Tensor, K: torch.Tensor, V: torch.Tensor, B: torch.Tensor,
                 G: torch.Tensor, *, K_p: torch.Tensor | None = None) -> torch.Tensor:
    """One step of the broader class: the update acts through a fixed linear map ``B``.

    Minimises ``‖(W + Δ B) K − V‖² + ‖Δ B K_p‖² + tr(Δ B G Bᵀ Δᵀ)`` over ``Δ``; the weight
    change is ``Δ B``. Normal equations ``Δ B M Bᵀ = R Kᵀ Bᵀ``, ``M = K Kᵀ + K_p K_pᵀ + G``,
    ``R = V − W K``. ``B`` may be singular (a projector, a mask), so the equations are solved on
    the range of ``B``: with ``B = U diag(s) Zᵀ`` (rank r), the minimum-norm solution is
    ``Δ = R Kᵀ Z (Zᵀ M Z)⁻¹ diag(1/s) Uᵀ`` and ``Δ B = R Kᵀ Z (Zᵀ M Z)⁻¹ Zᵀ``.
    For an orthogonal projector or a 0/1 mask (``B = Bᵀ = B²``) this ``Δ`` already equals ``Δ B``.

    Shapes: ``W`` (d_out, d_in), ``K`` (d_in, n), ``V`` (d_out, n), ``B`` (d_in, d_in),
    ``G`` (d_in, d_in) PSD, ``K_p`` (d_in, m) or ``None`` → ``Δ`` (d_out, d_in), ``W``'s dtype.
    """
    W64, K64, V64, B64, G64, Kp = to_f64(W=W, K=K, V=V, B=B, G=G, K_p=K_p)
    check_kv(W64, K64, V64)
    d_in = W64.shape[1]
    check_square(B64, d_in, "B")
    check_square(G64, d_in, "G")
    check_symmetric(G64, "G", G.dtype)
    check_keys(Kp, d_in, "K_p")
    return reparam_delta64(W64, K64, V64, B64, G64, Kp).to(W.dtype)


def reparam_delta64(W: torch.Tensor, K: torch.Tensor, V: torch.Tensor, B: torch.Tensor,
                    G: torch.Tensor, K_p: torch.Tensor | None) -> torch.Tensor:
    """:func:`reparam_step` on checked float64 tensors (internal)."""
    U, s, Z = range_basis(B)
    M = K @ K.T + gram(K_p, W.shape[1], W) + G
    X = solve_spd64(Z.T @ M @ Z, (V - W @ K) @ K.T @ Z, name="Zᵀ M Z")
    return (X / s) @ U.T


def reparam_ote(W0: torch.Tensor, K: Keys, V: Keys, B: torch.Tensor,
                G: torch.Tensor) -> torch.Tensor:
    """One-time editing of all edits within the broader class.

    Minimises ``‖(W0 + Δ B) K − V‖² + tr(Δ B G Bᵀ Δᵀ)`` over ``Δ`` and returns the edited
    weight ``W0 + Δ B`` (closed form of :func:`reparam_step` with no ``K_p``).

    Shapes: ``W0`` (d_out, d_in), ``K`` (d_in, n) or a list of batches, ``V`` (d_out, n) or the
    matching list, ``B``, ``G`` (d_in, d_in) → ``W`` (d_out, d_in) in ``W0``'s dtype.
    """
    W64, K64, V64, B64, G64 = to_f64(W0=W0, K=cat_batches(K, "K"), V=cat_batches(V, "V"),
                                     B=B, G=G)
    check_kv(W64, K64, V64)
    check_square(B64, W64.shape[1], "B")
    check_square(G64, W64.shape[1], "G")
    check_symmetric(G64, "G", G.dtype)
    delta = reparam_delta64(W64, K64, V64, B64, G64, None)
    return (W64 + delta @ B64).to(W0.dtype)
