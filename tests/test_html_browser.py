"""The HTML pages in a real browser: headless Chromium through Selenium, JavaScript on and off.

Each page is opened from ``file://``, must render (a screenshot that is not blank), show
its findings, leak tree and heap-map rows in the DOM, and log no console error.  Without
Chromium these tests skip, saying how to install it, except under ``CI=true``, where a
missing browser is a failure (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import shutil
import zlib
from pathlib import Path
from typing import Any, Iterator

import pytest

import memguard
from memguard.reporting.html import render_html, render_pytest_html

from hostile_program import EVIL_NAME, hostile_report

INSTALL = ("headless Chromium is not installed: apt-get install -y chromium chromium-driver "
           "(and pip install -e '.[test]' for selenium)")


def _missing() -> str:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return INSTALL
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return INSTALL
    return ""


def _require_browser() -> None:
    reason = _missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)


def _driver(javascript: bool) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1600"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    service = Service(executable_path=shutil.which("chromedriver") or "chromedriver")
    return webdriver.Chrome(service=service, options=options)


@pytest.fixture(params=[True, False], ids=["js-on", "js-off"])
def browser(request: pytest.FixtureRequest) -> Iterator[tuple[Any, bool]]:
    _require_browser()
    driver = _driver(request.param)
    driver.set_page_load_timeout(60)
    try:
        yield driver, request.param
    finally:
        driver.quit()


def not_blank(png: bytes) -> bool:
    """Whether a PNG screenshot shows more than one colour (its inflated rows hold many distinct bytes)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    data, pos = b"", 8
    while pos < len(png):
        length = int.from_bytes(png[pos : pos + 4], "big")
        kind = png[pos + 4 : pos + 8]
        if kind == b"IDAT":
            data += png[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return len(set(zlib.decompress(data))) > 16


def errors(driver: Any) -> list[Any]:
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def test_exit_report_renders_with_and_without_javascript(browser: tuple[Any, bool], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver, javascript = browser
    heap = memguard.GuardedHeap(on_error="report", name="browser")
    try:
        result, blocks = hostile_report(heap, "html")
        page = tmp_path / "report.html"
        page.write_text(render_html(result))
        driver.get(page.as_uri())
        assert EVIL_NAME in driver.title
        findings = driver.find_elements(By.CSS_SELECTOR, "details.mg-finding")
        assert len(findings) == len(result.reports) and findings[0].is_displayed()
        assert "heap-buffer-overflow" in findings[0].text
        tree = driver.find_element(By.ID, "mg-leaks")
        assert tree.is_displayed() and EVIL_NAME in tree.text
        rows = driver.find_elements(By.CSS_SELECTOR, "svg.mg-heapmap g.mg-row")
        assert len(rows) == sum(len(m.rows) for m in result.heap_maps) and rows[0].is_displayed()
        # The filter box exists only when the page's script ran; the program's never runs.
        assert len(driver.find_elements(By.ID, "mg-filter")) == (1 if javascript else 0)
        assert not errors(driver)
        assert not_blank(driver.get_screenshot_as_png())
        blocks.close()
    finally:
        heap.close(check=False)


def test_heapmap_svg_and_defrag_page_render(browser: tuple[Any, bool], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver, _ = browser
    with memguard.BlockAllocator(page_size=8192, name="tex") as blocks:
        allocations = [blocks.allocate(64 + 37 * (i % 11)) for i in range(200)]
        for a in allocations[::3]:
            blocks.free(a)
        svg = memguard.heapmap(blocks, tmp_path / "blocks.svg")
        memguard.defrag_snapshot(blocks, tmp_path / "defrag.html")
        for a in blocks.allocations():
            blocks.free(a)
    driver.get(Path(svg).as_uri())
    assert driver.find_elements(By.CSS_SELECTOR, "g.mg-row")
    assert not_blank(driver.get_screenshot_as_png())
    driver.get((tmp_path / "defrag.html").as_uri())
    maps = driver.find_elements(By.CSS_SELECTOR, "svg.mg-heapmap")
    assert len(maps) == 2
    assert "byte(s) moved" in driver.find_element(By.TAG_NAME, "body").text
    assert not errors(driver)
    assert not_blank(driver.get_screenshot_as_png())


def test_skip_reason_says_how_to_install() -> None:
    assert "apt-get install -y chromium chromium-driver" in INSTALL


def _pytest_doc() -> dict[str, Any]:
    def leak(name: str, size: int, count: int) -> dict[str, Any]:
        return {"stack": [{"filename": f"{name}.py", "lineno": 1, "name": name}], "size": size, "count": count,
                "addresses": []}

    tests = [
        {"nodeid": "t.py::mid", "leaked_bytes": 500, "allocations": 7, "peak_bytes": 900},
        {"nodeid": "t.py::none", "leaked_bytes": 0, "allocations": 30, "peak_bytes": 10},
        {"nodeid": "t.py::most", "leaked_bytes": 70000, "allocations": 1, "peak_bytes": 70000, "failed": True,
         "reason": "leak", "leaks": [leak("alpha", 70000, 1)]},
        {"nodeid": "t.py::" + EVIL_NAME, "leaked_bytes": 20, "allocations": 2, "peak_bytes": 40},
    ]
    session = {"failed": True, "reason": "leaks outside any test",
               "leaks": [leak("big", 100, 1), leak("many", 50, 5), leak("aaa_few", 10, 2)]}
    return {"tests": tests, "session": session, "totals": {"tests": 4}}


def test_pytest_page_sorts_with_javascript_and_reads_without(browser: tuple[Any, bool], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver, javascript = browser
    heap = memguard.GuardedHeap(on_error="report", name="pytest-page")
    try:
        keep = [heap.malloc(n) for n in (16, 300, 9000)]
        page = tmp_path / "pytest.html"
        page.write_text(render_pytest_html(_pytest_doc(), [heap.layout_map(width=1000)]))
        heap.free(keep[0])
    finally:
        heap.close(check=False)
    driver.get(page.as_uri())

    def tests() -> list[str]:
        return [r.find_element(By.TAG_NAME, "code").text.split("::")[1]
                for r in driver.find_elements(By.CSS_SELECTOR, "#mg-tests tr.mg-test")]

    def sites() -> list[str]:
        tree = driver.find_elements(By.CSS_SELECTOR, ".mg-tree")[-1]
        return [d.get_attribute("data-site").split()[0] for d in tree.find_elements(By.XPATH, "./details")]

    run_order = ["mid", "none", "most", EVIL_NAME]
    assert tests() == run_order and EVIL_NAME in driver.title + driver.find_element(By.ID, "mg-tests").text
    assert sites() == ["big", "many", "aaa_few"]  # by bytes, without script too
    rows = driver.find_elements(By.CSS_SELECTOR, "#mg-maps svg.mg-heapmap g.mg-row")
    assert rows and rows[0].is_displayed()
    buttons = driver.find_elements(By.CSS_SELECTOR, "button.mg-sort")
    if not javascript:
        assert not buttons and not driver.find_elements(By.CLASS_NAME, "mg-sortbar")
    else:
        def header(text: str) -> Any:
            return driver.find_element(By.XPATH, f"//table[@id='mg-tests']//th/button[text()='{text}']")

        header("leaked").click()
        assert tests() == ["most", "mid", EVIL_NAME, "none"]
        assert header("leaked").find_element(By.XPATH, "..").get_attribute("aria-sort") == "descending"
        header("leaked").click()
        assert tests() == ["none", EVIL_NAME, "mid", "most"]
        header("allocations").click()
        assert tests() == ["none", "mid", EVIL_NAME, "most"]
        header("test").click()
        assert tests()[0] == EVIL_NAME  # "<" sorts before letters
        bar = driver.find_elements(By.CSS_SELECTOR, ".mg-sortbar")[-1]
        bar.find_element(By.XPATH, "./button[text()='blocks']").click()
        assert sites() == ["many", "aaa_few", "big"]
        bar.find_element(By.XPATH, "./button[text()='site']").click()
        assert sites() == ["aaa_few", "big", "many"]
        bar.find_element(By.XPATH, "./button[text()='bytes']").click()
        assert sites() == ["big", "many", "aaa_few"]
    assert not errors(driver)
    assert not_blank(driver.get_screenshot_as_png())
