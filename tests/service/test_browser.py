"""The search page end to end in headless Chromium (Debian's chromium + chromium-driver, driven by selenium — no
browser is downloaded): pick a query image, see the top-k thumbnails the index returns, rejected items marked."""
from __future__ import annotations

import os

import numpy as np
import pytest

from asymret.core.space import Embeddings
from asymret.encoders import load_encoder
from asymret.index import load_index
from asymret.service import ServiceConfig, create_app
from asymret.service.browser import headless_chromium
from asymret.service.state import png_bytes

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

@pytest.fixture
def browser():
    try:
        driver = headless_chromium()
    except RuntimeError as error:  # scripts/setup.sh installs it: missing is a broken set-up, not a skip
        pytest.fail(str(error))
    yield driver
    driver.quit()


def test_upload_an_image_and_see_the_top_k_thumbnails(service_files, make_live_server, browser, tmp_path):
    config = ServiceConfig(index=str(service_files.index_a), query_model=str(service_files.encoder), gallery=service_files.gallery)
    server = make_live_server(create_app(config))
    row = 7
    pixels = service_files.gallery.load(row)
    query_file = tmp_path / "query.png"
    query_file.write_bytes(png_bytes(pixels))
    index = load_index(service_files.index_a)
    vector = load_encoder(service_files.encoder).embed_images([pixels])
    expected = index.search(Embeddings(vector, np.array(["q"]), index.space), k=5).ids[0].tolist()
    rejected = set(index.ids[index.rejected_mask(reject_fraction=0.3)].tolist())

    browser.get(server.url + "/")
    WebDriverWait(browser, 20).until(lambda d: "index version 1" in d.find_element(By.ID, "info").text)
    browser.find_element(By.ID, "k").clear()
    browser.find_element(By.ID, "k").send_keys("5")
    browser.find_element(By.ID, "reject").clear()
    browser.find_element(By.ID, "reject").send_keys("30")
    browser.find_element(By.ID, "file").send_keys(str(query_file))
    WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) == 5)
    cards = browser.find_elements(By.CSS_SELECTOR, "#results .result")
    assert [card.get_attribute("data-id") for card in cards] == expected
    assert expected[0] == service_files.gallery.ids[row]  # the query's own gallery image comes first
    marked = [card.get_attribute("data-id") for card in cards if "rejected" in card.get_attribute("class").split()]
    assert marked == [item for item in expected if item in rejected]
    # every thumbnail really loaded: the browser decoded the PNG the service returned
    WebDriverWait(browser, 20).until(lambda d: all(
        d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
        for img in d.find_elements(By.CSS_SELECTOR, "#results .result img")))
    assert "5 results" in browser.find_element(By.ID, "status").text
    if os.environ.get("ASYMRET_SCREENSHOT"):
        browser.save_screenshot(os.environ["ASYMRET_SCREENSHOT"])


def test_a_bad_upload_shows_the_services_error(service_files, make_live_server, browser, tmp_path):
    config = ServiceConfig(index=str(service_files.index_a), query_model=str(service_files.encoder))
    server = make_live_server(create_app(config))
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"this is text")
    browser.get(server.url + "/")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    WebDriverWait(browser, 20).until(lambda d: "422" in d.find_element(By.ID, "status").text)
    assert "not an image format" in browser.find_element(By.ID, "status").text
    assert browser.find_elements(By.CSS_SELECTOR, "#results .result") == []
