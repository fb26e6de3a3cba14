"""Execute the book's chapters in place (seeded, OTESEQ_SCALE=ci) so their stored outputs are fresh.

The committed outputs are what cells tagged ``nbval-check-output`` are compared against, so
run this after changing a chapter or the library code it uses, and commit the result:

    python scripts/execute_notebooks.py                 # every book/NN_*.ipynb
    python scripts/execute_notebooks.py book/07_the_thread.ipynb

Cells tagged ``skip-execution`` (student stubs, GPU-only cells) are not run. Widget state and
per-cell timing metadata are stripped so the files stay small and diffs stay clean.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENT = {"OTESEQ_SCALE": "ci", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "PYTHONHASHSEED": "0"}


def strip_metadata(nb: nbformat.NotebookNode) -> None:
    """Drop widget state and execution timings; keep the python3 kernelspec."""
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("widgets", None)


def execute(path: Path, timeout: int = 600) -> float:
    """Run ``path`` top to bottom in a fresh python3 kernel (cwd = its folder); write it back."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    # iopub_timeout: on a busy machine the last outputs of a cell can arrive seconds after the
    # cell finished; nbclient's default (4 s, then carry on) silently dropped them.
    NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                   iopub_timeout=120, raise_on_iopub_timeout=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    strip_metadata(nb)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", type=Path, nargs="*")
    args = parser.parse_args(argv)
    os.environ.update(ENVIRONMENT)
    os.environ.pop("MPLBACKEND", None)  # an inherited Agg backend removes every figure
    chapters = args.chapters or sorted((ROOT / "book").glob("[0-9]*.ipynb"))
    for path in chapters:
        print(f"{path}: executed in {execute(path):.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
