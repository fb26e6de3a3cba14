"""What checksums and verification cost on a GPT-2-XL-sized memory (one edited layer).

GPT-2 XL's edited matrix is (d_out, d_in) = (1600, 6400); a memit-seq memory after ``n`` edits
holds W, W0 (1600×6400), A0, A_inv (6400²) and Kt (n×6400), Vt (n×1600), all float64:
~0.82 GB + n·64 kB (built in closed form, see ``_write_state``). Times, per layer (GPT-2 XL
edits 5), as (wall, CPU) seconds:

- ``save``: LinearMemory.save (per-tensor SHA-256 in the header + atomic, fsynced write);
- ``save, no hashing``: the same safetensors write without the SHA-256 pass (baseline);
- ``sha256 of the file``: the extra pass Editor.save makes for its manifest;
- ``load (verify)``: LinearMemory.load with per-tensor checksums and invariants;
- ``load (no checksums)``: with ``verify=False`` (invariants only; Editor.load's path after
  it has checked the file's SHA-256).

    python bench/state_io.py [--n 2000] [--dir /tmp]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from oteseq import _atomic
from oteseq.memory import LinearMemory


def _timed(fn):
    """(wall seconds, CPU seconds of this process): on a shared machine the CPU time is the
    stable measure of the work done, the wall time includes waiting for the CPU and the disk."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return (round(time.perf_counter() - wall, 2), round(time.process_time() - cpu, 2)), out


def _write_state(folder: Path, n: int) -> Path:
    """A consistent memit-seq state of GPT-2 XL's shape, built in closed form without an
    O(d³) factorisation: C0 = I, lam = 1 and keys along coordinate axes make A diagonal."""
    from oteseq.memory._state import FORMAT, VERSION, save_files
    torch.manual_seed(0)
    d_out, d_in = 1600, 6400
    W0 = torch.randn(d_out, d_in, dtype=torch.float64) * 0.02
    K = torch.zeros(d_in, n, dtype=torch.float64)
    K[torch.arange(n) % d_in, torch.arange(n)] = 0.5
    V = torch.randn(d_out, n, dtype=torch.float64)
    A0 = torch.eye(d_in, dtype=torch.float64)
    A_inv = torch.diag(1.0 / (1.0 + (K * K).sum(dim=1)))
    W = W0 + (V - W0 @ K) @ K.T @ A_inv
    options = {"accumulate": True, "ridge": 0.0, "post": None, "error_feedback": False,
               "on_conflict": "replace", "refresh_every": 1000}
    meta = {"format": FORMAT, "version": VERSION, "d_out": d_out, "d_in": d_in,
            "dtype": "float32", "lam": 1.0, "options": options, "ids": list(range(n)),
            "steps": 1, "since_refresh": 0, "n_refreshes": 1, "next_auto": 0, "drift_floor": 0.0}
    tensors = {"W": W, "W0": W0, "A0": A0, "A_inv": A_inv, "Kt": K.T.contiguous(),
               "Vt": V.T.contiguous()}
    save_files({"tensors": tensors, "metadata": meta}, folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="active constraints (≤ 6400)")
    parser.add_argument("--dir", default=None, help="where to write (default: a temp folder)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(dir=args.dir))
    mem = LinearMemory.load(_write_state(root / "seed", args.n))
    gb = sum(t.numel() * 8 for t in mem.state_dict()["tensors"].values()) / 1e9
    rows = {}
    rows["save"], _ = _timed(lambda: mem.save(root / "a"))

    def plain():
        from safetensors.torch import save_file
        d = mem.state_dict()
        with _atomic.replacing(root / "b" / "memory.safetensors") as tmp:
            save_file(d["tensors"], str(tmp), metadata={"oteseq": json.dumps(d["metadata"])})
    (root / "b").mkdir()
    rows["save, no hashing"], _ = _timed(plain)
    rows["sha256 of the file"], _ = _timed(
        lambda: _atomic.sha256_file(root / "a" / "memory.safetensors"))
    rows["load (verify)"], _ = _timed(lambda: LinearMemory.load(root / "a"))
    rows["load (no checksums)"], _ = _timed(lambda: LinearMemory.load(root / "a", verify=False))
    print(json.dumps({"n": args.n, "GB per layer": round(gb, 3),
                      "seconds per layer (wall, CPU)": rows}, indent=1))


if __name__ == "__main__":
    main()
