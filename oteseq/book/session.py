"""One call that makes a chapter or script reproducible: seeds, quiet logging, plot style.

``oteseq.setup()`` and ``oteseq.scale()`` are this module's functions. The module is not named
``setup``: a submodule of that name would replace the function ``oteseq.setup`` as soon as it
was imported.
"""
from __future__ import annotations

import os
import random
from typing import Literal

from ..errors import OptionError

Scale = Literal["ci", "full"]


def scale() -> Scale:
    """The run scale from ``OTESEQ_SCALE``: ``ci`` (toy model, CPU, seconds) or ``full``
    (real GPT-2 and datasets, a GPU). ``auto`` or unset means ``full`` when CUDA is available."""
    value = os.environ.get("OTESEQ_SCALE", "auto").strip().lower()
    if value == "auto":
        import torch

        return "full" if torch.cuda.is_available() else "ci"
    if value not in ("ci", "full"):
        raise OptionError(f"OTESEQ_SCALE={value!r} is not a run scale: set it to 'ci' (toy "
                          "model, CPU), 'full' (GPT-2 XL and the datasets, a GPU) or 'auto'")
    return value  # type: ignore[return-value]


def setup(seed: int = 0) -> Scale:
    """Seed python, numpy and torch, silence transformers' logging, set the plot style.

    Touches no network. Returns :func:`scale` so a chapter's parameter cell is one line.
    """
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    try:
        import matplotlib as mpl

        mpl.rcParams.update({"figure.dpi": 80, "figure.figsize": (6.0, 3.5), "axes.grid": True,
                             "grid.alpha": 0.3, "axes.spines.top": False,
                             "axes.spines.right": False, "savefig.dpi": 80})
    except ImportError:  # pragma: no cover
        pass
    return scale()
