"""The web page in a real headless Chromium (Debian's package, driven by Playwright).

Set ``RNNLAB_SCREENSHOT=path.png`` to keep the screenshot (``docs/serve-page.png`` was made so).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def page(server):
    if CHROMIUM is None:
        pytest.skip("no chromium binary on PATH (apt-get install chromium; .ci/run installs it)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        # Script errors (thrown or logged); Chromium's own "Failed to load resource" line for a
        # refused request is not one: the page shows those errors itself.
        console_errors: list[str] = []
        page.on(
            "console",
            lambda m: (
                console_errors.append(m.text)
                if m.type == "error" and not m.text.startswith("Failed to load resource")
                else None
            ),
        )
        page.on("pageerror", lambda exc: console_errors.append(str(exc)))
        page.goto(server.url)
        page.console_errors = console_errors  # type: ignore[attr-defined]
        yield page
        browser.close()


def test_translate_with_heatmap_tag_and_errors(page, tmp_path: Path):
    expect = sync_api.expect
    page.select_option("#model", "reverse")
    expect(page.locator("#translate-panel")).to_be_visible()
    page.fill("#translate-input", "a b c d\nh g")
    page.fill("#beam", "3")
    page.fill("#n-best", "2")
    page.click("#translate-button")
    translations = page.locator("#translate-output .translation .text")
    expect(translations).to_have_text(["d c b a", "g h"])
    expect(page.locator("#translate-output ol.nbest").first.locator("li")).to_have_count(2)
    heatmap = page.locator("#translate-output table.heatmap").first
    expect(heatmap).to_be_visible()
    # One row per output token plus <eos>, one column per source token plus <eos>.
    expect(heatmap.locator("tbody tr")).to_have_count(5)
    expect(heatmap.locator("tbody tr").first.locator("td")).to_have_count(5)
    expect(page.locator("#error")).to_be_hidden()

    # An API error is shown in the page.
    page.fill("#beam", "1")
    page.click("#translate-button")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text("n_best must be between 1 and beam (1)")
    page.fill("#n-best", "1")
    page.click("#translate-button")
    expect(page.locator("#error")).to_be_hidden()
    page.fill("#beam", "3")
    page.fill("#n-best", "2")
    page.click("#translate-button")
    expect(translations).to_have_text(["d c b a", "g h"])
    translate_shot = page.locator("#translate-panel").screenshot()

    page.select_option("#model", "pos")
    expect(page.locator("#tag-panel")).to_be_visible()
    expect(page.locator("#translate-panel")).to_be_hidden()
    page.fill("#tag-input", "The dog ate the apple .")
    page.click("#tag-button")
    tokens = page.locator("#tag-output .token")
    expect(tokens).to_have_count(6)
    tags = [tokens.nth(i).get_attribute("data-tag") for i in range(6)]
    assert all(tags)
    expect(page.locator("#tag-legend .token")).to_have_count(len(set(tags)))
    # The same tag has the same colour in the sentence and in the legend.
    first = tokens.first
    legend = page.locator(f'#tag-legend .token[data-tag="{tags[0]}"]')
    colour = first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert legend.evaluate("e => getComputedStyle(e).backgroundColor") == colour

    page.select_option("#model", "tm")
    page.fill("#prefix", "the quick")
    page.fill("#length", "10")
    page.fill("#temperature", "0")
    page.click("#generate-button")
    expect(page.locator("#generate-output")).to_have_text("the quick brown fox")
    assert page.console_errors == []  # type: ignore[attr-defined]

    # The screenshot: the translator with its heatmap.
    page.select_option("#model", "reverse")
    page.click("#translate-button")
    expect(translations).to_have_text(["d c b a", "g h"])
    shot = Path(os.environ.get("RNNLAB_SCREENSHOT") or tmp_path / "page.png")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000 and translate_shot
