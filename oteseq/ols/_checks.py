"""Input validation shared by the closed forms: dtypes, devices, finiteness, shapes, symmetry.

Every check raises a named :mod:`oteseq.errors` exception whose message says what is wrong and
how to fix it. The checks are cheap (one pass over each input); none of them factorises a matrix.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeAlias

import torch

from oteseq.errors import DeviceDtypeError, NonFiniteError, NotPSDError, OptionError, ShapeError

Keys: TypeAlias = "torch.Tensor | Sequence[torch.Tensor]"


def to_f64(**named: torch.Tensor | None) -> list[Any]:
    """Check that the named tensors are finite floating tensors on one device; return float64.

    ``None`` entries pass through unchanged (optional arguments such as ``K_p``); the list is
    typed ``Any`` so that callers unpack required tensors without a cast per name.
    """
    present = {name: check_floating(x, name) for name, x in named.items() if x is not None}
    if len({x.device for x in present.values()}) > 1:
        where = ", ".join(f"{name} on {x.device}" for name, x in present.items())
        raise DeviceDtypeError(f"tensors on different devices ({where}); move them to one device "
                               f"with .to(W.device)")
    for name, x in present.items():
        check_finite(x, name)
    return [None if x is None else x.to(torch.float64) for x in named.values()]


def check_floating(x: object, name: str) -> torch.Tensor:
    """``x`` is a torch tensor of a floating dtype; else :class:`DeviceDtypeError`."""
    if not isinstance(x, torch.Tensor):
        raise DeviceDtypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}; "
                               f"convert it with torch.as_tensor(..., dtype=torch.float64)")
    if not x.dtype.is_floating_point:
        raise DeviceDtypeError(f"{name} has dtype {x.dtype}; the closed forms need a floating "
                               f"dtype: pass {name}.double() (or .float())")
    return x


def check_finite(x: torch.Tensor, name: str) -> None:
    """No NaN or infinity in ``x``; else :class:`NonFiniteError`.

    A finite sum proves every entry finite (a NaN or ±inf entry makes the sum NaN or ±inf), so
    the entrywise test (a boolean copy of ``x``) runs only when the sum is not finite: a
    non-finite entry, or finite entries whose sum overflows.
    """
    if bool(torch.isfinite(x.sum())):
        return
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteError(f"{name} contains NaN or inf; check how it was computed "
                             f"(overflow in float16? a division by zero?) before editing")


def cat_batches(K: Keys, name: str) -> torch.Tensor:
    """One (rows, n) tensor from a tensor or a list of column batches (concatenated along dim 1)."""
    if isinstance(K, torch.Tensor):
        return K
    batches: list[torch.Tensor] = list(K)
    if not batches:
        raise ShapeError(f"{name} is an empty list of batches; pass at least one (d, n) tensor")
    rows = {b.shape[0] if b.ndim == 2 else None for b in batches}
    if len(rows) != 1 or None in rows:
        shapes = [tuple(b.shape) for b in batches]
        raise ShapeError(f"the batches of {name} must be 2-D with the same number of rows, got "
                         f"{shapes}; stack keys as columns (d_in, n)")
    return torch.cat(batches, dim=1)


def as_columns(x: torch.Tensor, name: str) -> torch.Tensor:
    """A 1-D vector becomes one column; a 2-D tensor is returned as is."""
    if x.ndim == 1:
        return x[:, None]
    if x.ndim != 2:
        raise ShapeError(f"{name} must be 1-D or 2-D (columns are keys/values), got shape "
                         f"{tuple(x.shape)}")
    return x


def check_kv(W: torch.Tensor, K: torch.Tensor, V: torch.Tensor,
             kname: str = "K", vname: str = "V") -> None:
    """``W`` (d_out, d_in), ``K`` (d_in, n), ``V`` (d_out, n)."""
    check_matrix(W, "W")
    if K.ndim != 2 or K.shape[0] != W.shape[1]:
        raise ShapeError(f"{kname} has shape {tuple(K.shape)} but W is {tuple(W.shape)}: "
                         f"{kname} must be (d_in={W.shape[1]}, n) with keys as columns "
                         f"(transpose it if keys are rows)")
    if V.ndim != 2 or V.shape != (W.shape[0], K.shape[1]):
        raise ShapeError(f"{vname} has shape {tuple(V.shape)}; it must be (d_out={W.shape[0]}, "
                         f"n={K.shape[1]}) to match W {tuple(W.shape)} and {kname} "
                         f"{tuple(K.shape)}")


def check_keys(K: torch.Tensor | None, d_in: int, name: str) -> None:
    """``K`` is ``None`` or (d_in, m)."""
    if K is not None and (K.ndim != 2 or K.shape[0] != d_in):
        raise ShapeError(f"{name} has shape {tuple(K.shape)}; it must be (d_in={d_in}, m) with "
                         f"keys as columns")


def check_matrix(W: torch.Tensor, name: str) -> None:
    if W.ndim != 2:
        raise ShapeError(f"{name} must be a matrix, got shape {tuple(W.shape)}")


def check_square(C: torch.Tensor, d: int, name: str) -> None:
    """``C`` is (d, d)."""
    if C.ndim != 2 or C.shape != (d, d):
        raise ShapeError(f"{name} has shape {tuple(C.shape)}; it must be square ({d}, {d}) "
                         f"to act on d_in={d}")


def symmetry_tolerance(dtype: torch.dtype) -> float:
    """Relative asymmetry accepted for an input of ``dtype``: sqrt(machine epsilon)."""
    return float(torch.finfo(dtype).eps) ** 0.5


def check_symmetric(C: torch.Tensor, name: str, dtype: torch.dtype) -> float:
    """``max|C − Cᵀ| ≤ sqrt(eps(dtype))·max(1, max|C|)``; else :class:`NotPSDError`.

    ``dtype`` is the dtype the caller passed (a float32 C0 may be asymmetric at 1e-7). Returns
    the gap ``max|C − Cᵀ|``: ``0.0`` exactly when ``C`` equals ``Cᵀ`` bit for bit (tested first,
    one comparison pass), so callers can skip symmetrising (see :func:`symmetrised`).
    """
    if C.numel() == 0 or is_symmetric(C):
        return 0.0
    scale = max(1.0, float(C.abs().max()))
    gap = float((C - C.T).abs().max())
    if gap > symmetry_tolerance(dtype) * scale:
        raise NotPSDError(f"{name} is not symmetric (max |{name} − {name}ᵀ| = {gap:.3g}, "
                          f"max |{name}| = {scale:.3g}); a second moment K0 K0ᵀ / N is "
                          f"symmetric: symmetrise it with ({name} + {name}.T) / 2")
    return gap


def is_symmetric(C: torch.Tensor, block: int = 256) -> bool:
    """``C`` equals ``Cᵀ`` bit for bit (square 2-D ``C``; NaN never equals itself).

    Compared tile against mirrored tile: each pair fits in cache, where one transposed pass
    over the whole matrix reads memory with a stride of ``d`` entries (about 3× slower at
    d = 3072).
    """
    if C.ndim != 2 or C.shape[0] != C.shape[1]:
        return False
    d = C.shape[0]
    for i in range(0, d, block):
        for j in range(0, i + 1, block):
            if not torch.equal(C[i:i + block, j:j + block], C[j:j + block, i:i + block].T):
                return False
    return True


def symmetrised(C: torch.Tensor, gap: float) -> torch.Tensor:
    """``(C + Cᵀ) / 2``; ``C`` itself when ``gap`` (from :func:`check_symmetric`) is 0, where the
    average equals ``C`` bit for bit and the transposed pass over ``C`` is saved."""
    return C if gap == 0.0 else (C + C.T) / 2


def check_nonnegative(x: object, name: str, role: str) -> float:
    """A penalty weight must be a finite number ≥ 0 (:class:`OptionError` if it is no number,
    :class:`NotPSDError` if it is negative or infinite)."""
    try:
        value = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise OptionError(f"{name}={x!r} is not a number; pass a float ≥ 0") from None
    if not (value >= 0.0 and math.isfinite(value)):
        raise NotPSDError(f"{name} = {value} makes the {role} penalty not positive "
                          f"semi-definite; use a finite {name} ≥ 0")
    return value
