"""AlphaEdit's projector onto the (near) null space of the preserved-key second moment C0."""
from __future__ import annotations

from typing import Literal

import torch

from oteseq.errors import OptionError
from oteseq.ols._checks import check_square, check_symmetric, symmetrised, to_f64

Mode = Literal["absolute", "relative", "energy"]


def nullspace_projector(C0: torch.Tensor, threshold: float = 2e-2, *,
                        mode: Mode = "absolute") -> tuple[torch.Tensor, int]:
    """Projector ``P`` onto the directions of ``C0`` that preserved keys (almost) never use.

    Makes ``‖Δ P K0‖² = tr(Δ P C0 P Δᵀ)·N`` small: updates ``Δ = Δ P`` barely move the outputs
    on preserved keys. Closed form: ``C0 = U diag(λ) Uᵀ`` (``torch.linalg.eigh``, float64),
    ``U0`` = eigenvectors kept, ``P = U0 U0ᵀ`` (symmetric, idempotent, ``rank = U0.shape[1]``).

    Which eigenvectors are kept (``λ`` ascending):

    - ``"absolute"``: ``λ < threshold`` — the AlphaEdit reference rule on the count-normalised
      second moment ``C0 = K0 K0ᵀ / N`` (threshold 2e-2);
    - ``"relative"``: ``λ < threshold · λ_max`` — scale free (the same ``P`` for ``c·C0``);
    - ``"energy"``: the smallest eigenvalues whose sum is ≤ ``threshold · Σλ``; equivalently the
      top directions holding ``(1 − threshold)`` of the eigen-mass are dropped.

    An eigenvalue within ``eigh``'s error (about 1e-16·λ_max) of the cut may fall on either
    side; its direction is used by preserved keys at the threshold's level either way, and the
    same ``C0`` gives the same bits. Shapes: ``C0`` (d_in, d_in) symmetric → ``P`` (d_in, d_in)
    in ``C0``'s dtype, ``rank`` int.
    """
    if mode not in ("absolute", "relative", "energy"):
        raise OptionError(f"mode={mode!r}: use 'absolute', 'relative' or 'energy'")
    if not 0.0 <= float(threshold) < float("inf"):
        raise OptionError(f"threshold={threshold}: use a finite threshold ≥ 0 (2e-2 absolute is "
                         f"the AlphaEdit default)")
    (C,) = to_f64(C0=C0)
    check_square(C, C.shape[0] if C.ndim == 2 else -1, "C0")
    gap = check_symmetric(C, "C0", C0.dtype)
    eigenvalues, U = torch.linalg.eigh(symmetrised(C, gap))  # ascending
    keep = kept_directions(eigenvalues, threshold, mode)
    return span_projector(U, keep).to(C0.dtype), int(keep.sum())


def span_projector(U: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``U0 U0ᵀ`` with ``U0 = U[:, keep]`` for orthonormal ``U`` (d, d), from the smaller side.

    Closed form: ``U0 U0ᵀ = I − U1 U1ᵀ`` with ``U1`` the other columns, so the product costs
    O(d² min(r, d − r)) instead of O(d² r); :func:`gram` halves it again. The result is exactly
    symmetric (a memory then shares it). Shapes: ``U`` (d, d), ``keep`` (d,) bool → (d, d).
    """
    rank, d = int(keep.sum()), U.shape[0]
    if 2 * rank <= d:
        return gram(U[:, keep])
    P = gram(U[:, ~keep]).neg_()
    P.diagonal().add_(1.0)
    return P


def gram(V: torch.Tensor, block: int = 512) -> torch.Tensor:
    """``V Vᵀ`` for ``V`` (d, r), exactly symmetric, in about half the flops of ``V @ V.T``.

    Row block ``i`` gives ``G[i, :i+1] = V_i V_{:i+1}ᵀ`` (the lower block triangle, one product
    each); the upper triangle is its mirror, each diagonal block the average with its
    transpose. Shapes: (d, r) → (d, d).
    """
    d = V.shape[0]
    G = V.new_empty(d, d)
    for start in range(0, d, block):
        stop = min(start + block, d)
        G[start:stop, :stop] = V[start:stop] @ V[:stop].T
        G[:start, start:stop] = G[start:stop, :start].T
        diagonal = G[start:stop, start:stop]
        diagonal.copy_((diagonal + diagonal.T) / 2)
    return G


def kept_directions(eigenvalues: torch.Tensor, threshold: float, mode: Mode) -> torch.Tensor:
    """Boolean mask over ascending ``eigenvalues``: which directions span the null space."""
    if mode == "absolute":
        return eigenvalues < threshold
    if mode == "relative":
        top = float(eigenvalues[-1]) if eigenvalues.numel() else 0.0
        if top <= 0.0:  # C0 = 0: no direction is used by preserved keys
            return torch.ones_like(eigenvalues, dtype=torch.bool)
        return eigenvalues < threshold * top
    mass = eigenvalues.clamp(min=0.0)
    return mass.cumsum(0) <= threshold * mass.sum()
