"""The suffix replay: the upper blocks on the positions δ can reach, over a cached prefix.

For row ``r`` with subject's last token at ``lookup_r`` the step re-runs positions
``lookup_r + s``, s = 0 … S−1 (S = 1 + the largest distance from ``lookup`` to a loss position
in the chunk). Every upper block attends over

    keys = [ prefix slots 0 … L−1 | suffix slots 0 … S−1 ],   L = max_r lookup_r,

where prefix slot p holds the captured key/value of position p (allowed iff p < lookup_r; the
others are zeroed, never NaN) and suffix slot s′ is allowed for query s iff s′ ≤ s. Suffix
slots past a row's last loss position are padding (zero input; their MLPs and linear maps
skipped, and the last block's MLP runs on the loss positions only): causality keeps needed
queries from seeing them, and every query sees at least itself, so no attention row is empty.
Position ids and rotary embeddings of the suffix are gathered from the captured ones at
``lookup_r + s``; the mask is built in the form the attention implementation expects (bool for
sdpa, additive float for eager).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from .. import models
from .replay import CACHE_NAMES, Capture, Unsupported, _run_blocks, _select
from .._types import Model


class _PrefixCache:
    """Stands in for a transformers ``Cache``: ``update`` prepends the fixed prefix keys and
    values of the layer to the suffix's and stores nothing (each step starts afresh)."""

    def __init__(self, prefix: dict[int, tuple[torch.Tensor, torch.Tensor]]):
        self.prefix = prefix

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args, **kwargs):
        if layer_idx not in self.prefix:
            raise Unsupported(f"an upper block asked for the cache of layer {layer_idx}, "
                              f"which the capture did not fill")
        k, v = self.prefix[layer_idx]
        return torch.cat([k.to(keys.dtype), keys], -2), torch.cat([v.to(values.dtype), values], -2)


class SuffixReplay:
    """The upper blocks on positions ``lookup … lookup+S−1`` of each row only (module doc)."""

    def __init__(self, capture: Capture, lookup: torch.Tensor, labels: torch.Tensor):
        batch, width = labels.shape
        _check_model(capture.model, width)
        dev = lookup.device
        cols = torch.arange(width, device=dev)
        scored = labels != -100
        if (scored & (cols < lookup[:, None])).any():
            raise Unsupported("a loss position precedes the subject's last token")
        last = torch.maximum(torch.where(scored, cols, -1).max(1).values, lookup)
        self.capture, self.lookup = capture, lookup
        self.width = int((last - lookup).max()) + 1                      # S
        steps = torch.arange(self.width, device=dev)
        self.needed = steps < (last - lookup + 1)[:, None]  # (B, S): up to the last loss position
        self.index = (lookup[:, None] + steps).clamp(max=width - 1)     # (B, S)
        h = capture.h.gather(1, self.index[..., None].expand(-1, -1, capture.h.shape[-1]))
        self.h = torch.where(self.needed[..., None], h, 0)                # (B, S, d)
        self.prefix = _prefix_kv(capture, lookup, int(lookup.max()), width)
        allowed = _allowed(lookup, int(lookup.max()), self.width)
        impl, self.calls = capture.model.config._attn_implementation, {}
        for j, named in capture.calls.items():
            if j not in capture.cache_slot:
                raise Unsupported(f"block {j} takes no key/value cache")
            self.calls[j] = _suffix_arguments(j, named, self.index, allowed, impl)

    def __call__(self, rows, owner, delta, pos_r, pos_c) -> torch.Tensor:
        """Hidden states (before the final norm) at the loss positions, (len(pos_r), d)."""
        rows = _as_slice(rows)  # consecutive rows (the usual case): views, not copies
        h = self.h[rows]
        h = torch.cat([h[:, :1] + delta[owner].to(h.dtype)[:, None], h[:, 1:]], dim=1)
        cache = _PrefixCache({i: (k[rows], v[rows]) for i, (k, v) in self.prefix.items()})
        batch, model, upper = self.h.shape[0], self.capture.model, self.capture.upper
        needed, where = self.needed[rows], (pos_r, pos_c - self.lookup[rows][pos_r])
        read = torch.zeros_like(needed).index_put(where, torch.ones_like(pos_r, dtype=torch.bool))
        maps = _token_maps(model, upper, needed, read)
        with _packed_maps(maps), _fused_activations(model, upper):
            h = _run_blocks(model, upper, h, lambda j: {
                **_select(self.calls[j], rows, batch), self.capture.cache_slot[j]: cache})
        return h[where]


