"""Headless Chromium for the browser tests: Debian's `chromium`, driven by Playwright (whose own browser
download is not available here).

`.ci/run` installs Chromium and sets QKV_REQUIRE_BROWSER=1, so there a missing browser fails the tests. A local
`make test` without Chromium skips them, and the skip reason (shown in pytest's summary) says how to get it.
QKV_CHROMIUM overrides the executable.
"""

from __future__ import annotations

import os
import shutil

import pytest


def chromium_path() -> str | None:
    return os.environ.get("QKV_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def launch_or_skip(playwright_context, extra_args: tuple[str, ...] = ()):
    """A headless Chromium, or skip (fail when QKV_REQUIRE_BROWSER=1) saying what is missing. `extra_args` are
    added to Chromium's command line (a fake microphone: tests/e2e/test_speech_browser.py)."""
    required = os.environ.get("QKV_REQUIRE_BROWSER") == "1"
    path = chromium_path()
    problem = None
    try:
        import playwright  # noqa: F401
    except ModuleNotFoundError:
        problem = "Playwright is not installed (make test installs it: pip install -e '.[test]')"
    if problem is None and path is None:
        problem = ("no Chromium found: browser tests need Debian's chromium (sudo apt-get install chromium) or "
                   "QKV_CHROMIUM=/path/to/chrome")
    if problem:
        if required:
            pytest.fail(f"QKV_REQUIRE_BROWSER=1 but {problem}")
        pytest.skip(problem)
    return playwright_context.chromium.launch(executable_path=path, headless=True,
                                              args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                                    *extra_args])
