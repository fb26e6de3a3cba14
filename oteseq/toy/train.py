"""The training recipe of the toy-world GPT-2: seeded, CPU, minutes.

Training rows are ``seq_len`` tokens of sentences drawn at random (fact statements in every
template, questions with their answers, zsRE ``nq question:`` forms, general text), so a fact
appears at every position and after every kind of prefix: the subject's own tokens, not the
position, carry the fact. Loss is next-token cross-entropy on all tokens, object tokens weighted
``object_weight`` times.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .ability import object_hits
from .corpus import context_prefixes, fact_examples, general_text
from .tokenizer import train_tokenizer
from ._world import world as make_world
from .._types import Model, Tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a toy model. Defaults = the v2 recipe (``model_v2/``);
    :data:`V1` is the recipe of the first toy model (``model/``)."""

    seed: int = 0                     # world, tokenizer data, init and batches
    n_subjects: int = 5000            # people in the world (x 6 relations = facts)
    vocab_size: int = 2048            # byte-level BPE entries
    n_layer: int = 6                  # depth: early-middle layers are the edited ones
    n_embd: int = 256                 # residual width d_model
    n_head: int = 8
    n_inner: int = 2048               # MLP width = d_in of the edited c_proj
    n_positions: int = 512            # context: real-schema records fit
    seq_len: int = 64                 # tokens per training row
    batch_size: int = 64              # rows per step
    steps: int = 3300
    lr: float = 2e-3                # AdamW peak learning rate
    warmup: int = 200                 # linear warm-up steps, then cosine to lr * final_lr_frac
    final_lr_frac: float = 0.05
    weight_decay: float = 0.01
    object_weight: float = 3.0        # loss weight of object tokens relative to other tokens
    mix: dict = field(default_factory=lambda: {  # share of sentences of each kind
        "canonical": 0.27, "paraphrase": 0.3, "question": 0.28, "nq": 0.05, "general": 0.10})
    n_general: int = 20000            # general-text paragraphs (training split)
    threads: int = 2
    autocast_bf16: bool = True        # bfloat16 matmuls (fp32 weights and optimizer state)
    eval_every: int = 200             # steps between recall checks on a fixed sample
    eval_facts: int = 300
    checkpoint: bool = True           # also save to out_dir at every recall check


# The first toy model (``oteseq/toy/model``): 1,000 people, 6 x 128 x 1024, 128 positions.
V1 = TrainConfig(n_subjects=1000, n_embd=128, n_head=4, n_inner=1024, n_positions=128,
                 batch_size=32, steps=3200, lr=2e-3, warmup=100, autocast_bf16=False,
                 mix={"canonical": 0.25, "paraphrase": 0.3, "question": 0.25, "nq": 0.05,
                      "general": 0.15})


def _ids(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    return tok(texts)["input_ids"] if texts else []


def build_pools(cfg: TrainConfig, tok: Tokenizer, w) -> dict[str, list]:
    """Pre-tokenised sentences by kind: (ids at a row start, ids after a space, their two
    object masks). Prompt, object and full stop are tokenised apart; byte-level BPE splits at
    spaces and punctuation, so the concatenation equals the tokenisation of the whole sentence.
    """
    examples = list(fact_examples(w))
    prompts = [p for _, p, _ in examples]
    objects = sorted({o for _, _, o in examples})
    obj_ids = dict(zip(objects, _ids(tok, [" " + o for o in objects])))
    stop = _ids(tok, ["."])[0]
    pools: dict[str, list] = {kind: [] for kind in cfg.mix}
    for (kind, _, obj), start, inner in zip(examples, _ids(tok, prompts),
                                            _ids(tok, [" " + p for p in prompts])):
        tail = obj_ids[obj] + stop
        mask = [1] * len(obj_ids[obj]) + [0] * len(stop)
        pools[kind].append((start + tail, inner + tail, [0] * len(start) + mask,
                            [0] * len(inner) + mask))
    sentences = [s + "." for s in context_prefixes()]
    for text in general_text(cfg.n_general, cfg.seed, "train", world=w):
        sentences.extend(s.strip().rstrip(".") + "." for s in text.split(". ") if s.strip())
    for start, inner in zip(_ids(tok, sentences), _ids(tok, [" " + s for s in sentences])):
        pools["general"].append((start, inner, [0] * len(start), [0] * len(inner)))
    return pools


def sample_batch(rng: np.random.Generator, pools: dict[str, list], cfg: TrainConfig):
    """A (batch_size, seq_len) batch of ids and loss weights built from random sentences."""
    kinds = list(cfg.mix)
    probs = np.array([cfg.mix[k] for k in kinds]) / sum(cfg.mix.values())
    ids = np.zeros((cfg.batch_size, cfg.seq_len), dtype=np.int64)
    weights = np.ones((cfg.batch_size, cfg.seq_len), dtype=np.float32)
    for row in range(cfg.batch_size):
        toks: list[int] = []
        objs: list[int] = []
        while len(toks) < cfg.seq_len:
            pool = pools[kinds[rng.choice(len(kinds), p=probs)]]
            start, inner, m_start, m_inner = pool[rng.integers(len(pool))]
            toks += start if not toks else inner
            objs += m_start if len(objs) == 0 else m_inner
        ids[row] = toks[:cfg.seq_len]
        weights[row] += (cfg.object_weight - 1.0) * np.array(objs[:cfg.seq_len], dtype=np.float32)
    return torch.from_numpy(ids), torch.from_numpy(weights)


def _lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * final_lr_frac``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.final_lr_frac + (1 - cfg.final_lr_frac) * cosine)


