"""Shared pytest set-up: `--site` option, a temporary cache so tests never write into the reader's,
and the cores shared among pytest-xdist workers.

The temporary cache starts as a hard-linked copy of the real one (corpora and zoo artefacts are only
ever written as new files, so links are safe), which keeps test runs from re-fetching and rebuilding.
Zoo artefacts that only the tests build (smoke-size models) are kept apart, in TEST_MODELS, for the next
run: a warm `make test` loads them like the reader's second run of a chapter. A recipe change (or
ZOO_VERSION) gives a new key, so a kept model is never one an edited recipe would not build.
Chapter kernels, torchrun workers and xdist workers inherit it through DSTUTOR_CACHE, so a zoo model
one worker builds, the other loads.
"""
import os
import shutil
import tempfile
from pathlib import Path

import pytest

READER_CACHE = Path(os.environ.get("DSTUTOR_CACHE", Path.home() / ".cache" / "dstutor")).expanduser()
TEST_MODELS = Path(os.environ.get("DSTUTOR_TEST_MODELS", Path.home() / ".cache" / "dstutor-test-models")).expanduser()
COMPLETE = ".complete"  # dstutor.zoo's marker of a finished artefact (not imported: torch must not load before the threads are set)


def pytest_addoption(parser):
    parser.addoption("--site", default=None,
                     help="built book to check in Chromium (default: build build/smoke-book from smoke runs)")


def _link_or_copy(source, destination):
    try:
        os.link(source, destination)
    except OSError:  # another file system
        shutil.copy2(source, destination)


XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if XDIST_WORKERS > 1:  # each worker's torch (and the kernels it starts) gets its share of the cores, set before import
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(max(1, (os.cpu_count() or 1) // XDIST_WORKERS))


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the controller made the temporary cache and removes it
        return
    temporary = Path(tempfile.mkdtemp(prefix="dstutor-test-cache-"))
    if READER_CACHE.is_dir():
        shutil.copytree(READER_CACHE, temporary, dirs_exist_ok=True, copy_function=_link_or_copy,
                        ignore=shutil.ignore_patterns("*.lock", ".*.tmp"))
    if TEST_MODELS.is_dir():
        shutil.copytree(TEST_MODELS, temporary / "zoo", dirs_exist_ok=True, copy_function=_link_or_copy,
                        ignore=shutil.ignore_patterns(".*.tmp"))
    config._dstutor_cache = temporary
    os.environ["DSTUTOR_CACHE"] = str(temporary)
    os.environ["DSTUTOR_READER_CACHE"] = str(READER_CACHE)


def pytest_collection_modifyitems(items):
    # The chapters' smoke runs first, the later (heavier) chapters first: the workers then end on short unit
    # tests, not with one worker alone on a 80 s chapter while the other idles.
    def order(item) -> tuple[int, str]:
        chapter = item.callspec.params.get("chapter") if item.get_closest_marker("notebook") else None
        return (0, f"{99 - int(chapter.name[:2]):02d}") if chapter is not None else (1, "")
    items.sort(key=order)  # stable: the unit tests keep their order


def pytest_unconfigure(config):
    temporary = getattr(config, "_dstutor_cache", None)
    if temporary is not None:
        _keep_test_models(temporary / "zoo")
        shutil.rmtree(temporary, ignore_errors=True)


def _keep_test_models(zoo: Path) -> None:
    """Copy the finished artefacts this run built (in neither the reader's cache nor TEST_MODELS) to TEST_MODELS."""
    built = [folder for folder in (zoo.iterdir() if zoo.is_dir() else []) if (folder / COMPLETE).exists()
             and not (READER_CACHE / "zoo" / folder.name).exists() and not (TEST_MODELS / folder.name).exists()]
    for folder in built:
        staging = TEST_MODELS / f".{folder.name}.tmp"  # renamed when whole: a killed run leaves no half model
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(folder, staging)
        staging.rename(TEST_MODELS / folder.name)


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium driven by Playwright (never a browser download); skipped without it."""
    from site_check import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: `make test` installs Debian's chromium with apt")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
