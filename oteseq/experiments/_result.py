"""``Result``: one editing run as data (configuration, versions, timings, metrics) and its JSON.

Every result file records the protocol it followed (editing-anchors §10 item 7: evaluate after
all edits vs per-batch curves are not comparable) and phase timings summed over *all* batches
(item 10: the reference writes the last batch's time into every record).
"""
from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._atomic import write_json

FORMAT, VERSION = "oteseq-result", 1
PROTOCOL = "edit-all-then-evaluate-all"


@dataclass
class Result:
    """What :func:`~oteseq.experiments.run_sequential` measured.

    ``config``: method, hparams, batch size, n, seed, model id and fingerprint, data name,
    protocol and curves spec. ``versions``: oteseq, torch, transformers, python. ``timings``:
    seconds per phase, totals over the run. ``metrics``: ``pre`` (unedited model, all records),
    ``post`` (final model, all records), ``curves`` (list of per-batch points). ``batches``:
    per batch, edits written / skipped and ‖Δ‖_F per layer. ``weights`` / ``W0`` (per layer,
    CPU float64, (d_out, d_in)) stay in memory only; they are not written to JSON.
    """

    config: dict
    versions: dict
    timings: dict
    metrics: dict
    batches: list = field(default_factory=list)
    weights: dict = field(default_factory=dict, repr=False, compare=False)
    W0: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def method(self) -> str:
        return self.config["method"]

    def to_dict(self) -> dict:
        """The JSON-able part (NaN becomes None)."""
        body = {"format": FORMAT, "version": VERSION, "config": self.config,
                "versions": self.versions, "timings": self.timings, "metrics": self.metrics,
                "batches": self.batches}
        return _finite(body)

    @classmethod
    def from_dict(cls, d: dict) -> "Result":
        """Inverse of :meth:`to_dict` (without weights)."""
        from ..errors import StateMismatchError
        if d.get("format") != FORMAT or d.get("version") != VERSION:
            raise StateMismatchError(f"not an oteseq result (format {d.get('format')!r}, version "
                                     f"{d.get('version')!r}); write it with save_result")
        return cls(d["config"], d["versions"], d["timings"], d["metrics"], d.get("batches", []))


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def versions() -> dict:
    """Versions of the libraries a result depends on."""
    import torch
    import transformers

    from .. import __version__
    return {"oteseq": __version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def save_json(obj: dict, path) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (``oteseq._atomic.write_json``)."""
    write_json(path, _finite(obj))


def save_result(result: Result, path) -> None:
    """Write ``result`` (without weights) as JSON, atomically."""
    save_json(result.to_dict(), path)


def load_result(path) -> Result:
    """The :class:`Result` saved by :func:`save_result`."""
    return Result.from_dict(json.loads(Path(path).read_text()))


__all__ = ["PROTOCOL", "Result", "load_result", "save_json", "save_result", "versions"]
