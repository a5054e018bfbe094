"""Headless Chromium for tests, through Playwright's sync API and the system's /usr/bin/chromium
(no browser downloads: `playwright install` is never needed).

    @pytest.fixture(scope="module")
    def browser():
        b = launch()          # skips the test when /usr/bin/chromium is absent
        yield b
        close(b)

    page, problems = watch(browser.new_page())   # JS errors, console errors and dialogs land in `problems`
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def launch(executable: Path = CHROMIUM):
    """A Playwright Browser on the system Chromium; pytest.skip (with the reason) if it is not installed."""
    if not executable.exists():
        pytest.skip(f"{executable} not found: install Debian's chromium package (apt-get install chromium) to run browser tests")
    from playwright.sync_api import sync_playwright   # a test dependency: pip install -e '.[test]'

    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=str(executable), args=ARGS, headless=True)
    except Exception:
        playwright.stop()
        raise
    browser._autointerp_playwright = playwright
    return browser


def close(browser) -> None:
    """Close a browser from launch() and stop its Playwright driver."""
    playwright = getattr(browser, "_autointerp_playwright", None)
    try:
        browser.close()
    finally:
        if playwright is not None:
            playwright.stop()


def watch(page) -> tuple[object, list[str]]:
    """Record uncaught page errors, console errors and any dialog (alert, confirm, prompt) on `page`.

    Dialogs are dismissed so a page cannot hang the test; each one is recorded as a problem.
    """
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: problems.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None)

    def on_dialog(dialog) -> None:
        problems.append(f"dialog {dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return page, problems


def wait_until(page, expression: str, timeout_s: float = 10.0, interval_s: float = 0.05):
    """Poll a JS expression until it is truthy and return its value.

    Use this instead of page.wait_for_function on pages with a strict Content-Security-Policy:
    Playwright's polling predicate runs through eval(), which script-src 'self' forbids, while
    page.evaluate goes through the DevTools protocol and is not subject to the page's CSP.
    """
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for: {expression} (last value {value!r})")
        time.sleep(interval_s)
