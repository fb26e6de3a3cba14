"""``LinearMemory``: one edited matrix ``W`` and the constraints its edits have accumulated."""
from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass

import torch

from oteseq.errors import (ConflictError, CorruptStateError, OptionError, SingularSystemError,
                           StateMismatchError, UnknownIdError)
from oteseq.memory import _algebra as alg
from oteseq.memory import _state
from oteseq.memory._config import (DEFAULT_REFRESH_EVERY, StepReport, MemoryOptions,
                                   OnConflict, PostHoc, PostName, make_options, nonnegative)
from oteseq.memory._inputs import (Id, check_batch, check_ids, check_projector,
                                   check_second_moment, check_weight, retract_ids)
from oteseq.memory._state import MemoryState
from oteseq.memory._step import step
from oteseq.memory._store import ConstraintStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Plan:
    """Which columns of a call enter the system and which active rows leave it."""

    keep: list[int]
    ids: list[Id]
    remove_rows: list[int]
    report: dict


class LinearMemory:
    """One edited matrix and its accumulated constraints: sequential editing as least squares.

    With ``accumulate=True`` (MEMIT-seq) the weight always solves the one-time-editing (OTE)
    normal equations over the active constraints, ``W A = W0 A0 + Σ V Kᵀ`` with
    ``A = A0 + Σ K Kᵀ`` and ``A0 = lam C0 + ridge I`` — whatever batches, retractions and
    replacements led there. With a projector ``P`` it is AlphaEdit: ridge regression on the
    projected keys ``B = P K``, ``A = A0 + Σ B Bᵀ`` with ``A0 = ridge I + lam P C0 P`` and
    ``W = W0 + Σ (V − W0 K) Bᵀ A⁻¹``. ``accumulate=False`` is plain MEMIT applied batch after
    batch (``A_t = A0 + B_t B_tᵀ``). ``post`` ("prune", "rect" with 20 % kept, or a callable
    ``(Δ, W) -> Δ̂``) modifies each step's update; ``error_feedback`` solves
    ``Δ A = R Bᵀ − E`` and keeps ``E = (Δ̂ − Δ) A`` (the reference ``_err`` variants also add
    ``I`` to ``A``: pass ``ridge=1.0`` for that).

    Args: ``W0`` (d_out, d_in) any float dtype (``mem.W`` is returned in it; the master copy
    is float64 on ``W0``'s device); ``C0`` (d_in, d_in) symmetric PSD second moment of
    preserved keys; ``lam ≥ 0``; ``projection`` a (d_in, d_in) projector or ``None`` (an
    exactly symmetric float64 one on the memory's device is shared, not copied: leave it as it
    is);
    ``ridge ≥ 0``; ``on_conflict`` what an edit with an active id does: "replace" (retract the
    old constraints in the same step: OTE over the de-conflicted set), "accumulate" (keep both:
    the compromise) or "error"; ``refresh_every`` steps between exact refreshes (``None``: only
    when the drift check asks).

    A step with ``m`` key columns costs O(d_in² m): the inverse of ``A`` is kept up to date by
    Woodbury up/downdates and recomputed exactly (Cholesky; ``W`` too when it is the exact OTE)
    every ``refresh_every`` steps, whenever the drift check (estimated relative error of the
    step's solve) exceeds 1e-10, and whenever a downdate leaves the small Woodbury system
    ill-conditioned. Every operation is atomic: on any exception the memory is as before.
    """

    def __init__(self, W0: torch.Tensor, C0: torch.Tensor, lam: float, *, accumulate: bool = True,
                 projection: torch.Tensor | None = None, ridge: float = 0.0,
                 post: PostName | PostHoc | None = None, error_feedback: bool = False,
                 on_conflict: OnConflict = "replace",
                 refresh_every: int | None = DEFAULT_REFRESH_EVERY) -> None:
        options = make_options(accumulate=accumulate, ridge=ridge, post=post,
                               error_feedback=error_feedback, on_conflict=on_conflict,
                               refresh_every=refresh_every)
        lam = nonnegative(lam, "lam")
        W = check_weight(W0)
        d_out, d_in = W.shape
        C = check_second_moment(C0, d_in, W.device)
        P = None if projection is None else check_projector(projection, d_in, W.device)
        dense_A0 = alg.base_matrix(C, lam, options.ridge, P)
        A0_norm = float(torch.linalg.norm(dense_A0))
        A0 = alg.compact(dense_A0)  # ridge·I (AlphaEdit) without its d² entries
        del dense_A0
        A_inv = _initial_inverse(A0)
        self._state = MemoryState(
            W0=W, dtype=W0.dtype, lam=lam, options=options, A0=A0, A0_norm=A0_norm, P=P,
            W=W.clone(), A_inv=A_inv, E=torch.zeros_like(W) if error_feedback else None,
            store=ConstraintStore.empty(d_in, d_out, W.device, keep_values=accumulate),
            drift_floor=0.0 if A_inv is None else alg.probe_error(A0, A_inv))
        self.last_report: StepReport | None = None

    # ----------------------------------------------------------------- read-only views
    @property
    def W(self) -> torch.Tensor:
        """The edited weight (d_out, d_in) in ``W0``'s dtype (a copy)."""
        return self._state.W.to(self._state.dtype, copy=True)

    @property
    def W64(self) -> torch.Tensor:
        """The float64 master copy of the edited weight (a copy)."""
        return self._state.W.clone()

    @property
    def E(self) -> torch.Tensor | None:
        """The error-feedback cache ``E = (Δ̂ − Δ) A`` of the last step (copy; ``None`` if off)."""
        return None if self._state.E is None else self._state.E.clone()

    @property
    def options(self) -> MemoryOptions:
        return self._state.options

    @property
    def lam(self) -> float:
        return self._state.lam

    @property
    def ids(self) -> list[Id]:
        """Active ids, each once, in order of first insertion."""
        return self._state.store.ids()

    @property
    def n_constraints(self) -> int:
        """Active constraint columns (an id edited twice under "accumulate" counts twice)."""
        return self._state.store.n_active

    def __contains__(self, x: object) -> bool:
        return x in self._state.store.index

    def __repr__(self) -> str:
        s = self._state
        return (f"LinearMemory(d_out={s.W.shape[0]}, d_in={s.W.shape[1]}, lam={s.lam}, "
                f"constraints={s.store.n_active}, steps={s.steps}, options={s.options})")

    # ----------------------------------------------------------------- edit / retract
    def edit(self, K: torch.Tensor, V: torch.Tensor, ids: list[Id] | None = None) -> torch.Tensor:
        """Add the constraints ``W k_j ≈ v_j`` (columns of ``K`` (d_in, n), ``V`` (d_out, n)).

        Returns the update ``Δ`` (d_out, d_in, float64) that was added to ``W``. ``ids`` is a
        list with one id per column (str, int or tuple of them; default ``"edit-<n>"``); an id
        already active is handled by ``on_conflict``; an id repeated within the call keeps its
        last column under "replace". The outcome is in :attr:`last_report`.
        """
        st = self._state
        K64, V64 = check_batch(K, V, st.W0.shape[1], st.W0.shape[0], st.W0.device)
        n = K64.shape[1]
        next_auto = st.next_auto
        if ids is None:
            ids, next_auto = _auto_ids(st.store, n, next_auto)
        else:
            ids = check_ids(ids, n)
        plan = _plan_edit(st, ids)
        return self._run(st.with_(next_auto=next_auto), K64[:, plan.keep], V64[:, plan.keep],
                         plan)

    def retract(self, ids) -> torch.Tensor:
        """Remove every constraint of ``ids`` exactly; returns the update ``Δ`` applied to ``W``.

        Afterwards ``W`` is the OTE over the remaining constraints (``accumulate=True`` only).
        """
        st = self._state
        if not st.options.accumulate:
            raise OptionError("retract needs accumulate=True: with accumulate=False the memory "
                              "keeps no past constraints in its system, so there is nothing to "
                              "remove exactly; rebuild the memory or use accumulate=True")
        ids = retract_ids(ids)
        unknown = [x for x in ids if x not in st.store.index]
        if unknown:
            raise UnknownIdError(f"no active constraint has id(s) {unknown!r}; active ids are "
                                 f"listed in mem.ids — nothing was retracted")
        rows = st.store.rows_of(ids)
        empty = st.W0.new_zeros(st.W0.shape[1], 0)
        plan = _Plan([], [], rows, {"retracted": tuple(ids)})
        return self._run(st, empty, st.W0.new_zeros(st.W0.shape[0], 0), plan)

    def _run(self, st: MemoryState, K: torch.Tensor, V: torch.Tensor, plan: _Plan) -> torch.Tensor:
        old = self._state
        new, delta, report = step(st, K, V, plan.ids, plan.remove_rows, plan.report,
                                  out=self._free_spares())
        self._state, self.last_report = new, report  # the commit: nothing before this mutates
        # the replaced buffers become scratch space for the next step (a new dict: copies of
        # this memory made by copy.copy keep theirs)
        self._spares = {name: getattr(old, name) for name in _SPARE_NAMES
                        if isinstance(getattr(old, name), torch.Tensor) and getattr(old, name)
                        is not getattr(new, name)}
        return delta

    def _free_spares(self) -> dict[str, torch.Tensor]:
        """Buffers the next step may overwrite: those of a replaced state that nothing holds.

        A step writes its new ``A⁻¹`` and ``W`` into the buffers of the state before the
        current one (no allocation, no page faults: about 2× less time per step at d = 6400)
        — but only when no object but this memory references them. A snapshot of the memory
        (``copy.copy``, as :class:`~oteseq.editor.Editor` takes before a multi-layer edit) or a
        kept state holds them, and then fresh buffers are used, so restoring any snapshot is
        bit-exact.
        """
        spares = getattr(self, "_spares", {})
        return {name: spares[name] for name in list(spares)
                if _unshared(spares, name) and spares[name]._base is None}

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """``{"tensors": {...}, "metadata": {...}}`` (JSON-able metadata, tensor copies)."""
        return _state.state_dict(self._state)

    def load_state_dict(self, d: dict) -> None:
        """Continue from a :meth:`state_dict`; :class:`StateMismatchError` if it does not fit."""
        _state.check_compatible(d, self._state)
        new = _state.from_state_dict(d, self._state.options, self._state.W0.device,
                                     "load_state_dict")
        self._state, self.last_report = new, None

    def save(self, path: str | os.PathLike) -> None:
        """Write ``path/memory.safetensors`` (tensors, metadata and a SHA-256 per tensor) and
        ``path/memory.json``, each atomically (never pickle)."""
        _state.save_files(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device = "cpu",
             verify: bool = True) -> LinearMemory:
        """The memory saved in ``path`` by :meth:`save`, on ``device``; checksums (unless
        ``verify=False``: the caller checked the file) and invariants are verified first
        (:class:`~oteseq.errors.CorruptStateError` names what is wrong)."""
        d = _state.load_files(path, device, verify=verify)
        meta = _state.check_metadata(d["metadata"], str(path))
        if meta.get("format") != _state.FORMAT or meta.get("version") != _state.VERSION:
            raise StateMismatchError(f"{path} holds format {meta.get('format')!r} version "
                                     f"{meta.get('version')!r}, not a LinearMemory save")
        o = meta["options"]
        try:
            options = make_options(**{k: o.get(k) for k in ("accumulate", "ridge", "post",
                                                              "error_feedback", "on_conflict",
                                                              "refresh_every")})
        except OptionError as exc:
            raise CorruptStateError(f"{path}: saved options are invalid ({exc})") from None
        memory = cls.__new__(cls)
        memory._state = _state.from_state_dict(d, options, torch.device(device), str(path))
        memory.last_report = None
        return memory

    def __copy__(self) -> LinearMemory:
        """An independent memory with the same state. Tensors are shared, never written in
        place: the constraint buffers of the copy are cut to their used rows, so its next edit
        reallocates instead of writing into rows the original may use later."""
        new = LinearMemory.__new__(LinearMemory)
        new._state = self._state.with_(store=self._state.store.detached())
        new.last_report = self.last_report
        return new


