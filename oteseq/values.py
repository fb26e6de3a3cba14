"""Target values ``z*``: one offset δ per request, optimised for a whole batch at once.

Objective (MEMIT ``compute_z``, editing-anchors §3), for each request ``i`` separately:

    min_δ  mean_p NLL(target | prompt_p with δ added at the subject's last token)
           + kl_factor · KL(p_δ ‖ p_0)  at the subject's last token of "{subject} is a"
           + v_weight_decay · ‖δ‖ / ‖z_init‖²,      subject to ‖δ‖ ≤ clamp_norm_factor · ‖z_init‖

where δ is added to the residual output of block ``layer`` (the last edited layer) and
``z_init`` is that output at the bare prompt. Adam with lr ``v_lr``; a request stops when its
loss is below 5e-2; at most ``v_num_grad_steps − 1`` steps. Returns ``z* = z_init + δ``.

The requests' losses involve disjoint δ's and disjoint prompt rows, so minimising their *sum*
with a per-coordinate optimiser that only moves still-active rows gives each request exactly its
one-at-a-time δ (:func:`one_at_a_time` is that reference loop). Speed comes from two facts:
all prompts of the batch share forward passes, and the hidden states below the injection do
not depend on δ — they are computed once, then each step re-runs only blocks ``layer+1 …``
(replaying the arguments the model passed to those blocks), the final norm, and the LM head at
the few positions that enter the loss. Gradients are taken for δ only (no weight gradients).
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from . import hooks, keys, models
from .requests import Request

log = logging.getLogger(__name__)
STOP_LOSS = 5e-2  # the reference's early-stopping threshold on the total loss
KL_PROMPT = "{} is a"


@dataclass(frozen=True)
class TargetValues:
    """Result of the value optimisation for ``n`` requests (float32, on the layer's device)."""

    z: torch.Tensor            # (d_model, n) z* = z_init + δ
    z_init: torch.Tensor       # (d_model, n) block output at the bare prompt's subject token
    loss: torch.Tensor         # (n,) last computed total loss of each request
    steps: torch.Tensor        # (n,) Adam steps each request took


@dataclass(frozen=True)
class Prompts:
    """Token ids of every rewriting and KL prompt of a batch; request r owns rows [r·m, r·m+m)."""

    input_ids: torch.Tensor    # (P, T) right-padded
    attention_mask: torch.Tensor  # (P, T)
    lookup: torch.Tensor       # (P,) index of the subject's last token
    labels: torch.Tensor       # (P, T) target id where the logit scores a target token, else -100
    per_request: int           # m = number of templates + 1 (the last row is the KL prompt)


def build_prompts(tok, requests: Sequence[Request], templates: Sequence[str],
                  fact_token: str = "subject_last") -> Prompts:
    """Rewriting prompts (template × prompt, then the target's tokens but the last) + KL prompt.

    Token ids are concatenated (prompt ids, then target ids), not re-tokenised from text, so
    the labels are exactly the target's tokens.
    """
    rows, lookups, label_rows = [], [], []
    for req in requests:
        target = tok(" " + req.target, add_special_tokens=False)["input_ids"]
        for template in [*(t.replace("{}", req.prompt) for t in templates), KL_PROMPT]:
            ids = tok(template.replace("{}", req.subject))["input_ids"]
            is_kl = template is KL_PROMPT
            labels = [-100] * len(ids) + ([] if is_kl else [-100] * (len(target) - 1))
            if not is_kl:
                labels[len(ids) - 1:] = target
                ids = ids + target[:-1]
            rows.append(ids)
            label_rows.append(labels)
            lookups.append(keys.subject_last_index(tok, template, req.subject, mode=fact_token))
    width = max(map(len, rows))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return Prompts(
        input_ids=torch.tensor([r + [pad] * (width - len(r)) for r in rows]),
        attention_mask=torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
        lookup=torch.tensor(lookups),
        labels=torch.tensor([r + [-100] * (width - len(r)) for r in label_rows]),
        per_request=len(templates) + 1)


def request_losses(logp_rows: list[torch.Tensor], kl_logp: torch.Tensor,
                   kl_init: torch.Tensor, delta: torch.Tensor, z_init: torch.Tensor,
                   hp, m: int) -> torch.Tensor:
    """Total loss of each request: mean NLL over its m−1 rewriting prompts + KL + weight decay.

    ``logp_rows`` holds, per rewriting prompt, the log-probabilities of its target tokens;
    ``kl_logp``/``kl_init`` (n, vocab); ``delta``/``z_init`` (n, d_model). Returns (n,).
    """
    n = delta.shape[0]
    nll = torch.stack([-row.sum() / row.numel() for row in logp_rows]).view(n, m - 1).mean(1)
    kl = (kl_logp.exp() * (kl_logp - kl_init)).sum(-1)
    decay = delta.norm(dim=-1) / z_init.norm(dim=-1) ** 2
    return nll + hp.kl_factor * kl + hp.v_weight_decay * decay


class _Capture:
    """One no-grad forward that keeps block ``layer``'s output and the upper blocks' arguments."""

    def __init__(self, model, layer: int):
        self.model, self.layer = model, layer
        self.upper = list(range(layer + 1, models.n_layers(model)))
        self.h: torch.Tensor | None = None
        self.calls: dict[int, tuple[tuple, dict]] = {}
        self.normed: torch.Tensor | None = None

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
            kwargs = dict(kwargs)
            if "hidden_states" in kwargs:
                kwargs.pop("hidden_states")
                self.calls[j] = (tuple(args), kwargs)
            else:
                self.calls[j] = (tuple(args[1:]), kwargs)
        return keep

    def _keep_norm(self, module, args, output):
        self.normed = output.detach()
        raise hooks.StopForward  # the capture pass needs no logits


def _select(obj, rows: torch.Tensor, batch: int):
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


class _Chunk:
    """A group of requests whose prompts share one cached lower pass."""

    def __init__(self, model, layer: int, prompts: Prompts, first: int, count: int):
        m = prompts.per_request
        self.first, self.count, self.m = first, count, m
        sl = slice(first * m, (first + count) * m)
        device = models.input_device(model)
        width = int(prompts.attention_mask[sl].sum(1).max())
        ids = prompts.input_ids[sl, :width].to(device)
        mask = prompts.attention_mask[sl, :width].to(device)
        self.capture = _Capture(model, layer)
        with torch.no_grad(), self.capture.hooks():
            try:
                model(input_ids=ids, attention_mask=mask, use_cache=False)
            except hooks.StopForward:
                pass
        self.model = model
        dev = self.capture.h.device
        self.lookup, self.labels = prompts.lookup[sl].to(dev), prompts.labels[sl, :width].to(dev)

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
        h = self.capture.h[rows]
        h = h.index_put((torch.arange(len(rows), device=dev), self.lookup[rows]),
                        delta[owner].to(h.dtype), accumulate=True)
        batch = self.capture.h.shape[0]
        for j in self.capture.upper:
            args, kwargs = _select(self.capture.calls[j], rows, batch)
            out = models.block(self.model, j)(h, *args, **kwargs)
            h = out[0] if isinstance(out, tuple) else out
        labels = self.labels[rows]
        is_kl = (torch.arange(len(rows), device=dev) % m) == m - 1
        tgt_r, tgt_c = torch.nonzero(labels != -100, as_tuple=True)
        kl_r = torch.nonzero(is_kl, as_tuple=True)[0]
        pos_r = torch.cat([tgt_r, kl_r])
        pos_c = torch.cat([tgt_c, self.lookup[rows][kl_r]])
        normed = models.final_norm(self.model)(h[pos_r, pos_c])
        if check:
            _check_replay(normed, self.capture.normed[rows][pos_r, pos_c])
        logp = torch.log_softmax(models.lm_head(self.model)(normed).float(), dim=-1)
        tok_logp = logp[: len(tgt_r)].gather(1, labels[tgt_r, tgt_c][:, None])[:, 0]
        counts = torch.bincount(tgt_r, minlength=len(rows))[~is_kl].tolist()
        kl_logp = logp[len(tgt_r):]
        kl_ref = kl_logp.detach() if kl_init is None else kl_init
        loss = request_losses(list(tok_logp.split(counts)), kl_logp, kl_ref, delta, z_init, hp, m)
        return loss, kl_logp.detach()


def _check_replay(replayed: torch.Tensor, full: torch.Tensor) -> None:
    """The partial stack must reproduce the full forward; otherwise the table is wrong."""
    tol = 1e-4 if replayed.dtype == torch.float32 else 2e-2
    err = float((replayed.detach().float() - full.float()).abs().max()) if replayed.numel() else 0.0
    scale = float(full.float().abs().max()) if full.numel() else 1.0
    if err > tol * max(scale, 1.0):
        raise _ReplayMismatch(f"re-running the upper blocks alone differs from the full "
                              f"forward by {err:.3g}")


class _ReplayMismatch(RuntimeError):
    """The partial stack does not reproduce the model (an architecture the replay misses)."""


def _chunks(model, layer: int, prompts: Prompts, max_tokens: int) -> list[_Chunk]:
    """Consecutive groups of requests with at most ``max_tokens`` padded tokens per forward."""
    m, width = prompts.per_request, prompts.input_ids.shape[1]
    n = prompts.input_ids.shape[0] // m
    size = max(1, max_tokens // (m * width))
    return [_Chunk(model, layer, prompts, first, min(size, n - first))
            for first in range(0, n, size)]


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


def compute_values(model, tok, requests: Sequence[Request], layer: int, hp, *,
                   templates: Sequence[str], max_tokens: int = 4096,
                   progress: bool = False) -> TargetValues:
    """z* for all ``requests`` at block ``layer``, optimised together (module docstring).

    ``hp`` supplies v_lr, v_num_grad_steps, clamp_norm_factor, kl_factor, v_weight_decay
    (and fact_token, default ``subject_last``);
    ``max_tokens`` bounds the padded tokens of one forward (requests are chunked, their
    gradients are independent). Returns z*, z_init (d_model, n), losses and steps (n,).
    """
    prompts = build_prompts(tok, requests, templates, getattr(hp, "fact_token", "subject_last"))
    try:
        return _optimise(_chunks(model, layer, prompts, max_tokens), hp, progress)
    except _ReplayMismatch as error:  # fall back to full forwards with a hook, one at a time
        log.warning("%s; using the one-request-at-a-time loop for this model", error)
        return one_at_a_time(model, tok, requests, layer, hp, templates=templates)


def _optimise(chunks: list[_Chunk], hp, progress: bool) -> TargetValues:
    """The batched Adam loop over the chunks' requests (see :func:`compute_values`)."""
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
            rows = chunk.first + local
            d_rows = delta[rows].clone().requires_grad_(True)
            ref = None if kl_init[ci] is None else kl_init[ci][local]
            chunk_loss, kl_logp = chunk.forward(local, d_rows, ref, z_init[rows], hp, it == 0)
            kl_init[ci] = kl_logp if kl_init[ci] is None else kl_init[ci]
            loss[rows] = chunk_loss.detach()
            go = (chunk_loss.detach() >= STOP_LOSS) & (it < last)
            if go.any():  # gradients for δ only: no weight gradients, no .grad on the model
                grad[rows] = torch.autograd.grad(chunk_loss[go].sum(), d_rows)[0]
                train[rows[go]] = True
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


def one_at_a_time(model, tok, requests: Sequence[Request], layer: int, hp, *,
                  templates: Sequence[str]) -> TargetValues:
    """Reference: MEMIT's ``compute_z`` loop, one request at a time, a full forward per step
    with δ added by a hook and ``torch.optim.Adam``. Slow; used by tests and the benchmark."""
    parts = [_one(model, tok, req, layer, hp, templates) for req in requests]
    z_init = torch.stack([p[0] for p in parts], dim=1)
    delta = torch.stack([p[1] for p in parts], dim=1)
    return TargetValues(z=z_init + delta, z_init=z_init,
                        loss=torch.stack([p[2] for p in parts]),
                        steps=torch.tensor([p[3] for p in parts]))


def _one(model, tok, req: Request, layer: int, hp, templates):
    p = build_prompts(tok, [req], templates, getattr(hp, "fact_token", "subject_last"))
    dev = models.input_device(model)
    ids, mask, labels = (x.to(dev) for x in (p.input_ids, p.attention_mask, p.labels))
    m, state = p.per_request, {}
    delta = torch.zeros(models.weight_shape(models.edited_module(model, layer))[0], device=dev,
                        requires_grad=True)

    def inject(output):
        h = output[0] if isinstance(output, tuple) else output
        state.setdefault("z_init", h[0, p.lookup[0]].detach().float().clone())
        h = h.index_put((torch.arange(m, device=h.device), p.lookup.to(h.device)), delta.to(h.dtype).expand(m, -1),
                        accumulate=True)
        return (h, *output[1:]) if isinstance(output, tuple) else h

    opt, steps = torch.optim.Adam([delta], lr=hp.v_lr), 0  # MEMIT's optimiser
    with hooks.Trace(models.block(model, layer), retain_output=False, edit_output=inject):
        for it in range(hp.v_num_grad_steps):
            opt.zero_grad()
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask,
                                           use_cache=False).logits.float(), dim=-1)
            tgt = labels[: m - 1]
            tok_logp = logp[: m - 1].gather(2, tgt.clamp(min=0)[..., None])[..., 0]
            nll = (-(tok_logp * (tgt != -100)).sum(1) / (tgt != -100).sum(1)).mean()
            kl_logp = logp[m - 1, p.lookup[m - 1]][None]
            kl_init = kl_logp.detach().clone() if it == 0 else kl_init
            kl = torch.nn.functional.kl_div(kl_init, kl_logp, log_target=True,
                                            reduction="batchmean")
            z_norm = state["z_init"].norm()
            loss = nll + hp.kl_factor * kl + hp.v_weight_decay * (delta.norm() / z_norm ** 2)
            if loss < STOP_LOSS or it == hp.v_num_grad_steps - 1:
                break
            delta.grad = torch.autograd.grad(loss, delta)[0]  # no weight gradients
            opt.step()
            steps += 1
            if delta.norm() > hp.clamp_norm_factor * z_norm:
                with torch.no_grad():
                    delta[...] = delta * (hp.clamp_norm_factor * z_norm) / delta.norm()
    return state["z_init"], delta.detach(), loss.detach(), steps
