"""The batched Adam loop over all requests of a batch, and :func:`compute_values`.

The requests' losses involve disjoint δ's and disjoint prompt rows, so minimising their *sum*
with a per-coordinate optimiser that only moves still-active rows gives each request exactly its
one-at-a-time δ (:func:`oteseq.values.one_at_a_time` is that reference loop). Prompts are
grouped in chunks; each chunk's lower pass is captured once (:class:`~.replay.Capture`) and a
step re-runs the upper blocks by a replay (:mod:`.replay`, :mod:`.suffix`), then the final norm
and the LM head at the loss positions only. Gradients are taken for δ only.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Sequence

import torch

from .. import models
from ..errors import OptionError
from ..requests import Request
from . import prompts, replay
from .prompts import Prompts, build_prompts, request_losses
from .reference import one_at_a_time
from .suffix import SuffixReplay
from .target import TargetValues
from .._types import Model, Tokenizer

log = logging.getLogger("oteseq.values")
REPLAYS = ("suffix", "full")  # tried in this order; then the one-at-a-time loop
CAPTURE_GROUPS = 4  # forwards per chunk for the suffix replay's capture (rows sorted by length)
STEP_ROWS = 64  # prompt rows per forward/backward of a step: bounds the autograd graph alive


class _Chunk:
    """A group of requests whose prompts share one captured lower pass."""

    def __init__(self, model: Model, layer: int, p: Prompts, first: int, count: int):
        m = p.per_request
        self.model, self.layer, self.first, self.count, self.m = model, layer, first, count, m
        sl = slice(first * m, (first + count) * m)
        device = models.input_device(model)
        width = int(p.attention_mask[sl].sum(1).max())
        self.ids = p.input_ids[sl, :width].to(device)
        self.mask = p.attention_mask[sl, :width].to(device)
        self.lookup, self.labels = p.lookup[sl], p.labels[sl, :width]
        self.capture, self.replay = None, None

    def use(self, kind: str) -> None:
        """Capture the lower pass and re-run the upper blocks by the ``"suffix"`` replay (the
        capture run in groups of rows of similar length) or the ``"full"`` one from now on."""
        if kind not in REPLAYS:
            raise OptionError(f"unknown replay {kind!r}; use one of {REPLAYS}")
        if kind == "suffix":
            self.capture = replay.Capture.by_length(self.model, self.layer, self.ids, self.mask,
                                                    CAPTURE_GROUPS)
        else:
            self.capture = replay.Capture(self.model, self.layer).run(self.ids, self.mask)
        dev = self.capture.h.device
        self.lookup, self.labels = self.lookup.to(dev), self.labels.to(dev)
        self.replay = (SuffixReplay(self.capture, self.lookup, self.labels) if kind == "suffix"
                       else replay.FullReplay(self.capture, self.lookup))
        # the recorded full-width keys/values are dead now: the suffix replay holds its own
        # prefix copies and the full replay runs without a cache; free them for the whole loop
        self.capture.kv.layers.clear()

    def z_init(self) -> torch.Tensor:
        """(count, d_model) block output at the bare prompt (row 0 of each request)."""
        rows = torch.arange(0, self.count * self.m, self.m, device=self.lookup.device)
        return self.capture.h[rows, self.lookup[rows]].float()

    def forward(self, active: torch.Tensor, delta: torch.Tensor, kl_init: torch.Tensor | None,
                z_init: torch.Tensor, hp, check: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Losses (len(active),) of the chunk's requests ``active`` (local indices) given their
        δ rows, and the KL prompts' log-probabilities (the reference p_0 at the first step)."""
        m, dev = self.m, self.lookup.device
        rows = (active[:, None] * m + torch.arange(m, device=dev)).reshape(-1)
        owner = torch.arange(len(active), device=dev).repeat_interleave(m)
        labels = self.labels[rows]
        is_kl = (torch.arange(len(rows), device=dev) % m) == m - 1
        tgt_r, tgt_c = torch.nonzero(labels != -100, as_tuple=True)
        kl_r = torch.nonzero(is_kl, as_tuple=True)[0]
        pos_r = torch.cat([tgt_r, kl_r])
        pos_c = torch.cat([tgt_c, self.lookup[rows][kl_r]])
        model = self.capture.model
        normed = models.final_norm(model)(self.replay(rows, owner, delta, pos_r, pos_c))
        if check:
            replay.check(normed, self.capture.normed[rows][pos_r, pos_c])
        logits = models.lm_head(model)(normed).float()
        tok_logp, kl_logp = prompts.loss_log_probs(logits, labels[tgt_r, tgt_c])
        counts = torch.bincount(tgt_r, minlength=len(rows))[~is_kl].tolist()
        kl_ref = kl_logp.detach() if kl_init is None else kl_init
        loss = request_losses(list(tok_logp.split(counts)), kl_logp, kl_ref, delta, z_init, hp, m)
        return loss, kl_logp.detach()


