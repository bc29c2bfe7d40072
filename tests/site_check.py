"""Load every page of a built book in headless Chromium and list what is wrong with each."""
from __future__ import annotations

import functools
import http.server
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# sphinx-thebe and the book theme both declare this constant; harmless, on every page.
KNOWN_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",)
WIDGET_VIEWS = ".jupyter-widgets.widget-container, .jupyter-widgets.widget-inline-hbox"
WIDGET_TIMEOUT_MS = 20_000


@contextmanager
def serve(site: Path):
    """Serve the site on a free loopback port; yield its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def collapsed_solution_problems(page, container: str) -> list[str]:
    """Raw MyST fences in the text, or <details> blocks open before a click / not opening on one."""
    problems = []
    if page.locator(container).count() and ":::" in page.locator(container).first.text_content():
        problems.append("raw ':::' directive text on the page")
    details = page.locator(f"{container} details")
    for i in range(details.count()):
        block = details.nth(i)
        if block.evaluate("element => element.open"):
            problems.append(f"<details> block {i + 1} is open before any click")
        block.locator("summary").click()
        if not block.evaluate("element => element.open && element.lastElementChild.offsetHeight > 0"):
            problems.append(f"<details> block {i + 1} did not open on click")
    return problems


def check_page(browser, base: str, relative: str) -> list[str]:
    """Problems of one page: outside requests, failed loads, JS errors, undrawn plots or widgets."""
    problems: list[str] = []
    page = browser.new_page()
    page.on("request", lambda r: None if r.url.startswith(base) or r.url.startswith("data:")
            else problems.append(f"request outside the site: {r.url}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    page.on("pageerror", lambda e: None if any(k in str(e) for k in KNOWN_ERRORS)
            else problems.append(f"uncaught JS error: {e}"))
    page.goto(f"{base}/{relative}", wait_until="networkidle")
    expected_plots = page.locator("div.plotly-graph-div").count()
    drawn_plots = page.locator("div.plotly-graph-div .main-svg").count()
    if expected_plots and not page.evaluate("typeof window.Plotly !== 'undefined'"):
        problems.append("window.Plotly is undefined")
    if drawn_plots < expected_plots:
        problems.append(f"{expected_plots - drawn_plots} of {expected_plots} plotly figures not drawn")
    expected_widgets = page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count()
    if expected_widgets:  # the manager renders after the page settles: wait for it, within reason
        try:
            page.wait_for_function(f"document.querySelectorAll('{WIDGET_VIEWS}').length >= {expected_widgets}",
                                   timeout=WIDGET_TIMEOUT_MS)
        except PlaywrightTimeout:
            pass  # reported just below with the counts
    drawn_widgets = page.locator(WIDGET_VIEWS).count()
    if drawn_widgets < expected_widgets:
        problems.append(f"{expected_widgets} widget views expected, {drawn_widgets} rendered")
    problems += collapsed_solution_problems(page, "article")
    page.close()
    return [f"{relative}: {p}" for p in problems]


def check_pages(base: str, pages: list[str], browsers: int = 2) -> list[str]:
    """check_page for every page, the pages dealt out to `browsers` Chromium processes that load them at once.

    A page spends much of its time waiting (network idle, widget manager), so two browsers check the smoke
    site in ~0.8 of one's time on two cores. Each thread starts its own Playwright: its sync API is per thread.
    """
    def check_share(share: list[str]) -> list[str]:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                return [problem for page in share for problem in check_page(browser, base, page)]
            finally:
                browser.close()

    with ThreadPoolExecutor(browsers) as pool:
        shares = pool.map(check_share, [pages[i::browsers] for i in range(browsers)])
        return [problem for share in shares for problem in share]
