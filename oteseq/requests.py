"""Editing requests as frozen data, and their one normalisation step."""
from __future__ import annotations

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


def _validated(req: Request) -> Request:
    """Check a request and return it with whitespace normalised and its default id filled in."""
    if not isinstance(req.prompt, str) or req.prompt.count("{}") != 1:
        raise RequestError(f"prompt {req.prompt!r} must contain exactly one '{{}}' where the subject "
                           "goes, e.g. 'The capital of {} is'")
    prompt = req.prompt.strip()
    subject = req.subject.strip() if isinstance(req.subject, str) else ""
    if not subject:
        raise RequestError(f"request for prompt {req.prompt!r} has an empty subject")
    target = req.target.strip() if isinstance(req.target, str) else ""
    if not target:
        raise RequestError(f"request for {subject!r} has an empty target; give the new object, "
                           "e.g. target='Oslo'")
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