def _chunks(model: Model, layer: int, p: Prompts, max_tokens: int) -> list[_Chunk]:
    """Consecutive groups of requests with at most ``max_tokens`` padded tokens per forward."""
    m, width = p.per_request, p.input_ids.shape[1]
    n = p.input_ids.shape[0] // m
    size = max(1, max_tokens // (m * width))
    return [_Chunk(model, layer, p, first, min(size, n - first)) for first in range(0, n, size)]


class _RowAdam:
    """Adam (torch's update, default betas/eps) on the rows of an (n, d) tensor chosen per step.

    Rows not chosen keep their value *and* their moments, so a request that stopped early is
    frozen exactly as if it had its own optimiser. Every row chosen at a step has taken the same
    number of steps before (rows only ever drop out), so the bias correction is one scalar.
    """

    def __init__(self, like: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.m, self.v = torch.zeros_like(like), torch.zeros_like(like)
        self.lr, self.betas, self.eps = lr, betas, eps

    def step(self, param: torch.Tensor, grad: torch.Tensor, rows: torch.Tensor, t: int) -> None:
        b1, b2 = self.betas
        g = grad[rows]
        self.m[rows] = self.m[rows].lerp(g, 1 - b1)
        self.v[rows] = (self.v[rows] * b2).addcmul(g, g, value=1 - b2)
        denom = (self.v[rows].sqrt() / (1 - b2 ** t) ** 0.5).add(self.eps)
        param[rows] = param[rows].addcdiv(self.m[rows], denom, value=-self.lr / (1 - b1 ** t))


def _clamp_rows(delta: torch.Tensor, z_init: torch.Tensor, rows: torch.Tensor, factor: float):
    """Project each chosen δ_i onto the ball ‖δ_i‖ ≤ factor·‖z_init_i‖ (in place)."""
    d = delta[rows]
    max_norm = factor * z_init[rows].norm(dim=-1, keepdim=True)
    norm = d.norm(dim=-1, keepdim=True)
    delta[rows] = torch.where(norm > max_norm, d * max_norm / norm, d)


def compute_values(model: Model, tok: Tokenizer, requests: Sequence[Request], layer: int, hp, *,
                   templates: Sequence[str], max_tokens: int = 4096,
                   progress: bool = False, replays: Sequence[str] = REPLAYS,
                   step_rows: int = STEP_ROWS) -> TargetValues:
    """z* for all ``requests`` at block ``layer``, optimised together (package docstring).

    ``hp`` supplies v_lr, v_num_grad_steps, clamp_norm_factor, kl_factor, v_weight_decay
    (and fact_token, default ``subject_last``);
    ``max_tokens`` bounds the padded tokens of one capture forward (requests are chunked, their
    gradients are independent); ``step_rows`` bounds the prompt rows of one forward and
    backward of a step (a chunk's requests in parts; the autograd graph of one part is alive
    at a time, so peak memory does not grow with the batch). ``replays`` are tried in order:
    ``"suffix"`` re-runs the upper blocks from the subject's last token on, ``"full"`` on all
    positions; one that does not reproduce the model at the first step is dropped with a
    logged warning, and if none does, the one-at-a-time loop runs.
    Returns z*, z_init (d_model, n), losses and steps (n,).
    """
    if not isinstance(step_rows, int) or isinstance(step_rows, bool) or step_rows < 1:
        raise OptionError(f"step_rows={step_rows!r}: pass a positive int (prompt rows per "
                          f"forward of a step; default {STEP_ROWS})")
    with frozen_parameters(model):
        return _compute(model, tok, requests, layer, hp, templates, max_tokens, progress, replays,
                        step_rows)


@contextmanager
def frozen_parameters(model: Model):
    """No parameter requires a gradient inside the block (restored in ``finally``): only δ is
    optimised, and autograd then keeps no activations for weight gradients (less memory)."""
    flags = [(param, param.requires_grad) for param in model.parameters()]
    try:
        for param, _ in flags:
            param.requires_grad_(False)
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


def _compute(model: Model, tok: Tokenizer, requests, layer, hp, templates, max_tokens, progress,
             replays, step_rows):
    p = build_prompts(tok, requests, templates, getattr(hp, "fact_token", "subject_last"))
    chunks = _chunks(model, layer, p, max_tokens)
    for kind in replays:
        try:
            for chunk in chunks:
                chunk.use(kind)
            return _optimise(chunks, hp, progress, step_rows)
        except replay.ReplayMismatch as error:
            log.warning("%s replay: %s; falling back", kind, error)
    log.warning("no replay reproduces this model; using the one-request-at-a-time loop")
    return one_at_a_time(model, tok, requests, layer, hp, templates=templates)


def _optimise(chunks: list[_Chunk], hp, progress: bool,
              step_rows: int = STEP_ROWS) -> TargetValues:
    """The batched Adam loop over the chunks' requests (see :func:`compute_values`); each
    step runs a chunk's active requests in parts of at most ``step_rows`` prompt rows (at
    least one request), one forward and δ-gradient per part."""
    z_init = torch.cat([c.z_init() for c in chunks])
    n, dev = z_init.shape[0], z_init.device
    delta, adam = torch.zeros_like(z_init), _RowAdam(z_init, hp.v_lr)
    kl_init: list[torch.Tensor | None] = [None] * len(chunks)
    loss, steps = torch.zeros(n, device=dev), torch.zeros(n, dtype=torch.long, device=dev)
    active = torch.ones(n, dtype=torch.bool, device=dev)
    last = hp.v_num_grad_steps - 1
    for it in _progress(range(hp.v_num_grad_steps), progress):
        grad, train = torch.zeros_like(delta), torch.zeros_like(active)
        for ci, chunk in enumerate(chunks):
            local = torch.nonzero(active[chunk.first: chunk.first + chunk.count])[:, 0]
            if len(local) == 0:
                continue
            kl_parts = []
            for part in local.split(max(1, step_rows // chunk.m)):  # one graph alive at a time
                rows = chunk.first + part
                d_rows = delta[rows].clone().requires_grad_(True)
                ref = None if kl_init[ci] is None else kl_init[ci][part]
                part_loss, kl_logp = chunk.forward(part, d_rows, ref, z_init[rows], hp, it == 0)
                kl_parts.append(kl_logp)
                loss[rows] = part_loss.detach()
                go = (part_loss.detach() >= prompts.STOP_LOSS) & (it < last)
                if go.any():  # gradients for δ only: no weight gradients, no .grad on the model
                    grad[rows] = torch.autograd.grad(part_loss[go].sum(), d_rows)[0]
                    train[rows[go]] = True
                del part_loss, d_rows  # the part's graph goes before the next part's forward
            if kl_init[ci] is None:  # the first step: every request active, parts in order
                kl_init[ci] = torch.cat(kl_parts)
        if not train.any():
            break
        rows = torch.nonzero(train)[:, 0]
        with torch.no_grad():
            adam.step(delta, grad, rows, it + 1)
            _clamp_rows(delta, z_init, rows, hp.clamp_norm_factor)
        steps[rows] += 1
        active = train
    return TargetValues(z=(z_init + delta).T.contiguous(), z_init=z_init.T.contiguous(),
                        loss=loss, steps=steps)


def _progress(iterable, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, desc="values", leave=False)


