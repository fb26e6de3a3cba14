"""Screenshot a rendered chapter with headless Chromium (a manual check; not part of CI).

Serves ``_build/html`` on a local http.server (127.0.0.1, a free port) and asks Chromium for a
full-width PNG of one page:

    jupyter-book build .                                   # first build the book
    python scripts/screenshot.py 07_the_thread out.png     # page name under book/, or a path
    python scripts/screenshot.py --all screenshots/        # every chapter, one PNG each

Needs a Chromium binary, which is not a Python package. On Debian/Ubuntu:

    sudo apt-get install chromium        # Ubuntu may call the package chromium-browser

or point ``CHROMIUM`` at any Chromium/Chrome executable.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = ("no Chromium found: install it with `sudo apt-get install chromium` "
                "(Debian; `chromium-browser` on Ubuntu) or set CHROMIUM=/path/to/chrome")


def find_chromium() -> str:
    """Path of a Chromium executable, or ``SystemExit`` with the install instructions."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        if shutil.which(explicit):
            return shutil.which(explicit)
        raise SystemExit(f"CHROMIUM={explicit!r} is not an executable; {INSTALL_HINT}")
    for name in CANDIDATES:
        if shutil.which(name):
            return shutil.which(name)
    raise SystemExit(INSTALL_HINT)


def page_path(page: str, html_dir: Path) -> Path:
    """``07_the_thread`` → ``_build/html/book/07_the_thread.html``; explicit paths pass through."""
    candidates = [html_dir / page, html_dir / f"{page}.html", html_dir / "book" / f"{page}.html"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise SystemExit(f"no rendered page for {page!r} under {html_dir}: build the book first "
                     f"(jupyter-book build .) and give a chapter name such as 07_the_thread")


def serve(html_dir: Path) -> http.server.ThreadingHTTPServer:
    """A quiet static file server for ``html_dir`` on 127.0.0.1, running in a daemon thread."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def chapter_pages() -> list[str]:
    """Every chapter of the book (``book/NN_*.ipynb``), by page name."""
    return [path.stem for path in sorted((ROOT / "book").glob("[0-9][0-9]*_*.ipynb"))]


def screenshots(pages: list[str], outs: list[Path], *, width: int = 1280, height: int = 2400,
                html_dir: Path = ROOT / "_build" / "html") -> list[Path]:
    """Write a PNG of each page as served from ``html_dir`` (one server for all)."""
    chromium = find_chromium()
    targets = [page_path(page, html_dir) for page in pages]   # all exist before starting
    server = serve(html_dir)
    try:
        for target, out in zip(targets, outs):
            out.parent.mkdir(parents=True, exist_ok=True)
            url = f"http://127.0.0.1:{server.server_address[1]}/{target.relative_to(html_dir)}"
            command = [chromium, "--headless", "--disable-gpu", "--no-sandbox",
                       "--hide-scrollbars", f"--window-size={width},{height}",
                       "--virtual-time-budget=5000", f"--screenshot={out.resolve()}", url]
            subprocess.run(command, check=True, timeout=600, capture_output=True)
            if not out.is_file():
                raise SystemExit(f"Chromium ran but wrote no {out}; run it by hand: "
                                 f"{' '.join(command)}")
    finally:
        server.shutdown()
    return outs


def screenshot(page: str, out: Path, **options) -> Path:
    """Write a PNG of one page; returns ``out``."""
    return screenshots([page], [out], **options)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", nargs="?",
                        help="chapter name (07_the_thread) or a path under _build/html")
    parser.add_argument("out", type=Path, nargs="?", default=None,
                        help="PNG file (a folder with --all); default screenshot.png")
    parser.add_argument("--all", action="store_true", help="every chapter, one PNG each")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args(argv)
    size = {"width": args.width, "height": args.height}
    if args.all:
        folder = args.out or Path(args.page or "screenshots")
        pages = chapter_pages()
        for out in screenshots(pages, [folder / f"{page}.png" for page in pages], **size):
            print(out)
    elif args.page:
        print(screenshot(args.page, args.out or Path("screenshot.png"), **size))
    else:
        parser.error("give a page name, or --all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
