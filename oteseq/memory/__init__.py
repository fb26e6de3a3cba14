"""Sequential editing of one linear map as least squares with memory: :class:`LinearMemory`.

- :mod:`._memory` — :class:`LinearMemory` (edit, retract, conflicts, state);
- :mod:`._step` — one step as a pure function (state in, new state out: atomic commits);
- :mod:`._algebra` — base matrix, Woodbury up/downdates, drift check, exact refresh;
- :mod:`._store` — the active constraint columns and their ids;
- :mod:`._state` — ``state_dict`` / safetensors + JSON round trip;
- :mod:`._config`, :mod:`._inputs` — options, report, input checks.
"""
from oteseq.memory._config import StepReport, MemoryOptions
from oteseq.memory._memory import LinearMemory

__all__ = ["StepReport", "LinearMemory", "MemoryOptions"]
