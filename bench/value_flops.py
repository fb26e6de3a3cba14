"""Matrix-product FLOPs of one batch's value optimisation: the research loop against oteseq.

    python bench/value_flops.py [--n 20] [--steps 20]

The batch of ``bench/reference_loop.py`` (GPT-2-small shape, toy requests, the six templates,
δ at block 4). Counted: 24d² FLOP per token and block (q/k/v, output projection, the MLP's two
maps), 2dV per LM-head position; a backward computes input gradients only, as many FLOPs as
its forward. The reference runs, per request and step, all blocks and the head over its padded
rows, and the backward through the upper blocks and the head; oteseq runs the capture once
(every block over its length groups), then per step the upper blocks at the suffix tokens δ
reaches (the last block's MLP, 16d², at the loss positions only) and the head at the loss
positions. Both take ``steps`` forwards and ``steps − 1`` backwards (the random model never
stops early). Attention scores, norms and element-wise work are left out: the floor, not a
prediction.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes import random_gpt2, toy_requests, toy_tokenizer  # noqa: E402

from oteseq import model_reads  # noqa: E402
from oteseq.methods import default_hparams  # noqa: E402
from oteseq.values import build_prompts, optimise  # noqa: E402


def counts(n: int) -> dict:
    """Token counts of the batch: reference rows, oteseq's suffix, loss positions, capture."""
    tok = toy_tokenizer()
    model = random_gpt2("gpt2", tok)
    hp = default_hparams(model, "alphaedit").replace(mom2_corpus="toy", template_source="toy")
    templates = model_reads.templates(model, tok, hp, seed=0)
    requests = toy_requests(n)
    p = build_prompts(tok, requests, templates)
    scored = p.labels != -100
    cols = torch.arange(p.labels.shape[1])
    last = torch.maximum(torch.where(scored, cols, -1).max(1).values, p.lookup)
    lengths = p.attention_mask.sum(1)
    groups = torch.argsort(lengths, stable=True).tensor_split(optimise.CAPTURE_GROUPS)
    return dict(
        layers=model.config.n_layer, upper=model.config.n_layer - hp.layers[-1] - 1,
        d=model.config.n_embd, vocab=model.config.vocab_size,
        reference=sum(build_prompts(tok, [r], templates).input_ids.numel() for r in requests),
        suffix=int((last - p.lookup + 1).sum()), loss=int(scored.sum()) + n,
        capture=sum(len(g) * int(lengths[g].max()) for g in groups if len(g)))


def flops(c: dict, steps: int) -> tuple[float, float]:
    """(reference, oteseq) FLOPs of the batch from :func:`counts`."""
    block, head, mlp = 24 * c["d"] ** 2, 2 * c["d"] * c["vocab"], 16 * c["d"] ** 2
    ref_fwd = c["reference"] * (c["layers"] * block + head)
    ref_bwd = c["reference"] * (c["upper"] * block + head)
    step = (c["suffix"] * c["upper"] * block - (c["suffix"] - c["loss"]) * mlp
            + c["loss"] * head)
    capture = c["capture"] * c["layers"] * block
    return steps * ref_fwd + (steps - 1) * ref_bwd, capture + (2 * steps - 1) * step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    c = counts(args.n)
    ref, ote = flops(c, args.steps)
    print(", ".join(f"{k} {v:,}" for k, v in c.items()))
    print(f"reference {ref / 1e12:.2f} TFLOP, oteseq {ote / 1e12:.2f} TFLOP: ratio "
          f"{ref / ote:.2f} (the head at the loss positions alone: "
          f"{(2 * args.steps - 1) * c['loss'] * 2 * c['d'] * c['vocab'] / 1e12:.2f} TFLOP)")


if __name__ == "__main__":
    main()
