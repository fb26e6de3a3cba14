"""The files of a saved :class:`~oteseq.editor.Editor`: crash-safe, checksummed, verified on load.

Layout of a save in ``path``::

    editor.json                       the manifest (replaced last, atomically)
    state-<n>-<token>/layer_<l>/      one LinearMemory save per edited layer
        memory.safetensors, memory.json

A save writes a complete new ``state-*`` folder beside the current one, syncs it, then replaces
``editor.json`` — which names the folder — in one ``os.replace``; only then is the old folder
removed. A crash at any moment leaves ``editor.json`` naming either the old or the new complete
folder; unreferenced ``state-*`` folders are leftovers and are removed by the next save.

The manifest records the SHA-256 and size of every file, the shape and dtype of every tensor,
the model fingerprint and a digest of every *non-edited* parameter, the method, its hparams
(``lam`` ...), the active ids and ``n_edits``. :func:`read` checks all of it plus the memories'
invariants (:mod:`oteseq.memory._verify`) and raises a named error saying what is wrong.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import shutil
from pathlib import Path

import torch

from . import _atomic, methods, models
from .errors import CorruptStateError, StateMismatchError
from .memory import LinearMemory
from .memory._inputs import id_to_json
from ._types import Model

log = logging.getLogger(__name__)
FORMAT, VERSION, LEGACY_VERSION = "oteseq-editor", 2, 1
MANIFEST = "editor.json"
_STATE_DIR = re.compile(r"^state-[0-9]+-[0-9a-f]{8}$")
_SAMPLE = 4096  # entries per parameter hashed bit for bit (the sum covers all of them)


# ----------------------------------------------------------------- digest of unedited weights
def weights_digest(model: Model, layers) -> dict:
    """``{name: [shape, dtype, sha256 of a strided sample, Σx, Σ|x|]}`` of every parameter but
    the edited matrices: a model whose unedited weights differ is refused on load."""
    skip = {models.edited_name(model, l) + ".weight" for l in layers}
    out = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in skip:
                continue
            flat = p.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // _SAMPLE)][:_SAMPLE]
            raw = sample.to("cpu", torch.float32).contiguous().numpy().tobytes()
            total = flat.to(torch.float64)
            out[name] = [list(p.shape), str(p.dtype).removeprefix("torch."),
                         hashlib.sha256(raw).hexdigest()[:16], float(total.sum()),
                         float(total.abs().sum())]
    return out


def check_weights(saved: dict, model: Model, layers) -> None:
    """Raise :class:`StateMismatchError` naming the parameters that differ from ``saved``."""
    here = weights_digest(model, layers)
    if set(saved) != set(here):
        missing, extra = sorted(set(saved) - set(here)), sorted(set(here) - set(saved))
        raise StateMismatchError(f"the model's parameters differ from the saved ones (missing "
                                 f"{missing[:3]}, unexpected {extra[:3]}); load the state into "
                                 "the model it was made for")
    differ = []
    for name, (shape, dtype, sample, total, size) in saved.items():
        h = here[name]
        close = abs(h[3] - total) <= 1e-9 * max(size, h[4]) + 1e-30
        if [shape, dtype, sample] != h[:3] or not close or h[3] != h[3]:
            differ.append(name)
    if differ:
        raise StateMismatchError(f"{len(differ)} unedited parameter(s) differ from the model the "
                                 f"state was saved with, e.g. {differ[:3]} (changed, fine-tuned, "
                                 "another dtype or NaN); load the state into a fresh copy of "
                                 "that model")


# ----------------------------------------------------------------- writing
def write(ed, path, extra: dict | None = None) -> None:
    """Save editor ``ed`` into folder ``path`` (see the module docstring)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    old = _current(path)
    _remove_leftovers(path, keep=old)
    name = f"state-{ed.n_edits}-{secrets.token_hex(4)}"
    folder = path / name
    try:
        files, tensors = {}, {}
        for layer, mem in ed._memories.items():
            mem.save(folder / f"layer_{layer}")
            for file in sorted((folder / f"layer_{layer}").iterdir()):
                rel = f"layer_{layer}/{file.name}"
                files[rel] = {"sha256": _atomic.sha256_file(file), "bytes": file.stat().st_size}
            tensors[str(layer)] = _tensor_specs(folder / f"layer_{layer}")
            _atomic.fsync_dir(folder / f"layer_{layer}")
        _atomic.fsync_dir(folder)
        _atomic.fsync_dir(path)
        _atomic.write_json(path / MANIFEST, {**_header(ed), "state": name, "files": files,
                                             "tensors": tensors, "extra": extra or {}})
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if old is not None and old != name:
        shutil.rmtree(path / old, ignore_errors=True)
    for legacy in path.glob("layer_*"):  # a version-1 save replaced by this one
        shutil.rmtree(legacy, ignore_errors=True)


def _header(ed) -> dict:
    if getattr(ed, "_weights_digest", None) is None:
        ed._weights_digest = weights_digest(ed.model, ed.layers)
    return {"format": FORMAT, "version": VERSION, "fingerprint": ed.fingerprint,
            "model": str(getattr(ed.model.config, "name_or_path", "")),
            "layer_names": [models.edited_name(ed.model, l) for l in ed.layers],
            "method": ed.method, "hparams": ed.hparams.to_dict(), "templates": ed.templates,
            "on_conflict": ed.on_conflict, "n_edits": ed.n_edits,
            "rank_P": {str(l): r for l, r in ed.rank_P.items()},
            "ids": [id_to_json(x) for x in ed.ids], "weights": ed._weights_digest}


