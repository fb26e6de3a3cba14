"""What checksums and verification cost on a GPT-2-XL-sized memory (one edited layer).

GPT-2 XL's edited matrix is (d_out, d_in) = (1600, 6400); a memit-seq memory after ``n`` edits
holds W, W0 (1600×6400), A0, A_inv (6400²) and Kt (n×6400), Vt (n×1600), all float64:
~0.82 GB + n·64 kB. Times, per layer (GPT-2 XL edits 5):

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
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="active constraints")
    parser.add_argument("--dir", default=None, help="where to write (default: a temp folder)")
    args = parser.parse_args()
    torch.manual_seed(0)
    d_out, d_in = 1600, 6400
    W0 = torch.randn(d_out, d_in, dtype=torch.float64) * 0.02
    mem = LinearMemory(W0, torch.eye(d_in, dtype=torch.float64), 1.0)
    for first in range(0, args.n, 500):
        m = min(500, args.n - first)
        mem.edit(torch.randn(d_in, m, dtype=torch.float64) * 0.1,
                 torch.randn(d_out, m, dtype=torch.float64), list(range(first, first + m)))
    root = Path(tempfile.mkdtemp(dir=args.dir))
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
                      "seconds per layer": {k: round(v, 2) for k, v in rows.items()}}, indent=1))


if __name__ == "__main__":
    main()
