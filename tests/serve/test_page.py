"""The page at ``/`` in a real headless browser (Playwright driving Debian's chromium): pick an image, wait for the
top-5 bars, check the predicted class and that the class activation map rendered; the token is typed into the
page's prompt. ``RESNETKIT_UPDATE_SCREENSHOT=1`` also writes the screenshot the docs show, docs/img/serve_page.png."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from resnetkit.data.decode import decode_image

from .conftest import TOKEN

CAT = Path(__file__).with_name("cat.jpg")  # CIFAR-10 training image train/cat/4997.jpg (32x32 JPEG)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "serve_page.png"

sync_api = pytest.importorskip("playwright.sync_api", reason="the test extra: pip install playwright")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (.ci/run installs Debian's)")


def test_the_page_shows_bars_the_map_and_the_card(server, classifier, tmp_path):
    want = classifier.predictor.predict(decode_image(CAT.read_bytes()), 5)
    assert want[0][0] == "cat"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 420})
            page.on("dialog", lambda dialog: dialog.accept(TOKEN))  # the server asks for its token
            page.goto(server.url + "/")
            page.wait_for_selector("#card tr", timeout=20_000)
            assert "cifar_resnet20" in page.inner_text("#card") and "87.24% top-1" in page.inner_text("#card")
            page.set_input_files("#file", str(CAT))
            page.wait_for_function("document.querySelectorAll('#bars .bar').length === 5", timeout=20_000)
            names = page.locator("#bars .name").all_inner_texts()
            assert names[0] == "cat" and names == [name for name, _ in want]
            shown = float(page.locator("#bars .prob").first.inner_text().rstrip("%"))
            assert shown == pytest.approx(100 * want[0][1], abs=0.051)
            page.wait_for_function("document.getElementById('cam').naturalWidth > 0", timeout=30_000)
            assert page.evaluate("document.getElementById('cam').naturalWidth") == 32
            assert want[0][0] in page.inner_text("#cam-caption")
            assert page.inner_text("#status") == ""
            shot = tmp_path / "serve_page.png"
            page.screenshot(path=str(shot))
            if os.environ.get("RESNETKIT_UPDATE_SCREENSHOT", "") not in ("", "0"):
                SCREENSHOT.parent.mkdir(exist_ok=True)
                shutil.copyfile(shot, SCREENSHOT)
        finally:
            browser.close()
