"""Lint and structure of the book: toc, chapter conventions, exercises, stored outputs, scripts.

Fast (no kernel): reads the notebooks with nbformat. Running the chapters is nbval's job
(``python -m pytest`` collects ``book/``), building them is ``jupyter-book build``.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]*_*.ipynb"))   # 03b_…: a section of chapter 3
ALLOWED_TAGS = {"remove-cell", "remove-input", "remove-output", "hide-cell", "hide-input",
                "hide-output", "parameters", "skip-execution", "nbval-skip",
                "nbval-ignore-output", "nbval-check-output", "raises-exception"}
MAX_CELL_LINES = 30
MAX_NOTEBOOK_BYTES = 400_000
EXERCISE = re.compile(r"```\{exercise\}[^\n]*\n:label: ([\w-]+)")
SOLUTION_START = re.compile(r"```\{solution-start\} ([\w-]+)\n:class: dropdown")
SCIENTIFIC = re.compile(r"(\d+(?:\.\d*)?)[eE]-(\d+)")   # mantissa, exponent without its sign
MAX_CODE_LINE = 88             # wider lines scroll sideways in the rendered book
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc["parts"]:
        assert part.get("caption"), f"every part in _toc.yml needs a caption: {part}"
        entries = list(part["chapters"])
        while entries:                      # chapters and their sections, in order
            entry = entries.pop(0)
            files.append(entry["file"])
            entries[:0] = entry.get("sections", [])
    return files


def tags(cell) -> list[str]:
    return list(cell.metadata.get("tags", []))


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.fixture(scope="module", params=CHAPTERS, ids=lambda p: p.stem)
def chapter(request):
    return request.param, nbformat.read(request.param, as_version=4)


# ------------------------------------------------------------------ table of contents, config


def test_every_toc_entry_exists():
    for entry in toc_files():
        matches = [ROOT / f"{entry}{ext}" for ext in (".ipynb", ".md")]
        assert any(m.is_file() for m in matches), f"_toc.yml lists {entry}, no such file"


def test_every_chapter_is_in_the_toc():
    listed = set(toc_files())
    for path in CHAPTERS:
        assert f"book/{path.stem}" in listed, f"{path.name} is not listed in _toc.yml"


def test_numbered_parts_and_chapter_names():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    assert toc["format"] == "jb-book" and toc["root"] == "book/index"
    for part in toc["parts"]:
        numbered = [e["file"] for e in part["chapters"] if re.match(r"book/\d\d_", e["file"])]
        if numbered:
            assert part.get("numbered") is True, f"part {part['caption']!r} must be numbered"


def test_config_essentials():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["only_build_toc_files"] is True
    assert config["execute"]["execute_notebooks"] == "cache"
    assert config["execute"]["timeout"] >= 300 and config["execute"]["allow_errors"] is False
    assert config["repository"]["path_to_book"] == ""
    assert config["bibtex_bibfiles"] == ["book/references.bib"]
    sphinx = config["sphinx"]["config"]
    assert sphinx["nb_execution_raise_on_error"] is True
    assert sphinx["exercise_style"] == "solution_follow_exercise"
    assert "sphinx_exercise" in config["sphinx"]["extra_extensions"]
    # Markdown outputs (the results tables of chapter 8) are parsed as commonmark unless told:
    # commonmark has no tables, and the rendered page showed raw pipes.
    assert sphinx["nb_render_markdown_format"] == "myst"


def test_mathjax_is_served_by_the_book(tmp_path):
    """No CDN: _config.yml points MathJax at _static, and the extension puts it there."""
    assert CONFIG["sphinx"]["config"]["mathjax_path"] == "mathjax/tex-mml-chtml.js"
    assert CONFIG["sphinx"]["local_extensions"] == {"offline_mathjax": "_ext"}
    spec = importlib.util.spec_from_file_location("offline_mathjax",
                                                  ROOT / "_ext" / "offline_mathjax.py")
    offline_mathjax = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(offline_mathjax)
    target = offline_mathjax.copy_mathjax(tmp_path / "mathjax")
    bundle = (target / "tex-mml-chtml.js").read_text(encoding="utf-8")
    assert "MathJax" in bundle and len(bundle) > 500_000
    assert list((target / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    assert (target / "input" / "tex" / "extensions" / "boldsymbol.js").is_file()


def test_citations_exist_in_the_bibliography():
    keys = set(re.findall(r"@\w+\{([\w-]+),", (BOOK / "references.bib").read_text()))
    for path in list(CHAPTERS) + sorted(BOOK.glob("*.md")):
        for cited in re.findall(r"\{cite[pt]?\}`([^`]+)`", path.read_text()):
            for key in cited.split(","):
                assert key.strip() in keys, f"{path.name} cites unknown key {key!r}"


# ------------------------------------------------------------------ chapter conventions


def test_kernelspec_is_python3(chapter):
    path, nb = chapter
    assert nb.metadata["kernelspec"]["name"] == "python3", path.name


def test_opening_cells(chapter):
    path, nb = chapter
    title, setup, parameters = nb.cells[:3]
    assert title.cell_type == "markdown" and title.source.startswith("# "), path.name
    assert "Run this chapter" in title.source, \
        f"{path.name}: cell 1 needs a 'Run this chapter' note"
    assert setup.cell_type == "code" and "remove-cell" in tags(setup), path.name
    assert '"google.colab" in sys.modules' in setup.source, path.name
    assert f'%pip install -q "oteseq @ git+{CONFIG["repository"]["url"]}"' in setup.source, \
        f"{path.name}: the install cell must use _config.yml's repository.url"
    assert "torch" not in setup.source.split("%pip", 1)[1], "never reinstall torch on Colab"
    assert {"parameters", "hide-cell"} <= set(tags(parameters)), path.name
    assert "SCALE = oteseq.setup(seed=" in parameters.source, path.name


def test_colab_url_is_defined_once_in_the_config():
    """Launch buttons and every install cell use _config.yml's repository URL, nothing else."""
    url = CONFIG["repository"]["url"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url), url
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    for path in CHAPTERS:
        text = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells)
        for found in re.findall(r"git\+(https://[^\s\"'@]+)", text):
            assert found == url, f"{path.name} installs from {found}, _config.yml says {url}"
        for found in re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", text):
            assert found == url, f"{path.name} names the repository as {found}, not {url}"


