"""End-to-end runs may download or cache nothing: they read the corpora where tests/conftest.py's `shared_data`
finds them (if the corpora are not on this machine, only the tests that need one fail, naming `qkv data get`).
The browser tests share one headless Chromium (tests/browser.py) and a fresh page per test."""

import pytest

from browser import launch_or_skip


@pytest.fixture(autouse=True)
def _offline_data(available_data, monkeypatch, tmp_path):
    """Every e2e test runs with `data_dir`'s environment (tests/conftest.py): QKV_DATA_DIR at the corpora (an
    empty folder when there are none), the download cache an empty tmp folder."""
    if available_data is None:
        (tmp_path / "no-corpora").mkdir()
    monkeypatch.setenv("QKV_DATA_DIR", str(available_data or tmp_path / "no-corpora"))
    monkeypatch.setenv("QKV_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (skipped, or failed under QKV_REQUIRE_BROWSER=1, when there is none)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = launch_or_skip(p)
        yield b
        b.close()


@pytest.fixture
def page(browser, tmp_path):
    """A fresh page that fails its test on any JavaScript error, records dialogs, and leaves a screenshot of
    where it ended in the test's tmp folder."""
    # bypass_csp: Playwright's waits evaluate strings in the page, which the server's CSP forbids (no eval). The
    # pages must keep model output inert by themselves (textContent), and with the CSP off that is what is tested.
    context = browser.new_context(viewport={"width": 1200, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.dialogs, page.errors = [], []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.set_default_timeout(15_000)
    yield page
    page.screenshot(path=str(tmp_path / "last.png"), full_page=True)
    context.close()
    assert not page.errors, page.errors  # no JavaScript error on any page
