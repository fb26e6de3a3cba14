"""Keys of every edited layer of one batch, walking up the blocks from one cached residual.

Within one :meth:`~oteseq.editor.Editor.edit` call, layer ``l_i`` is edited after ``l_0 …
l_{i−1}``; its keys and the current output of the last edited block must be read on that partly
edited model. Nothing below block ``l_i`` changes during the call, so instead of a forward from
the embeddings per layer (plus one for the block output), :class:`KeyWalk` runs the model once
up to block ``l_0``, keeps the residual entering it and each block's call arguments, and then

* :meth:`KeyWalk.read` (step ``i``): block ``l_i`` on every (request, template) row, its edited
  module's input read at the fact token and averaged like :func:`oteseq.keys.compute_keys`;
  the bare-prompt rows continued through blocks ``l_i+1 … l_{L−1}`` for ``Z_cur`` (what
  :func:`oteseq.model_reads.block_output_at_subject` gives);
* :meth:`KeyWalk.advance` (after ``l_i`` was written): the residual moved up to ``l_{i+1}``
  through the edited blocks.

For GPT-2 small with layers 2–4 that is 7 block passes over all rows (plus 6 over the bare
rows) instead of 12 + 15. Equal to the per-layer forwards up to float rounding (tests).
"""
from __future__ import annotations

from typing import Sequence

import torch

from . import hooks, keys, models
from .batching import pad_token_id, right_padded
from .requests import Request
from .values import replay
from ._types import Model, Tokenizer


class Unsupported(RuntimeError):
    """The walk cannot serve these templates (no bare ``"{}"`` template for ``Z_cur``)."""


class _Chunk:
    """Rows sharing one capture: their residual entering the current block and block calls."""

    def __init__(self, model: Model, rows, layers: Sequence[int], pad_id: int):
        self.rows = rows
        self.ids, self.mask = right_padded([r[0] for r in rows], pad_id,
                                                models.input_device(model))
        self.calls: dict[int, dict] = {}
        self.h: torch.Tensor | None = None
        first, last = layers[0], layers[-1]
        handles = [models.block(model, j).register_forward_pre_hook(self._keeper(j, first, last),
                                                                   with_kwargs=True)
                   for j in range(first, last + 1)]
        try:
            with torch.no_grad():
                model(input_ids=self.ids, attention_mask=self.mask, use_cache=False)
        except hooks.StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()

    def _keeper(self, j: int, first: int, last: int):
        def keep(module, args, kwargs):
            hidden, named = replay._named_arguments(module, args, kwargs)
            self.calls[j] = {k: (None if k in replay.CACHE_NAMES else False if k == "use_cache"
                                 else v) for k, v in named.items()}
            if j == first:
                self.h = hidden.detach()
            if j == last:
                raise hooks.StopForward
        return keep

    def run(self, model: Model, blocks, h: torch.Tensor, select: torch.Tensor | None = None):
        batch = self.ids.shape[0]
        if select is None:
            return replay._run_blocks(model, blocks, h, lambda j: self.calls[j])
        return replay._run_blocks(model, blocks, h,
                                  lambda j: replay._select(self.calls[j], select, batch))


class KeyWalk:
    """Keys and ``Z_cur`` for each step of one multi-layer edit (see the module docstring)."""

    def __init__(self, model: Model, tok: Tokenizer, requests: Sequence[Request],
                 layers: Sequence[int], *,
                 templates, fact_token: str = "subject_last", batch_size: int = 128):
        self.model, self.layers, self.n = model, list(layers), len(requests)
        groups = keys.template_groups(templates)
        if not any(t == "{}" for group in groups for t in group):
            raise Unsupported("no bare '{}' template to read Z_cur from")
        rows, bare = [], {}
        for r_index, request in enumerate(requests):
            for group in groups:
                for template in group:
                    ids, index = keys._encode(tok, template.replace("{}", request.prompt),
                                              request.subject, fact_token)
                    if template == "{}" and r_index not in bare:
                        bare[r_index] = len(rows)
                    rows.append((ids, index, r_index, 1.0 / (len(groups) * len(group))))
        self._bare = bare
        pad = pad_token_id(tok)
        self.chunks = [_Chunk(model, rows[b:b + batch_size], self.layers, pad)
                       for b in range(0, len(rows), batch_size)]
        self._starts = list(range(0, len(rows), batch_size))

    @torch.no_grad()
    def read(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(K, Z_cur)`` at step ``i``: keys (d_in, n) of layer ``l_i`` on its module's device
        and the last edited block's output (d_model, n) at the bare prompts, float32."""
        layer, last = self.layers[i], self.layers[-1]
        module = models.edited_module(self.model, layer)
        name, device = "K", models.module_device(module)
        sums: dict = {}
        z = [None] * self.n
        for start, chunk in zip(self._starts, self.chunks):
            with hooks.Trace(module, retain_input=True, retain_output=False) as trace:
                out = chunk.run(self.model, [layer], chunk.h)
            keys._accumulate(sums, name, trace.input, chunk.rows, self.n, device)
            local = [(r, row - start) for r, row in self._bare.items()
                     if start <= row < start + len(chunk.rows)]
            if local:
                select = torch.tensor([row for _, row in local], device=out.device)
                h = out[select]
                if layer != last:
                    h = chunk.run(self.model, range(layer + 1, last + 1), h, select)
                index = torch.tensor([chunk.rows[row][1] for _, row in local], device=h.device)
                picked = h[torch.arange(len(local), device=h.device), index].float()
                for (r, _), vector in zip(local, picked):
                    z[r] = vector
        return sums[name], torch.stack(z, dim=1)

    @torch.no_grad()
    def advance(self, i: int) -> None:
        """Move every chunk's residual from block ``l_i`` to ``l_{i+1}`` (edited weights)."""
        if i + 1 < len(self.layers):
            blocks = range(self.layers[i], self.layers[i + 1])
            for chunk in self.chunks:
                chunk.h = chunk.run(self.model, blocks, chunk.h)


__all__ = ["KeyWalk", "Unsupported"]
