"""Editing requests as frozen data, and their one normalisation step."""
from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, Hashable, Mapping

from .errors import RequestError


@dataclass(frozen=True)
class Request:
    """One fact to write: ``prompt.format(subject)`` should be continued by ``target``.

    ``prompt`` holds exactly one ``{}`` where the subject goes. ``target`` is stored without a
    leading space; tokenisation adds the space GPT-2 style. ``id`` names the constraint in the
    editor's memory and defaults to ``(subject, relation)`` (or ``(subject, prompt)`` when no
    relation is given), so a later request about the same subject and relation is a conflict.
    ``target_true`` (optional) is the fact being overwritten, used by evaluation and reports.
    """

    prompt: str
    subject: str
    target: str
    relation: str | None = None
    id: Hashable | None = None
    target_true: str | None = None

    def __post_init__(self) -> None:
        normalized = _validated(self)
        for field in ("prompt", "subject", "target", "id"):
            object.__setattr__(self, field, getattr(normalized, field))

    @property
    def text(self) -> str:
        """The prompt with the subject filled in."""
        return self.prompt.format(self.subject)

    @classmethod
    def from_counterfact(cls, record: Mapping[str, Any]) -> "Request":
        """The requested rewrite of a CounterFact / multi-CounterFact record."""
        from .schemas import check_counterfact_record
        check_counterfact_record(record)
        rw = record["requested_rewrite"]
        return cls(prompt=rw["prompt"], subject=rw["subject"], target=rw["target_new"]["str"],
                   relation=rw.get("relation_id"), target_true=rw["target_true"]["str"])

    @classmethod
    def from_zsre(cls, record: Mapping[str, Any]) -> "Request":
        """A zsRE (MEND eval) record; the target is ``answers[0]`` as the reference repos use."""
        subject, src = record["subject"], record["src"]
        if subject not in src:
            raise RequestError(f"zsRE record: subject {subject!r} does not occur in src {src!r}")
        return cls(prompt=src.replace(subject, "{}", 1), subject=subject,
                   target=record["answers"][0], relation=record.get("relation"))


def _check_prompt(prompt: object) -> str:
    """Exactly one bare ``{}`` and no other braces (``{{}}``, ``{x}``, ``{0}`` are refused)."""
    if not isinstance(prompt, str):
        raise RequestError(f"prompt must be a string, got {type(prompt).__name__} {prompt!r:.60}")
    try:
        fields = [f for _, f, spec, conv in string.Formatter().parse(prompt) if f is not None]
    except ValueError as exc:  # a lone '{' or '}'
        fields = [str(exc)]
    if fields != [""] or "{{" in prompt or "}}" in prompt:
        raise RequestError(f"prompt {prompt!r} must contain exactly one '{{}}' where the subject "
                           "goes and no other braces (not '{{}}', '{x}' or '{0}'), e.g. "
                           "'The capital of {} is'")
    return prompt.strip()


def _check_text(value: object, name: str, context: str, example: str) -> str:
    if not isinstance(value, str):
        raise RequestError(f"{context}: {name} must be a string, got {type(value).__name__} "
                           f"{value!r:.60}; e.g. {name}={example!r}")
    if not value.strip():
        raise RequestError(f"{context} has an empty {name}; give it, e.g. {name}={example!r}")
    return value.strip()


def _check_id(x: object, name: str) -> None:
    def atom(y: object) -> bool:
        return isinstance(y, str) or (isinstance(y, int) and not isinstance(y, bool))
    if not (atom(x) or (isinstance(x, tuple) and all(atom(y) for y in x))):
        raise RequestError(f"{name} {x!r:.60} ({type(x).__name__}) is not usable as an id; use a "
                           "str, an int or a tuple of them, e.g. ('Paris', 'P36')")


def _validated(req: Request) -> Request:
    """Check a request and return it with whitespace normalised and its default id filled in."""
    prompt = _check_prompt(req.prompt)
    subject = _check_text(req.subject, "subject", f"request for prompt {prompt!r}", "Paris")
    target = _check_text(req.target, "target", f"request for {subject!r}", "Oslo")
    if req.relation is not None:
        _check_id(req.relation, "relation")
    if req.id is not None:
        _check_id(req.id, "id")
    if req.target_true is not None and not isinstance(req.target_true, str):
        raise RequestError(f"request for {subject!r}: target_true must be a string or None, got "
                           f"{type(req.target_true).__name__}")
    default_id = (subject, req.relation if req.relation is not None else prompt)
    return replace_fields(req, prompt=prompt, subject=subject, target=target,
                          id=req.id if req.id is not None else default_id)


def replace_fields(req: Request, **changes: Any) -> Request:
    """A copy of ``req`` with fields changed, without re-running validation recursively."""
    new = object.__new__(Request)
    for field in ("prompt", "subject", "target", "relation", "id", "target_true"):
        object.__setattr__(new, field, changes.get(field, getattr(req, field)))
    return new


__all__ = ["Request", "replace_fields"]
