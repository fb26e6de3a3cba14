"""One-time editing (OTE), sequential editing (SE), ridge and AlphaEdit: regularised OLS steps.

All updates solve normal equations ``Δ A = R Kᵀ`` with an SPD ``A`` by Cholesky
(:func:`oteseq.ols.linalg.solve_spd`); ``R = V − W K`` is the residual on the current weights.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from oteseq.errors import OptionError
from oteseq.ols._checks import (Keys, cat_batches, check_keys, check_kv, check_nonnegative,
                                check_square, check_symmetric, to_f64)
from oteseq.ols.linalg import solve_spd64


def gram(K: torch.Tensor | None, d_in: int, like: torch.Tensor) -> torch.Tensor:
    """``K Kᵀ`` (d_in, d_in), or zeros when ``K`` is ``None``."""
    if K is None:
        return torch.zeros(d_in, d_in, dtype=like.dtype, device=like.device)
    return K @ K.T


def ote(W0: torch.Tensor, C0: torch.Tensor, K: Keys, V: Keys, lam: float) -> torch.Tensor:
    """One-time editing: all edits in one regularised least-squares problem.

    Minimises ``‖W K − V‖² + lam·tr((W − W0) C0 (W − W0)ᵀ)`` over ``W``.
    Closed form: ``W A = lam W0 C0 + V Kᵀ`` with ``A = lam C0 + K Kᵀ``, computed as
    ``W = W0 + (V − W0 K) Kᵀ A⁻¹`` (MEMIT on the union of all edits).

    Shapes: ``W0`` (d_out, d_in), ``C0`` (d_in, d_in), ``K`` (d_in, n) or a list of
    (d_in, n_t) batches, ``V`` (d_out, n) or the matching list → ``W`` (d_out, d_in) in
    ``W0``'s dtype.
    """
    lam = check_nonnegative(lam, "lam", "preservation")
    W, C, Ks, Vs = to_f64(W0=W0, C0=C0, K=cat_batches(K, "K"), V=cat_batches(V, "V"))
    check_kv(W, Ks, Vs)
    check_square(C, W.shape[1], "C0")
    check_symmetric(C, "C0", C0.dtype)
    A = lam * C + Ks @ Ks.T
    return (W + solve_spd64(A, (Vs - W @ Ks) @ Ks.T)).to(W0.dtype)


def se_step(W: torch.Tensor, C0: torch.Tensor, K: torch.Tensor, V: torch.Tensor, lam: float,
            K_p: torch.Tensor | None = None) -> torch.Tensor:
    """One sequential-editing step from the current weights ``W``.

    Minimises ``‖(W + Δ) K − V‖² + ‖Δ K_p‖² + lam·tr(Δ C0 Δᵀ)`` over ``Δ``.
    Closed form: ``Δ = (V − W K) Kᵀ (lam C0 + K_p K_pᵀ + K Kᵀ)⁻¹``.
    Aligned (MEMIT-seq) when ``K_p`` holds all earlier keys: then ``W + Δ`` equals OTE of all
    edits so far. With ``K_p=None`` the term is dropped: plain MEMIT batch after batch
    (misaligned; it forgets earlier edits and drifts from ``W0``).

    Shapes: ``W`` (d_out, d_in), ``C0`` (d_in, d_in), ``K`` (d_in, n), ``V`` (d_out, n),
    ``K_p`` (d_in, m) or ``None`` → ``Δ`` (d_out, d_in) in ``W``'s dtype.
    """
    lam = check_nonnegative(lam, "lam", "preservation")
    W64, C, K64, V64, Kp = to_f64(W=W, C0=C0, K=K, V=V, K_p=K_p)
    check_kv(W64, K64, V64)
    check_square(C, W64.shape[1], "C0")
    check_symmetric(C, "C0", C0.dtype)
    check_keys(Kp, W64.shape[1], "K_p")
    A = lam * C + gram(Kp, W64.shape[1], C) + K64 @ K64.T
    return solve_spd64(A, (V64 - W64 @ K64) @ K64.T).to(W.dtype)


def se(W0: torch.Tensor, C0: torch.Tensor,
       batches: Sequence[tuple[torch.Tensor, torch.Tensor]], lam: float, *,
       aligned: bool = True) -> list[torch.Tensor]:
    """Sequential editing, the naive loop: one :func:`se_step` per batch ``(K_t, V_t)``.

    Step t minimises ``‖(W_{t−1} + Δ) K_t − V_t‖² + ‖Δ K_p‖² + lam·tr(Δ C0 Δᵀ)`` with
    ``K_p = [K_1 … K_{t−1}]`` when ``aligned`` (MEMIT-seq; then ``W_t = ote(W0, C0, K_{1:t},
    V_{1:t}, lam)``), and without the ``K_p`` term otherwise (plain MEMIT, sequentially).

    Returns the history ``[W0, W_1, …, W_T]`` (so ``history[t]`` is ``W_t``), each
    (d_out, d_in) in ``W0``'s dtype. Re-forms ``K_p K_pᵀ`` every step: for teaching and tests;
    :class:`oteseq.LinearMemory` keeps the accumulated ``A`` instead.
    """
    history = [W0]
    earlier: list[torch.Tensor] = []
    for K, V in batches:
        K_p = torch.cat(earlier, dim=1) if aligned and earlier else None
        history.append(history[-1] + se_step(history[-1], C0, K, V, lam, K_p))
        earlier.append(K)
    return history


def ridge(W: torch.Tensor, K: torch.Tensor, V: torch.Tensor, alpha: float, *,
          K_p: torch.Tensor | None = None) -> torch.Tensor:
    """Ridge-regression step: fit the new edits, keep old-key outputs, keep the update small.

    Minimises ``‖(W + Δ) K − V‖² + ‖Δ K_p‖² + alpha‖Δ‖²`` over ``Δ``.
    Closed form: ``Δ = (V − W K) Kᵀ (K Kᵀ + K_p K_pᵀ + alpha I)⁻¹``.

    Shapes: ``W`` (d_out, d_in), ``K`` (d_in, n), ``V`` (d_out, n), ``K_p`` (d_in, m) or
    ``None`` → ``Δ`` (d_out, d_in) in ``W``'s dtype.
    """
    alpha = check_nonnegative(alpha, "alpha", "ridge")
    W64, K64, V64, Kp = to_f64(W=W, K=K, V=V, K_p=K_p)
    check_kv(W64, K64, V64)
    d_in = W64.shape[1]
    check_keys(Kp, d_in, "K_p")
    eye = torch.eye(d_in, dtype=W64.dtype, device=W64.device)
    A = K64 @ K64.T + gram(Kp, d_in, W64) + alpha * eye
    return solve_spd64(A, (V64 - W64 @ K64) @ K64.T).to(W.dtype)


def alphaedit_step(W: torch.Tensor, K: torch.Tensor, V: torch.Tensor, P: torch.Tensor,
                   alpha: float, *, K_p: torch.Tensor | None = None,
                   C0: torch.Tensor | None = None, lam: float = 0.0) -> torch.Tensor:
    """AlphaEdit step: a ridge update confined to the null-space projector ``P``.

    Minimises ``‖(W + Δ P) K − V‖² + ‖Δ P K_p‖² + lam·tr(Δ P C0 P Δᵀ) + alpha‖Δ‖²``.
    Reference form: ``Δ = R Kᵀ P (M P + alpha I)⁻¹``, ``M = K Kᵀ + K_p K_pᵀ + lam C0``
    (``K_p`` term only when given, ``lam C0`` only when ``lam > 0``), ``R = V − W K``.
    Computed in the equivalent symmetric form, ridge regression on projected keys ``P K``::

        Δ = R (PK)ᵀ (P M P + alpha I)⁻¹

    Identity (``P = Pᵀ = P²``): ``P(MP + αI) = (PMP + αI)P``, hence
    ``P(MP + αI)⁻¹ = (PMP + αI)⁻¹P``, and ``PMP + αI`` commutes with ``P``; so
    ``Kᵀ P (MP + αI)⁻¹ = Kᵀ P (PMP + αI)⁻¹``. The result satisfies ``Δ = Δ P``.
    ``alpha = 0`` is solvable only when ``PMP`` is non-singular (e.g. ``P = I``, ``lam > 0``).

    Shapes: ``W`` (d_out, d_in), ``K`` (d_in, n), ``V`` (d_out, n), ``P`` (d_in, d_in)
    symmetric projector, ``K_p`` (d_in, m) or ``None``, ``C0`` (d_in, d_in) or ``None``
    → ``Δ`` (d_out, d_in) in ``W``'s dtype.
    """
    alpha = check_nonnegative(alpha, "alpha", "ridge")
    lam = check_nonnegative(lam, "lam", "preservation")
    if lam > 0 and C0 is None:
        raise OptionError("lam > 0 needs C0: pass C0=... or leave lam=0.0")
    W64, K64, V64, P64, Kp, C = to_f64(W=W, K=K, V=V, P=P, K_p=K_p, C0=C0 if lam > 0 else None)
    check_kv(W64, K64, V64)
    d_in = W64.shape[1]
    check_square(P64, d_in, "P")
    check_symmetric(P64, "P", P.dtype)
    check_keys(Kp, d_in, "K_p")
    PK = P64 @ K64
    A = PK @ PK.T + alpha * torch.eye(d_in, dtype=W64.dtype, device=W64.device)
    if Kp is not None:
        PKp = P64 @ Kp
        A = A + PKp @ PKp.T
    if C is not None:
        check_square(C, d_in, "C0")
        check_symmetric(C, "C0", C0.dtype)  # type: ignore[union-attr]  # C0 given when C is
        A = A + lam * (P64 @ C @ P64)
    return solve_spd64(A, (V64 - W64 @ K64) @ PK.T).to(W.dtype)


def forgetting_step(W: torch.Tensor, W0: torch.Tensor, C0: torch.Tensor, K: torch.Tensor,
                    V: torch.Tensor, lam: float) -> torch.Tensor:
    """The released code's "forgetting" step (``MEMIT_forgetting``): a fresh OTE of this batch.

    Minimises ``‖(W + Δ) K − V‖² + lam·tr((W − W0 + Δ) C0 (W − W0 + Δ)ᵀ)`` over ``Δ``.
    Closed form: ``Δ (lam C0 + K Kᵀ) = R Kᵀ − lam (W − W0) C0``, ``R = V − W K``; then
    ``W + Δ = ote(W0, C0, K, V, lam)``: earlier edits are forgotten, the anchor ``W0`` is exact.

    Shapes: ``W``, ``W0`` (d_out, d_in), ``C0`` (d_in, d_in), ``K`` (d_in, n), ``V`` (d_out, n)
    → ``Δ`` (d_out, d_in) in ``W``'s dtype.
    """
    lam = check_nonnegative(lam, "lam", "preservation")
    W64, W064, C, K64, V64 = to_f64(W=W, W0=W0, C0=C0, K=K, V=V)
    check_kv(W64, K64, V64)
    check_kv(W064, K64, V64)
    check_square(C, W64.shape[1], "C0")
    check_symmetric(C, "C0", C0.dtype)
    rhs = (V64 - W64 @ K64) @ K64.T - lam * (W64 - W064) @ C
    return solve_spd64(lam * C + K64 @ K64.T, rhs).to(W.dtype)
