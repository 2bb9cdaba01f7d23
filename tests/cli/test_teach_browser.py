"""The protocol page, played in a real browser by clicking, as a reader would.

The expected states, abort counts and rules are the protocol's (PROTOCOL-NOTES
and the upstream adapter tests), written out here, not read from the page's data.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from browser import BROWSER_INSTALL, WAIT_SECONDS, chromium
from dynamo_backend_protocol.reference.cli import main
from optional_tools import require_commands, require_modules

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_commands("dot", install="apt-get install graphviz")
    target = tmp_path_factory.mktemp("teach") / "protocol.html"
    assert main(["teach", "-o", str(target)]) == 0
    return target


@pytest.fixture(scope="module")
def browser(page: Path) -> Iterator[WebDriver]:
    require_commands("chromium", "chromedriver", install=BROWSER_INSTALL)
    require_modules("selenium", install=BROWSER_INSTALL)
    with chromium() as driver:
        yield driver


def open_page(browser: WebDriver, page: Path, machine: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(page.as_uri())
    ready = WebDriverWait(browser, WAIT_SECONDS)
    ready.until(lambda driver: driver.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    Select(browser.find_element(By.ID, "machine")).select_by_value(machine)


def click(browser: WebDriver, event: str) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, f'button[data-event="{event}"]').click()


def shown(browser: WebDriver) -> tuple[str, str, str]:
    """(state, abort count, last rule) as the page shows them."""
    from selenium.webdriver.common.by import By

    return tuple(browser.find_element(By.ID, name).text for name in ("state-name", "var-aborts", "last-rule"))  # type: ignore[return-value]


def lit(browser: WebDriver, highlight: str) -> list[str]:
    """The ids of the diagram elements the page has highlighted this way."""
    from selenium.webdriver.common.by import By

    elements = browser.find_elements(By.CSS_SELECTOR, f"#diagram .{highlight}")
    return [element.get_attribute("id") or "" for element in elements]


def edge_parts(edge: str) -> set[str]:
    """What draws an edge: its first half, its label and its second half (with the arrowhead)."""
    return {f"{edge}-in", f"{edge}-label", edge}


def logged_rules(browser: WebDriver) -> list[str]:
    """The deciding rule of each step in the page's step list."""
    from selenium.webdriver.common.by import By

    steps = browser.find_elements(By.CSS_SELECTOR, "#log li")
    return [step.find_element(By.CSS_SELECTOR, "a.rule").text for step in steps]


DECODE_STOP_THEN_TOKEN = [
    ("setup", ("Streaming", "0", "STREAM-SETUP")),
    ("stop", ("CancelPending", "0", "DECODE-DEFER")),
    ("empty_chunk", ("CancelPending", "0", "DECODE-FIRST-TOKEN")),
    ("token_chunk", ("Aborted", "1", "DECODE-DEFER")),
    ("terminal:cancelled", ("Done", "1", "STREAM-TERMINAL-LAST")),
]
AGG_STOP_THEN_CANCELLED = [
    ("setup", ("Streaming", "0", "STREAM-SETUP")),
    ("stop", ("Aborted", "1", "ABORT-IMMEDIATE")),
    ("terminal:cancelled", ("Done", "1", "STREAM-TERMINAL-LAST")),
]


@pytest.mark.parametrize(
    ("machine", "steps"),
    [("decode", DECODE_STOP_THEN_TOKEN), ("agg", AGG_STOP_THEN_CANCELLED)],
    ids=["decode-stop-before-first-token", "agg-stop-then-cancelled-terminal"],
)
def test_clicking_through_a_scenario_shows_each_state_abort_count_and_rule(
    browser: WebDriver, page: Path, machine: str, steps: list[tuple[str, tuple[str, str, str]]]
) -> None:
    """Decode holds the abort until a chunk with tokens (a token-less one does not
    release it); agg aborts at the stop and still forwards the cancelled terminal."""
    open_page(browser, page, machine)
    assert shown(browser) == ("Idle", "0", "none yet")
    for event, expected in steps:
        click(browser, event)
        assert shown(browser) == expected, event
        assert lit(browser, "current") == [f"state-{expected[0]}"]
    assert logged_rules(browser) == [expected[2] for _, expected in steps]