def _tensor_specs(folder: Path) -> dict:
    from safetensors import safe_open
    with safe_open(str(folder / "memory.safetensors"), framework="pt", device="cpu") as f:
        return {k: {"shape": list(f.get_slice(k).get_shape()), "dtype": f.get_slice(k).get_dtype()}
                for k in f.keys()}


def _current(path: Path) -> str | None:
    """The state folder the manifest names, or None (no manifest, or an unreadable one)."""
    try:
        state = json.loads((path / MANIFEST).read_text()).get("state")
    except (OSError, ValueError, AttributeError):
        return None
    return state if isinstance(state, str) and _STATE_DIR.match(state) else None


def _remove_leftovers(path: Path, keep: str | None) -> None:
    """Remove ``state-*`` folders of interrupted saves (only when the manifest is readable or
    absent: an unreadable manifest leaves everything for the user to inspect)."""
    if keep is None and (path / MANIFEST).exists():
        return
    for folder in path.glob("state-*"):
        if folder.name != keep and _STATE_DIR.match(folder.name):
            shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------- reading
def read_manifest(path) -> dict:
    """The parsed ``editor.json`` of a save, format checked."""
    path = Path(path)
    file = path / MANIFEST
    if not file.is_file():
        raise StateMismatchError(f"no {MANIFEST} in {path}; save an editor there with "
                                 "ed.save(path)")
    try:
        meta = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptStateError(f"{file} is not valid JSON ({exc}); the save is damaged") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or \
            meta.get("version") not in (VERSION, LEGACY_VERSION):
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise StateMismatchError(f"{path} is not an oteseq editor state (format {got!r}); save "
                                 "it with Editor.save")
    return meta


def state_folder(path, meta: dict) -> Path:
    """Where the memories of a save live; for version 2 every file is checked first."""
    path = Path(path)
    if meta["version"] == LEGACY_VERSION:
        log.warning("%s was saved by an older oteseq without checksums; its invariants are "
                    "checked, its bytes cannot be; save it again to add checksums", path)
        return path
    state, files = meta.get("state"), meta.get("files")
    if not isinstance(state, str) or not _STATE_DIR.match(state) or not isinstance(files, dict):
        raise CorruptStateError(f"{path / MANIFEST} names no valid state folder; the save is "
                                "damaged")
    folder = path / state
    for rel, spec in files.items():
        file = folder / rel
        if not re.match(r"^layer_[0-9]+/memory\.(safetensors|json)$", rel):
            raise CorruptStateError(f"{path / MANIFEST} lists an unexpected file {rel!r}")
        if not file.is_file():
            raise CorruptStateError(f"{file} is missing; the save is damaged — an earlier "
                                    "complete save cannot be recovered from this folder")
        if file.stat().st_size != spec.get("bytes") or \
                _atomic.sha256_file(file) != spec.get("sha256"):
            raise CorruptStateError(f"{file} fails its SHA-256 checksum (size "
                                    f"{file.stat().st_size}, recorded {spec.get('bytes')}); the "
                                    "file was changed or damaged after saving")
    return folder


def check_memories(meta: dict, memories: dict[int, LinearMemory], folder: Path) -> None:
    """The memories agree with the manifest: tensor shapes and dtypes, method and lam, ids."""
    config, hp = methods.method(meta["method"]), methods.Hparams.from_dict(meta["hparams"])
    lam = 1e-6 if config.one_by_one else (hp.lam if config.uses_lam else 0.0)  # editor._ROME_LAM
    ids = [tuple(x) if isinstance(x, list) else x for x in meta.get("ids", [])]
    for layer, mem in memories.items():
        where = f"layer {layer}"
        opt = mem.options
        wanted = {"accumulate": config.accumulate, "post": config.post, "lam": lam,
                  "error_feedback": config.error_feedback, "ridge": hp.ridge,
                  "on_conflict": meta["on_conflict"], "projection": config.projection}
        have = {"accumulate": opt.accumulate, "post": opt.post, "lam": mem.lam,
                "error_feedback": opt.error_feedback, "ridge": opt.ridge,
                "on_conflict": opt.on_conflict, "projection": mem._state.P is not None}
        wrong = {k: (wanted[k], have[k]) for k in wanted if wanted[k] != have[k]}
        if wrong:
            raise CorruptStateError(f"{MANIFEST} says method {meta['method']!r} with lam "
                                    f"{hp.lam:g}, but the memory of {where} contradicts it "
                                    f"(expected, saved): {wrong}; the files do not belong together")
        if meta["version"] != LEGACY_VERSION and mem.ids != ids:
            raise CorruptStateError(f"{where}: its active ids differ from those in {MANIFEST}; "
                                    "the files do not belong together")
        if meta["version"] != LEGACY_VERSION and \
                _tensor_specs(folder / f"layer_{layer}") != meta.get("tensors", {}).get(str(layer)):
            raise CorruptStateError(f"{where}: the stored tensors do not match the shapes and "
                                    f"dtypes recorded in {MANIFEST}")


__all__ = ["FORMAT", "MANIFEST", "VERSION", "check_memories", "check_weights", "read_manifest",
           "state_folder", "weights_digest", "write"]
