"""Checks of the built HTML book (run after ``jupyter-book build``; not collected by default).

    jupyter-book build -W -n --keep-going .
    python -m pytest tests/html_checks.py

The file name does not match ``test_*.py`` on purpose: a plain ``python -m pytest`` runs before
any build, and these checks need one. ``.ci/run`` runs them right after building.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
SCRIPT_SRC = re.compile(r"<script[^>]*\bsrc=\"([^\"]+)\"")
STYLESHEET = re.compile(r"<link[^>]*rel=\"stylesheet\"[^>]*href=\"([^\"]+)\"")
REMOTE = re.compile(r"^(?:[a-z]+:)?//", re.I)


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    if not (HTML / "index.html").is_file():
        pytest.fail("no built book under _build/html: run `jupyter-book build .` first")
    return {path.relative_to(HTML).as_posix(): path.read_text(encoding="utf-8")
            for path in HTML.rglob("*.html") if "_static" not in path.parts}


def test_every_chapter_is_built(pages):
    for chapter in CHAPTERS:
        assert f"book/{chapter.stem}.html" in pages, f"{chapter.name} has no page"


def test_no_script_or_stylesheet_from_a_network(pages):
    """Everything a page loads comes from the built site, so it renders offline."""
    for name, html in pages.items():
        for url in SCRIPT_SRC.findall(html) + STYLESHEET.findall(html):
            assert not REMOTE.match(url), f"{name} loads {url} from the network"


def test_mathjax_is_served_by_the_site(pages):
    bundle = HTML / "_static" / "mathjax" / "tex-mml-chtml.js"
    assert bundle.is_file() and bundle.stat().st_size > 500_000, "MathJax was not copied"
    assert (HTML / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()
    chapter = pages["book/07_the_thread.html"]
    loaded = [url.split("?")[0] for url in SCRIPT_SRC.findall(chapter)
              if "tex-mml-chtml.js" in url]
    assert loaded == ["../_static/mathjax/tex-mml-chtml.js"], loaded


def test_titles_and_navigation_show_no_raw_math(pages):
    chapters = [f"book/{chapter.stem}.html" for chapter in CHAPTERS]
    for name in chapters:
        html = pages[name]
        title = re.search(r"<title>(.*?)</title>", html, re.S).group(1)
        assert "\\(" not in title and "$" not in title, f"{name}: title {title!r}"
        nav = re.search(r"<nav class=\"[^\"]*bd-docs-nav.*?</nav>", html, re.S)
        assert nav and "\\(" not in nav.group(0), f"{name}: raw math in the sidebar"
        toc = re.search(r"<nav id=\"pst-page-toc-nav\".*?</nav>", html, re.S)
        assert toc and "\\(" not in toc.group(0), f"{name}: raw math in the page contents"


def test_wide_tables_scroll(pages):
    css = (HTML / "_static" / "wide-tables.css").read_text()
    assert "overflow-x: auto" in css
    assert all("_static/wide-tables.css" in html for name, html in pages.items()
               if name.startswith("book/0") or name.startswith("book/1"))
