"""What a memory holds, and its round trip through ``state_dict`` and a safetensors + JSON save.

The whole state is one frozen :class:`MemoryState`; a step builds a new one and commits it with a
single assignment, so a failure at any point leaves the memory exactly as it was.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from oteseq import _atomic
from oteseq.errors import CorruptStateError, OteseqError, StateMismatchError
from oteseq.memory._algebra import Matrix, compact, dense
from oteseq.memory._config import MemoryOptions
from oteseq.memory._inputs import id_from_json, id_to_json
from oteseq.memory._store import ConstraintStore

FORMAT, VERSION = "oteseq.LinearMemory", 1
TENSORS, METADATA = "memory.safetensors", "memory.json"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemoryState:
    """Everything a memory holds; ``W`` and all matrices are float64 on ``W0``'s device."""

    W0: torch.Tensor                 # (d_out, d_in) pre-edit weight
    dtype: torch.dtype               # dtype of the W0 the caller gave (mem.W is returned in it)
    lam: float
    options: MemoryOptions
    A0: Matrix                       # (d_in, d_in) lam C0 + ridge I (or ridge I + lam P C0 P);
    #                                  ridge I is kept compact (ScaledIdentity)
    A0_norm: float                   # ‖A0‖_F, for the drift check (derived from A0)
    P: torch.Tensor | None           # (d_in, d_in) AlphaEdit projector
    W: torch.Tensor                  # (d_out, d_in) master copy of the edited weight
    A_inv: Matrix | None             # inverse of A (accumulate) or of A0 (not); None: singular;
    #                                  I / ridge is kept compact until the first step
    E: torch.Tensor | None           # (d_out, d_in) error-feedback cache
    store: ConstraintStore           # active constraints and their ids
    steps: int = 0
    since_refresh: int = 0
    n_refreshes: int = 0
    next_auto: int = 0               # number of the next automatic id "edit-<n>"
    drift_floor: float = 0.0         # drift check value of the last exact (refresh) solve

    def with_(self, **changes) -> MemoryState:
        return replace(self, **changes)


def _options_json(options: MemoryOptions) -> dict:
    if options.post_name == "callable":
        raise OteseqError("a memory with a custom post callable cannot be saved (a function is "
                          "not data); use post='prune' or post='rect', or save W and rebuild")
    return {"accumulate": options.accumulate, "ridge": options.ridge, "post": options.post,
            "error_feedback": options.error_feedback, "on_conflict": options.on_conflict,
            "refresh_every": options.refresh_every}


def state_dict(state: MemoryState) -> dict:
    """``{"tensors": {name: tensor}, "metadata": JSON-able dict}``; tensors are copies."""
    Kt, Vt, ids = state.store.export()
    tensors = {"W": state.W, "W0": state.W0, "A0": dense(state.A0), "P": state.P,
               "A_inv": None if state.A_inv is None else dense(state.A_inv), "E": state.E,
               "Kt": Kt, "Vt": Vt}
    metadata = {
        "format": FORMAT, "version": VERSION, "d_out": state.W0.shape[0],
        "d_in": state.W0.shape[1], "dtype": str(state.dtype).removeprefix("torch."),
        "lam": state.lam, "options": _options_json(state.options),
        "ids": [id_to_json(x) for x in ids], "steps": state.steps,
        "since_refresh": state.since_refresh, "n_refreshes": state.n_refreshes,
        "next_auto": state.next_auto, "drift_floor": state.drift_floor}
    return {"tensors": {k: v.clone(memory_format=torch.contiguous_format)
                        for k, v in tensors.items() if v is not None},
            "metadata": metadata}


def _mismatch(name: str, saved: object, here: object) -> StateMismatchError:
    return StateMismatchError(f"the saved state has {name} = {saved!r} but this memory "
                              f"{here!r}; load it into a memory built with the same W0, C0, lam "
                              f"and options (or use LinearMemory.load(path))")


