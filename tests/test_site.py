"""The built book in a real browser: nothing loads from outside the site, no JS error, every plotly
figure drawn, every widget rendered, every chapter present. Default: a site built from smoke runs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dstutor.chapters import REPO_ROOT, chapter_paths
from site_check import check_pages, serve

pytestmark = pytest.mark.site


@pytest.fixture(scope="module")
def site(request) -> Path:
    given = request.config.getoption("--site")
    if given:
        path = Path(given)
        if not (path / "index.html").exists():
            pytest.fail(f"no built book at {path}: run `make book` first")
        return path
    # Reuses the chapters the notebook tests executed (same content hash), so this mostly renders.
    subprocess.run([sys.executable, str(REPO_ROOT / "book" / "build.py"), "--smoke"], check=True)
    return REPO_ROOT / "build" / "smoke-book" / "_build" / "html"


def test_every_chapter_has_a_page(site):
    missing = [p.stem for p in chapter_paths() if not (site / "chapters" / f"{p.stem}.html").exists()]
    assert not missing, f"chapters missing from the site {site}: {missing} (a stale build? run `make book`)"


def test_every_chapter_ends_with_collapsed_solutions(site):
    without = [p.stem for p in chapter_paths()
               if "<details>" not in (site / "chapters" / f"{p.stem}.html").read_text()]
    assert not without, f"chapters without a collapsed <details> solutions block: {without}"


def test_pages_load_offline_and_draw_everything(site, browser):  # browser: skipped without Chromium
    pages = sorted(str(p.relative_to(site)) for p in site.rglob("*.html") if "_static" not in p.parts)
    assert pages, f"no HTML pages under {site}"
    with serve(site) as base:
        problems = check_pages(base, pages)
    assert not problems, "\n".join(problems)