def test_code_lines_fit_the_page(chapter):
    path, nb = chapter
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for number, line in enumerate(cell.source.split("\n"), 1):
            assert len(line) <= MAX_CODE_LINE, (f"{path.name} cell {index} line {number} has "
                                                f"{len(line)} > {MAX_CODE_LINE} characters")


def test_headings_have_no_raw_math(chapter):
    """Headings become the page title, the sidebar and the page contents, where math shows raw
    (``\\(\\mathbf C_0\\)``): write them in words or Unicode (C₀, λ)."""
    path, nb = chapter
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            for line in cell.source.split("\n"):
                if re.match(r"#{1,6} ", line):
                    assert "$" not in line and "\\" not in line, f"{path.name} cell {index}: {line}"


def test_only_allowed_tags(chapter):
    path, nb = chapter
    for index, cell in enumerate(nb.cells):
        unknown = set(tags(cell)) - ALLOWED_TAGS
        assert not unknown, f"{path.name} cell {index}: unknown tags {unknown}"


def test_cells_are_short_and_portable(chapter):
    path, nb = chapter
    for index, cell in enumerate(code_cells(nb)):
        assert cell.source.count("\n") < MAX_CELL_LINES, f"{path.name}: code cell {index} too long"
        assert "MPLBACKEND" not in cell.source and "sys.path" not in cell.source, path.name


def test_exercises_with_gated_solutions(chapter):
    path, nb = chapter
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    labels = EXERCISE.findall(markdown)
    assert len(labels) >= 3, f"{path.name}: {len(labels)} exercises, need at least 3"
    assert SOLUTION_START.findall(markdown) == labels, f"{path.name}: one dropdown solution each"
    assert markdown.count("```{solution-end}") == len(labels), path.name


