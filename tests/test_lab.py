"""JupyterLab as a reader uses it (`make lab`): a chapter opens as a notebook, its markdown renders
without raw MyST text, solutions are collapsed until clicked, no news prompt appears; and a chapter
runs in the browser (smoke sizes), where moving a control and pressing Run retrains and updates the panel."""
from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request

import jupytext
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from dstutor.chapters import NOTEBOOK_DIR
from dstutor_book.execution import read_chapter
from dstutor_book.lab import write_lab_settings
from site_check import collapsed_solution_problems

pytestmark = pytest.mark.lab
CHAPTER = "00_setup_and_tour.md"
PANEL_CHAPTER = NOTEBOOK_DIR / "06_optimisation_and_hyperparameters.md"  # has a HyperParameterPanel
RUN_ALL_TIMEOUT_MS = 420_000


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a free loopback port, configured as `make lab` configures it.

    Its root holds the chapters, plus a smoke-size copy of the panel chapter (kernels get DSTUTOR_SMOKE=1).
    """
    config = tmp_path_factory.mktemp("jupyter-config")
    root = tmp_path_factory.mktemp("lab-root")
    for chapter in NOTEBOOK_DIR.glob("*.md"):
        (root / chapter.name).write_text(chapter.read_text())
    jupytext.write(read_chapter(PANEL_CHAPTER, smoke=True), root / f"smoke_{PANEL_CHAPTER.name}", fmt="md:myst")
    write_lab_settings(config)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = secrets.token_hex(16)
    env = {**os.environ, "DSTUTOR_SMOKE": "1", "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_DATA_DIR": str(config / "data"),
           "JUPYTER_RUNTIME_DIR": str(config / "runtime")}
    server = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
                               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
                               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"],
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


def open_notebook(browser, lab, name: str, workspace: str):
    """A browser tab with the notebook `name` open in JupyterLab and its markdown rendered.

    Each tab gets its own workspace, as two Lab windows on one workspace would fight over its layout.
    """
    base, token = lab
    tab = browser.new_page(viewport={"width": 1400, "height": 1000})
    tab.errors, tab.console = [], []
    tab.on("pageerror", lambda error: tab.errors.append(str(error)))
    tab.on("console", lambda message: tab.console.append(f"{message.type}: {message.text}"))
    tab.goto(f"{base}/lab/workspaces/{workspace}/tree/{name}?token={token}")
    tab.wait_for_selector(".jp-Notebook .jp-MarkdownCell .jp-RenderedMarkdown", timeout=60_000)
    return tab


@pytest.fixture(scope="module")
def page(browser, lab):
    tab = open_notebook(browser, lab, CHAPTER, "reading")
    tab.wait_for_selector(".jp-Notebook details", state="attached", timeout=60_000)
    yield tab
    tab.close()


def test_a_chapter_opens_as_a_notebook_with_collapsed_solutions(page):
    assert page.locator(".jp-Notebook .jp-CodeCell").count() > 3  # a notebook, not the text editor
    problems = collapsed_solution_problems(page, ".jp-Notebook")
    assert page.locator(".jp-Notebook details").count() >= 1
    assert not problems, "\n".join(problems)
    assert not page.errors, f"JavaScript errors in JupyterLab: {page.errors}"


def test_no_news_prompt(page):
    time.sleep(2)  # the prompt, when configured, appears shortly after start-up
    assert "Jupyter news" not in page.locator("body").inner_text()


def failed_cells(tab) -> list[str]:
    """Source and error text of every executed cell whose output holds a traceback."""
    return tab.evaluate("""() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')]
        .filter(cell => /Traceback \\(most recent call last\\)/.test(cell.querySelector('.jp-OutputArea')?.textContent || ''))
        .map(cell => cell.querySelector('.jp-InputArea-editor').textContent.slice(0, 300) + '\\n---\\n'
                     + cell.querySelector('.jp-OutputArea').textContent.slice(-1500))""")


KERNEL_STATUS = "() => document.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status"
PROMPTS = "() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')].map(p => p.textContent.trim())"


def wait_for_kernel(tab, lab, name: str) -> None:
    """Wait until the server runs an idle kernel for notebook `name` and the page shows it by name.

    The page's execution indicator reads 'idle' before any kernel exists (its default), and Run All
    clicked before the kernel specs have loaded opens a "Select Kernel" dialog that blocks the page.
    """
    base, token = lab
    deadline = time.time() + 180
    while not any(session["path"].endswith(name) and session["kernel"]["execution_state"] == "idle"
                  for session in json.load(urllib.request.urlopen(f"{base}/api/sessions?token={token}", timeout=10))):
        if time.time() > deadline:
            pytest.fail(f"no idle kernel for {name} after 180 s")
        time.sleep(0.5)
    kernel_named = "() => { const n = document.querySelector('.jp-Toolbar-kernelName'); return n && n.textContent.trim() && n.textContent.trim() !== 'No Kernel'; }"
    tab.wait_for_function(kernel_named, timeout=60_000, polling=500)
    tab.wait_for_function(f"() => ({KERNEL_STATUS})() === 'idle'", timeout=60_000, polling=500)


def click(tab, locator) -> None:
    """Click, or fail with the text of the JupyterLab dialog that blocks the page."""
    dialog = tab.locator(".jp-Dialog")
    if dialog.count() and dialog.first.is_visible():
        pytest.fail(f"a JupyterLab dialog blocks the page: {dialog.first.inner_text()!r}")
    locator.click()


def run_all(tab, lab, name: str) -> None:
    """Run every cell from the Run menu and wait until all have run, failing with the first error.

    On a loaded machine the kernel may still be starting when the notebook renders: wait for it,
    and click again if no cell started.
    """
    wait_for_kernel(tab, lab, name)
    started = "() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')].some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))"
    for _ in range(3):
        click(tab, tab.locator(".lm-MenuBar-itemLabel", has_text="Run").first)
        click(tab, tab.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first)
        try:
            tab.wait_for_function(started, timeout=30_000, polling=500)
            break
        except PlaywrightTimeout:
            tab.keyboard.press("Escape")  # close the menu if it stayed open
    # textContent, not innerText: Lab skips rendering cells outside the viewport, whose innerText is empty
    done = """() => { const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')];
                      const failed = /Traceback \\(most recent call last\\)/.test(document.querySelector('.jp-Notebook').textContent);
                      return failed || (prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent))); }"""
    try:
        tab.wait_for_function(done, timeout=RUN_ALL_TIMEOUT_MS, polling=1000)
    except PlaywrightTimeout:
        pytest.fail(f"the cells did not all run in {RUN_ALL_TIMEOUT_MS / 1000:.0f} s: kernel {tab.evaluate(KERNEL_STATUS)!r}, "
                    f"prompts {tab.evaluate(PROMPTS)}\nconsole:\n" + "\n".join(tab.console[-20:]))
    errors = failed_cells(tab)
    assert not errors, "cells failed in JupyterLab:\n" + "\n\n".join(errors) + "\nconsole:\n" + "\n".join(tab.console[-20:])


def test_a_chapter_runs_in_lab_and_its_panel_reruns_on_click(browser, lab):
    name = f"smoke_{PANEL_CHAPTER.name}"
    tab = open_notebook(browser, lab, name, "running")
    run_all(tab, lab, name)
    panel = tab.locator(".jupyter-widgets.widget-vbox", has=tab.get_by_role("button", name="Run")).first
    panel.scroll_into_view_if_needed()
    message = panel.locator(".widget-html").first
    assert "run 1 done" in message.text_content()  # the chapter's own run
    panel.locator(".widget-dropdown", has=tab.locator("label", has_text="schedule")).locator("select").select_option("constant")
    panel.get_by_role("button", name="Run").click()
    # the message changes first, then the comparison table is redrawn: wait for the table's new row
    tab.wait_for_function("panel => [...panel.querySelectorAll('table')].some(t => t.textContent.includes('run 2'))",
                          arg=panel.element_handle(), timeout=120_000)
    assert "run 2 done" in message.text_content()
    table = panel.locator(".jp-OutputArea-output table", has_text="run 2").last.text_content()
    assert "run 2" in table and "constant" in table.split("run 2")[1]  # the new row, with the new setting
    assert not tab.errors, f"JavaScript errors in JupyterLab: {tab.errors}"
    tab.close()
