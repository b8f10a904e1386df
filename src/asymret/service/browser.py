"""Headless Chromium for the page's end-to-end test and the docs' screenshots: Debian's ``chromium`` and
``chromium-driver`` driven by selenium (scripts/setup.sh installs both; nothing downloads a browser)."""
from __future__ import annotations

import shutil

__all__ = ["headless_chromium"]


def headless_chromium(width: int = 1200, height: int = 900):
    """A selenium ``webdriver.Chrome`` on the system's Chromium; RuntimeError naming what is missing."""
    from selenium import webdriver

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (binary and driver):
        raise RuntimeError("headless Chromium needs Debian's chromium and chromium-driver (scripts/setup.sh installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    # --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(argument)
    chrome = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=options)
    chrome.set_page_load_timeout(30)
    return chrome