def test_student_stubs_are_skipped_and_checks_are_used(chapter):
    path, nb = chapter
    for cell in code_cells(nb):
        if "skip-execution" in tags(cell):
            assert "nbval-skip" in tags(cell), f"{path.name}: stub cells need nbval-skip too"
    executed = "\n".join(c.source for c in code_cells(nb) if "skip-execution" not in tags(c))
    assert re.search(r"oteseq\.exercises\.check_\w+\(", executed), \
        f"{path.name}: at least one exercise must be auto-checked with oteseq.exercises"


def test_stored_outputs_are_a_clean_run(chapter):
    path, nb = chapter
    counts = [c.execution_count for c in code_cells(nb) if "skip-execution" not in tags(c)]
    assert counts == list(range(1, len(counts) + 1)), \
        f"{path.name}: run scripts/execute_notebooks.py (execution counts {counts})"
    for cell in code_cells(nb):
        if "skip-execution" in tags(cell):
            assert not cell.outputs and cell.execution_count is None, path.name
        for output in cell.outputs:
            assert output.output_type != "error" or "raises-exception" in tags(cell), path.name
    assert "widgets" not in nb.metadata, f"{path.name}: strip the widget state"
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES, f"{path.name}: too large (figures?)"


def text_outputs(cell) -> str:
    """The stored text a cell shows: streams, text/* representations, error values."""
    texts = []
    for output in cell.outputs:
        texts.append(output.get("text", "") + output.get("evalue", ""))
        texts += [value for mime, value in output.get("data", {}).items()
                  if mime.startswith("text/")]
    return "\n".join(texts)


def test_no_raw_tensor_dumps(chapter):
    """Readers see numbers formatted for them, not ``tensor([...])`` reprs."""
    path, nb = chapter
    for index, cell in enumerate(code_cells(nb)):
        assert "tensor([" not in text_outputs(cell), \
            f"{path.name} code cell {index} prints a raw tensor: format the numbers it shows"


def test_result_cells_are_checked_against_stored_outputs(chapter):
    path, nb = chapter
    checked = [c for c in code_cells(nb) if "nbval-check-output" in tags(c)]
    assert checked, f"{path.name}: no cell tagged nbval-check-output"
    assert all(c.outputs for c in checked), f"{path.name}: a checked cell has no stored output"
    for index, cell in enumerate(code_cells(nb)):
        if "interact(" in cell.source or "widgets." in cell.source:
            assert "nbval-ignore-output" in tags(cell), f"{path.name}: code cell {index}"
        assert not {"nbval-check-output", "nbval-ignore-output"} <= set(tags(cell)), \
            f"{path.name}: code cell {index} is tagged both check-output and ignore-output"


def test_no_nbval_comment_markers(chapter):
    """nbval is steered by cell tags, so the rendered code shows no test markers."""
    path, nb = chapter
    for index, cell in enumerate(nb.cells):
        assert "NBVAL_" not in cell.source, \
            f"{path.name} cell {index}: replace the '# NBVAL_...' comment with its nbval cell tag"


def round_off_numbers(text: str) -> list[str]:
    """Numbers in scientific notation with exponent <= -6 (``6.1e-08``, ``2.0E-12``).

    A bare power of ten (``1e-8``, ``1e-12``) is a threshold written into the message, as in
    ``error < 1e-8: True``, not a measured value, and passes.
    """
    return [m.group(0) for m in SCIENTIFIC.finditer(text)
            if int(m.group(2)) >= 6 and m.group(1) != "1"]


def test_round_off_numbers_are_recognised():
    assert round_off_numbers("gap 6.1e-08, 5E-7 and tensor(1.0000e-12)") == \
        ["6.1e-08", "5E-7", "1.0000e-12"]
    assert round_off_numbers("error < 1e-8: True; 1e-12; 2.5e-05; 3.1e+10; 1.5") == []


def test_checked_outputs_print_no_round_off_numbers(chapter):
    """A compared output must print the same on every machine, BLAS build and thread count.

    Values at the 1e-6 level or below are round-off or close to it: print the claim instead
    (``error < 1e-6: True``) and keep the check in an ``assert``.
    """
    path, nb = chapter
    for index, cell in enumerate(code_cells(nb)):
        if "nbval-check-output" in tags(cell):
            found = round_off_numbers(text_outputs(cell))
            assert not found, (f"{path.name}: checked code cell {index} prints {found}; print "
                               f"a comparison with a threshold or a rounded value instead")


