"""The active constraints of a memory: key and target columns with their ids, in insertion order.

Keys and targets are kept as rows of growing float64 buffers (``Kt`` (capacity, d_in), ``Vt``
(capacity, d_out)) so that adding ``k`` columns copies ``k`` rows, not the whole history. A
store is never changed in place: :meth:`ConstraintStore.changed` returns a new store that may
write into the shared buffers *beyond* the rows the old store uses, so the old store stays
valid — a failed step leaves it exactly as it was. Removed rows are marked dead and compacted
away once they are more than half of the buffer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from oteseq.memory._inputs import Id


@dataclass(frozen=True)
class ConstraintStore:
    """Active constraint columns and their ids (``Kt``, ``Vt`` ``None``: values not kept)."""

    Kt: torch.Tensor | None
    Vt: torch.Tensor | None
    used: int = 0
    row_ids: tuple = ()                                   # id of each used row, None if dead
    index: dict = field(default_factory=dict)             # id -> tuple of live rows, ascending
    dead: int = 0                                         # rows marked dead (None in row_ids)

    @classmethod
    def empty(cls, d_in: int, d_out: int, device: torch.device, keep_values: bool,
              capacity: int = 16) -> ConstraintStore:
        if not keep_values:
            return cls(None, None)
        new = lambda d: torch.empty(capacity, d, dtype=torch.float64, device=device)  # noqa: E731
        return cls(new(d_in), new(d_out))

    @property
    def n_active(self) -> int:
        return self.used - self.dead

    def ids(self) -> list[Id]:
        """Active ids, each once, in order of first insertion."""
        return list(self.index)

    def rows_of(self, ids: list[Id]) -> list[int]:
        """Live rows holding any of ``ids`` (all must be active), ascending."""
        return sorted(row for x in ids for row in self.index[x])

    def live_rows(self) -> list[int]:
        return [row for row, x in enumerate(self.row_ids) if x is not None]

    def columns(self, rows: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(K, V)`` of the given rows (default: every active one), as (d, m) column matrices."""
        assert self.Kt is not None and self.Vt is not None, "this store keeps no values"
        if rows is None and self.n_active == self.used:
            return self.Kt[: self.used].T, self.Vt[: self.used].T
        rows = self.live_rows() if rows is None else rows
        where = torch.tensor(rows, dtype=torch.long, device=self.Kt.device)
        return self.Kt.index_select(0, where).T, self.Vt.index_select(0, where).T

    def changed(self, remove_rows: list[int], K: torch.Tensor, V: torch.Tensor,
                ids: list[Id]) -> ConstraintStore:
        """A new store without ``remove_rows`` and with the columns of ``(K, V)`` appended."""
        row_ids, index = list(self.row_ids), dict(self.index)
        for row in remove_rows:
            index.pop(row_ids[row], None)
            row_ids[row] = None
        Kt, Vt = self.Kt, self.Vt
        dead = self.dead + len(remove_rows)
        if dead > 16 and 2 * dead > len(row_ids):  # drop dead rows: rows renumbered
            keep = [row for row, x in enumerate(row_ids) if x is not None]
            if Kt is not None and Vt is not None:
                Kt, Vt = _compact(Kt, Vt, keep, len(keep) + len(ids))
            row_ids = [row_ids[row] for row in keep]
            index, dead = _index(row_ids), 0
        if Kt is not None and Vt is not None:
            Kt, Vt = _grow(Kt, Vt, len(row_ids) + len(ids))
            Kt[len(row_ids): len(row_ids) + len(ids)] = K.T
            Vt[len(row_ids): len(row_ids) + len(ids)] = V.T
        for row, x in enumerate(ids, start=len(row_ids)):
            index[x] = index.get(x, ()) + (row,)
        row_ids += ids
        return ConstraintStore(Kt, Vt, len(row_ids), tuple(row_ids), index, dead)

    def export(self) -> tuple[torch.Tensor | None, torch.Tensor | None, list[Id]]:
        """Active rows as fresh contiguous ``(Kt, Vt)`` (m, d) and their ids, in order."""
        ids = [x for x in self.row_ids if x is not None]
        if self.Kt is None:
            return None, None, ids
        K, V = self.columns()
        return K.T.clone(), V.T.clone(), ids

    def detached(self) -> ConstraintStore:
        """The same store with buffers cut to the used rows: appending to it reallocates, so
        it never writes rows another store sharing the buffers may use (copy semantics)."""
        if self.Kt is None or self.Vt is None:
            return self
        return ConstraintStore(self.Kt[: self.used], self.Vt[: self.used], self.used,
                               self.row_ids, self.index, self.dead)

    @classmethod
    def restore(cls, Kt: torch.Tensor | None, Vt: torch.Tensor | None,
                ids: list[Id]) -> ConstraintStore:
        """Inverse of :meth:`export`."""
        if Kt is None or Vt is None:
            return cls(None, None, len(ids), tuple(ids), _index(ids))
        empty = cls(*_grow(Kt[:0], Vt[:0], len(ids)))
        return empty.changed([], Kt.T, Vt.T, ids)


def _index(row_ids: list) -> dict:
    index: dict = {}
    for row, x in enumerate(row_ids):
        if x is not None:
            index.setdefault(x, []).append(row)
    return {x: tuple(rows) for x, rows in index.items()}


def _grow(Kt: torch.Tensor, Vt: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Buffers with room for ``rows`` rows (capacity doubled when short), old rows copied."""
    if rows <= Kt.shape[0]:
        return Kt, Vt
    capacity = max(rows, 2 * Kt.shape[0], 16)
    bigger = []
    for buf in (Kt, Vt):
        new = buf.new_empty(capacity, buf.shape[1])
        new[: buf.shape[0]] = buf
        bigger.append(new)
    return bigger[0], bigger[1]


def _compact(Kt: torch.Tensor, Vt: torch.Tensor, keep: list[int],
             rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """New buffers holding only the ``keep`` rows, with room for ``rows`` rows."""
    where = torch.tensor(keep, dtype=torch.long, device=Kt.device)
    fresh = [buf.new_empty(max(rows, 16), buf.shape[1]) for buf in (Kt, Vt)]
    fresh[0][: len(keep)] = Kt.index_select(0, where)
    fresh[1][: len(keep)] = Vt.index_select(0, where)
    return fresh[0], fresh[1]
