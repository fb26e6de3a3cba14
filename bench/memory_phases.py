"""Peak resident memory of oteseq's side of ``bench/reference_loop.py``, phase by phase.

    python bench/memory_phases.py [--method alphaedit] [--n 20] [--steps 20]

The same setup as that script's oteseq side (GPT-2-small shape with random weights, toy
requests, six templates, synthetic C0; 1 thread). After each phase it prints the resident set
now and its peak since the previous phase (Linux: ``VmRSS`` / ``VmHWM`` of ``/proc/self/status``,
the peak reset by writing 5 to ``/proc/self/clear_refs``): setup (model, C0, templates), the
Editor's construction (memories, projector), and inside ``Editor.edit`` the target values, then
per edited layer its keys and its memory step. The largest peak is the process's ``ru_maxrss``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_loop  # noqa: E402
from shapes import load_average  # noqa: E402

from oteseq import editor  # noqa: E402
from oteseq.memory import LinearMemory  # noqa: E402


def _status() -> dict[str, float]:
    with open("/proc/self/status") as f:
        rows = dict(line.split(":", 1) for line in f)
    return {k: int(rows[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}


def mark(name: str) -> None:
    s = _status()
    print(f"{name:30s} RSS {s['VmRSS']:7.0f} MiB   peak since previous {s['VmHWM']:7.0f} MiB",
          flush=True)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="alphaedit", choices=["alphaedit", "memit-seq"])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{args.method}, {args.n} requests, ≤ {args.steps} value steps; load average "
          f"{load_average()}", flush=True)
    mark("imports")
    model, tok, hp, C0, templates, requests = reference_loop.setup(args.method, args.n,
                                                                   args.steps)
    mark("setup: model, C0, templates")
    values, step = editor.compute_values, LinearMemory.edit

    def timed_values(*a, **k):
        mark("edit: checks")
        out = values(*a, **k)
        mark("edit: values")
        return out

    def timed_step(self, *a, **k):
        mark("edit: keys of a layer")
        out = step(self, *a, **k)
        mark("edit: memory step")
        return out

    editor.compute_values = timed_values  # type: ignore[assignment]
    LinearMemory.edit = timed_step  # type: ignore[method-assign]
    ed = editor.Editor(model, tok, args.method, hparams=hp, stats=C0, templates=templates,
                       progress=False)
    mark("Editor(...)")
    ed.edit(requests)
    mark("edit: end")


if __name__ == "__main__":
    main()