# ------------------------------------------------------------------ numbers in the prose
# Every result in a chapter's prose is pasted by myst-nb's glue from the cell that computed it
# (oteseq.glue), so the text cannot contradict the outputs. What may stay typed: numbers that
# are not results. The whitelist is explicit and short.
NOT_RESULTS = [
    re.compile(r"§\s*\d+(?:\.\d+)+"),                   # section numbers of a cited paper
    re.compile(r"arXiv:?\s*\d{4}\.\d{4,5}"),              # arXiv ids
    re.compile(r"\b(?:v|version\s|==)\d+(?:\.\d+)+"),     # software versions
]
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")
FENCE = re.compile(r"^(`{3,}|~{3,}|:{3,})\s*(?:\{([\w:-]+)\})?")
VERBATIM = {None, "math", "code", "code-block", "code-cell", "glue:math"}
GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`(?:[^`:]*::)?([^`]+?)(?::[^:`]*)?`")


def prose(markdown: str) -> str:
    """The running text of a Markdown cell: no math, code, roles, link targets or comments."""
    lines, closing = [], None
    for line in markdown.split("\n"):
        if closing:
            closing = None if line.strip() == closing else closing
            continue
        fence = FENCE.match(line)
        if fence and fence.group(1)[0] != ":" and fence.group(2) in VERBATIM:
            closing = fence.group(1)
            continue
        lines.append(line)
    text = "\n".join(lines)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)
    text = re.sub(r"\\begin\{(\w+\*?)\}.*?\\end\{\1\}", " ", text, flags=re.S)
    text = re.sub(r"\$[^$\n]+\$", " ", text)
    text = re.sub(r"(?:\{[\w:-]+\})?(`+).+?\1", " ", text, flags=re.S)   # code, roles
    return re.sub(r"\]\([^)]*\)|https?://\S+", "] ", text)


def hand_typed_decimals(markdown: str) -> list[str]:
    text = prose(markdown)
    for allowed in NOT_RESULTS:
        text = allowed.sub(" ", text)
    return DECIMAL.findall(text)


def test_hand_typed_decimals_are_recognised():
    text = ("Efficacy 0.74 after 24 steps ($\\lambda = 0.5$, $$x = 1.5$$) with "
            "{glue:text}`ci.memit.nll:.3f`, `lam=2.5`, {cite}`wang2026labyrinth` §3.2, "
            "arXiv 2410.02355, torch v2.13.0 and [a link](https://x.org/1.2).\n"
            "```{math}\n\\alpha = 0.1\n```\n```python\nx = 3.7\n```\n"
            "```{admonition} Note\nrecall 98.5 % here\n```\n<!-- 4.4 -->")
    assert hand_typed_decimals(text) == ["0.74", "98.5"]
    assert hand_typed_decimals("1,024 directions, 20 batches, 5–30 points") == []


def glued_names(nb) -> set[str]:
    return {output.metadata["scrapbook"]["name"] for cell in code_cells(nb)
            for output in cell.outputs if "scrapbook" in output.get("metadata", {})}


def test_prose_has_no_hand_typed_decimals(chapter):
    """Results in the prose come from cells through glue, never typed by hand."""
    path, nb = chapter
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            found = hand_typed_decimals(cell.source)
            assert not found, (f"{path.name} cell {index} types {found} by hand: glue them "
                               f"from the cell that computes them (oteseq.glue.glue)")


def test_every_glued_name_is_stored(chapter):
    """A {glue:text}`name:fmt` in the prose has a stored value of that name in the chapter."""
    path, nb = chapter
    stored = glued_names(nb)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            missing = set(GLUE_ROLE.findall(cell.source)) - stored
            assert not missing, (f"{path.name} cell {index} pastes {sorted(missing)}, which no "
                                 f"executed cell glued: re-run the chapter")


def test_glue_cells_are_not_compared(chapter):
    """Glued values carry full precision: a compared cell must not store them."""
    path, nb = chapter
    for index, cell in enumerate(code_cells(nb)):
        if "nbval-check-output" in tags(cell):
            assert not any("scrapbook" in o.get("metadata", {}) for o in cell.outputs), \
                f"{path.name} code cell {index}: move the glue calls out of the checked cell"


