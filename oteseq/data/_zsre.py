"""zsRE (MEND evaluation split) from the authors' site:
``{REMOTE_ROOT_URL}/data/dsets/zsre_mend_eval.json``."""
from __future__ import annotations

from typing import Any

from .cache import fetch
from ._counterfact import DSETS_URL, _json_checker, read_json
from ..schemas import ZSRE, SchemaError

NAME = "zsre_mend_eval.json"


def zsre(n: int | None = None) -> list[dict[str, Any]]:
    """The first ``n`` (all if None) zsRE records in the MEND schema.

    Fields: ``subject``, ``src``, ``rephrase``, ``answers`` (the edit target is ``answers[0]``),
    ``loc`` (starts with ``"nq question: "``), ``loc_ans``, and ``pred``, ``alt``, ``cond``.
    """
    path = fetch(NAME, f"{DSETS_URL}/{NAME}", check=_json_checker(ZSRE, NAME))
    records = read_json(path, ZSRE, NAME)
    for i, record in enumerate(records):
        if not record["answers"]:
            raise SchemaError(f"{NAME}: record {i}.answers is empty; delete {path} to download "
                              "it again")
    return records if n is None else records[:n]


__all__ = ["zsre"]
