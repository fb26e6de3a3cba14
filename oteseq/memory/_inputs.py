"""Checks of the tensors and ids a memory is given; each failure names the fix."""
from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

import torch

from oteseq.errors import (DeviceDtypeError, NonFiniteError, NotPSDError, RequestError,
                           ShapeError)
from oteseq.ols._checks import (check_finite, check_floating, check_symmetric, is_symmetric,
                                symmetrised)

Id = Hashable  # str, int, or a tuple of str / int
MAX_ENTRY = 1e8
"""Largest |entry| of K and V accepted: real keys and values are O(1)–O(1e4); beyond 1e8 the
rounding of ``K Kᵀ`` (≥ 1e16) swamps the O(1) constraints that a retract must remove exactly."""


def as_float64(x: object, name: str, device: torch.device | None = None) -> torch.Tensor:
    """A finite floating tensor (on ``device`` when given), as float64."""
    tensor = check_floating(x, name)
    if device is not None and tensor.device != device:
        raise DeviceDtypeError(f"{name} is on {tensor.device} but the memory lives on {device}; "
                               f"move it with {name}.to({str(device)!r})")
    check_finite(tensor, name)
    return tensor.to(torch.float64)


def check_weight(W0: object) -> torch.Tensor:
    """``W0`` is a finite floating (d_out, d_in) matrix; returns its float64 copy."""
    W = as_float64(W0, "W0")
    if W.ndim != 2:
        raise ShapeError(f"W0 has shape {tuple(W.shape)}; pass the weight as a (d_out, d_in) "
                         f"matrix (transpose GPT-2 Conv1D weights at the model boundary)")
    aliased = W is W0  # float64 input: .to() returned the caller's tensor itself
    return W.clone() if aliased else W  # never alias the caller's tensor


def symmetric_matrix(C: object, d: int, name: str, device: torch.device) -> torch.Tensor:
    """A finite symmetric (d, d) matrix on ``device``, as float64 (symmetrised)."""
    M = as_float64(C, name, device)
    if M.shape != (d, d):
        raise ShapeError(f"{name} has shape {tuple(M.shape)} but W0 has d_in = {d}; pass the "
                         f"({d}, {d}) matrix of the same layer's input space")
    gap = check_symmetric(M, name, check_floating(C, name).dtype)
    if gap == 0.0 and M is C:  # exactly symmetric float64 input: a copy, never the caller's
        return M.clone()
    return symmetrised(M, gap)


def check_second_moment(C0: object, d: int, device: torch.device) -> torch.Tensor:
    """``C0`` symmetric with a cheap PSD screen: ``C_ii ≥ 0`` and ``|C_ij| ≤ √(C_ii C_jj)``."""
    C = symmetric_matrix(C0, d, "C0", device)
    if d == 0:
        return C
    diag = C.diagonal()
    tol = 1e-6 * max(float(diag.abs().max()), 1e-300)
    root = diag.clamp_min(0).sqrt()
    excess = C.abs().addcmul_(root[:, None], root[None, :], value=-1.0)  # |C_ij| − √C_ii √C_jj
    if float(diag.min()) < -tol or float(excess.max()) > tol:
        raise NotPSDError("C0 is not positive semi-definite (a negative diagonal entry or an "
                          "entry larger than √(C_ii C_jj)); pass the second moment K0 K0ᵀ / N "
                          "of preserved keys")
    return C