# ------------------------------------------------------------------ scripts


def test_student_edition_drops_solutions(tmp_path):
    student_edition = load_script("student_edition")
    removed = student_edition.write_edition(CHAPTERS, tmp_path)
    for path in CHAPTERS:
        original = nbformat.read(path, as_version=4)
        student = nbformat.read(tmp_path / path.name, as_version=4)
        text = "\n".join(c.source for c in student.cells)
        assert "{solution-start}" not in text and "{solution-end}" not in text
        assert removed[path.name] == len(EXERCISE.findall(text)) >= 3
        stubs = [c for c in student.cells if "skip-execution" in tags(c)]
        assert len(stubs) == len([c for c in original.cells if "skip-execution" in tags(c)])
        assert all(not c.outputs for c in code_cells(student))
        assert len(student.cells) < len(original.cells)


def test_student_edition_rejects_unbalanced_markers():
    student_edition = load_script("student_edition")
    cell = nbformat.v4.new_markdown_cell("```{solution-start} x\n```")
    nb = nbformat.v4.new_notebook(cells=[cell])
    with pytest.raises(ValueError, match="ends inside a solution"):
        student_edition.strip_solutions(nb)
    nb.cells = [nbformat.v4.new_markdown_cell("```{solution-end}\n```")]
    with pytest.raises(ValueError, match="without a preceding"):
        student_edition.strip_solutions(nb)


def test_screenshot_explains_a_missing_chromium(monkeypatch):
    screenshot = load_script("screenshot")
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CHROMIUM", raising=False)
    with pytest.raises(SystemExit, match="apt-get install chromium"):
        screenshot.find_chromium()


def test_screenshot_covers_every_chapter(tmp_path, monkeypatch):
    screenshot = load_script("screenshot")
    assert screenshot.chapter_pages() == [path.stem for path in CHAPTERS]
    shot = []
    monkeypatch.setattr(screenshot, "screenshots",
                        lambda pages, outs, **_: shot.extend(outs) or outs)
    screenshot.main(["--all", str(tmp_path)])
    assert shot == [tmp_path / f"{path.stem}.png" for path in CHAPTERS]


def test_execute_script_strips_widget_state():
    execute_notebooks = load_script("execute_notebooks")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
    nb.metadata["widgets"] = {"state": {}}
    nb.cells[0].metadata["execution"] = {"iopub.status.busy": "now"}
    execute_notebooks.strip_metadata(nb)
    assert "widgets" not in nb.metadata and "execution" not in nb.cells[0].metadata
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.slow
def test_nbval_hooks_ignore_stderr_compare_stdout_and_skip_stubs(tmp_path):
    """tests/conftest.py in a scratch project: reaches notebooks outside tests/ (~10 s)."""
    import shutil
    import subprocess
    import sys

    from nbformat.v4 import new_code_cell, new_notebook, new_output

    (tmp_path / "tests").mkdir()
    (tmp_path / "book").mkdir()
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "tests" / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\ntestpaths = tests book\naddopts = "
                                         "-p no:cacheprovider --nbval-lax --nbval-current-env\n")
    check = {"tags": ["nbval-check-output"]}       # the cell tag, as the chapters use it
    noisy = new_code_cell("import sys, time\nprint(time.time(), file=sys.stderr)\nprint('same')",
                          execution_count=1, metadata=check)
    noisy.outputs = [new_output("stream", name="stderr", text="123\n"),
                     new_output("stream", name="stdout", text="same\n")]
    changed = new_code_cell("print('new')", execution_count=2, metadata=check)
    changed.outputs = [new_output("stream", name="stdout", text="stored\n")]
    stub = new_code_cell("raise ValueError('a student stub')",
                         metadata={"tags": ["skip-execution"]})
    nb = new_notebook(cells=[noisy, changed, stub])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, tmp_path / "book" / "probe.ipynb")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    summary = run.stdout.strip().splitlines()[-1]
    assert "1 failed, 1 passed, 1 skipped" in summary, run.stdout[-2000:]
    assert "Cell 1" in run.stdout and "Cell 0" not in run.stdout.split("short test summary")[-1]