def make_model(cfg: TrainConfig, tok: Tokenizer):
    """A fresh ``GPT2LMHeadModel`` of the configured size, no dropout, tied embeddings."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(tok), n_positions=cfg.n_positions, n_embd=cfg.n_embd,
                        n_layer=cfg.n_layer, n_head=cfg.n_head, n_inner=cfg.n_inner,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.eos_token_id)
    return GPT2LMHeadModel(config)


def _step_loss(model: Model, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted next-token cross-entropy of one batch."""
    logits = model(input_ids=ids).logits[:, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    w = weights[:, 1:]
    return (nll * w).sum() / w.sum()


def _optimizer(model: Model, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (not on biases, layer norms)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": rest, "weight_decay": 0.0}],
                             lr=cfg.lr, betas=(0.9, 0.98))


def _monitor(model: Model, tok: Tokenizer, w, cfg: TrainConfig) -> float:
    """Canonical-prompt recall on a fixed sample of facts (a cheap progress signal)."""
    keys = sorted(w.facts)[:: max(1, len(w.facts) // cfg.eval_facts)][:cfg.eval_facts]
    prompts = [w.relations[r].canonical.format(s) for s, r in keys]
    model.eval()
    hits = object_hits(model, tok, prompts, [w.facts[k] for k in keys])
    model.train()
    return hits.float().mean().item()


def train(cfg: TrainConfig, out_dir: str | Path | None = None, *, progress: bool = False):
    """Train the toy model by ``cfg``; save to ``out_dir`` if given. Returns (model, tok, report).

    The report holds the config, the loss curve (every 10 steps), monitored recall, tokens per
    second and wall time.
    """
    from tqdm.auto import tqdm

    t0 = time.time()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    w = make_world(cfg.seed, cfg.n_subjects)
    corpus = [p + " " + o + "." for _, p, o in fact_examples(w)]
    corpus += general_text(cfg.n_general // 4, cfg.seed, "train", world=w)
    tok = train_tokenizer(corpus, cfg.vocab_size)
    pools = build_pools(cfg, tok, w)
    model = make_model(cfg, tok).train()
    opt = _optimizer(model, cfg)
    losses, recalls = [], []
    t_train, cpu_train = time.time(), time.process_time()
    for step in tqdm(range(cfg.steps), disable=not progress, mininterval=10):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        ids, weights = sample_batch(rng, pools, cfg)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.autocast_bf16):
            loss = _step_loss(model, ids, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 10 == 0:
            losses.append([step, round(loss.item(), 4)])
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            recalls.append([step + 1, _monitor(model, tok, w, cfg)])
            log.info("step %d loss %.3f recall %.3f (%.0fs)", step + 1, loss.item(),
                     recalls[-1][1], time.time() - t0)
            if out_dir is not None and cfg.checkpoint:
                save(model, tok, {"config": asdict(cfg), "loss_curve": losses,
                                  "recall_curve": recalls, "partial": True}, out_dir)
    model.eval()
    seconds = time.time() - t_train
    report = {"config": asdict(cfg), "loss_curve": losses, "recall_curve": recalls,
              "tokens_per_second": cfg.steps * cfg.batch_size * cfg.seq_len / seconds,
              "train_seconds": seconds, "wall_seconds": time.time() - t0,
              "cpu_seconds": time.process_time() - cpu_train,
              "n_parameters": sum(p.numel() for p in model.parameters()),
              "torch_threads": cfg.threads}
    if out_dir is not None:
        save(model, tok, report, out_dir)
    return model, tok, report


def save(model: Model, tok: Tokenizer, report: dict, out_dir: str | Path) -> None:
    """Write the model (float16 safetensors), tokenizer, report JSON and loss-curve PNG."""
    import copy

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    half = copy.deepcopy(model).to(torch.float16)
    half.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    _portable_tokenizer_config(out / "tokenizer_config.json")
    (out / "training_report.json").write_text(json.dumps(report, indent=1))
    _plot(report, out / "loss_curve.png")


def _portable_tokenizer_config(path: Path) -> None:
    """Name the tokenizer class so that transformers 4.x loads it too (5.x writes its own name)."""
    settings = json.loads(path.read_text())
    settings.pop("backend", None)
    settings["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(settings, indent=2))


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=80)
    steps, loss = zip(*report["loss_curve"])
    ax.plot(steps, loss, lw=1, label="train loss (weighted)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if report["recall_curve"]:
        ax2 = ax.twinx()
        s, r = zip(*report["recall_curve"])
        ax2.plot(s, r, "o-", color="C1", ms=3, label="canonical recall")
        ax2.set_ylabel("recall")
        ax2.set_ylim(0, 1)
    ax.set_title("toy GPT-2 training")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


__all__ = ["V1", "TrainConfig", "build_pools", "make_model", "sample_batch", "save", "train"]
