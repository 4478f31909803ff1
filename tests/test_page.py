"""The server's page at `/`, in headless Chromium: submit a prompt, watch the canvas fill in,
and find the final text equal to the same request's solo decode. Skips without Chromium and its
driver (`make setup` installs them with apt when it can). UNMASK_SCREENSHOT=path saves a picture.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

pytest.importorskip("fastapi", reason="fastapi not installed (the serve extra)")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (dev extra)")
if not (
    shutil.which("chromedriver") and (shutil.which("chromium") or shutil.which("chromium-browser"))
):
    pytest.skip("chromium and chromium-driver are not installed", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402

from unmask.generate import generate  # noqa: E402
from unmask.models.load import load  # noqa: E402
from unmask.recipe import parse  # noqa: E402
from unmask.serve import build_app, running  # noqa: E402
from unmask.tasks import get_task  # noqa: E402

PROMPT = get_task("arith").samples("test", 1)[0].prompt


def test_the_page_draws_a_request_denoising():
    lm = load("tiny-llada")
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"):
        opts.add_argument(arg)
    with running(build_app(lm, "tiny-llada")) as url:
        driver = webdriver.Chrome(options=opts)
        try:
            _denoise_on_the_page(driver, url, lm)
        finally:
            driver.quit()


def _denoise_on_the_page(driver, url: str, lm) -> None:
    driver.get(url + "/")
    box = driver.find_element(By.ID, "prompt")
    box.clear()
    box.send_keys(PROMPT)
    driver.find_element(By.ID, "recipe").clear()
    driver.find_element(By.ID, "recipe").send_keys("vanilla")
    driver.find_element(By.ID, "go").click()
    deadline = time.time() + 60
    while "done" not in driver.find_element(By.ID, "status").text:
        assert time.time() < deadline, driver.find_element(By.ID, "status").text
        time.sleep(0.1)
    cells = driver.find_elements(By.CSS_SELECTOR, "#canvas .cell")
    assert len(cells) == 64
    filled = [c for c in cells if c.get_attribute("title")]
    assert len(filled) == 64  # every position revealed, each at a step, with a confidence
    want = generate(lm, PROMPT, parse("vanilla"), gen_len=64)[0].text
    assert driver.find_element(By.ID, "text").text == want
    shot = os.environ.get("UNMASK_SCREENSHOT")
    if shot:
        driver.save_screenshot(shot)