def _as_slice(rows: torch.Tensor) -> torch.Tensor | slice:
    """``rows`` as a slice when they are consecutive and ascending, else unchanged."""
    if len(rows) == 0:
        return rows
    first = int(rows[0])
    span = torch.arange(first, first + len(rows), device=rows.device)
    return slice(first, first + len(rows)) if bool((rows == span).all()) else rows


@contextmanager
def _packed_maps(maps: list[tuple[torch.nn.Module, torch.Tensor]]) -> Iterator[None]:
    """Each ``(module, tokens)`` of ``maps`` runs on the suffix tokens where ``tokens`` (rows,
    S) is true only; the others get 0 (hooks removed in ``finally``)."""
    index = {}  # one flat index per distinct mask
    handles = []
    try:
        for module, tokens in maps:
            flat = index.setdefault(id(tokens), tokens.reshape(-1).nonzero()[:, 0])
            pack, unpack = _pack_hooks(tokens.shape, flat)
            handles.append(module.register_forward_pre_hook(pack))
            handles.append(module.register_forward_hook(unpack))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _pack_hooks(shape: torch.Size, flat: torch.Tensor):
    """A forward pre-hook that gathers the tokens ``flat`` of a (rows, S, d) input of the given
    (rows, S) ``shape``, and a forward hook that scatters the output back, 0 elsewhere; calls
    with inputs of another shape run unpacked."""
    packed: list[bool] = []

    def pack(module, args):
        x = args[0] if args else None
        if not (isinstance(x, torch.Tensor) and x.shape[:2] == shape):
            return None
        packed.append(True)
        return (x.reshape(-1, x.shape[-1]).index_select(0, flat), *args[1:])

    def unpack(module, args, out):
        if not packed:
            return None
        packed.pop()
        if not isinstance(out, torch.Tensor):
            raise Unsupported(f"{type(module).__name__} returns {type(out).__name__}, not a tensor")
        full = out.new_zeros(shape.numel(), out.shape[-1]).index_copy(0, flat, out)
        return full.view(*shape, out.shape[-1])

    return pack, unpack


def _token_maps(model: Model, blocks: list[int], needed: torch.Tensor, read: torch.Tensor):
    """[(module, tokens)]: the per-token maps of ``blocks`` and the suffix tokens each must run
    on. Every linear map outside the MLPs (attention query/key/value and output projections)
    and every MLP but the last runs on the ``needed`` tokens: a token past its row's last loss
    position reaches no loss (causality; no needed query sees its key or value). The last
    block's MLP runs on the ``read`` tokens only: its other outputs are never read.
    """
    out = []
    for j in blocks:
        mlp = models.mlp(model, j)
        inside = {id(m) for m in mlp.modules()}
        out.append((mlp, read if j == blocks[-1] else needed))
        out += [(m, needed) for m in models.linear_maps(models.block(model, j))
                if id(m) not in inside]
    return out


@contextmanager
def _fused_activations(model: Model, blocks: list[int]) -> Iterator[None]:
    """Each MLP activation of ``blocks`` that has a fused equivalent
    (:func:`oteseq.models.fused_equivalent`) runs it instead; restored in ``finally``."""
    swapped = []
    try:
        for j in blocks:
            for module in models.mlp(model, j).modules():
                fused = models.fused_equivalent(module)
                if fused is not None and "forward" not in vars(module):
                    module.forward = fused
                    swapped.append(module)
        yield
    finally:
        for module in swapped:
            del module.forward


def _check_model(model: Model, width: int) -> None:
    impl = getattr(model.config, "_attn_implementation", None)
    if impl not in ("eager", "sdpa"):
        raise Unsupported(f"attention implementation {impl!r} (the suffix mask is built for "
                          f"eager and sdpa)")
    window = getattr(model.config, "sliding_window", None)
    if isinstance(window, int) and width > window:
        raise Unsupported(f"prompts of {width} tokens exceed the sliding window {window}")


