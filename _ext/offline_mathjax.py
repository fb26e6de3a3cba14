"""Serve MathJax 3 from the built site, so the book's formulas render without a network.

Sphinx loads MathJax from ``mathjax_path``; _config.yml sets it to the relative path
``mathjax/tex-mml-chtml.js``, which Sphinx resolves under ``_static/``. This extension copies
that bundle and the files it loads on demand (fonts, TeX extensions, accessibility and menu
components) from the ``django-static-mathjax`` package (the unmodified MathJax 3 release files)
into ``_build/html/_static/mathjax`` when an HTML build finishes. The other ready-made bundles
and the SVG output are left out (about 8 MB copied instead of 35).
"""
from __future__ import annotations

import shutil
from pathlib import Path

BUNDLE = "tex-mml-chtml.js"
ON_DEMAND = ("input", "output/chtml", "a11y", "ui", "sre", "adaptors")


def mathjax_root() -> Path:
    """The ``es5`` folder of the installed MathJax release, or an error that says what to do."""
    try:
        import mathjax
    except ImportError as error:
        raise RuntimeError("the book serves MathJax itself: pip install django-static-mathjax "
                           "(listed in requirements.txt)") from error
    root = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (root / BUNDLE).is_file():
        raise RuntimeError(f"no {BUNDLE} under {root}: reinstall django-static-mathjax")
    return root


def copy_mathjax(target: Path) -> Path:
    """Copy the bundle and its on-demand components to ``target`` (replaced); returns it."""
    root = mathjax_root()
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    shutil.copy2(root / BUNDLE, target / BUNDLE)
    for folder in ON_DEMAND:
        shutil.copytree(root / folder, target / folder)
    return target


def check_config(app, config) -> None:
    expected = f"mathjax/{BUNDLE}"
    if config.mathjax_path != expected:
        raise RuntimeError(f"offline_mathjax copies MathJax to _static/{expected}: set "
                           f"sphinx.config.mathjax_path to {expected!r} in _config.yml, "
                           f"not {config.mathjax_path!r}")
    mathjax_root()          # fail at the start of the build, not at its end


def on_build_finished(app, exception) -> None:
    if exception is None and app.builder.format == "html":
        copy_mathjax(Path(app.outdir) / "_static" / "mathjax")


def setup(app):
    app.connect("config-inited", check_config)
    app.connect("build-finished", on_build_finished)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
