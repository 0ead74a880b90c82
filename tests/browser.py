"""The real browser the web-page tests drive: Debian's Chromium through Playwright."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.harness import REPO

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; `make deps-system` installs it


def require_chromium() -> ModuleType:
    """Playwright's sync API, or skip the calling module (fail under CI) without Chromium."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: `make deps-system` installs it", pytrace=False)
        pytest.skip(f"no {CHROMIUM} (run `make deps-system`)", allow_module_level=True)
    return pytest.importorskip("playwright.sync_api")


# WebGL in software, for the viewer's Cornerstone3D viewports on machines without a GPU.
SOFTWARE_GL = ["--use-gl=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]


def launch(playwright: Any) -> Any:
    """Headless Chromium with software WebGL; as root (CI containers) without the
    sandbox it refuses to run in."""
    args = SOFTWARE_GL + (["--no-sandbox"] if os.geteuid() == 0 else [])
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)


def screenshots() -> Path:
    """Where screenshots go: ``VETHUB_SCREENSHOTS``, else tests/artifacts (gitignored)."""
    folder = Path(os.environ.get("VETHUB_SCREENSHOTS") or REPO / "tests" / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def watched_page(browser: Any, width: int = 1280, height: int = 900) -> tuple[Any, list[str]]:
    """A new page, and the list its Content-Security-Policy violations are collected in
    (a console page must load nothing the policy blocks)."""
    page = browser.new_page(viewport={"width": width, "height": height})
    blocked: list[str] = []

    def note(message: Any) -> None:
        if "Content Security Policy" in message.text:
            blocked.append(message.text)

    page.on("console", note)
    return page, blocked


# The console's pages refresh themselves with htmx `hx-trigger="every 15s"`.
CONSOLE_POLL_MS = 15_000


def await_poll(page: Any, locator: Any, *, polls: int = 4) -> None:
    """Wait until ``locator`` shows on ``page``, brought by the page's own 15 s poll.

    The page's clock must be installed (``page.clock.install()`` before the first
    ``goto``): each round moves it one poll interval on, so htmx fires the same
    request it would 15 s later, without the test sleeping through the interval.
    """
    for _ in range(polls):
        try:
            locator.first.wait_for(timeout=2_000)
            return
        except Exception as exc:  # playwright's TimeoutError; its module is imported lazily
            if type(exc).__name__ != "TimeoutError":
                raise
        page.clock.fast_forward(CONSOLE_POLL_MS)
    locator.first.wait_for(timeout=2_000)
