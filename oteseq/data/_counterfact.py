"""CounterFact, multi-CounterFact, attribute snippets and the TF-IDF model, from the authors' site.

Files (editing-anchors §7) under ``{REMOTE_ROOT_URL}/data/dsets/`` with the MEMIT root
``https://memit.baulab.info`` (the ROME root ``https://rome.baulab.info`` serves the same
CounterFact files): ``counterfact.json``, ``multi_counterfact.json``, ``attribute_snippets.json``,
``idf.npy``, ``tfidf_vocab.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..tfidf import tfidf_vectorizer
from .cache import fetch
from ..schemas import COUNTERFACT, FLAT_HINT, SNIPPETS, SchemaError, check_records

REMOTE_ROOT_URL = "https://memit.baulab.info"
DSETS_URL = f"{REMOTE_ROOT_URL}/data/dsets"


def _json_checker(schema: Any, name: str) -> Callable[[Path], None]:
    def check_file(path: Path) -> None:
        read_json(path, schema, name)
    return check_file


def read_json(path: Path, schema: Any, name: str) -> Any:
    """Parse a JSON list of records and check it; errors say how to get a fresh copy."""
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
        check_records(records, schema, name)
    except (ValueError, SchemaError) as exc:
        if FLAT_HINT in str(exc):  # a user's file in another schema: downloading will not help
            raise SchemaError(f"{path}: {exc}") from None
        raise SchemaError(f"{exc} — the file {path} is not a valid {name}; delete it to "
                          "download it again") from exc
    return records


def _load(name: str, schema: Any) -> Any:
    path = fetch(name, f"{DSETS_URL}/{name}", check=_json_checker(schema, name))
    return read_json(path, schema, name)


def counterfact(n: int | None = None, *, multi: bool = False) -> list[dict[str, Any]]:
    """The first ``n`` (all if None) CounterFact records, or multi-CounterFact with ``multi``.

    Records are dicts in the original schema (``case_id``, ``requested_rewrite``,
    ``paraphrase_prompts``, ``neighborhood_prompts``, ``attribute_prompts``,
    ``generation_prompts``); the first-n order is the one the sequential protocol uses.
    """
    records = _load("multi_counterfact.json" if multi else "counterfact.json", COUNTERFACT)
    return records if n is None else records[:n]


def attribute_snippets() -> dict[str, dict[str, list[dict[str, str]]]]:
    """Wikipedia snippets as ``{relation_id: {target_id: [{"name", "text"}, ...]}}``."""
    nested: dict[str, dict[str, list]] = {}
    for entry in _load("attribute_snippets.json", SNIPPETS):
        nested.setdefault(entry["relation_id"], {}).setdefault(entry["target_id"], []).extend(
            entry["samples"])
    return nested


def _check_idf(path: Path) -> None:
    try:
        idf = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise SchemaError(f"idf.npy: not a numpy array file ({exc}); delete {path} to download "
                          "it again") from exc
    if idf.ndim != 1 or not np.isfinite(idf).all():
        raise SchemaError(f"idf.npy: expected a finite 1-d array, got shape {idf.shape}; delete "
                          f"{path} to download it again")


def _check_vocab(path: Path) -> None:
    try:
        vocab = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError:
        vocab = None
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise SchemaError(f"tfidf_vocab.json: expected an object token -> column; delete {path} "
                          "to download it again")


def tfidf():
    """The reference's fitted sklearn TfidfVectorizer, rebuilt from idf.npy + tfidf_vocab.json."""
    idf_path = fetch("idf.npy", f"{DSETS_URL}/idf.npy", check=_check_idf)
    vocab_path = fetch("tfidf_vocab.json", f"{DSETS_URL}/tfidf_vocab.json", check=_check_vocab)
    _check_idf(idf_path)
    _check_vocab(vocab_path)
    idf = np.load(idf_path, allow_pickle=False)
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    if len(vocab) != len(idf) or max(vocab.values()) >= len(idf):
        raise SchemaError(f"tfidf_vocab.json has {len(vocab)} tokens but idf.npy {len(idf)} "
                          f"values; delete both from {idf_path.parent} to download them again")
    return tfidf_vectorizer(idf, vocab)


__all__ = ["DSETS_URL", "REMOTE_ROOT_URL", "attribute_snippets", "counterfact", "read_json",
           "tfidf"]
