"""Re-running the blocks above the injection, on every position or on the suffix only.

δ is added to the residual stream after block ``layer`` at the subject's last token
``lookup``. Below that block nothing depends on δ, and — the model being causal — neither does
any position before ``lookup`` in the blocks above it. One no-grad forward (:class:`Capture`)
therefore keeps, once per chunk of prompts: block ``layer``'s output ``h`` (B, T, d), the
arguments the model passed to each upper block, the attention keys/values of the upper blocks,
and the final norm's output (to check a replay against). A step then re-runs the upper blocks

* :class:`FullReplay` — on all T positions, with the captured arguments (mask, positions);
* :class:`~oteseq.values.suffix.SuffixReplay` — on the S positions ``lookup … lookup+S−1``
  of each row only, its queries attending to [the row's cached prefix keys/values, slots
  < lookup | the suffix, causally], with the suffix's position ids / rotary embeddings
  gathered from the captured ones. Cost per step ∝ S instead of T (S ≈ 1–6, mean 3.4, against
  T ≈ 15 real tokens for the toy model's prompts).

A replay is trusted only after :func:`check` has compared it, at δ = 0, with the full forward;
an argument the suffix replay does not understand raises :class:`Unsupported` (the caller then
uses :class:`FullReplay`), never a silently wrong result.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Iterator

import torch

from .. import hooks, models
from .._types import Model

CACHE_NAMES = ("cache", "past_key_values", "layer_past")


class ReplayMismatch(RuntimeError):
    """The partial stack does not reproduce the model (an architecture the replay misses)."""


class Unsupported(ReplayMismatch):
    """The suffix replay cannot rebuild an argument of the upper blocks."""


def check(replayed: torch.Tensor, full: torch.Tensor) -> None:
    """The partial stack must reproduce the full forward; otherwise the table is wrong.

    ``replayed``/``full``: final-normed hidden states at the loss positions, (N, d).
    """
    tol = 1e-4 if replayed.dtype == torch.float32 else 2e-2
    err = float((replayed.detach().float() - full.float()).abs().max()) if replayed.numel() else 0.0
    scale = float(full.float().abs().max()) if full.numel() else 1.0
    if err > tol * max(scale, 1.0) or err != err:
        raise ReplayMismatch(f"re-running the upper blocks alone differs from the full "
                             f"forward by {err:.3g}")


class _Recorder:
    """Stands in for a transformers ``Cache`` during the capture: ``update`` keeps each layer's
    keys/values (B, heads, T, head_dim) and returns them unchanged (there is no past)."""

    def __init__(self):
        self.layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args, **kwargs):
        self.layers[layer_idx] = (keys, values)
        return keys, values


class Capture:
    """One no-grad forward that keeps block ``layer``'s output ``h``, the upper blocks'
    arguments by name, their attention keys/values and the final norm's output.

    The keys/values are recorded by handing each upper block a :class:`_Recorder` under its
    cache parameter (``cache_slot[j]``); the model itself runs without a cache.
    """

    def __init__(self, model: Model, layer: int):
        self.model, self.layer = model, layer
        self.upper = list(range(layer + 1, models.n_layers(model)))
        self.h: torch.Tensor | None = None
        self.calls: dict[int, dict] = {}
        self.cache_slot: dict[int, str] = {}
        self.kv = _Recorder()
        self.normed: torch.Tensor | None = None

    def run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> "Capture":
        with torch.no_grad(), self.hooks():
            try:
                self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            except hooks.StopForward:
                pass
        return self

    @classmethod
    def by_length(cls, model: Model, layer: int, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor, groups: int) -> "Capture":
        """The capture of all rows, run as ``groups`` forwards of rows of similar length (less
        padding) and merged: h, normed and keys/values zero-padded to the full width.

        ``calls`` are those of the longest group, so only batch-free position arguments carry
        over (the suffix replay refuses the others); the full replay needs :meth:`run`.
        """
        lengths = attention_mask.sum(1)
        parts = []
        for rows in torch.argsort(lengths, stable=True).tensor_split(groups):
            if len(rows):
                width = int(lengths[rows].max())
                parts.append((rows, cls(model, layer).run(input_ids[rows, :width],
                                                          attention_mask[rows, :width])))
        merged, shape = cls(model, layer), input_ids.shape
        merged.h = _merge([(rows, c.h) for rows, c in parts], shape, 1)
        merged.normed = _merge([(rows, c.normed) for rows, c in parts], shape, 1)
        merged.kv.layers = {idx: tuple(_merge([(rows, c.kv.layers[idx][i]) for rows, c in parts],
                                              shape, 2) for i in (0, 1))
                            for idx in parts[-1][1].kv.layers}
        merged.calls, merged.cache_slot = parts[-1][1].calls, parts[-1][1].cache_slot
        return merged

    @contextmanager
    def hooks(self) -> Iterator[None]:
        handles = [models.block(self.model, self.layer).register_forward_hook(self._keep_h)]
        for j in self.upper:
            handles.append(models.block(self.model, j).register_forward_pre_hook(
                self._keeper(j), with_kwargs=True))
        handles.append(models.final_norm(self.model).register_forward_hook(self._keep_norm))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _keep_h(self, module, args, output):
        self.h = (output[0] if isinstance(output, tuple) else output).detach()

    def _keeper(self, j: int):
        def keep(module, args, kwargs):
            hidden, named = _named_arguments(module, args, kwargs)
            self.calls[j] = named
            slot = next((n for n in CACHE_NAMES
                         if n in inspect.signature(module.forward).parameters), None)
            if slot is None:
                return None
            self.cache_slot[j] = slot
            return (hidden,), {**named, slot: self.kv}
        return keep

    def _keep_norm(self, module, args, output):
        self.normed = output.detach()
        raise hooks.StopForward  # the capture pass needs no logits



def _merge(parts: list[tuple[torch.Tensor, torch.Tensor]], shape, time_dim: int) -> torch.Tensor:
    """Rows ``rows`` of a (B, T, …) tensor from parts (rows, x) of narrower time, 0 elsewhere."""
    x = parts[-1][1]
    size = list(x.shape)
    size[0], size[time_dim] = shape[0], shape[1]
    out = x.new_zeros(size)
    for rows, part in parts:
        out.narrow(time_dim, 0, part.shape[time_dim])[rows.to(out.device)] = part
    return out


def _named_arguments(module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, dict]:
    """A block's call as (hidden states, {parameter name: value}), **kwargs flattened."""
    bound = inspect.signature(module.forward).bind(*args, **kwargs)
    named = {}
    for name, value in bound.arguments.items():
        kind = bound.signature.parameters[name].kind
        named.update(value if kind is inspect.Parameter.VAR_KEYWORD else {name: value})
    return named.pop(next(iter(bound.signature.parameters))), named