def test_a_forbidden_event_is_a_disabled_button_naming_its_rule(browser: WebDriver, page: Path) -> None:
    """Before setup no engine item can arrive (STREAM-EVENT-ORDER); after the
    terminal nothing more is read (STREAM-TERMINAL-LAST)."""
    from selenium.webdriver.common.by import By

    open_page(browser, page, "decode")
    chunk = browser.find_element(By.CSS_SELECTOR, 'button[data-event="token_chunk"]')
    assert not chunk.is_enabled()
    assert chunk.get_attribute("data-rule") == "STREAM-EVENT-ORDER"
    browser.find_element(By.CSS_SELECTOR, "#forbidden summary").click()
    why = browser.find_element(By.ID, chunk.get_attribute("aria-describedby") or "")
    assert why.text == "forbidden by STREAM-EVENT-ORDER"
    for event in ("setup", "token_chunk", "terminal:stop"):
        click(browser, event)
    chunk = browser.find_element(By.CSS_SELECTOR, 'button[data-event="token_chunk"]')
    assert not chunk.is_enabled() and chunk.get_attribute("data-rule") == "STREAM-TERMINAL-LAST"


def test_back_forward_and_keys_walk_the_steps_taken(browser: WebDriver, page: Path) -> None:
    """A reader can step back to compare, forward again, and do both from the keyboard."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    open_page(browser, page, "decode")
    browser.find_element(By.CSS_SELECTOR, 'button[data-event="setup"]').send_keys(Keys.ENTER)
    assert shown(browser)[0] == "Streaming"
    for event in ("stop", "token_chunk"):
        click(browser, event)
    assert set(lit(browser, "last")) == edge_parts("edge-CancelPending-Aborted")
    browser.find_element(By.ID, "back").click()
    assert shown(browser) == ("CancelPending", "0", "DECODE-DEFER")
    assert set(lit(browser, "last")) == edge_parts("edge-Streaming-CancelPending")
    browser.find_element(By.ID, "forward").click()
    assert shown(browser) == ("Aborted", "1", "DECODE-DEFER")
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.ARROW_LEFT)
    body.send_keys(Keys.ARROW_LEFT)
    assert shown(browser)[0] == "Streaming"
    body.send_keys(Keys.ESCAPE)
    assert shown(browser) == ("Idle", "0", "none yet")


def test_a_loaded_scenario_replays_step_by_step(browser: WebDriver, page: Path) -> None:
    """Loading the side-channel scenario queues its events; Forward plays them."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_page(browser, page, "decode")
    Select(browser.find_element(By.ID, "scenario")).select_by_value("side-channel-first-token")
    browser.find_element(By.ID, "replay").click()
    assert shown(browser) == ("Idle", "0", "none yet")
    for _ in range(3):
        browser.find_element(By.ID, "forward").click()
    assert shown(browser) == ("Aborted", "1", "DECODE-DEFER")


def test_the_engine_lifecycle_can_be_played_too(browser: WebDriver, page: Path) -> None:
    """generate before start is refused (LIFECYCLE-START-FIRST); start then succeeds into Running."""
    from selenium.webdriver.common.by import By

    open_page(browser, page, "lifecycle")
    generate = browser.find_element(By.CSS_SELECTOR, 'button[data-event="generate"]')
    assert not generate.is_enabled() and generate.get_attribute("data-rule") == "LIFECYCLE-START-FIRST"
    for event in ("start_called", "start_ok"):
        click(browser, event)
    assert browser.find_element(By.ID, "state-name").text == "Running"
    assert browser.find_element(By.CSS_SELECTOR, 'button[data-event="generate"]').is_enabled()


