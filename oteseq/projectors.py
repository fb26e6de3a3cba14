"""AlphaEdit's null-space projectors, cached next to the statistics they come from.

``P`` depends only on ``C0`` and the threshold, and costs one float64 symmetric
eigendecomposition per layer (O(d³); seconds at d = 3072, tens of seconds at 6400), so it is
computed once and reused: in this process (the same tensor object is returned) and across
processes as a safetensors file under ``<cache>/projectors/`` (see
:func:`oteseq.stats.cache_root`). The key is a fingerprint of ``C0``'s bytes (BLAKE2b of the
float64 matrix), its shape, the threshold and the mode, so a changed ``C0`` or threshold misses.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ._atomic import replacing
from .ols.projection import Mode, nullspace_projector

_FORMAT = "oteseq-projector-1"
_MEMORY: dict[tuple, tuple[torch.Tensor, int]] = {}
_MEMORY_LIMIT = 16  # projectors kept in this process (GPT-2 XL: 5 layers × 328 MB float64)


def fingerprint(C0: torch.Tensor) -> str:
    """BLAKE2b (128 bits) of ``C0`` as contiguous float64 bytes, with its shape."""
    array = C0.detach().to(torch.float64).cpu().contiguous().numpy()
    digest = hashlib.blake2b(memoryview(array).cast("B"), digest_size=16)
    digest.update(str(tuple(array.shape)).encode())
    return digest.hexdigest()


def cached_projector(C0: torch.Tensor, threshold: float, *, mode: Mode = "absolute",
                     cache_dir: str | os.PathLike | None = None,
                     cache: bool = True) -> tuple[torch.Tensor, int]:
    """``(P, rank)`` of :func:`oteseq.ols.nullspace_projector`, from the cache when possible.

    ``P`` is on ``C0``'s device in ``C0``'s dtype. A hit in this process returns the very same
    tensor (treat it as read-only); a hit on disk reads it back bit for bit. ``cache=False``
    neither reads nor writes.
    """
    if not cache:
        return nullspace_projector(C0, threshold, mode=mode)
    key = (fingerprint(C0), float(threshold), mode, str(C0.dtype), str(C0.device))
    if key in _MEMORY:
        return _MEMORY[key]
    path = _path(key, cache_dir)
    found = _read(path, key, C0.device)
    if found is None:
        found = nullspace_projector(C0, threshold, mode=mode)
        _write(path, key, *found)
    if len(_MEMORY) >= _MEMORY_LIMIT:
        _MEMORY.pop(next(iter(_MEMORY)))
    _MEMORY[key] = found
    return found


def clear_memory_cache() -> None:
    """Forget the projectors kept in this process (the files on disk stay)."""
    _MEMORY.clear()


def _path(key: tuple, cache_dir) -> Path:
    from .stats import cache_root

    name = hashlib.blake2b(json.dumps([*key[:3], key[3]]).encode(), digest_size=12).hexdigest()
    return cache_root(cache_dir) / "projectors" / f"{name}.safetensors"


def _meta(key: tuple) -> dict:
    return {"format": _FORMAT, "C0": key[0], "threshold": repr(key[1]), "mode": key[2],
            "dtype": key[3]}


def _read(path: Path, key: tuple, device) -> tuple[torch.Tensor, int] | None:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if any(meta.get(k) != v for k, v in _meta(key).items()):
                return None
            return f.get_tensor("P").to(device), int(meta["rank"])
    except (OSError, ValueError, KeyError, SafetensorError):  # damaged or foreign: recompute
        return None


def _write(path: Path, key: tuple, P: torch.Tensor, rank: int) -> None:
    """Write atomically (``_atomic.replacing``): a crash never leaves half a file."""
    from safetensors.torch import save_file

    with replacing(path) as tmp:
        save_file({"P": P.detach().cpu().contiguous()}, str(tmp),
                  metadata={**_meta(key), "rank": str(rank)})


__all__ = ["cached_projector", "clear_memory_cache", "fingerprint"]