def check_compatible(d: dict, state: MemoryState) -> None:
    """Raise :class:`StateMismatchError` unless ``d`` fits the memory ``state`` belongs to."""
    if not isinstance(d, dict) or not isinstance(d.get("metadata"), dict) or \
            not isinstance(d.get("tensors"), dict):
        raise CorruptStateError(f"load_state_dict takes the dict returned by state_dict() "
                                f"({{'tensors': ..., 'metadata': ...}}), got {type(d).__name__}")
    meta, tensors = d["metadata"], d["tensors"]
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise _mismatch("format", (meta.get("format"), meta.get("version")), (FORMAT, VERSION))
    here = state_dict_header(state)
    for key in ("d_out", "d_in", "dtype", "lam", "options"):
        if meta.get(key) != here[key]:
            raise _mismatch(key, meta.get(key), here[key])
    if ("P" in tensors) != (state.P is not None):
        raise _mismatch("projection", "P" in tensors, state.P is not None)
    for key, mine in (("W0", state.W0), ("A0", dense(state.A0))):
        theirs = tensors.get(key)
        gap = None if not isinstance(theirs, torch.Tensor) or theirs.shape != mine.shape or \
            not theirs.dtype.is_floating_point else \
            float(torch.linalg.norm(theirs.to(mine) - mine))
        if gap is None or gap > 1e-6 * float(torch.linalg.norm(mine)):
            raise StateMismatchError(f"the saved {key} differs from this memory's: the state "
                                     f"belongs to another layer, model or C0/lam")


def state_dict_header(state: MemoryState) -> dict:
    """The metadata fields that must agree between a memory and a state loaded into it."""
    return {"d_out": state.W0.shape[0], "d_in": state.W0.shape[1],
            "dtype": str(state.dtype).removeprefix("torch."), "lam": state.lam,
            "options": _options_json(state.options)}


_FIELDS: dict[str, type | tuple[type, ...]] = {
    "d_out": int, "d_in": int, "dtype": str, "lam": (int, float), "options": dict,
    "ids": list, "steps": int, "since_refresh": int, "n_refreshes": int, "next_auto": int,
    "drift_floor": (int, float)}
_DTYPES = ("float16", "bfloat16", "float32", "float64")


def check_metadata(meta: object, where: str = "the state") -> dict:
    """The metadata of a state, every field present and of its type (else CorruptStateError)."""
    if not isinstance(meta, dict):
        raise CorruptStateError(f"{where}: metadata is a {type(meta).__name__}, not a dict; pass "
                                "the dict returned by state_dict()")
    for key, kind in _FIELDS.items():
        value = meta.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CorruptStateError(f"{where}: metadata field {key!r} is {value!r}, expected "
                                    f"{getattr(kind, '__name__', 'a number')}; the state is "
                                    "damaged or not from LinearMemory.state_dict")
    if meta["dtype"] not in _DTYPES:
        raise CorruptStateError(f"{where}: dtype {meta['dtype']!r} is not one of {_DTYPES}")
    return meta


def from_state_dict(d: dict, options: MemoryOptions, device: torch.device,
                    where: str = "the state") -> MemoryState:
    """Rebuild a state from :func:`state_dict` output (fields, shapes and invariants checked,
    tensors copied); :class:`CorruptStateError` names what is wrong."""
    from oteseq.memory._verify import check_state

    if not isinstance(d, dict) or not isinstance(d.get("tensors"), dict):
        raise CorruptStateError(f"{where}: expected {{'tensors': {{...}}, 'metadata': {{...}}}} "
                                "as returned by state_dict()")
    meta = check_metadata(d.get("metadata"), where)
    bad = [k for k, v in d["tensors"].items() if not isinstance(v, torch.Tensor)
           or not v.dtype.is_floating_point]
    if bad:
        raise CorruptStateError(f"{where}: entries {bad} of 'tensors' are not floating tensors")
    t = {k: v.to(device=device, dtype=torch.float64).clone(memory_format=torch.contiguous_format)
         for k, v in d["tensors"].items()}
    d_out, d_in = meta["d_out"], meta["d_in"]
    expected = {"W": (d_out, d_in), "W0": (d_out, d_in), "A0": (d_in, d_in), "P": (d_in, d_in),
                "A_inv": (d_in, d_in), "E": (d_out, d_in),
                "Kt": (len(meta["ids"]), d_in), "Vt": (len(meta["ids"]), d_out)}
    for key, tensor in t.items():
        if key not in expected or tuple(tensor.shape) != expected[key]:
            raise CorruptStateError(f"{where}: saved tensor {key!r} has shape "
                                    f"{tuple(tensor.shape)}, expected {expected.get(key)}; the "
                                    "state file is damaged or from another oteseq version")
    missing = [k for k in ("W", "W0", "A0") if k not in t]
    if missing:
        raise CorruptStateError(f"{where}: tensors {missing} are missing; the state is damaged")
    if options.accumulate and ("Kt" not in t or "Vt" not in t):
        raise CorruptStateError(f"{where}: the constraint buffers Kt/Vt are missing; the state "
                                "is damaged or was saved with accumulate=False")
    if options.error_feedback != ("E" in t):
        raise CorruptStateError(f"{where}: the error-feedback cache E is "
                                f"{'missing' if options.error_feedback else 'unexpected'}")
    try:
        ids = [id_from_json(x) for x in meta["ids"]]
    except OteseqError as exc:
        raise CorruptStateError(f"{where}: {exc}") from None
    store = ConstraintStore.restore(t.get("Kt"), t.get("Vt"), ids)
    state = MemoryState(
        W0=t["W0"], dtype=getattr(torch, meta["dtype"]), lam=float(meta["lam"]), options=options,
        A0=compact(t["A0"]), A0_norm=float(torch.linalg.norm(t["A0"])), P=t.get("P"), W=t["W"],
        A_inv=None if t.get("A_inv") is None else compact(t["A_inv"]), E=t.get("E"), store=store,
        steps=meta["steps"], since_refresh=meta["since_refresh"],
        n_refreshes=meta["n_refreshes"], next_auto=meta["next_auto"],
        drift_floor=float(meta["drift_floor"]))
    check_state(state, where)
    return state


