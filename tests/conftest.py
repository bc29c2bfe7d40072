"""Shared pytest options: `--site` names a built book to check (default: build a smoke site)."""


def pytest_addoption(parser):
    parser.addoption("--site", default=None,
                     help="built book to check in Chromium (default: build build/smoke-book from smoke runs)")
