"""Editing benchmarks (prints numbers and ratios; not a test).

    python bench/editing.py            # full: 20 values requests, 20×100 toy edits, GPT-2 small
    python bench/editing.py --quick    # a few minutes on a laptop core

1. values (full: 20 requests, ≤ 10 steps; ``--values-requests``/``--values-steps`` to change):
   the batched optimisation (:func:`oteseq.values.compute_values`) with the suffix replay, the
   same with the full-position replay, and MEMIT's one-request-at-a-time loop
   (:func:`oteseq.values.one_at_a_time`), on the same model, templates and requests — times,
   ratios, and the largest difference of z* to the loop.
2. end to end: sequential memit-seq edits on the toy model (full: 20 batches of 100), time per
   phase (stats, values, keys, solve); target ≤ 5 min for 2,000 edits on 2 cores.
3. the same loop on a GPT-2-small-shaped model with random weights (12 blocks, d 768,
   d_ff 3072, vocab 50257; the toy tokenizer): edits/s and peak memory.

Reading the ratios: per step the loop runs every block forward on a request's prompts and the
blocks above the injection backward. The full-position replay runs only the blocks above the
injection, forward and backward, for all requests at once — on a CPU, where one large GEMM is
barely faster per FLOP than many small ones, close to the FLOP ratio
(n_layers + n_upper) / (2 · n_upper), 1.5 for the toy model (3 of 6 blocks above layer 2).
The suffix replay re-runs those blocks only on the positions from the subject's last token up
to the last target token (≈ 3.4 of ≈ 15 per toy prompt; MLPs on exactly those, attention
padded to the chunk's longest suffix), attending to cached prefix keys/values; the capture
forward (once per batch, rows grouped by length) is then about a third of its time.

Threads: on a 2-core machine shared with another CPU-bound process, ``--threads 2`` made the
values section ≈ 25× slower than ``--threads 1`` (measured: suffix replay 19.0 s vs 0.70 s,
full-position replay 15.4 s vs 2.2 s, 20 requests) — many small ops, each waiting for a
descheduled thread. Use ``--threads 1`` unless the machine is otherwise idle.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch
import transformers

import oteseq
from oteseq import model_reads, stats, values
from oteseq.editor import Editor
from oteseq.methods import default_hparams
from oteseq.requests import Request


def toy_requests(n: int, seed: int = 0) -> list[Request]:
    return [Request.from_counterfact(r) for r in oteseq.toy.counterfact(n, seed)]


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def bench_values(n: int, steps: int, loop: bool = True) -> dict:
    model, tok = oteseq.load_model("toy")
    hp = default_hparams("toy", "memit-seq").replace(v_num_grad_steps=steps)
    templates = model_reads.templates(model, tok, hp, seed=0)  # what the Editor uses
    reqs, layer, runs = toy_requests(n), hp.layers[-1], {}
    for label, run in [
            ("suffix replay", lambda: values.compute_values(
                model, tok, reqs, layer, hp, templates=templates, replays=("suffix",))),
            ("full-position replay", lambda: values.compute_values(
                model, tok, reqs, layer, hp, templates=templates, replays=("full",))),
            ("one at a time", lambda: values.one_at_a_time(
                model, tok, reqs, layer, hp, templates=templates))][: 3 if loop else 2]:
        t0 = time.perf_counter()
        runs[label] = (run(), time.perf_counter() - t0)
    print(f"[values] {n} requests, {steps} max steps, {len(templates)} templates, layer {layer}")
    ref, t_ref = runs["one at a time" if loop else "full-position replay"]
    _, t_suffix = runs["suffix replay"]
    for label, (got, t) in runs.items():
        print(f"  {label:21s} {t:8.2f} s   {t / t_suffix:5.2f}× the suffix replay's time   "
              f"max |Δz*| {float((got.z - ref.z).abs().max()):.2e}   steps equal "
              f"{got.steps.tolist() == ref.steps.tolist()}")
    print(f"  (Δz* against {'the loop' if loop else 'the full-position replay'}; "
          f"‖z*‖ ≈ {float(ref.z.norm(dim=0).mean()):.2f}; mean steps "
          f"{float(ref.steps.float().mean()):.1f})")
    return {"requests": n, "max_steps": steps, "templates": len(templates), "layer": layer,
            "reference": "one at a time" if loop else "full-position replay",
            "z_norm_mean": float(ref.z.norm(dim=0).mean()),
            "mean_steps": float(ref.steps.float().mean()),
            "runs": {label: {"seconds": t, "max_abs_dz": float((got.z - ref.z).abs().max()),
                             "steps_equal": got.steps.tolist() == ref.steps.tolist()}
                     for label, (got, t) in runs.items()}}


def run_sequential(model, tok, hp, reqs, batch: int, label: str, C0=None) -> dict:
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
    return {"edits": ed.n_edits, "batch_size": batch, "layers": list(hp.layers),
            "max_value_steps": hp.v_num_grad_steps, "stats_seconds": t_stats,
            "edit_seconds": t_edit, **{f"{k}_seconds": v for k, v in phases.items()},
            "peak_memory_mib": peak_memory_mb()}


def bench_toy(n_batches: int, batch: int, steps: int | None) -> dict:
    model, tok = oteseq.load_model("toy")
    hp = default_hparams("toy", "memit-seq")
    hp = hp if steps is None else hp.replace(v_num_grad_steps=steps)
    return run_sequential(model, tok, hp, toy_requests(n_batches * batch), batch,
                          "toy end to end")


def bench_gpt2_small(n_batches: int, batch: int, steps: int) -> dict:
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
    return run_sequential(model, tok, hp, toy_requests(n_batches * batch), batch,
                          "GPT-2-small shape, random weights", C0=C0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (minutes)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["values", "toy", "gpt2"], default=None)
    parser.add_argument("--toy-batches", type=int, default=20, help="batches of 100 toy edits")
    parser.add_argument("--values-requests", type=int, default=None, help="values section size")
    parser.add_argument("--values-steps", type=int, default=None,
                        help="values section: max steps (default 10; 20 is the toy's)")
    parser.add_argument("--no-loop", action="store_true",
                        help="values section: skip the (slow) one-at-a-time loop")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the measured numbers to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    oteseq.setup(0)
    plan = {"values": (8, 10) if args.quick else (20, 10),
            "toy": (2, 50, 10) if args.quick else (args.toy_batches, 100, None),
            "gpt2": (1, 10, 3) if args.quick else (20, 100, 20)}
    results = {"command": " ".join(sys.argv[1:]), "threads": args.threads,
               "torch": torch.__version__}
    if args.only in (None, "values"):
        n, steps = plan["values"]
        results["values"] = bench_values(args.values_requests or n, args.values_steps or steps,
                                         not args.no_loop)
    if args.only in (None, "toy"):
        results["toy"] = bench_toy(*plan["toy"])
    if args.only in (None, "gpt2"):
        results["gpt2"] = bench_gpt2_small(*plan["gpt2"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
