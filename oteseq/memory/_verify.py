"""Cheap invariants of a loaded memory state, checked before it is trusted (O(d² + d n)).

1. every tensor is finite;
2. ``A⁻¹`` inverts ``A = A0 + B Bᵀ`` (``B = P K``, or ``K``; ``A0`` alone without
   ``accumulate``): on a fixed random probe ``x``, ``‖A (A⁻¹ x) − x‖`` is small against
   ``‖A‖ ‖A⁻¹ x‖ + ‖x‖`` (a relative backward error);
3. for an exact memory (MEMIT-seq, AlphaEdit) ``W`` solves its normal equations:
   ``(W − W0) A x ≈ (V − W0 K)(Bᵀ x)`` on the same probe.

A failure raises :class:`~oteseq.errors.CorruptStateError` naming the tensor and the check.
Woodbury up/downdates keep these residuals near ``DRIFT_TOL`` (1e-10, see ``_config``); the
tolerance ``TOL`` leaves four orders of magnitude for ill-conditioned ``A`` while a zeroed,
scaled or perturbed tensor gives residuals of order 1e-3 to 1.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from oteseq.errors import CorruptStateError
from oteseq.memory import _algebra as alg

if TYPE_CHECKING:  # annotations only: _state imports this module to verify a load
    from oteseq.memory._state import MemoryState

TOL = 1e-6


def _probe(d: int, like: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(1234)
    return torch.randn(d, 1, generator=g, dtype=torch.float64).to(like.device)


def _norm(x: torch.Tensor) -> float:
    return float(torch.linalg.norm(x))


def check_state(st: MemoryState, where: str = "the state") -> None:
    """Raise :class:`CorruptStateError` unless ``st`` passes the checks of the module docstring."""
    store = st.store
    scalar = lambda M: M if not isinstance(M, alg.ScaledIdentity) else torch.tensor(M.scale)  # noqa: E731
    tensors = {"W": st.W, "W0": st.W0, "A0": scalar(st.A0), "P": st.P,
               "A_inv": scalar(st.A_inv), "E": st.E,
               "Kt": None if store.Kt is None else store.Kt[: store.used],
               "Vt": None if store.Vt is None else store.Vt[: store.used]}
    for name, t in tensors.items():
        if t is not None and not bool(torch.isfinite(t).all()):
            raise CorruptStateError(f"{where}: tensor {name} contains NaN or inf; the state is "
                                    "damaged — load an earlier save or rebuild the memory")
    d_in = st.W0.shape[1]
    if d_in == 0 or st.A_inv is None:
        return
    x = _probe(d_in, st.W0)
    if st.options.accumulate and store.Kt is not None and store.n_active:
        K, V = store.columns()
    else:
        K, V = st.W0.new_zeros(d_in, 0), st.W0[:, :0]
    y = st.A_inv @ x
    gap = _norm(alg.apply_normal(st.A0, st.P, K, y) - x)
    scale = st.A0_norm + _norm(K) ** 2  # ≥ ‖A‖_F, as ‖P K‖_F ≤ ‖K‖_F for a projector P
    relative = gap / (scale * _norm(y) + _norm(x))
    if not relative <= TOL:
        raise CorruptStateError(f"{where}: A_inv does not invert A = A0 + Σ B Bᵀ (relative "
                                f"residual {relative:.2g} on a random probe, allowed {TOL:g}); "
                                "A_inv, A0, P or the keys Kt are damaged — load an earlier save")
    if not (st.options.exact and K.shape[1]):
        return
    Ax = alg.apply_normal(st.A0, st.P, K, x)
    BtX = K.T @ alg.project(x, st.P)  # Bᵀ x = Kᵀ P x, P symmetric: O(d² + d n)
    dW = st.W - st.W0
    fit = V @ BtX - st.W0 @ (K @ BtX)  # (V − W0 K) Bᵀ x without the O(d_out d_in n) product
    gap = _norm(dW @ Ax - fit)
    size = (_norm(V) + _norm(st.W0) * _norm(K)) * _norm(BtX)  # ≥ ‖V − W0 K‖ ‖Bᵀ x‖
    relative = gap / (_norm(dW) * _norm(Ax) + size + 1e-300)
    if not relative <= TOL:
        raise CorruptStateError(f"{where}: W does not solve its constraints, (W − W0) A ≠ "
                                f"(V − W0 K) Bᵀ (relative residual {relative:.2g} on a random "
                                f"probe, allowed {TOL:g}); W, W0, Kt or Vt are damaged — load an "
                                "earlier save")


__all__ = ["TOL", "check_state"]