def _select(obj, rows: torch.Tensor | slice, batch: int):
    """Rows of every batch-major tensor (ndim ≥ 2, size(0) == batch) inside args/kwargs."""
    if isinstance(obj, torch.Tensor):
        return obj[rows] if obj.ndim >= 2 and obj.shape[0] == batch and batch > 1 else obj
    if isinstance(obj, tuple):
        return tuple(_select(x, rows, batch) for x in obj)
    if isinstance(obj, list):
        return [_select(x, rows, batch) for x in obj]
    if isinstance(obj, dict):
        return {k: _select(v, rows, batch) for k, v in obj.items()}
    return obj


def _run_blocks(model: Model, blocks: list[int], h: torch.Tensor, kwargs_of) -> torch.Tensor:
    for j in blocks:
        out = models.block(model, j)(h, **kwargs_of(j))
        h = out[0] if isinstance(out, tuple) else out
    return h


class FullReplay:
    """The upper blocks on all positions, with the captured arguments (no cache)."""

    def __init__(self, capture: Capture, lookup: torch.Tensor):
        self.capture, self.lookup = capture, lookup
        self.calls = {j: {k: (None if k in CACHE_NAMES else False if k == "use_cache" else v)
                          for k, v in named.items()} for j, named in capture.calls.items()}

    def __call__(self, rows, owner, delta, pos_r, pos_c) -> torch.Tensor:
        """Hidden states (before the final norm) at the loss positions, (len(pos_r), d)."""
        cap, dev = self.capture, self.lookup.device
        h = cap.h[rows].index_put((torch.arange(len(rows), device=dev), self.lookup[rows]),
                                  delta[owner].to(cap.h.dtype), accumulate=True)
        batch = cap.h.shape[0]
        h = _run_blocks(cap.model, cap.upper, h, lambda j: _select(self.calls[j], rows, batch))
        return h[pos_r, pos_c]

