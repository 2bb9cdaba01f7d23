"""Take the README's screenshot of the protocol page: decode mode, stopped before
its first token, after a token-less chunk and then a token.

Run from the repository root with the test extra installed and Debian's
chromium + chromium-driver present:  python spec/diagrams/teach-screenshot.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from browser import WAIT_SECONDS, chromium  # noqa: E402
from dynamo_backend_protocol.reference.cli import main  # noqa: E402


def take(target: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    with tempfile.TemporaryDirectory() as scratch:
        page = Path(scratch) / "protocol.html"
        if main(["teach", "-o", str(page), "--spec", str(ROOT / "spec" / "protocol.md")]) != 0:
            raise SystemExit("teach failed")
        with chromium() as browser:
            browser.get(page.as_uri())
            ready = WebDriverWait(browser, WAIT_SECONDS)
            ready.until(lambda driver: driver.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
            Select(browser.find_element(By.ID, "machine")).select_by_value("decode")
            for event in ("setup", "stop", "empty_chunk", "token_chunk"):
                browser.find_element(By.CSS_SELECTOR, f'button[data-event="{event}"]').click()
            target.write_bytes(browser.get_screenshot_as_png())
    print(f"wrote {target}")


if __name__ == "__main__":
    take(ROOT / "spec" / "diagrams" / "teach-page.png")
