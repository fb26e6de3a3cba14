"""Write a student edition of the book's chapters: solutions removed, outputs cleared.

A solution is everything from the markdown cell holding ``{solution-start}`` to the markdown
cell holding ``{solution-end}``, both included (the gated form of sphinx-exercise). The
exercise statements and the stub cells that students fill in stay.

    python scripts/student_edition.py OUT_DIR [CHAPTER.ipynb ...]   # default: book/[0-9]*.ipynb
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

START, END = "{solution-start}", "{solution-end}"
ROOT = Path(__file__).resolve().parent.parent


def _marks(cell, marker: str) -> bool:
    return cell.cell_type == "markdown" and marker in cell.source


def strip_solutions(nb: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, int]:
    """A copy of ``nb`` without its solution blocks and outputs; returns it and the block count.

    Raises ``ValueError`` on an unmatched or nested marker, naming the cell.
    """
    kept, inside, blocks = [], False, 0
    for index, cell in enumerate(nb.cells):
        starts, ends = _marks(cell, START), _marks(cell, END)
        if starts and inside:
            raise ValueError(f"cell {index}: {START} inside an open solution; close it first")
        if starts:
            inside, blocks = True, blocks + 1
        if not inside:
            kept.append(cell)
        if ends:
            if not inside:
                raise ValueError(f"cell {index}: {END} without a preceding {START}")
            inside = False
    if inside:
        raise ValueError(f"notebook ends inside a solution: add a {END} cell")
    student = nbformat.from_dict(nb)
    student.cells = [nbformat.from_dict(cell) for cell in kept]
    for cell in student.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    student.metadata.pop("widgets", None)
    return student, blocks


def write_edition(chapters: list[Path], out_dir: Path) -> dict[str, int]:
    """Write the student edition of each chapter into ``out_dir``; returns blocks removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    removed = {}
    for path in chapters:
        nb = nbformat.read(path, as_version=4)
        student, removed[path.name] = strip_solutions(nb)
        nbformat.validate(student)
        nbformat.write(student, out_dir / path.name)
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("chapters", type=Path, nargs="*")
    args = parser.parse_args(argv)
    chapters = args.chapters or sorted((ROOT / "book").glob("[0-9]*.ipynb"))
    for name, blocks in write_edition(chapters, args.out_dir).items():
        print(f"{args.out_dir / name}: {blocks} solution block(s) removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
