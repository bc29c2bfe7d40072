"""Serve every script the book needs from the site itself: no CDN at build or view time.

plotly.js comes from the installed `plotly` package; require.js, the ipywidgets HTML manager and
MathJax come from npm (book/package.json, installed by `make book`). Third-party JavaScript is copied here at build
time, never committed.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import plotly

BOOK = Path(__file__).resolve().parents[1]
VENDOR = BOOK / "vendor"  # html_static_path in _config.yml
NODE_MODULES = BOOK / "node_modules"
WIDGETS_DIST = NODE_MODULES / "@jupyter-widgets" / "html-manager" / "dist"
FONT_SUFFIXES = {".woff", ".woff2", ".ttf", ".eot", ".svg"}  # the widget manager's icon fonts
MATHJAX = NODE_MODULES / "mathjax" / "es5"
MATHJAX_PARTS = ["input", "output", "ui", "a11y"]  # loaded on demand by tex-chtml.js (fonts, menu)


def copy_assets(app, config) -> None:
    """Copy plotly.min.js, require.js, embed-amd.js (+ fonts) and MathJax into the static folder."""
    needed = (NODE_MODULES / "requirejs" / "require.js", WIDGETS_DIST / "embed-amd.js",
              MATHJAX / "tex-chtml.js")
    missing = [p for p in needed if not p.exists()]
    if missing:
        raise RuntimeError(f"book JavaScript assets are missing ({', '.join(map(str, missing))}): "
                           "run `npm ci` in book/ (`make book` does this)")
    VENDOR.mkdir(exist_ok=True)
    shutil.copy2(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", VENDOR)
    shutil.copy2(NODE_MODULES / "requirejs" / "require.js", VENDOR)
    shutil.copy2(WIDGETS_DIST / "embed-amd.js", VENDOR)
    for font in WIDGETS_DIST.iterdir():
        if font.suffix in FONT_SUFFIXES:
            shutil.copy2(font, VENDOR)
    (VENDOR / "mathjax").mkdir(exist_ok=True)
    shutil.copy2(MATHJAX / "tex-chtml.js", VENDOR / "mathjax")
    for part in MATHJAX_PARTS:
        shutil.copytree(MATHJAX / part, VENDOR / "mathjax" / part, dirs_exist_ok=True)
    for ours in ("widgets_setup.js", "mathjax2_shim.js"):
        shutil.copy2(Path(__file__).parent / ours, VENDOR)


def place_fonts_beside_pages(app, exception) -> None:
    """Also put the widget fonts at `<page folder>/@jupyter-widgets/`.

    widgets_setup.js points require.js at the vendored manager, but now and then (a race we have
    not pinned down) a widget bundle still asks for its icon fonts relative to the page; serving
    them there too keeps every page free of failed requests.
    """
    if exception is not None:
        return
    out = Path(app.outdir)
    fonts = [f for f in WIDGETS_DIST.iterdir() if f.suffix in FONT_SUFFIXES]
    for folder in {page.parent for page in out.rglob("*.html") if "_static" not in page.parts}:
        target = folder / "@jupyter-widgets"
        target.mkdir(exist_ok=True)
        for font in fonts:
            shutil.copy2(font, target)


def setup(app):
    app.connect("config-inited", copy_assets, priority=100)  # before Sphinx checks html_static_path
    app.connect("build-finished", place_fonts_beside_pages)
    # priority < 500 loads plotly before require.js: loaded after, plotly registers as an AMD module
    # instead of defining window.Plotly, and the figures' inline scripts find nothing to call.
    app.add_js_file("plotly.min.js", priority=200)
    # Deferred like MathJax (priority 500) and after it, so it sees MathJax 3 before widgets render.
    app.add_js_file("mathjax2_shim.js", loading_method="defer", priority=501)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
