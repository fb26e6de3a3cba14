"""Editing benchmarks (prints numbers and ratios; not a test).

    python bench/editing.py            # full: 20 values requests, 20×100 toy edits, GPT-2-small shape
    python bench/editing.py --quick    # a few minutes on a laptop core

1. values (full: 20 requests, ≤ 10 steps): the batched, prefix-cached optimisation (:func:`oteseq.values.compute_values`)
   against MEMIT's one-request-at-a-time loop (:func:`oteseq.values.one_at_a_time`) on the same
   model and requests — time ratio (target ≥ 5×) and the largest difference of z*.
2. end to end: sequential memit-seq edits on the toy model (full: 20 batches of 100), time per
   phase (stats, values, keys, solve); target ≤ 5 min for 2,000 edits on 2 cores.
3. the same loop on a GPT-2-small-shaped model with random weights (12 blocks, d 768,
   d_ff 3072, vocab 50257; the toy tokenizer): edits/s and peak memory.

Reading the ratio: per step the loop runs every block forward on a request's prompts and the
blocks above the injection backward; the batched version runs only the blocks above the
injection, forward and backward, for all requests at once. On a CPU, where one large GEMM is
barely faster per FLOP than many small ones, the ratio is close to the FLOP ratio
(n_layers + n_upper) / (2 · n_upper) — 1.5 for the toy model (3 of 6 blocks above layer 2).
The gain of batching is on GPUs; a further FLOP cut would recompute only the positions from
the subject's last token on, with the prefix's attention keys/values cached.
"""
from __future__ import annotations

import argparse
import resource
import time

import torch
import transformers

import oteseq
from oteseq import stats, values
from oteseq.editor import Editor
from oteseq.methods import default_hparams
from oteseq.requests import Request


def toy_requests(n: int, seed: int = 0) -> list[Request]:
    return [Request.from_counterfact(r) for r in oteseq.toy.counterfact(n, seed)]


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def bench_values(n: int, steps: int) -> None:
    model, tok = oteseq.load_model("toy")
    hp = default_hparams("toy", "memit-seq").replace(v_num_grad_steps=steps)
    editor_templates = ["{}", *[t for t in _toy_templates(model, tok)][1:6]]
    reqs = toy_requests(n)
    t0 = time.perf_counter()
    batched = values.compute_values(model, tok, reqs, hp.layers[-1], hp, templates=editor_templates)
    t1 = time.perf_counter()
    looped = values.one_at_a_time(model, tok, reqs, hp.layers[-1], hp, templates=editor_templates)
    t2 = time.perf_counter()
    print(f"[values] {n} requests, {steps} max steps, {len(editor_templates)} templates")
    print(f"  batched + prefix-cached: {t1 - t0:8.2f} s   one at a time: {t2 - t1:8.2f} s   "
          f"ratio {(t2 - t1) / (t1 - t0):5.1f}×")
    print(f"  max |z*_batched − z*_looped| = {float((batched.z - looped.z).abs().max()):.2e}  "
          f"(‖z*‖ ≈ {float(looped.z.norm(dim=0).mean()):.2f}); steps equal: "
          f"{batched.steps.tolist() == looped.steps.tolist()}")


def _toy_templates(model, tok):
    from oteseq import keys
    from oteseq.toy import context_prefixes
    return keys.context_templates(model, tok, source=context_prefixes())


def run_sequential(model, tok, hp, reqs, batch: int, label: str, C0=None) -> None:
    t0 = time.perf_counter()
    if C0 is None:
        C0 = stats.second_moments(model, tok, hp.layers, corpus=hp.mom2_corpus,
                                  n_samples=hp.mom2_n_samples, cache=False, progress=False)
    t_stats = time.perf_counter() - t0
    ed = Editor(model, tok, "memit-seq", hparams=hp, stats=C0, progress=False)
    phases = {"values": 0.0, "keys": 0.0, "solve": 0.0}
    t1 = time.perf_counter()
    for first in range(0, len(reqs), batch):
        report = ed.edit(reqs[first: first + batch])
        for k in phases:
            phases[k] += report.timings[k]
    t_edit = time.perf_counter() - t1
    print(f"[{label}] {ed.n_edits} edits in batches of {batch}, layers {hp.layers}, "
          f"{hp.v_num_grad_steps} max value steps")
    print(f"  stats {t_stats:.1f} s | values {phases['values']:.1f} s | keys {phases['keys']:.1f} s"
          f" | solve {phases['solve']:.1f} s | editing total {t_edit:.1f} s | "
          f"{ed.n_edits / t_edit:.2f} edits/s | peak memory {peak_memory_mb():.0f} MiB")


def bench_toy(n_batches: int, batch: int, steps: int | None) -> None:
    model, tok = oteseq.load_model("toy")
    hp = default_hparams("toy", "memit-seq")
    hp = hp if steps is None else hp.replace(v_num_grad_steps=steps)
    run_sequential(model, tok, hp, toy_requests(n_batches * batch), batch, "toy end to end")


def bench_gpt2_small(n_batches: int, batch: int, steps: int) -> None:
    transformers.logging.set_verbosity_error()
    _, tok = oteseq.load_model("toy")
    config = transformers.GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257,
                                     n_positions=1024, bos_token_id=tok.bos_token_id,
                                     eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    if torch.cuda.is_available():
        model = model.cuda()
    hp = default_hparams("gpt2", "memit-seq").replace(
        v_num_grad_steps=steps, mom2_corpus="toy", mom2_n_samples=500, template_source="toy",
        ridge=1e-3)
    texts = oteseq.toy.general_text(500, seed=0)
    C0 = stats.second_moments(model, tok, hp.layers, corpus=texts, cache=False, progress=False)
    run_sequential(model, tok, hp, toy_requests(n_batches * batch), batch,
                   "GPT-2-small shape, random weights", C0=C0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (minutes)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["values", "toy", "gpt2"], default=None)
    parser.add_argument("--toy-batches", type=int, default=20, help="batches of 100 toy edits")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    oteseq.setup(0)
    plan = {"values": (8, 10) if args.quick else (20, 10),
            "toy": (2, 50, 10) if args.quick else (args.toy_batches, 100, None),
            "gpt2": (1, 10, 3) if args.quick else (20, 100, 20)}
    if args.only in (None, "values"):
        bench_values(*plan["values"])
    if args.only in (None, "toy"):
        bench_toy(*plan["toy"])
    if args.only in (None, "gpt2"):
        bench_gpt2_small(*plan["gpt2"])


if __name__ == "__main__":
    main()