def test_the_page_fetches_nothing(browser: WebDriver, page: Path) -> None:
    """Offline means offline: after loading and a few clicks the browser has
    requested no resource besides the page itself."""
    open_page(browser, page, "decode")
    for event in ("setup", "stop", "token_chunk"):
        click(browser, event)
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0


def png_pixels(png: bytes) -> bytes:
    """The decompressed image data of a PNG (filter bytes included)."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    data, offset = b"", 8
    while offset < len(png):
        length, kind = struct.unpack(">I4s", png[offset:offset + 8])
        if kind == b"IDAT":
            data += png[offset + 8:offset + 8 + length]
        offset += 12 + length
    return zlib.decompress(data)


def test_the_page_renders_something_visible(browser: WebDriver, page: Path) -> None:
    """A script error or a missing diagram leaves a blank page; a drawn one has many colours."""
    open_page(browser, page, "decode")
    click(browser, "setup")
    pixels = png_pixels(browser.get_screenshot_as_png())
    assert len(set(pixels)) > 50
    assert max(pixels.count(value) for value in set(pixels)) < 0.97 * len(pixels)


def test_forbidden_events_wait_behind_one_control_that_says_how_many_and_why(browser: WebDriver, page: Path) -> None:
    """In Idle most events are forbidden, all by STREAM-EVENT-ORDER: the event panel shows the allowed ones
    as buttons and one closed control for the rest; after setup the chunks move out of it."""
    from selenium.webdriver.common.by import By

    open_page(browser, page, "decode")
    allowed = browser.find_elements(By.CSS_SELECTOR, "#events button")
    forbidden = browser.find_elements(By.CSS_SELECTOR, "#forbidden-events button")
    assert allowed and all(button.is_enabled() for button in allowed)
    assert "setup" in [button.get_attribute("data-event") for button in allowed]
    assert not any(button.is_displayed() for button in forbidden), "the forbidden events are not collapsed"
    assert len(forbidden) >= 10 and not any(button.is_enabled() for button in forbidden)
    summary = browser.find_element(By.CSS_SELECTOR, "#forbidden summary").text
    assert summary == f"{len(forbidden)} events forbidden here, by STREAM-EVENT-ORDER"
    click(browser, "setup")
    moved = [button.get_attribute("data-event") for button in browser.find_elements(By.CSS_SELECTOR, "#events button")]
    assert "token_chunk" in moved
    every = [button.get_attribute("data-event")
             for button in browser.find_elements(By.CSS_SELECTOR, "button[data-event]")]
    assert len(every) == len(set(every)), "a machine chosen earlier left its buttons behind"


def test_the_diagram_text_is_readable(browser: WebDriver, page: Path) -> None:
    """Scaled to fit its pane the decode diagram's 12 pt text shrank to about 8 px; it now stays at least
    three quarters of its size (about 12 px), the pane scrolling sideways if it must."""
    open_page(browser, page, "decode")
    smallest = browser.execute_script("""
        const sizes = [...document.querySelectorAll("#diagram svg text")].map(
            (text) => parseFloat(text.getAttribute("font-size")) * text.getScreenCTM().a);
        return Math.min(...sizes);
    """)
    assert smallest >= 11, smallest


def test_the_current_state_is_scrolled_into_view(browser: WebDriver, page: Path) -> None:
    """At a readable size the diagram can be wider than its pane: the state the request is in stays shown."""
    open_page(browser, page, "decode")
    for event in ("setup", "stop", "token_chunk"):
        click(browser, event)
    inside = browser.execute_script("""
        const pane = document.getElementById("diagram").getBoundingClientRect();
        const node = document.querySelector("#diagram .current").getBoundingClientRect();
        return node.left >= pane.left - 1 && node.right <= pane.right + 1;
    """)
    assert inside
