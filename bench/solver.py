"""One sequential-editing step: LinearMemory (Woodbury, O(d² k)) vs a dense solve (O(d³)).

    python bench/solver.py [--quick] [--threads N] [--device cpu]

Part 1 (speed): one aligned SE (MEMIT-seq) step with ``k`` new keys, ``d_out = d_in / 4``
(GPT-2 shapes: d_in = 768 attention / 3072 small MLP / 6400 XL MLP), float64. The dense step is
what a naive MEMIT-seq implementation does every batch: ``A += K Kᵀ``, Cholesky of ``A``,
``X = A⁻¹ K`` by two triangular solves, ``Δ = (V − W K) Xᵀ``. The memory step is
``LinearMemory.edit`` (Woodbury update of the maintained ``A⁻¹``, the drift check, ``Δ`` and
``W += Δ``; the new ``A⁻¹`` and ``W`` are written into the buffers of the state before last,
which nothing holds any more — a snapshot would keep them and exact rollback stays intact).
Times are the minimum over 3–15 repeats (the machine may be shared); the ratio is dense /
memory. ``--threads 1`` gives steadier numbers on a busy machine.

Part 2 (accuracy): thousands of incremental small-batch edits at a moderate ``d``; the relative
distance ``‖W − W_OTE‖ / ‖W_OTE‖`` to the dense OTE of all edits so far, once with periodic
refreshes off (only the drift check may refresh) and once with the default ``refresh_every``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from oteseq.memory import LinearMemory

F64 = torch.float64


def second_moment(d: int, g: torch.Generator, device: str) -> torch.Tensor:
    """A C0 with a decaying spectrum (about 1e-2 … 1e2) that costs O(d² m), not O(d³)."""
    m = min(d, 256)
    G = torch.randn(d, m, generator=g, dtype=F64) * torch.logspace(1, -1, m, dtype=F64)
    return (G @ G.T / m + 1e-2 * torch.eye(d, dtype=F64)).to(device)


def dense_step(A: torch.Tensor, W: torch.Tensor, K: torch.Tensor, V: torch.Tensor):
    """The naive MEMIT-seq step: ``A ← A + K Kᵀ``; ``Δ = (V − W K) Kᵀ A⁻¹`` by Cholesky."""
    A = torch.addmm(A, K, K.T)
    L = torch.linalg.cholesky(A)
    X = torch.cholesky_solve(K, L)
    delta = (V - W @ K) @ X.T
    return A, W + delta


def speed_row(d_in: int, ks: list[int], repeats: int, device: str, prefill: int):
    """[(k, dense s, memory s, refreshed)] for one step of ``k`` keys after ``prefill`` keys."""
    g = torch.Generator().manual_seed(d_in)
    d_out = d_in // 4
    C0 = second_moment(d_in, g, device)
    W0 = torch.randn(d_out, d_in, generator=g, dtype=F64).to(device)
    Kp = torch.randn(d_in, prefill, generator=g, dtype=F64).to(device)
    memory = LinearMemory(W0, C0, 1.0, refresh_every=None)
    memory.edit(Kp, W0 @ Kp + 0.1)
    A = C0 + Kp @ Kp.T
    rows = []
    for k in ks:
        batches = [(torch.randn(d_in, k, generator=g, dtype=F64).to(device),
                    torch.randn(d_out, k, generator=g, dtype=F64).to(device))
                   for _ in range(repeats + 1)]
        memory.edit(*batches[0])          # warm-up, not timed
        dense_step(A, W0, *batches[0])
        refreshed = False

        def memory_step(K, V):
            nonlocal refreshed
            memory.edit(K, V)
            refreshed |= memory.last_report.refreshed
        times = [(timed(memory_step, *b), timed(dense_step, A, W0, *b)) for b in batches[1:]]
        t_memory, t_dense = (min(column) for column in zip(*times))  # interleaved: same load
        rows.append((k, t_dense, t_memory, refreshed))
    return rows


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def accuracy(d_in: int, k: int, checkpoints: list[int], refresh_every, device: str):
    """Relative distance of the incremental W to the dense OTE after each checkpoint."""
    g = torch.Generator().manual_seed(7)
    d_out, n = d_in // 4, max(checkpoints) * k
    C0 = second_moment(d_in, g, device)
    W0 = torch.randn(d_out, d_in, generator=g, dtype=F64).to(device)
    K = torch.randn(d_in, n, generator=g, dtype=F64).to(device)
    V = W0 @ K + torch.randn(d_out, n, generator=g, dtype=F64).to(device)
    memory = LinearMemory(W0, C0, 1.0, refresh_every=refresh_every)
    rows, start = [], time.perf_counter()
    for t in range(1, max(checkpoints) + 1):
        memory.edit(K[:, (t - 1) * k:t * k], V[:, (t - 1) * k:t * k])
        if t in checkpoints:
            Kt, Vt = K[:, :t * k], V[:, :t * k]
            A = C0 + Kt @ Kt.T
            W_ote = W0 + torch.linalg.solve(A, Kt @ (Vt - W0 @ Kt).T).T
            distance = float(torch.linalg.norm(memory.W64 - W_ote) / torch.linalg.norm(W_ote))
            refreshes = memory.state_dict()["metadata"]["n_refreshes"]
            rows.append((t, distance, refreshes, time.perf_counter() - start))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the measured numbers to this JSON file")
    parser.add_argument("--dims", type=int, nargs="+", default=None, help="d_in values (part 1)")
    parser.add_argument("--ks", type=int, nargs="+", default=None, help="batch sizes (part 1)")
    parser.add_argument("--no-accuracy", action="store_true", help="skip part 2")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dims, ks = ([256, 768], [1, 10]) if args.quick else ([768, 3072, 6400], [1, 10, 100])
    dims, ks = args.dims or dims, args.ks or ks
    acc_d, acc_k, checkpoints = (128, 1, [200, 500]) if args.quick else (1024, 1, [2000, 5000])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"float64\n")
    results = {"command": " ".join(sys.argv[1:]), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "device": args.device, "prefill": 200,
               "speed": [], "accuracy": {"d_in": acc_d, "k": acc_k, "rows": []}}
    print("Part 1 — one SE step (aligned, MEMIT-seq), d_out = d_in/4, 200 keys already active")
    print(f"{'d_in':>6} {'k':>5} {'dense Cholesky s':>17} {'LinearMemory s':>15} {'speed-up':>9}")
    for d_in in dims:
        repeats = 3 if d_in >= 6400 else 5 if d_in >= 3072 else 15
        for k, t_dense, t_memory, refreshed in speed_row(d_in, ks, repeats, args.device,
                                                         prefill=200):
            mark = " (a drift refresh fell in the timed steps)" if refreshed else ""
            print(f"{d_in:>6} {k:>5} {t_dense:>17.4f} {t_memory:>15.4f} "
                  f"{t_dense / t_memory:>8.1f}x{mark}", flush=True)
            results["speed"].append({"d_in": d_in, "k": k, "dense_seconds": t_dense,
                                     "memory_seconds": t_memory, "refreshed": refreshed})
    if not args.no_accuracy:
        part_two(args, acc_d, acc_k, checkpoints, results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")


def part_two(args, acc_d: int, acc_k: int, checkpoints: list[int], results: dict) -> None:
    print(f"\nPart 2 — accuracy of {max(checkpoints)} incremental edits of k = {acc_k} key "
          f"(d_in = {acc_d}, d_out = {acc_d // 4}, lam = 1, C0 spectrum ≈ 1e-2…1e2)")
    print(f"{'refresh_every':>14} {'edits':>6} {'‖W − W_OTE‖/‖W_OTE‖':>21} {'refreshes':>10} "
          f"{'elapsed s':>10}")
    for refresh_every in (None, 1000):
        for t, distance, refreshes, elapsed in accuracy(acc_d, acc_k, checkpoints, refresh_every,
                                                        args.device):
            print(f"{str(refresh_every):>14} {t:>6} {distance:>21.2e} {refreshes:>10} "
                  f"{elapsed:>10.1f}", flush=True)
            results["accuracy"]["rows"].append(
                {"refresh_every": refresh_every, "edits": t, "distance": distance,
                 "refreshes": refreshes, "seconds": elapsed})


if __name__ == "__main__":
    main()
