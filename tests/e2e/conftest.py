"""Real headless Chromium (Debian's `chromium` package) driven by Playwright for Python.

When Chromium is missing, a root machine with apt (CI) installs it; elsewhere the browser tests are skipped
with the command to run. RAGDESK_INSTALL_BROWSER=0 turns the automatic install off.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _find_chromium() -> str | None:
    for name in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.access(name, os.X_OK):
            return name
    return shutil.which("chromium")


def _install_chromium() -> str | None:
    if os.environ.get("RAGDESK_INSTALL_BROWSER", "1") == "0" or os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, timeout=900, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"], env=env, check=False,
                   timeout=1800, capture_output=True)
    return _find_chromium()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = _find_chromium() or _install_chromium()
    if path is None:
        pytest.skip("Chromium is not installed and could not be installed here: run `apt-get install chromium` "
                    "as root (CI does this automatically).")
    return path


@pytest.fixture
def browser(chromium_path, monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are still sync.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield instance
        finally:
            instance.close()
