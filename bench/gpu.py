"""Sequential editing on one GPU: 2,000 edits (20 batches of 100) on a GPT-2-XL-shaped model.

    python bench/gpu.py                       # memit-seq, 20 × 100 edits, CUDA only
    python bench/gpu.py --method alphaedit
    python bench/gpu.py --smoke               # tiny shape, 2 × 5 edits; runs on a CPU too

The model is a ``GPT2LMHeadModel`` with GPT-2 XL's shape (48 blocks, d 1600, d_ff 6400,
vocab 50257) and random weights (no download); requests are the toy world's CounterFact
records, C0 is the second moment of the edited layers' keys over random toy text
(``--c0-texts`` of them), the context templates the toy prefixes. Hyperparameters are the
reference GPT-2 XL ones (layers 13–17, 20 value steps; AlphaEdit ridge 10).

Prints the device, the setup time (C0, then the Editor: memories and projectors), per batch
the wall time and the phase split (values / keys / solve, from ``EditReport.timings``), the
totals, and the peak GPU memory (``torch.cuda.max_memory_allocated``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes import general_texts, random_gpt2, toy_requests, toy_tokenizer  # noqa: E402

from oteseq import stats  # noqa: E402
from oteseq.editor import Editor  # noqa: E402
from oteseq.methods import default_hparams  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(args) -> dict:
    """Build, edit, print; returns the totals (for tests)."""
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    if device == "cpu" and not args.smoke:
        raise SystemExit("bench/gpu.py needs a CUDA device: it edits a GPT-2-XL-shaped model "
                         "(1.5 B parameters, 2,000 edits). No GPU was found; run it on a GPU "
                         "machine, or pass --smoke for the tiny-shape check that runs on a CPU")
    shape, n_batches, batch = ("tiny", 2, 5) if args.smoke else ("gpt2-xl", args.batches,
                                                                 args.batch_size)
    tok = toy_tokenizer()
    model = random_gpt2(shape, tok, device=device)
    hp = default_hparams(model if args.smoke else "gpt2-xl", args.method).replace(
        mom2_corpus="toy", template_source="toy", v_num_grad_steps=args.steps or
        (3 if args.smoke else 20))
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"device {name}; torch {torch.__version__}; shape {shape}; method {args.method}; "
          f"{n_batches} × {batch} edits; layers {hp.layers}; {hp.v_num_grad_steps} value steps",
          flush=True)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    C0 = stats.second_moments(model, tok, hp.layers, corpus=general_texts(
        20 if args.smoke else args.c0_texts), cache=False, progress=False)
    sync(device)
    t_stats = time.perf_counter() - start
    start = time.perf_counter()
    ed = Editor(model, tok, args.method, hparams=hp, stats=C0, progress=False)
    sync(device)
    t_setup = time.perf_counter() - start
    print(f"setup: C0 {t_stats:.1f} s, editor (memories, projectors) {t_setup:.1f} s", flush=True)
    requests = toy_requests(n_batches * batch)
    totals = {"values": 0.0, "keys": 0.0, "solve": 0.0, "wall": 0.0}
    for b in range(n_batches):
        start = time.perf_counter()
        report = ed.edit(requests[b * batch:(b + 1) * batch])
        sync(device)
        wall = time.perf_counter() - start
        totals["wall"] += wall
        for phase in ("values", "keys", "solve"):
            totals[phase] += report.timings.get(phase, 0.0)
        print(f"batch {b + 1:2d}: {wall:7.2f} s  values {report.timings['values']:6.2f}  "
              f"keys {report.timings['keys']:6.2f}  solve {report.timings['solve']:6.2f}  "
              f"({report.n_edits} written)", flush=True)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    per_batch = totals["wall"] / n_batches
    print(f"total {ed.n_edits} edits: {totals['wall']:.1f} s editing ({per_batch:.2f} s per "
          f"batch; values {totals['values']:.1f} s, keys {totals['keys']:.1f} s, solve "
          f"{totals['solve']:.1f} s) + setup {t_stats + t_setup:.1f} s; peak GPU memory "
          + (f"{peak:.2f} GiB" if device == "cuda" else "n/a (CPU)"), flush=True)
    return {**totals, "n_edits": ed.n_edits, "setup": t_stats + t_setup, "peak_gib": peak}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="memit-seq")
    parser.add_argument("--smoke", action="store_true", help="tiny shape, 2 × 5 edits (any device)")
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU (with --smoke)")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--steps", type=int, default=None, help="value steps (default 20)")
    parser.add_argument("--c0-texts", type=int, default=2000, help="texts for the synthetic C0")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
