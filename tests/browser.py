"""A real headless browser for the report tests: Debian's chromium driven by its
chromium-driver through selenium, every request it makes recorded through the DevTools
protocol and any request off this machine blocked."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")


@dataclass
class Page:
    """A page opened in chromium: run JavaScript on it, see what it requested."""

    driver: Any

    def js(self, script: str) -> Any:
        return self.driver.execute_script(script)

    def requests(self) -> list[str]:
        """Every URL the page asked for since it was opened (the page itself included)."""
        urls = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
        return urls

    def screenshot(self, path: Path) -> None:
        height = self.js("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1400, min(int(height) + 20, 8000))
        path.parent.mkdir(parents=True, exist_ok=True)
        assert self.driver.save_screenshot(str(path)), f"chromium wrote no screenshot to {path}"


@contextlib.contextmanager
def open_page(path: Path) -> Iterator[Page]:
    if not (CHROMIUM and DRIVER):
        pytest.fail("chromium and chromium-driver are needed: scripts/setup.sh installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                "--disable-background-networking", "--no-first-run"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        # Anything but the file itself and inline data would be a fetch: block it, and the
        # recorded requests still show it was tried.
        blocked = ["http://*", "https://*", "ws://*", "wss://*", "ftp://*"]
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": blocked})
        driver.get(path.resolve().as_uri())
        yield Page(driver)
    finally:
        driver.quit()
