"""Keys ``k``: the input of the edited matrix at the subject's token, averaged over prefixes.

For a request ``(prompt, subject)`` and a template ``t`` (a string with one ``{}``), the text
``t.replace("{}", prompt)`` with the subject in the prompt's slot is run through the model and
the input of the edited module is read at one token (``fact_token``). MEMIT averages over
templates in groups: the mean within each group, then the mean of the groups. With MEMIT's
templates, the bare ``"{}"`` and five generated prefixes, that is
``k = ½ k("{}") + ½ · mean₅ k(prefix + prompt)``.

All requested layers are read in one batched forward pass per chunk of texts (right padding,
attention mask), stopped right after the last edited module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from . import models
from .batching import pad_token_id, right_padded
from .errors import OptionError, OptionTypeError, RequestError
from .hooks import TraceDict
from .requests import Request
from ._types import Model, Tokenizer

FactToken = Literal["subject_last", "subject_first", "last"]
FACT_TOKENS = ("subject_last", "subject_first", "last")
SEED_WORDS = ("The", "Therefore", "Because", "I", "You")


def _subject_span(prompt: str, subject: str) -> tuple[str, int, int]:
    """The filled text and the character span ``[start, end)`` of the subject in it."""
    if prompt.count("{}") > 1:
        raise RequestError(f"prompt {prompt!r} has several '{{}}' slots; keep exactly one")
    if "{}" in prompt:
        start = prompt.index("{}")
        return prompt.replace("{}", subject, 1), start, start + len(subject)
    start = prompt.find(subject)
    if not subject or start < 0:
        raise RequestError(f"subject {subject!r} does not occur in prompt {prompt!r}; put a '{{}}' "
                           "where the subject goes or fix the subject's spelling")
    return prompt, start, start + len(subject)


def _check_mode(mode: str) -> None:
    if mode not in FACT_TOKENS:
        raise OptionError(f"fact_token={mode!r}: use one of {FACT_TOKENS}")


def _span_by_offsets(offsets, start: int, end: int) -> tuple[int, int]:
    """First and last token index overlapping the characters ``[start, end)``."""
    hits = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
    if not hits:
        raise RequestError(f"no token covers characters {start}..{end} of the prompt")
    return hits[0], hits[-1]


def _span_by_lengths(tok: Tokenizer, text: str, start: int, end: int) -> tuple[int, int]:
    """First and last subject token without offsets (slow tokenizers): the subject starts where
    the ids of the text before it stop being a prefix of the ids through it, and ends at the
    last id through it. Special tokens (a BOS) appear in both, so this is BOS-safe."""
    before, through = list(tok(text[:start]).input_ids), list(tok(text[:end]).input_ids)
    common = next((i for i, (a, b) in enumerate(zip(before, through)) if a != b),
                  min(len(before), len(through)))
    return common, len(through) - 1


def _encode(tok: Tokenizer, prompt: str, subject: str, mode: str) -> tuple[list[int], int]:
    """Token ids of the filled prompt (as the model sees them) and the index of the fact token."""
    _check_mode(mode)
    text, start, end = _subject_span(prompt, subject)
    if getattr(tok, "is_fast", False):
        encoding = tok(text, return_offsets_mapping=True)
        ids, offsets = list(encoding.input_ids), encoding.offset_mapping
        first, last = _span_by_offsets(offsets, start, end)
        last_token = max(i for i, (a, b) in enumerate(offsets) if b > a)
    else:
        ids = list(tok(text).input_ids)
        first, last = _span_by_lengths(tok, text, start, end)
        last_token = len(ids) - 1
    return ids, {"subject_last": last, "subject_first": first, "last": last_token}[mode]


def subject_last_index(tok: Tokenizer, prompt: str, subject: str, *,
                       mode: FactToken = "subject_last") -> int:
    """Index of the fact token in ``tok(prompt filled with subject).input_ids``.

    ``prompt`` holds a ``{}`` slot for the subject (or already contains the subject, whose first
    occurrence is used). Modes: ``subject_last`` (the subject's last token), ``subject_first``,
    ``last`` (the prompt's last token). Indices count special tokens such as a BOS.
    """
    return _encode(tok, prompt, subject, mode)[1]


def _as_template(prefix: str) -> str:
    """``prefix + ". {}"``, braces removed; ``" {}"`` after a prefix ending in ``.!?``."""
    if "{}" in prefix:
        return prefix
    text = prefix.replace("{", " ").replace("}", " ").rstrip()
    return text + (" {}" if text.endswith((".", "!", "?")) else ". {}")


def _sample(model: Model, ids: list[int], n_new: int, generator: torch.Generator,
            top_k: int) -> list[int]:
    """Continue ``ids`` by ``n_new`` tokens, each drawn from the top-``top_k`` softmax (on CPU)."""
    device = models.input_device(model)
    for _ in range(n_new):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, -1]
        top = torch.topk(logits.float().cpu(), top_k)
        choice = torch.multinomial(torch.softmax(top.values, -1), 1, generator=generator)
        ids = ids + [int(top.indices[choice])]
    return ids


def context_templates(model: Model, tok: Tokenizer, *, n: int = 5, length: int = 10, seed: int = 0,
                      source: Sequence[str] | None = None, top_k: int = 5) -> list[str]:
    """MEMIT's key-averaging templates: ``"{}"`` then ``n`` prefixes, each followed by ``". {}"``.

    Prefix ``i`` is sampled from the model, starting at ``SEED_WORDS[i % 5]`` and running to
    ``length`` tokens (seed word included), top-``top_k`` sampling with a ``torch.Generator``
    seeded by ``seed`` (deterministic). With ``source`` (e.g. ``oteseq.toy.context_prefixes()``),
    those fixed prefixes are used instead and ``n`` is ignored. Store the result with any state.
    """
    if source is not None:
        return ["{}"] + [_as_template(prefix) for prefix in source]
    generator = torch.Generator().manual_seed(seed)
    templates = ["{}"]
    for i in range(n):
        word = SEED_WORDS[i % len(SEED_WORDS)]
        ids = list(tok(word).input_ids)
        n_word = len(tok(word, add_special_tokens=False).input_ids)
        ids = _sample(model, ids, max(length - n_word, 0), generator, top_k)
        templates.append(_as_template(tok.decode(ids, skip_special_tokens=True)))
    return templates


def template_groups(templates: Sequence[str] | Sequence[Sequence[str]]) -> list[list[str]]:
    """Averaging groups. A flat list is split MEMIT-style: the bare ``"{}"`` forms one group,
    all other templates a second; a list of lists is taken as the groups themselves."""
    if isinstance(templates, str):
        raise OptionTypeError("templates must be a list of template strings, e.g. ['{}']")
    if all(isinstance(t, str) for t in templates):
        groups = [[t for t in templates if t == "{}"], [t for t in templates if t != "{}"]]
    else:
        groups = [list(group) for group in templates]
    groups = [group for group in groups if group]
    for template in (t for group in groups for t in group):
        if template.count("{}") != 1:
            raise RequestError(f"template {template!r} must contain exactly one '{{}}'")
    if not groups:
        raise RequestError("no templates given; use ['{}'] for no prefix averaging")
    return groups


@dataclass(frozen=True)
class ModuleIO:
    """Template-averaged input ``K`` and output ``W K + b`` of one edited module."""

    keys: torch.Tensor     # K: (d_in, n), float32
    outputs: torch.Tensor  # W K + b: (d_out, n), float32 (the bias included, if any)


def _rows(tok: Tokenizer, requests: Sequence[Request], templates, mode: str):
    """One row per (request, template): ids, fact-token index, request index, averaging weight."""
    groups = template_groups(templates)
    rows = []
    for r_index, request in enumerate(requests):
        for group in groups:
            for template in group:
                ids, index = _encode(tok, template.replace("{}", request.prompt),
                                     request.subject, mode)
                rows.append((ids, index, r_index, 1.0 / (len(groups) * len(group))))
    return rows


def _accumulate(sums: dict, name: str, hidden: torch.Tensor, chunk, n: int, device) -> None:
    """Add the chunk's weighted vectors at the fact tokens into ``sums[name]: (d, n)``, kept on
    ``device`` (the edited module's; a hook may see the input before a dispatcher moves it)."""
    hidden = hidden.to(device)
    batch = torch.arange(len(chunk), device=device)
    index = torch.tensor([row[1] for row in chunk], device=device)
    owner = torch.tensor([row[2] for row in chunk], device=device)
    weight = torch.tensor([row[3] for row in chunk], device=device, dtype=torch.float32)
    vectors = hidden[batch, index].float() * weight[:, None]
    if name not in sums:
        sums[name] = torch.zeros(hidden.shape[-1], n, device=device, dtype=torch.float32)
    sums[name].index_add_(1, owner, vectors.T)


def _empty_sums(model: Model, names: dict, n_rows: int) -> tuple[dict, dict]:
    """Zero ``K`` and ``W K + b`` for an empty request list (else filled on first use)."""
    if n_rows:
        return {}, {}
    shapes = {name: models.weight_shape(model.get_submodule(name)) for name in names.values()}
    devices = {name: models.module_device(model.get_submodule(name)) for name in names.values()}
    return ({name: torch.zeros(shapes[name][1], 0, device=devices[name]) for name in shapes},
            {name: torch.zeros(shapes[name][0], 0, device=devices[name]) for name in shapes})


def module_io_at_subject(model: Model, tok: Tokenizer, requests: Sequence[Request],
                         layers: Sequence[int], *,
                         templates, fact_token: FactToken = "subject_last",
                         batch_size: int = 64) -> dict[int, ModuleIO]:
    """Per layer, the template-averaged input ``K: (d_in, n)`` and output ``W K + b: (d_out, n)``
    of the edited module at each request's fact token, on that module's device, float32.

    One forward pass per chunk of ``batch_size`` texts reads all layers (stopped after the last).
    """
    names = {layer: models.edited_name(model, layer) for layer in layers}
    rows = _rows(tok, requests, templates, fact_token)
    key_sums, out_sums = _empty_sums(model, names, len(rows))
    for begin in range(0, len(rows), batch_size):
        chunk = rows[begin: begin + batch_size]
        ids, mask = right_padded([row[0] for row in chunk], pad_token_id(tok),
                                 models.input_device(model))
        with torch.no_grad(), TraceDict(model, names.values(), retain_input=True,
                                        stop=True) as traces:
            model(input_ids=ids, attention_mask=mask)
        for name in names.values():
            device = models.module_device(model.get_submodule(name))
            _accumulate(key_sums, name, traces[name].input, chunk, len(requests), device)
            _accumulate(out_sums, name, traces[name].output, chunk, len(requests), device)
    return {layer: ModuleIO(key_sums[name], out_sums[name]) for layer, name in names.items()}


def compute_keys(model: Model, tok: Tokenizer, requests: Sequence[Request], layers: Sequence[int],
                 *, templates,
                 fact_token: FactToken = "subject_last",
                 batch_size: int = 64) -> dict[int, torch.Tensor]:
    """Per layer, the keys ``K: (d_in, n)`` (float32, on the edited module's device): the
    template-averaged input of the edited module at each request's fact token."""
    io = module_io_at_subject(model, tok, requests, layers, templates=templates,
                              fact_token=fact_token, batch_size=batch_size)
    return {layer: pair.keys for layer, pair in io.items()}


__all__ = ["FACT_TOKENS", "FactToken", "ModuleIO", "SEED_WORDS", "compute_keys",
           "context_templates", "module_io_at_subject", "subject_last_index", "template_groups"]
