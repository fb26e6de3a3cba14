"""AlphaEdit setup, from C0 to the memories: oteseq against the reference's projector.

    python bench/setup.py [--d 3072] [--layers 3] [--threads 1]

For each of ``--layers`` random second moments C0 (d × d, eigenvalues spread like a real MLP
key's, about 30 % below the 2e-2 threshold), side by side in one run:

- reference: AlphaEdit's ``get_project`` — C0 in float32 on the CPU, ``torch.linalg.svd``
  (full_matrices=False), ``P = U0 U0ᵀ`` from the singular vectors with S < 2e-2 (float32);
- oteseq, cold: :func:`oteseq.methods.memory_options` (float64 ``eigh``, ``P`` from the smaller
  side, written to the projector cache) plus ``LinearMemory(W0, C0, **kwargs)`` (``A0 = ridge I``,
  ``A0⁻¹ = I / ridge``: no ``P C0 P``, no factorisation);
- oteseq, warm: the same after the projector cache is filled (read back from disk);
- the largest entry of ``|P_oteseq − P_reference|`` and both ranks;
- wall-clock and CPU seconds of each, and the load average before and after (the machine may
  be shared: compare CPU seconds when the load is high).
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes import load_average  # noqa: E402

from oteseq import methods, projectors  # noqa: E402
from oteseq.memory import LinearMemory  # noqa: E402


def second_moment(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    spectrum = torch.logspace(-4, 2, d, dtype=torch.float64)
    C0 = (Q * spectrum) @ Q.T
    return (C0 + C0.T) / 2


def reference_projector(C0: torch.Tensor, threshold: float) -> torch.Tensor:
    C = C0.float().cpu()
    U, S, _ = torch.linalg.svd(C, full_matrices=False)
    U0 = U[:, S < threshold]
    return U0 @ U0.T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d", type=int, default=3072)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hp = methods.Hparams(layers=tuple(range(args.layers)), ridge=10.0)
    C0s = [second_moment(args.d, seed) for seed in range(args.layers)]
    W0 = torch.randn(args.d // 4, args.d)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); d = {args.d}, {args.layers} layer(s)")
    print(f"load average at the start: {load_average()}")
    wall = {"reference": 0.0, "cold": 0.0, "warm": 0.0}
    cpu = dict(wall)
    with tempfile.TemporaryDirectory() as cache:
        for C0 in C0s:
            with timed("reference", wall, cpu):
                P_ref = reference_projector(C0, hp.nullspace_threshold)
            for phase in ("cold", "warm"):
                projectors.clear_memory_cache()
                with timed(phase, wall, cpu):
                    P, rank = projectors.cached_projector(C0, hp.nullspace_threshold,
                                                          cache_dir=cache)
                    LinearMemory(W0, C0, lam=0.0, ridge=hp.ridge, projection=P)
            gap = float((P - P_ref.double()).abs().max())
            print(f"  rank(P) oteseq {rank}, reference {int(torch.linalg.matrix_rank(P_ref))}; "
                  f"max |ΔP| {gap:.1e}", flush=True)
    print(f"load average at the end: {load_average()}")
    for phase, label in (("reference", "reference (float32 svd + U0 U0ᵀ)"),
                         ("cold", "oteseq cold (eigh f64 + memories)"),
                         ("warm", "oteseq warm (projector cache hit)")):
        print(f"{label:35s} {wall[phase]:7.2f} s wall  {cpu[phase]:7.2f} s CPU   "
              f"{wall['reference'] / wall[phase]:.2f}× the reference's speed")


@contextmanager
def timed(phase: str, wall: dict, cpu: dict):
    """Add the block's wall-clock and process CPU seconds to ``wall[phase]``, ``cpu[phase]``."""
    start, start_cpu = time.perf_counter(), time.process_time()
    yield
    wall[phase] += time.perf_counter() - start
    cpu[phase] += time.process_time() - start_cpu


if __name__ == "__main__":
    main()
