"""Browser fixtures: Debian's headless Chromium driven by Playwright's Python package, and the real Label
Studio of the end-to-end tests.

No skips: without Chromium or the playwright package the browser tests fail and say what to install.
Playwright's own browser download (`playwright install`) cannot run on a closed network, so the browser is
the system one: /usr/bin/chromium (apt-get install chromium), or PRELABEL_CHROMIUM.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

# Flags for a closed network: without the background-networking ones Chromium keeps dialing Google's hosts.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    candidates = [
        os.environ.get("PRELABEL_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "no Chromium found: `apt-get install -y chromium` (or set PRELABEL_CHROMIUM to its path)", pytrace=False
    )


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the session."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:  # fail, never skip: the reviewer's view is part of what is tested
        pytest.fail(f"the playwright Python package is missing ({error}): pip install -e '.[test]'", pytrace=False)
    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class Tab:
    """A page in a fresh browser context (no cookies), with the browser console's errors kept for failures."""

    def __init__(self, page: Any):
        self.page = page
        self.console_errors: list[str] = []
        page.on(
            "console", lambda message: self.console_errors.append(message.text) if message.type == "error" else None
        )
        page.on("pageerror", lambda error: self.console_errors.append(f"page error: {error}"))
        page.on(
            "response",
            lambda response: (
                self.console_errors.append(f"HTTP {response.status} {response.url}") if response.status >= 400 else None
            ),
        )


@pytest.fixture
def tab(chromium: Any) -> Iterator[Tab]:
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield Tab(context.new_page())
    finally:
        context.close()