def _prefix_kv(capture: Capture, lookup: torch.Tensor, prefix: int, width: int) -> dict:
    """{layer: (keys, values)} recorded by the capture at positions < L, 0 where p ≥ lookup_r."""
    keep = (torch.arange(prefix, device=lookup.device) < lookup[:, None])[:, None, :, None]
    if len(capture.kv.layers) != len(capture.upper):
        raise Unsupported(f"{len(capture.kv.layers)} attention layers recorded keys/values "
                          f"for {len(capture.upper)} upper blocks")
    out = {}
    for idx, (k, v) in capture.kv.layers.items():
        if not (k.ndim == 4 and k.shape[-2] == width and k.shape[0] == len(lookup)):
            raise Unsupported(f"the keys of layer {idx} have shape {tuple(k.shape)}, not "
                              f"(batch, heads, {width}, head_dim)")
        out[idx] = tuple(torch.where(keep.to(x.device), x[:, :, :prefix], 0) for x in (k, v))
    return out


def _allowed(lookup: torch.Tensor, prefix: int, width: int) -> torch.Tensor:
    """(B, 1, S, L+S) bool: query s of row r sees prefix slots < lookup_r and suffix slots ≤ s."""
    dev = lookup.device
    seen = torch.arange(prefix, device=dev) < lookup[:, None]                  # (B, L)
    causal = torch.ones(width, width, dtype=torch.bool, device=dev).tril()      # (S, S)
    return torch.cat([seen[:, None, None, :].expand(-1, 1, width, -1),
                      causal.expand(len(lookup), 1, width, width)], dim=-1)


def _mask_like(captured, allowed: torch.Tensor, impl: str) -> torch.Tensor:
    if captured is None and impl == "sdpa" or getattr(captured, "dtype", None) == torch.bool:
        return allowed
    if isinstance(captured, torch.Tensor) and captured.is_floating_point() and captured.ndim == 4:
        blocked = torch.finfo(captured.dtype).min
        return torch.zeros(allowed.shape, dtype=captured.dtype, device=allowed.device).masked_fill(
            ~allowed, blocked)
    raise Unsupported(f"attention mask {type(captured).__name__} for {impl!r} attention")


def _time_gather(x: torch.Tensor, index: torch.Tensor, name: str) -> torch.Tensor:
    """x (1|B, T, …) at the suffix positions → (B, S, …)."""
    batch, width = index.shape
    if x.ndim < 2 or x.shape[0] not in (1, batch) or x.shape[1] < int(index.max()) + 1:
        raise Unsupported(f"block argument {name!r} of shape {tuple(x.shape)}")
    x = x.expand(batch, *x.shape[1:])
    return x[torch.arange(batch, device=index.device)[:, None], index.to(x.device)]


def _suffix_arguments(j: int, named: dict, index, allowed, impl: str) -> dict:
    """Block j's captured arguments rewritten for the suffix (its cache is added per step)."""
    out = {}
    if "attention_mask" not in named:
        raise Unsupported(f"block {j} takes no attention_mask")
    for name, value in named.items():
        if name in CACHE_NAMES:
            continue
        elif name == "attention_mask":
            out[name] = _mask_like(value, allowed, impl)
        elif name == "position_ids" and isinstance(value, torch.Tensor):
            out[name] = _time_gather(value[..., None], index, name)[..., 0]
        elif name == "position_embeddings" and isinstance(value, tuple):
            out[name] = tuple(_time_gather(x, index, name) for x in value)
        elif name == "use_cache":
            out[name] = False
        elif _has_tensor(value):  # an argument with a time dimension we do not know: refuse
            raise Unsupported(f"block {j} takes an argument {name!r} the suffix replay "
                              f"cannot rebuild")
        else:
            out[name] = value
    return out


def _has_tensor(value) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (tuple, list)):
        return any(_has_tensor(x) for x in value)
    if isinstance(value, dict):
        return any(_has_tensor(x) for x in value.values())
    return False
