"""Hostile inputs and faults against the documented entry points, as one table of cases.

Shared by ``tests/test_hostile.py`` (each case a parametrised test) and ``bench/hostile.py``
(which counts the outcomes for the README). A case runs one hostile action against a
:class:`World` (a tiny edited editor, its save, a LinearMemory) and names the
``oteseq.errors`` exception and message it must raise; the world must be unchanged afterwards.
"""
from __future__ import annotations

import copy
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from test_editor import EDITS, HP, make_editor

from oteseq import errors as E
from oteseq.editor import Editor
from oteseq.memory import LinearMemory
from oteseq.requests import Request


class World:
    """One edited tiny GPT-2 editor (memit-seq, layers 0 and 1), its save, and a memory."""

    def __init__(self) -> None:
        self.ed, self.model, self.tok = make_editor()
        self.ed.edit([EDITS[0]])
        self.root = Path(tempfile.mkdtemp(prefix="oteseq-hostile-"))
        self.saved = self.root / "saved"
        self.ed.save(self.saved)
        g = torch.Generator().manual_seed(0)
        W0 = torch.randn(6, 5, generator=g, dtype=torch.float64)
        X = torch.randn(5, 40, generator=g, dtype=torch.float64)
        self.mem = LinearMemory(W0, X @ X.T / 40, 1.0)
        self.mem.edit(torch.randn(5, 3, generator=g, dtype=torch.float64),
                      torch.randn(6, 3, generator=g, dtype=torch.float64), ["a", "b", "c"])

    def copy_of_save(self) -> Path:
        target = Path(tempfile.mkdtemp(dir=self.root)) / "state"
        shutil.copytree(self.saved, target)
        return target

    def snapshot(self) -> dict:
        return {"model": {k: v.clone() for k, v in self.model.state_dict().items()},
                "ids": list(self.ed.ids), "n_edits": self.ed.n_edits,
                "memories": {l: self.ed.memory(l).state_dict() for l in self.ed.layers},
                "mem": self.mem.state_dict()}

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def same(a, b) -> bool:
    """Bit-for-bit equality of nested snapshots."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return a == b


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[World], object]
    error: type
    match: str


REQ = dict(prompt="The capital of {} is", subject="France", target="Paris")
FLAT = {"case_id": 0, "prompt": "The mother tongue of {} is", "subject": "Danielle Darrieux",
        "target_new": "English", "ground_truth": "French", "rephrase_prompt": "Where is she from",
        "locality_prompt": "Paris is in", "locality_ground_truth": "France"}


def _request(**changes):
    return lambda w: Request(**{**REQ, **changes})


def _nan_in(param: str):
    def run(w: World):
        p = dict(w.model.named_parameters())[param]
        keep = p.detach().clone()
        try:
            with torch.no_grad():
                p.view(-1)[3] = float("nan")
            w.ed.edit([EDITS[1]])
        finally:
            with torch.no_grad():
                p.copy_(keep)
    return run


def _changed_behind_back(w: World):
    p = w.model.transformer.h[1].mlp.c_proj.weight
    keep = p.detach().clone()
    try:
        with torch.no_grad():
            p.view(-1)[0] += 0.25
        w.ed.edit([EDITS[1]])
    finally:
        with torch.no_grad():
            p.copy_(keep)


def _editor(**kwargs):
    def run(w: World):
        options = {"hparams": HP, "stats": w.ed.stats, "templates": w.ed.templates,
                   "progress": False, **kwargs}
        method = options.pop("method", "memit-seq")
        return Editor(w.model, w.tok, method, **options)
    return run


def _mem_edit(K_scale: float = 1.0, V_scale: float = 1.0):
    def run(w: World):
        K, V = torch.ones(5, 1, dtype=torch.float64), torch.ones(6, 1, dtype=torch.float64)
        w.mem.edit(K * K_scale, V * V_scale, ["big"])
    return run


def _mem_state(change: Callable[[dict], None]):
    def run(w: World):
        d = w.mem.state_dict()
        change(d)
        w.mem.load_state_dict(d)
    return run


def _set(key: str, fn: Callable[[torch.Tensor], torch.Tensor]):
    def change(d: dict) -> None:
        d["tensors"][key] = fn(d["tensors"][key])
    return change


def _bump(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[1] += 0.01 * float(t.abs().max())
    return t


def _load(tamper: Callable[[Path], None], model_change: Callable | None = None):
    def run(w: World):
        path = w.copy_of_save()
        tamper(path)
        keep = {k: v.clone() for k, v in w.model.state_dict().items()}
        try:
            if model_change is not None:
                model_change(w.model)
            return Editor.load(path, w.model, w.tok, stats=w.ed.stats, progress=False)
        finally:
            w.model.load_state_dict(keep)
    return run


def _layer_file(path: Path, name: str = "memory.safetensors") -> Path:
    return next(path.glob(f"state-*/layer_1/{name}"))


def _flip_byte(path: Path) -> None:
    file = _layer_file(path)
    data = bytearray(file.read_bytes())
    data[-20] ^= 0x01
    file.write_bytes(bytes(data))


def _manifest(change: Callable[[dict], None]):
    def tamper(path: Path) -> None:
        meta = json.loads((path / "editor.json").read_text())
        change(meta)
        (path / "editor.json").write_text(json.dumps(meta))
    return tamper


def _bump_param(model) -> None:
    with torch.no_grad():
        model.transformer.h[2].attn.c_attn.weight.view(-1)[5] += 1e-3


def _standalone_flip(w: World):
    folder = w.root / "mem-flip"
    w.mem.save(folder)
    data = bytearray((folder / "memory.safetensors").read_bytes())
    data[-12] ^= 0x40
    (folder / "memory.safetensors").write_bytes(bytes(data))
    return LinearMemory.load(folder)


CASES = [
    # ---- Request construction
    Case("prompt-escaped-braces", _request(prompt="{{}} was born in"), E.RequestError,
         "exactly one"),
    Case("prompt-named-field", _request(prompt="{} and {x}"), E.RequestError, "exactly one"),
    Case("prompt-numbered-field", _request(prompt="{0} is in"), E.RequestError, "exactly one"),
    Case("prompt-lone-brace", _request(prompt="{} is { in"), E.RequestError, "exactly one"),
    Case("prompt-not-string", _request(prompt=123), E.RequestError, "prompt must be a string"),
    Case("subject-int", _request(subject=123), E.RequestError, "subject must be a string"),
    Case("target-int", _request(target=5), E.RequestError, "target must be a string"),
    Case("subject-blank", _request(subject="  "), E.RequestError, "empty subject"),
    Case("relation-unhashable", _request(relation=["P19"]), E.RequestError, "relation"),
    Case("id-unhashable", _request(id={"a": 1}), E.RequestError, "not usable as an id"),
    Case("id-list", _request(id=[1, 2]), E.RequestError, "not usable as an id"),
    Case("id-float", _request(id=3.5), E.RequestError, "not usable as an id"),
    Case("target-true-int", _request(target_true=7), E.RequestError, "target_true"),
    Case("counterfact-easyedit-flat", lambda w: Request.from_counterfact(FLAT), E.SchemaError,
         "EasyEdit's flat CounterFact schema"),
    Case("counterfact-missing-target", lambda w: Request.from_counterfact(
        {"requested_rewrite": {"prompt": "{} is", "subject": "x", "relation_id": "P1",
                               "target_true": {"str": "a"}}}), E.SchemaError, "target_new"),
    # ---- Editor.edit / retract
    Case("edit-bare-request", lambda w: w.ed.edit(EDITS[1]), E.RequestError, r"ed.edit\(\[request"),
    Case("edit-none", lambda w: w.ed.edit(None), E.RequestError, "list of oteseq.Request"),
    Case("edit-string", lambda w: w.ed.edit("The capital of France is"), E.RequestError,
         "list of oteseq.Request"),
    Case("edit-mixed-list", lambda w: w.ed.edit([EDITS[1], "x"]), E.RequestError,
         "not oteseq.Request"),
    Case("edit-duplicate-ids", lambda w: w.ed.edit([EDITS[1], EDITS[1]]), E.RequestError,
         "duplicate"),
    Case("edit-longer-than-context", lambda w: w.ed.edit([Request(
        "The capital " * 70 + "of {} is", "France", "Paris")]), E.RequestError,
        "more than the model's context of 128"),
    Case("retract-bare-tuple", lambda w: w.ed.retract(("Nils Maerbom", "P19")), E.RequestError,
         "list of ids"),
    Case("retract-bare-string", lambda w: w.ed.retract("abc"), E.RequestError, "list of ids"),
    Case("retract-none", lambda w: w.ed.retract(None), E.RequestError, "list of ids"),
    Case("retract-unhashable-id", lambda w: w.ed.retract([["x"]]), E.RequestError,
         "is not usable"),
    Case("retract-unknown-id", lambda w: w.ed.retract(["nobody"]), E.UnknownIdError,
         "no active constraint"),
    Case("nan-in-model-weight", _nan_in("transformer.h.2.attn.c_attn.weight"), E.NonFiniteError,
         r"model's own weights .*transformer.h.2.attn.c_attn.weight"),
    Case("nan-in-lm-input-embedding", _nan_in("transformer.wte.weight"), E.NonFiniteError,
         "model's own weights"),
    Case("weight-changed-behind-back", _changed_behind_back, E.StateMismatchError,
         r"transformer.h.1.mlp.c_proj was changed outside the editor"),
    # ---- Editor construction
    Case("stats-list", _editor(stats=[1, 2]), E.OptionError, "stats must map"),
    Case("stats-not-tensor", _editor(stats={0: "C0", 1: "C0"}), E.DeviceDtypeError,
         r"stats\[0\] is a str"),
    Case("hparams-string", _editor(hparams="lam=1"), E.OptionError, "hparams must be"),
    Case("hparams-unknown-key", _editor(hparams={"lamda": 1.0}), E.OptionError,
         "unknown hyperparameter"),
    Case("templates-string", _editor(templates="{} abc"), E.OptionError, "templates must be"),
    Case("templates-no-slot", _editor(templates=["abc"]), E.OptionError, "exactly one"),
    Case("on-conflict-bad", _editor(on_conflict="merge"), E.OptionError, "on_conflict"),
    Case("method-unknown", _editor(method="memit-fast"), E.OptionError, "unknown method"),
    # ---- LinearMemory inputs
    Case("keys-1e17", _mem_edit(K_scale=1e17), E.NonFiniteError, "K has entries up to 1e"),
    Case("values-1e300", _mem_edit(V_scale=1e300), E.NonFiniteError, "V has entries up to 1e"),
    Case("keys-KKt-overflow", _mem_edit(K_scale=1e160), E.NonFiniteError, "may overflow"),
    Case("values-1e16", _mem_edit(V_scale=1e16), E.NonFiniteError, "exact retract"),
    Case("memory-retract-bare-tuple", lambda w: w.mem.retract(("a", "b")), E.RequestError,
         "list of ids"),
    Case("state-nan-W", _mem_state(_set("W", lambda t: t * float("nan"))), E.CorruptStateError,
         "W contains NaN"),
    Case("state-zero-A_inv", _mem_state(_set("A_inv", torch.zeros_like)), E.CorruptStateError,
         "A_inv does not invert"),
    Case("state-bumped-A0", _mem_state(_set("A0", _bump)), E.StateMismatchError,
         "saved A0 differs"),
    Case("state-bumped-W", _mem_state(_set("W", _bump)), E.CorruptStateError,
         "W does not solve"),
    Case("state-bumped-Vt", _mem_state(_set("Vt", _bump)), E.CorruptStateError,
         "W does not solve"),
    Case("state-bumped-Kt", _mem_state(_set("Kt", _bump)), E.CorruptStateError, "does not"),
    Case("state-missing-ids", _mem_state(lambda d: d["metadata"].pop("ids")),
         E.CorruptStateError, "'ids'"),
    Case("state-not-a-dict", lambda w: w.mem.load_state_dict("state"), E.CorruptStateError,
         "takes the dict returned by state_dict"),
    Case("state-tensor-is-list", _mem_state(_set("W", lambda t: t.tolist())),
         E.CorruptStateError, "not floating tensors"),
    Case("memory-file-bit-flip", _standalone_flip, E.CorruptStateError, "SHA-256|cannot be read"),
    # ---- Editor.load of damaged or mismatched saves
    Case("load-bit-flip", _load(_flip_byte), E.CorruptStateError, "fails its SHA-256 checksum"),
    Case("load-missing-layer", _load(lambda p: _layer_file(p).unlink()), E.CorruptStateError,
         "is missing"),
    Case("load-truncated-manifest", _load(lambda p: (p / "editor.json").write_text(
        (p / "editor.json").read_text()[:200])), E.CorruptStateError, "not valid JSON"),
    Case("load-manifest-list", _load(lambda p: (p / "editor.json").write_text("[1, 2]")),
         E.StateMismatchError, "not an oteseq editor state"),
    Case("load-no-manifest", _load(lambda p: (p / "editor.json").unlink()),
         E.StateMismatchError, "no editor.json"),
    Case("load-method-contradicts", _load(_manifest(lambda m: m.update(method="memit"))),
         E.CorruptStateError, "contradicts"),
    Case("load-lam-contradicts", _load(_manifest(lambda m: m["hparams"].update(lam=5.0))),
         E.CorruptStateError, "contradicts"),
    Case("load-ids-contradict", _load(_manifest(lambda m: m.update(ids=[["x", "y"]]))),
         E.CorruptStateError, "ids differ"),
    Case("load-state-path-escape", _load(_manifest(lambda m: m.update(state="../../etc"))),
         E.CorruptStateError, "names no valid state folder"),
    Case("load-missing-field", _load(_manifest(lambda m: m.pop("templates"))),
         E.CorruptStateError, "missing or malformed"),
    Case("load-unedited-weight-changed", _load(lambda p: None, _bump_param), E.StateMismatchError,
         r"unedited parameter.*transformer.h.2.attn.c_attn.weight"),
    Case("load-edited-weight-foreign", _load(lambda p: None, lambda m: m.transformer.h[0].mlp
                                             .c_proj.weight.data.mul_(1.5)),
         E.StateMismatchError, "neither the saved original"),
]


def copy_semantics_hold(w: World) -> bool:
    """``copy.copy`` of a memory is independent: editing both leaves each its own rows."""
    base = copy.copy(w.mem)
    a, b = copy.copy(base), copy.copy(base)
    K = torch.eye(5, 1, dtype=torch.float64)
    a.edit(K, torch.ones(6, 1, dtype=torch.float64), ["x"])
    b.edit(K, -torch.ones(6, 1, dtype=torch.float64), ["x"])
    va, vb = a.state_dict()["tensors"]["Vt"].T, b.state_dict()["tensors"]["Vt"].T
    return bool((va[:, -1] == 1).all() and (vb[:, -1] == -1).all()
                and same(base.state_dict(), w.mem.state_dict()))


__all__ = ["CASES", "Case", "World", "copy_semantics_hold", "same"]
