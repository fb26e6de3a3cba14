"""One entry point for the command line: a data set by name."""
from __future__ import annotations

from typing import Any

from ..errors import OptionError

NAMES = ("counterfact", "mcf", "zsre", "toy-counterfact", "toy-zsre", "toy-conflicts")


def load(name: str, n: int | None = None, *, seed: int = 0,
         model: str | None = None) -> list[dict[str, Any]]:
    """The first ``n`` records of data set ``name`` (one of :data:`NAMES`).

    Real data sets are downloaded once (:mod:`oteseq.data.cache`); ``toy-*`` sets are generated
    by the toy world with ``seed`` and need ``n``: the world of the toy model named ``model``
    (``"toy-v1"``, ``"toy-v2"``), or of the default toy model for any other ``model``.
    """
    from . import counterfact, zsre
    if name == "counterfact":
        return counterfact(n)
    if name == "mcf":
        return counterfact(n, multi=True)
    if name == "zsre":
        return zsre(n)
    if name.startswith("toy-") and name in NAMES:
        from .. import toy
        if n is None:
            raise OptionError(f"load({name!r}) needs n, the number of toy records to generate")
        version = toy.versions.find(model) if model is not None else None
        version = version if version is not None else toy.versions.toy_model()
        return getattr(toy, name[len("toy-"):])(n, seed, world=version.world(),
                                                distinct_subjects=version.distinct_subjects)
    raise OptionError(f"unknown data set {name!r}; known: {', '.join(NAMES)}")


__all__ = ["NAMES", "load"]
