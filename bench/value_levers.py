"""What each shortcut of the suffix replay saves: CPU seconds per Adam step with one switched off.

    python bench/value_levers.py [--shape gpt2] [--n 20] [--steps 6] [--rounds 2]

The batch of ``bench/value_steps.py`` (GPT-2-small shape, random weights, toy requests, 1
thread) runs once per setting, the settings alternating for ``--rounds`` rounds in one process,
so that a busy machine slows all of them alike. Settings: everything on; the attention's linear
maps unpacked (run on every suffix slot); the last block's MLP on every needed token, not on
the read ones only; GPT-2's GELU as the model's seven operations, not the fused kernel; the
target log-probabilities by ``log_softmax`` and slicing; and all four off. Printed: the mean
CPU seconds of steps 2… (step 1 holds the capture) and the ratio to everything on.
"""
from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes import load_average  # noqa: E402
from value_steps import step_times  # noqa: E402

from oteseq import models  # noqa: E402
from oteseq.values import prompts, suffix  # noqa: E402

_token_maps, _loss_log_probs = suffix._token_maps, prompts.loss_log_probs


def _mlp_only(model, blocks, needed, read):
    mlps = {id(models.mlp(model, j)) for j in blocks}
    return [(m, t) for m, t in _token_maps(model, blocks, needed, read) if id(m) in mlps]


def _mlp_on_needed(model, blocks, needed, read):
    return _token_maps(model, blocks, needed, needed)


def _sliced_log_probs(logits, labels):
    logp = torch.log_softmax(logits, dim=-1)
    return logp[: len(labels)].gather(1, labels[:, None])[:, 0], logp[len(labels):]


PATCHES = {
    "attention unpacked": [(suffix, "_token_maps", _mlp_only)],
    "last MLP on needed": [(suffix, "_token_maps", _mlp_on_needed)],
    "GELU unfused": [(models, "fused_equivalent", lambda module: None)],
    "log_softmax+slices": [(prompts, "loss_log_probs", _sliced_log_probs)],
}
PATCHES["all four off"] = [(suffix, "_token_maps", lambda model, blocks, needed, read:
                            _mlp_only(model, blocks, needed, needed)),
                           *PATCHES["GELU unfused"], *PATCHES["log_softmax+slices"]]
SETTINGS = ["everything on", *PATCHES]


def per_step_cpu(setting: str, shape: str, n: int, steps: int) -> float:
    """Mean CPU seconds of steps 2… of the batch with ``setting``."""
    with ExitStack() as stack:
        for owner, name, value in PATCHES.get(setting, []):
            stack.enter_context(mock.patch.object(owner, name, value))
        per_step, _, _ = step_times(shape, n, steps)
    cpu = [c for _, c in per_step[1:]]
    return sum(cpu) / len(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="gpt2")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{args.shape} shape, {args.n} requests, {args.steps} steps, 1 thread; load average "
          f"{load_average()}", flush=True)
    times: dict[str, list[float]] = {s: [] for s in SETTINGS}
    for _ in range(args.rounds):
        for setting in SETTINGS:
            times[setting].append(per_step_cpu(setting, args.shape, args.n, args.steps))
    base = min(times["everything on"])
    for setting in SETTINGS:
        print(f"{setting:>20}: CPU s per step {' '.join(f'{t:.3f}' for t in times[setting])}"
              f"  (best / best everything on: {min(times[setting]) / base:.2f})")
    print(f"load average {load_average()}")


if __name__ == "__main__":
    main()
