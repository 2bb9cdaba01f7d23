"""Headless Chromium for the tests that drive the protocol page (and the README screenshot).

Debian's ``chromium`` and ``chromium-driver`` (installed by ``.ci/run``) are
driven by Selenium; nothing is downloaded: the driver's path is given, and
Selenium Manager is told to stay offline.  The flags keep Chromium from
reaching for the network (this runs on closed machines as root).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

BROWSER_INSTALL = "apt-get install chromium chromium-driver; pip install selenium"
WAIT_SECONDS = 10
"""Bound on every wait for the page: loading, scripts, a command."""

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1500,1000",
)


@contextmanager
def chromium() -> Iterator[WebDriver]:
    """A fresh headless Chromium with its own profile, quit (and its profile removed) afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")
    profile = tempfile.mkdtemp(prefix="dbp-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in (*_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)
    try:
        driver.set_page_load_timeout(WAIT_SECONDS)
        driver.set_script_timeout(WAIT_SECONDS)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