def check_projector(P: object, d: int, device: torch.device) -> torch.Tensor:
    """``P`` symmetric and idempotent (checked on a few fixed random probes, O(d²)).

    An exactly symmetric float64 ``P`` on ``device`` (what :func:`oteseq.projectors.
    cached_projector` returns) is kept by reference, not copied: its symmetrised copy would be
    equal bit for bit, and a memory never writes its ``P`` (d² · 8 bytes saved per layer).
    """
    shared = isinstance(P, torch.Tensor) and P.dtype == torch.float64 and P.device == device \
        and P.shape == (d, d) and P.is_contiguous() and bool(torch.isfinite(P.sum())) \
        and is_symmetric(P)
    Pm = P if shared else symmetric_matrix(P, d, "projection", device)
    assert isinstance(Pm, torch.Tensor)
    probes = torch.randn(d, 4, generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64).to(device)
    image = Pm @ probes
    gap = float(torch.linalg.norm(Pm @ image - image))
    if gap > 1e-6 * max(float(torch.linalg.norm(image)), 1e-300):
        raise NotPSDError(f"projection is not a projector (‖P(Px) − Px‖ / ‖Px‖ = "
                          f"{gap / max(float(torch.linalg.norm(image)), 1e-300):.3g}); build it "
                          f"with oteseq.ols.nullspace_projector(C0) or as U0 U0ᵀ, U0 orthonormal")
    return Pm


def check_batch(K: object, V: object, d_in: int, d_out: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``K`` (d_in, n) and ``V`` (d_out, n) on the memory's device (1-D means one column)."""
    K64, V64 = as_float64(K, "K", device), as_float64(V, "V", device)
    K64 = K64[:, None] if K64.ndim == 1 else K64
    V64 = V64[:, None] if V64.ndim == 1 else V64
    if K64.ndim != 2 or K64.shape[0] != d_in:
        raise ShapeError(f"K has shape {tuple(K64.shape)}; keys are columns: pass ({d_in}, n)")
    if V64.ndim != 2 or V64.shape[0] != d_out:
        raise ShapeError(f"V has shape {tuple(V64.shape)}; targets are columns: pass ({d_out}, n)")
    if K64.shape[1] != V64.shape[1]:
        raise ShapeError(f"K has {K64.shape[1]} columns but V {V64.shape[1]}; pass one target "
                         f"column per key column")
    for name, M in (("K", K64), ("V", V64)):
        largest = float(M.abs().max()) if M.numel() else 0.0
        if largest > MAX_ENTRY:
            raise NonFiniteError(f"{name} has entries up to {largest:.3g} (limit {MAX_ENTRY:g}): "
                                 f"keys and values of a language model are O(1)–O(1e4), and at "
                                 f"this size float64 loses the precision an exact retract needs "
                                 f"(K Kᵀ may overflow); check how {name} was computed or rescale")
    return K64, V64


def check_id(x: object) -> Id:
    """An id is a str, an int, or a tuple of str / int (e.g. ``(subject, relation)``)."""
    def atom(y: object) -> bool:
        return isinstance(y, str) or (isinstance(y, int) and not isinstance(y, bool))
    if atom(x) or (isinstance(x, tuple) and all(atom(y) for y in x)):
        return x
    raise RequestError(f"id {x!r} ({type(x).__name__}) is not usable; use a str, an int or a "
                       f"tuple of str/int such as (subject, relation)")


def check_ids(ids: Sequence[object], n: int) -> list[Id]:
    """One id per key column."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise RequestError(f"ids must be a list with one id per key column, got "
                           f"{type(ids).__name__}; wrap a single id as [id]")
    if len(ids) != n:
        raise ShapeError(f"{len(ids)} ids for {n} key columns; pass one id per column of K")
    return [check_id(x) for x in ids]


def retract_ids(ids: object) -> list[Id]:
    """The ids to retract, without repeats; a single str / int is accepted as one id."""
    if isinstance(ids, (str, int)) and not isinstance(ids, bool):
        ids = [ids]
    if isinstance(ids, tuple) or not isinstance(ids, Iterable):
        raise RequestError(f"retract takes a list of ids, got {ids!r}; wrap a tuple id as [id]")
    return list(dict.fromkeys(check_id(x) for x in ids))


def id_to_json(x: Id) -> object:
    """str and int stay, a tuple becomes a list (JSON has no tuples)."""
    return list(x) if isinstance(x, tuple) else x


def id_from_json(x: object) -> Id:
    """Inverse of :func:`id_to_json`."""
    return check_id(tuple(x) if isinstance(x, list) else x)
