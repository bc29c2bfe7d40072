"""JupyterLab as a reader uses it (`make lab`): a chapter opens as a notebook, its markdown renders
without raw MyST text, solutions are collapsed until clicked, and no news prompt appears."""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from dstutor.chapters import NOTEBOOK_DIR
from dstutor.lab import write_lab_settings
from site_check import CHROMIUM, CHROMIUM_ARGS, collapsed_solution_problems

pytestmark = pytest.mark.lab
CHAPTER = "00_setup_and_tour.md"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a free loopback port, configured as `make lab` configures it."""
    config = tmp_path_factory.mktemp("jupyter-config")
    write_lab_settings(config)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_DATA_DIR": str(config / "data"),
           "JUPYTER_RUNTIME_DIR": str(config / "runtime")}
    server = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
                               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
                               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={NOTEBOOK_DIR}"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                pytest.fail(f"JupyterLab did not start: {server.stderr.read()[-2000:]}")
            time.sleep(0.5)
    yield base, token
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def page(lab):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: `make test` installs Debian's chromium with apt")
    from playwright.sync_api import sync_playwright

    base, token = lab
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab.errors = []
        tab.on("pageerror", lambda error: tab.errors.append(str(error)))
        tab.goto(f"{base}/lab/tree/{CHAPTER}?token={token}")
        tab.wait_for_selector(".jp-Notebook .jp-MarkdownCell .jp-RenderedMarkdown", timeout=60_000)
        tab.wait_for_selector(".jp-Notebook details", state="attached", timeout=60_000)
        yield tab
        browser.close()


def test_a_chapter_opens_as_a_notebook_with_collapsed_solutions(page):
    assert page.locator(".jp-Notebook .jp-CodeCell").count() > 3  # a notebook, not the text editor
    problems = collapsed_solution_problems(page, ".jp-Notebook")
    assert page.locator(".jp-Notebook details").count() >= 1
    assert not problems, "\n".join(problems)
    assert not page.errors, f"JavaScript errors in JupyterLab: {page.errors}"


def test_no_news_prompt(page):
    time.sleep(2)  # the prompt, when configured, appears shortly after start-up
    assert "Jupyter news" not in page.locator("body").inner_text()
