"""The web explorer (GET /), served by the real service and driven in a real headless Chromium.

Debian's ``chromium`` and ``chromium-driver`` (``make browser``) through selenium; where
they are missing the browser test skips and says how to install them.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import httpx
import pytest

from serving.explorer import FILES, PREFIX
from tests.serving_helpers import running_service

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").is_file() else None
WAIT_S = 30


@pytest.fixture(scope="module")
def service_url(exported_repo, tmp_path_factory):
    log = tmp_path_factory.mktemp("explorer") / "service.log"
    with running_service(exported_repo, log=log) as url:
        yield url


def test_page_files_ship_in_the_package():
    """The page's files are package data, found in an installed wheel as in the checkout."""
    for name in FILES:
        assert resources.files("serving").joinpath("explorer", name).read_bytes()
    page = resources.files("serving").joinpath("explorer", "index.html").read_text()
    # No CDN: everything the page loads is the service's own.
    assert "http://" not in page and "https://" not in page
    for name in FILES:
        if name != "index.html":
            assert f'"{PREFIX}{name}"' in page


def test_static_routes(service_url):
    """Only the shipped files, with their content types and caching; nothing else."""
    with httpx.Client(base_url=service_url, timeout=10) as client:
        for path, name in [("/", "index.html"), *((PREFIX + n, n) for n in FILES)]:
            answer = client.get(path)
            assert answer.status_code == 200, path
            assert answer.headers["content-type"] == FILES[name]
            assert answer.headers["cache-control"] == "no-cache"
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert (
                answer.content == resources.files("serving").joinpath("explorer", name).read_bytes()
            )
            again = client.get(path, headers={"if-none-match": answer.headers["etag"]})
            assert again.status_code == 304 and again.content == b""
            head = client.head(path)
            assert head.status_code == 200 and head.content == b""
        for path in [
            "/explorer/",
            "/explorer/app.py",
            "/explorer/../app.py",
            "/explorer/%2e%2e/app.py",
        ]:
            answer = client.get(path)
            assert answer.status_code == 404, path
            assert "error" in answer.json()
        assert client.post("/").status_code == 405
        # "/" is one page, not a prefix: unknown paths are still the API's 404.
        assert "no such endpoint" in client.get("/nope").json()["error"]


def _driver():
    if CHROMIUM is None or DRIVER is None:
        pytest.skip(
            "no headless browser: Chromium and /usr/bin/chromedriver are missing; "
            "`make browser` installs Debian's chromium and chromium-driver"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,1500")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver is named, so selenium never tries to download one.
    return webdriver.Chrome(service=Service(DRIVER), options=options)


@pytest.fixture(scope="module")
def browser():
    driver = _driver()
    try:
        yield driver
    finally:
        driver.quit()


def _errors(driver) -> list[str]:
    """The console's errors since the last call (the log is drained as it is read)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _draw(driver, pad_id: str, strokes: list[tuple[int, int]]) -> None:
    """One pointer stroke on a pad: press at the first offset, move by the others."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    pad = driver.find_element(By.ID, pad_id)
    (x, y), *moves = strokes
    chain = ActionChains(driver).move_to_element_with_offset(pad, x, y).click_and_hold()
    for dx, dy in moves:
        chain = chain.move_by_offset(dx, dy)
    chain.release().perform()


def _wait(driver, script: str, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    status = "document.getElementById('status').textContent"
    try:
        return WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script(script))
    except Exception as error:
        raise AssertionError(
            f"{what} within {WAIT_S} s; status: {driver.execute_script('return ' + status)!r}; "
            f"console: {_errors(driver)}"
        ) from error


SEVEN = [(-60, -70), (110, 0), (-70, 150)]  # a "7": the bar, then the stem
ONE = [(0, -80), (0, 160)]
INK = """
const c = document.getElementById(arguments[0]);
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i];
return s > 0;
"""


def test_explorer_in_chromium(browser, service_url, tmp_path):
    """Loads clean, shows samples, reconstructs and scores a drawing, fills a pad from the
    keyboard, shows the service's errors."""
    from selenium.webdriver.common.by import By

    browser.get(service_url + "/")
    _wait(
        browser,
        "const i = document.getElementById('samples'); return i.complete && i.naturalWidth > 0",
        "no sample grid",
    )
    assert _errors(browser) == [], "console errors while loading the page"

    _draw(browser, "pad-a", SEVEN)
    browser.find_element(By.ID, "analyse-a").click()
    score = (
        "return Number.isFinite(parseFloat(document.getElementById('log-likelihood').textContent))"
    )
    _wait(browser, score, "no likelihood score")
    assert browser.execute_script(INK, "reconstruction"), "the reconstruction is blank"
    assert browser.find_element(By.ID, "reconstruction").is_displayed()
    assert float(browser.find_element(By.ID, "log-likelihood").text) < 0
    # A version exported before score references were recorded has none (a 404, which
    # Chromium logs): the page says so with the service's message instead of a percentile.
    reference = httpx.get(service_url + "/v1/score/reference", timeout=10)
    percentile = browser.find_element(By.ID, "percentile").text
    if reference.status_code == 200:
        assert percentile.endswith("%") or "every test image" in percentile, percentile
        assert _errors(browser) == [], "console errors while reconstructing and scoring"
    else:
        assert reference.status_code == 404 and percentile == "no reference"
        caption = browser.find_element(By.ID, "histogram-caption").text
        assert reference.json()["error"] in caption
        errors = _errors(browser)
        assert len(errors) == 1 and "/v1/score/reference" in errors[0] and "404" in errors[0]
    shot = tmp_path / "explorer.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 0

    # Interpolating needs both drawings: the page says so instead of sending a blank B.
    browser.find_element(By.ID, "interpolate").click()
    _wait(browser, "return !document.getElementById('status').hidden", "no message for a blank B")
    assert "pad B" in browser.find_element(By.ID, "status").text
    _draw(browser, "pad-b", ONE)
    browser.find_element(By.ID, "interpolate").click()
    _wait(
        browser,
        "const i = document.getElementById('strip'); "
        "return !i.hidden && i.complete && i.naturalWidth > 0",
        "no interpolation strip",
    )
    assert browser.find_element(By.ID, "status").get_attribute("hidden")

    # Without a pointer: pad A cleared, filled with a sampled digit and analysed, all
    # from the keyboard (Enter on each focused button).
    from selenium.webdriver.common.keys import Keys

    before = browser.find_element(By.ID, "log-likelihood").text
    browser.find_element(By.ID, "clear-a").send_keys(Keys.ENTER)
    assert not browser.execute_script(INK, "pad-a"), "pad A is not blank after Clear A"
    browser.find_element(By.ID, "fill-a").send_keys(Keys.ENTER)
    _wait(browser, INK.replace("arguments[0]", "'pad-a'"), "no sampled digit on pad A")
    browser.find_element(By.ID, "analyse-a").send_keys(Keys.ENTER)
    changed = f"return document.getElementById('log-likelihood').textContent !== {before!r}"
    _wait(browser, changed, "no score for the sampled digit")
    assert float(browser.find_element(By.ID, "log-likelihood").text) < 0
    assert _errors(browser) == [], "console errors while sampling into a pad"

    # A value the service refuses: its own message reaches the page.
    temperature = browser.find_element(By.ID, "temperature")
    temperature.clear()
    temperature.send_keys("20")
    browser.find_element(By.ID, "sample").click()
    _wait(browser, "return !document.getElementById('status').hidden", "no error shown")
    status = browser.find_element(By.ID, "status")
    assert status.get_attribute("role") == "alert"
    assert "temperature must be a number in (0, 10], got 20" in status.text
