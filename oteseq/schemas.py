"""Schemas of the downloaded data sets and a small recursive checker.

A schema is a Python type (``str``, ``int``, ``float``), a dict ``{key: schema}`` (a key ending
in ``"?"`` is optional; other keys are allowed and ignored), or a one-element list ``[schema]``
for a list whose items all follow ``schema``. Errors name the record and the field.
"""
from __future__ import annotations

from typing import Any, Sequence

from .errors import SchemaError


TARGET = {"str": str, "id?": str}
COUNTERFACT = {
    "case_id": int,
    "requested_rewrite": {"prompt": str, "subject": str, "relation_id": str,
                          "target_new": TARGET, "target_true": TARGET},
    "paraphrase_prompts": [str],
    "neighborhood_prompts": [str],
    "attribute_prompts?": [str],
    "generation_prompts?": [str],
}
ZSRE = {"subject": str, "src": str, "rephrase": str, "answers": [str], "loc": str,
        "loc_ans": str, "pred?": str, "alt?": str, "cond?": str}
SNIPPETS = {"relation_id": str, "target_id": str, "samples": [{"name": str, "text": str}]}
GLUE = {
    "sst2": {"sentence": str, "label": int},
    "cola": {"sentence": str, "label": int},
    "mrpc": {"sentence1": str, "sentence2": str, "label": int},
    "rte": {"sentence1": str, "sentence2": str, "label": int},
    "nli": {"sentence1": str, "sentence2": str, "label": int},
    "mmlu": {"question": str, "choices": [str], "label": int},
}

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number"}


def _type_ok(value: Any, expected: type) -> bool:
    if isinstance(value, bool):  # JSON true/false is not a number here
        return False
    if expected is float:
        return isinstance(value, (int, float))
    return isinstance(value, expected)


def check(value: Any, schema: Any, where: str) -> None:
    """Raise :class:`SchemaError` naming ``where`` + the field when ``value`` breaks ``schema``."""
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise SchemaError(f"{where}: expected an object, got {type(value).__name__}")
        for key, sub in schema.items():
            name, optional = key.rstrip("?"), key.endswith("?")
            if name not in value:
                if optional:
                    continue
                raise SchemaError(f"{where}.{name}: missing field")
            check(value[name], sub, f"{where}.{name}")
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise SchemaError(f"{where}: expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            check(item, schema[0], f"{where}[{i}]")
    elif not _type_ok(value, schema):
        raise SchemaError(f"{where}: expected {_TYPE_NAMES.get(schema, schema.__name__)}, "
                          f"got {type(value).__name__} {value!r:.60}")


EASYEDIT_FLAT = ("prompt", "subject", "target_new")
FLAT_HINT = ("this is EasyEdit's flat CounterFact schema (prompt, subject, target_new, "
             "ground_truth, rephrase_prompt, locality_prompt at the top level); oteseq reads the "
             "ROME/MEMIT schema: {case_id, requested_rewrite: {prompt, subject, relation_id, "
             "target_new: {str}, target_true: {str}}, paraphrase_prompts, neighborhood_prompts} "
             "— use counterfact.json from the MEMIT data site (oteseq.data.counterfact())")


def check_counterfact_record(record: Any, where: str = "CounterFact record") -> None:
    """One CounterFact record; EasyEdit's flat schema is named as such."""
    if isinstance(record, dict) and "requested_rewrite" not in record and \
            all(k in record for k in EASYEDIT_FLAT):
        raise SchemaError(f"{where}: {FLAT_HINT}")
    if isinstance(record, dict) and "requested_rewrite" in record:
        check(record["requested_rewrite"], COUNTERFACT["requested_rewrite"],
              f"{where}.requested_rewrite")
        return
    check(record, {"requested_rewrite": COUNTERFACT["requested_rewrite"]}, where)


def check_records(records: Any, schema: Any, source: str) -> None:
    """Check a JSON list of records; errors name ``source``, the index and any ``case_id``."""
    if not isinstance(records, list):
        raise SchemaError(f"{source}: expected a JSON list of records, got "
                          f"{type(records).__name__}")
    if schema is COUNTERFACT and records and isinstance(records[0], dict) and \
            "requested_rewrite" not in records[0] and all(k in records[0] for k in EASYEDIT_FLAT):
        raise SchemaError(f"{source}: {FLAT_HINT}")
    for i, record in enumerate(records):
        label = f"record {i}"
        if isinstance(record, dict) and "case_id" in record:
            label += f" (case_id {record['case_id']})"
        check(record, schema, f"{source}: {label}")


def check_labels(records: Sequence[dict], labels: Sequence[int], source: str) -> None:
    """Every ``label`` must be one of ``labels``."""
    for i, record in enumerate(records):
        if record["label"] not in labels:
            raise SchemaError(f"{source}: record {i}.label = {record['label']!r}, expected one "
                              f"of {list(labels)}")


__all__ = ["COUNTERFACT", "GLUE", "SNIPPETS", "SchemaError", "ZSRE", "check", "check_labels",
           "check_counterfact_record", "check_records"]
