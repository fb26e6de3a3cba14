"""GPT-2-shaped models with random weights (no download) for the benchmarks, their inputs, and
the machine's load average that every benchmark prints beside its timings.

The shape is what costs time; the toy world's tokenizer, requests and general text stand in
for the real ones (its ids fit GPT-2's vocabulary of 50257).
"""
from __future__ import annotations

import os

import torch
import transformers

import oteseq
from oteseq.requests import Request

SHAPES = {  # n_layer, n_embd, n_head (GPT-2 sizes; d_ff = 4 n_embd)
    "tiny": (4, 64, 4),
    "gpt2": (12, 768, 12),
    "gpt2-xl": (48, 1600, 25),
}


def toy_tokenizer():
    return oteseq.load_model("toy")[1]


def random_gpt2(shape: str, tok, *, device="cpu", dtype=torch.float32, seed: int = 0):
    """A ``GPT2LMHeadModel`` of the named shape with random weights, in eval mode.

    ``name_or_path`` is the shape's hub name, so default hyperparameters apply to it.
    """
    transformers.logging.set_verbosity_error()
    n_layer, n_embd, n_head = SHAPES[shape]
    config = transformers.GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                                     vocab_size=50257, n_positions=1024,
                                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(config).to(device=device, dtype=dtype).eval()
    model.config.name_or_path = shape if shape != "tiny" else ""
    return model


def toy_requests(n: int, seed: int = 0) -> list[Request]:
    """``n`` toy CounterFact requests (distinct subject and relation)."""
    return [Request.from_counterfact(r) for r in oteseq.toy.counterfact(n, seed)]


def general_texts(n: int, seed: int = 0) -> list[str]:
    """Fact-free toy text for a synthetic C0."""
    return oteseq.toy.general_text(n, seed=seed, split="heldout")


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, e.g. ``"0.31 0.71 1.02"`` (the machine may be
    shared: compare CPU seconds when the load is high)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