def tensor_sha256(t: torch.Tensor) -> str:
    """Hex SHA-256 of a tensor's raw bytes (C order, native byte order)."""
    flat = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
    return hashlib.sha256(flat.numpy().data).hexdigest()


def save_files(d: dict, path: str | os.PathLike) -> None:
    """Write ``path/memory.safetensors`` (the metadata and a SHA-256 per tensor in its header)
    and ``memory.json`` (a readable copy of the metadata).

    Each file is written to a temporary name, synced and renamed over the old one, so a crash
    leaves either the old or the new file; the safetensors header is the authoritative copy.
    """
    from safetensors.torch import save_file

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in d["tensors"].items()}
    meta = {**d["metadata"], "sha256": {k: tensor_sha256(v) for k, v in tensors.items()}}
    text = json.dumps(meta, indent=1)
    with _atomic.replacing(folder / TENSORS) as tmp:
        save_file(tensors, str(tmp), metadata={"oteseq": text})
    _atomic.write_text(folder / METADATA, text)


def load_files(path: str | os.PathLike, device: str | torch.device = "cpu", *,
               verify: bool = True) -> dict:
    """Read a save written by :func:`save_files` back into a ``state_dict``-shaped dict, each
    tensor checked against its SHA-256 (``verify=False``: the caller checked the file)."""
    from safetensors import safe_open

    file = Path(path) / TENSORS
    if not file.is_file():
        raise StateMismatchError(f"no {TENSORS} in {path}; save a memory there with mem.save(path)")
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            header = (f.metadata() or {}).get("oteseq")
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        meta = None if header is None else json.loads(header)
    except Exception as exc:  # safetensors raises its own error types on damaged files
        raise CorruptStateError(f"{file} cannot be read ({type(exc).__name__}: {exc}); the file "
                                "is damaged — load an earlier save") from None
    if meta is None:
        raise StateMismatchError(f"{file} has no oteseq metadata; it was not written by "
                                 f"LinearMemory.save")
    if not isinstance(meta, dict):
        raise CorruptStateError(f"{file}: its metadata is not a JSON object; the file is damaged")
    hashes = meta.pop("sha256", None)
    if verify and hashes is None:
        logger.warning("%s has no checksums (saved by an older oteseq); its invariants are "
                       "checked, its bytes cannot be; save it again to add checksums", file)
    elif verify:
        if not isinstance(hashes, dict) or set(hashes) != set(tensors):
            raise CorruptStateError(f"{file}: the checksum list does not name the stored tensors "
                                    f"{sorted(tensors)}; the file is damaged")
        bad = [k for k, v in tensors.items() if tensor_sha256(v) != hashes[k]]
        if bad:
            raise CorruptStateError(f"{file}: tensor(s) {bad} fail their SHA-256 checksum; the "
                                    "file is damaged — load an earlier save")
    if str(device) != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return {"tensors": tensors, "metadata": meta}