_SPARE_NAMES = ("A_inv", "W")


def _unshared(holder: dict, name: str) -> bool:
    """Whether ``holder[name]`` is referenced by ``holder`` alone (CPython reference count,
    compared with that of a tensor known to be held once, so the check fits the interpreter)."""
    return sys.getrefcount(holder[name]) <= _HELD_ONCE


_HELD_ONCE = sys.getrefcount({"probe": torch.empty(0)}["probe"]) + 1


def _initial_inverse(A0: alg.Matrix) -> alg.Matrix | None:
    """``A0⁻¹``, or ``None`` while ``A0`` is singular (e.g. ``lam = 0`` and no ridge). ``A0``
    as :func:`~oteseq.memory._algebra.compact` gives it."""
    if isinstance(A0, alg.ScaledIdentity):
        # A0 = ridge·I (lam = 0, e.g. AlphaEdit): the inverse is I / ridge, no factorisation,
        # kept compact until the first step
        return A0.inverse()
    if A0.shape[0] == 0 or not bool(A0.any()):
        return None
    try:
        return alg.dense_factor(A0, A0.new_zeros(A0.shape[0], 0))[1]
    except SingularSystemError:
        return None


def _auto_ids(store: ConstraintStore, n: int, next_auto: int) -> tuple[list[Id], int]:
    """``"edit-<n>"`` ids that no active constraint uses."""
    ids: list[Id] = []
    while len(ids) < n:
        candidate = f"edit-{next_auto}"
        next_auto += 1
        if candidate not in store.index:
            ids.append(candidate)
    return ids, next_auto


def _plan_edit(st: MemoryState, ids: list[Id]) -> _Plan:
    """Apply ``on_conflict`` to a call's ids: what to keep, what to remove, what to report."""
    policy, index = st.options.on_conflict, st.store.index
    counts = Counter(ids)
    conflicts = tuple(x for x in counts if x in index)
    duplicates = tuple(x for x, count in counts.items() if count > 1)
    if policy == "error" and (conflicts or duplicates):
        raise ConflictError(f"id(s) {list(conflicts + duplicates)!r} are already active or "
                            f"repeated in this call and on_conflict='error'; retract them first, "
                            f"or use on_conflict='replace' (latest wins) / 'accumulate'")
    if policy == "accumulate":
        return _Plan(list(range(len(ids))), ids, [], {"conflicts": conflicts})
    last = {x: j for j, x in enumerate(ids)}
    keep = sorted(last.values())
    if duplicates:
        logger.warning("ids %r were given more than once in one edit call; the last column of "
                       "each wins (on_conflict='replace')", list(duplicates))
    report = {"conflicts": conflicts, "replaced": conflicts, "duplicates_dropped": duplicates}
    return _Plan(keep, [ids[j] for j in keep], st.store.rows_of(list(conflicts)), report)
