"""The docs' screenshots of ``asymret serve``: the search page after a query image was picked, and the results page
of an evaluation run (its table, plots and worst queries) — taken in headless Chromium, as the browser test does.

    python benchmarks/screenshot_service.py --index runs/demo/default/index/seed0 --query-model runs/demo/query-onnx \\
        --results runs/demo/results --out docs/images/service-search.png --results-out docs/images/service-results.png
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from _common import serving_arguments
from asymret.data import load_dataset
from asymret.service import ServiceConfig, create_app
from asymret.service.browser import headless_chromium
from asymret.service.server import BackgroundServer
from asymret.service.state import png_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    serving_arguments(parser)
    parser.add_argument("--results", type=Path, default=Path("runs/demo/results"))
    parser.add_argument("--query-row", type=int, default=3, help="which query image of the split to search with")
    parser.add_argument("--out", type=Path, default=Path("docs/images/service-search.png"))
    parser.add_argument("--results-out", type=Path, default=Path("docs/images/service-results.png"))
    args = parser.parse_args()
    data = load_dataset(args.dataset).select(split=args.split)
    queries = data.select(role="query").sample(200, seed=0)
    config = ServiceConfig(index=str(args.index), query_model=str(args.query_model), gallery=data, queries=queries,
                           results=str(args.results) if args.results.is_dir() else None)
    query_file = Path(tempfile.mkdtemp()) / "query.png"
    pixels = queries.load(args.query_row)
    query_file.write_bytes(png_bytes(pixels))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with BackgroundServer(create_app(config)) as server:
        browser = headless_chromium(1200, 760)
        try:
            browser.get(server.url + "/")
            WebDriverWait(browser, 30).until(lambda d: "index version" in d.find_element(By.ID, "info").text)
            browser.find_element(By.ID, "file").send_keys(str(query_file))
            WebDriverWait(browser, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) > 0)
            WebDriverWait(browser, 30).until(lambda d: all(
                d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
                for img in d.find_elements(By.CSS_SELECTOR, "#results .result img")))
            browser.save_screenshot(str(args.out))
            print(f"search page → {args.out}")
            if config.results:
                browser.set_window_size(1200, 1400)
                browser.get(server.url + "/results")
                WebDriverWait(browser, 120).until(lambda d: d.find_elements(By.ID, "results-table"))
                browser.save_screenshot(str(args.results_out))
                print(f"results page → {args.results_out}")
        finally:
            browser.quit()


if __name__ == "__main__":
    main()
