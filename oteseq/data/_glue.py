"""Test items of the zero-shot "GLUE" suite (SST-2, MRPC, CoLA, RTE, MMLU, NLI).

The reference (``glue_eval``) ships pickled, class-balanced subsets of GLUE validation built
with ``random.seed(37)``; pickles are not a safe download format, so oteseq rebuilds subsets the
same way from the public sources below: per label shuffle with ``random.Random(37)``, keep 100,
shuffle the union, drop the first 10 (the reference reserves them for few-shot examples). The
items are therefore drawn by the same recipe, not identical to the reference's.

- ``sst2``: GLUE ``SST-2.zip`` → ``dev.tsv``; label 1 = positive.
- ``cola``: GLUE ``CoLA.zip`` → ``dev.tsv``; label 1 = acceptable.
- ``rte``: GLUE ``RTE.zip`` → ``dev.tsv``; label 0 = entailment, 1 = not_entailment (GLUE's).
- ``mrpc``: the MSR paraphrase corpus (``msr_paraphrase_train.txt``) restricted to GLUE's dev
  ids (``mrpc_dev_ids.tsv``); label 1 = paraphrase.
- ``nli``: GLUE ``MNLI.zip`` → ``dev_matched.tsv``, label 1 = entailment, 0 = neutral or
  contradiction (unverified choice: the reference does not say which NLI set it used).
- ``mmlu``: Hendrycks et al. ``data.tar`` → ``data/test/*_test.csv``; label 0–3 = A–D.

GLUE archives: ``https://dl.fbaipublicfiles.com/glue/data/{SST-2,CoLA,RTE,MNLI}.zip``.
"""
from __future__ import annotations

import csv
import io
import json
import random
import tarfile
import zipfile
from pathlib import Path
from typing import Any, Callable

from ..errors import OptionError
from .cache import data_dir, fetch, write_atomic
from ._counterfact import read_json
from ..schemas import GLUE, check_labels

GLUE_URL = "https://dl.fbaipublicfiles.com/glue/data"
MRPC_URL = "https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_train.txt"
MMLU_URL = "https://people.eecs.berkeley.edu/~hendrycks/data.tar"
LABELS = {"sst2": (0, 1), "cola": (0, 1), "rte": (0, 1), "mrpc": (0, 1), "nli": (0, 1),
          "mmlu": (0, 1, 2, 3)}
PER_CLASS, RESERVED, SEED = 100, 10, 37


def _tsv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))


def _zip_member(archive: str, member: str, task: str) -> str:
    path = fetch(f"glue/raw/{archive}", f"{GLUE_URL}/{archive}", check=_is_zip, hint=_hint(task))
    with zipfile.ZipFile(path) as z:
        return z.read(member).decode("utf-8")


def _is_zip(path: Path) -> None:
    if not zipfile.is_zipfile(path):
        raise OSError(f"{path} is not a zip archive")


def _is_tar(path: Path) -> None:
    if not tarfile.is_tarfile(path):
        raise OSError(f"{path} is not a tar archive")


def _hint(task: str = "") -> str:
    target = data_dir() / "glue" / f"{task or '<task>'}.json"
    return (f"or write {target} yourself: a JSON list of test items with the fields of "
            "oteseq.schemas.GLUE and an integer label (see oteseq.data.glue)")


def _sst2() -> list[dict]:
    rows = _tsv(_zip_member("SST-2.zip", "SST-2/dev.tsv", "sst2"))[1:]
    return [{"sentence": s, "label": int(y)} for s, y in rows]


def _cola() -> list[dict]:
    rows = _tsv(_zip_member("CoLA.zip", "CoLA/dev.tsv", "cola"))
    return [{"sentence": r[3], "label": int(r[1])} for r in rows]


def _rte() -> list[dict]:
    rows = _tsv(_zip_member("RTE.zip", "RTE/dev.tsv", "rte"))[1:]
    return [{"sentence1": r[1], "sentence2": r[2], "label": 0 if r[3] == "entailment" else 1}
            for r in rows]


def _nli() -> list[dict]:
    rows = _tsv(_zip_member("MNLI.zip", "MNLI/dev_matched.tsv", "nli"))
    col = {name: i for i, name in enumerate(rows[0])}
    return [{"sentence1": r[col["sentence1"]], "sentence2": r[col["sentence2"]],
             "label": int(r[col["gold_label"]] == "entailment")} for r in rows[1:]]


def _mrpc() -> list[dict]:
    corpus = fetch("glue/raw/msr_paraphrase_train.txt", MRPC_URL, hint=_hint("mrpc"))
    ids = fetch("glue/raw/mrpc_dev_ids.tsv", f"{GLUE_URL}/mrpc_dev_ids.tsv", hint=_hint("mrpc"))
    dev = {tuple(r[:2]) for r in _tsv(ids.read_text(encoding="utf-8")) if len(r) >= 2}
    rows = _tsv(corpus.read_text(encoding="utf-8-sig"))[1:]
    return [{"sentence1": r[3], "sentence2": r[4], "label": int(r[0])}
            for r in rows if tuple(r[1:3]) in dev]


def _mmlu() -> list[dict]:
    path = fetch("glue/raw/mmlu_data.tar", MMLU_URL, check=_is_tar, hint=_hint("mmlu"))
    items = []
    with tarfile.open(path) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if member.name.startswith("data/test/") and member.name.endswith("_test.csv"):
                text = tar.extractfile(member).read().decode("utf-8")
                items += [{"question": r[0], "choices": r[1:5], "label": "ABCD".index(r[5])}
                          for r in csv.reader(io.StringIO(text))]
    return items


BUILDERS: dict[str, Callable[[], list[dict]]] = {
    "sst2": _sst2, "cola": _cola, "rte": _rte, "mrpc": _mrpc, "nli": _nli, "mmlu": _mmlu}


def balanced_subset(items: list[dict], per_class: int = PER_CLASS, seed: int = SEED) -> list[dict]:
    """Up to ``per_class`` items of each label (each group shuffled), then shuffled together."""
    rng = random.Random(seed)
    subset = []
    for label in sorted({x["label"] for x in items}):
        group = [x for x in items if x["label"] == label]
        rng.shuffle(group)
        subset += group[:per_class]
    rng.shuffle(subset)
    return subset


def glue(task: str) -> list[dict[str, Any]]:
    """The test items of one task (class-balanced, reserved few-shot items removed), cached."""
    if task not in BUILDERS:
        raise OptionError(f"unknown task {task!r}; known: {sorted(BUILDERS)}")
    name = f"glue/{task}.json"
    path = data_dir() / name
    if not path.exists():
        items = balanced_subset(BUILDERS[task]())[RESERVED:]
        write_atomic(path, json.dumps(items, ensure_ascii=False))
    items = read_json(path, GLUE[task], name)
    check_labels(items, LABELS[task], name)
    return items


__all__ = ["BUILDERS", "GLUE_URL", "LABELS", "balanced_subset", "glue"]
