"""Per-step cost of the batched value optimisation: wall-clock and CPU seconds of each Adam step.

    python bench/value_steps.py [--shape gpt2] [--n 20] [--steps 20] [--threads 1]
                                [--flush-denormal]

The model is the GPT-2-small-shaped one of ``bench/reference_loop.py`` (random weights, toy
requests, the six context templates, AlphaEdit's hyperparameters, δ at block 4; ``--shape tiny``
is a 4-block check that runs in seconds). A step is the time between two Adam updates (the
replayed forward and δ's gradient for every chunk). The CPU seconds are this process's
(``time.process_time``): on a machine shared with other jobs the wall time of a step swings with
their load while its CPU time does not, so a step whose *CPU* time grows with the step index is
the sign of per-step work that grows (a kept graph, a growing cache, a fallback), and one whose
wall time alone grows is the sign of a busy machine.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes import SHAPES, load_average, random_gpt2, toy_requests, toy_tokenizer  # noqa: E402

from oteseq import model_reads, values  # noqa: E402
from oteseq.methods import default_hparams  # noqa: E402
from oteseq.values import optimise  # noqa: E402


def step_times(shape: str, n: int, steps: int):
    """(wall, CPU) seconds of each Adam step, and the TargetValues, for ``n`` toy requests."""
    tok = toy_tokenizer()
    model = random_gpt2(shape, tok)
    hp = default_hparams(model, "alphaedit").replace(
        mom2_corpus="toy", template_source="toy", v_num_grad_steps=steps)
    templates = model_reads.templates(model, tok, hp, seed=0)
    stamps = [(time.perf_counter(), time.process_time())]  # the start, then each update's end
    step = optimise._RowAdam.step

    def stamped(self, *a, **k):  # the update itself is microseconds; stamp after it
        step(self, *a, **k)
        stamps.append((time.perf_counter(), time.process_time()))

    optimise._RowAdam.step = stamped  # type: ignore[method-assign]
    try:
        tv = values.compute_values(model, tok, toy_requests(n), hp.layers[-1], hp,
                                   templates=templates)
    finally:
        optimise._RowAdam.step = step  # type: ignore[method-assign]
    end = (time.perf_counter(), time.process_time())
    per_step = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps, stamps[1:])]
    return per_step, (end[0] - stamps[0][0], end[1] - stamps[0][1]), tv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="gpt2", choices=sorted(SHAPES))
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--flush-denormal", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    print(f"{args.shape} shape, {args.n} requests, ≤ {args.steps} steps, {args.threads} "
          f"thread(s), flush denormal {args.flush_denormal}; load average {load_average()}",
          flush=True)
    per_step, total, tv = step_times(args.shape, args.n, args.steps)
    print("step  wall s  CPU s   (step 1 includes the capture)")
    for i, (wall, cpu) in enumerate(per_step, 1):
        print(f"{i:4d}  {wall:6.2f}  {cpu:6.2f}")
    cpu = [c for _, c in per_step[1:]]  # steps 2…: no capture
    print(f"total wall {total[0]:.2f} s, CPU {total[1]:.2f} s; steps taken "
          f"{sorted(set(tv.steps.tolist()))}; CPU per step (2…) min {min(cpu, default=0):.2f} "
          f"max {max(cpu, default=0):.2f}; load average {load_average()}")


if __name__ == "__main__":
    main()
