"""The demo page and the JavaScript client in a real headless Chromium (Debian's chromium and chromium-driver,
driven by Selenium), against a real gateway whose access tokens live 4 seconds and refresh tokens 12.
Refreshes are counted at the gateway (its /metrics), never in the page."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

from tests.processes import ROOT, Running, gateway_raw
from tests.servers import free_port, require_binary, wait_for_port

pytestmark = pytest.mark.stores("embedded")
ACCESS, REFRESH = 4, 12  # seconds: an access token lives 3 to 4 s (exp is whole seconds), room for a slow machine
SCREENSHOT = ROOT / "docs" / "demo.png"  # written when GATEWAY_UPDATE_SCREENSHOT=1 (the README shows it)


class Demo:
    """upstream_stub (serving the demo page, in demo mode) behind a gateway with short-lived tokens."""

    def __init__(self, folder: Path, *, rotate: bool) -> None:
        self.stub_port = free_port()
        raw = gateway_raw(f"http://127.0.0.1:{self.stub_port}", folder)
        raw["jwt"].update({"access_ttl": f"{ACCESS}s", "refresh_ttl": f"{REFRESH}s", "rotate_refresh_tokens": rotate})
        raw["routes"].append({"path": "/demo", "upstream": "news", "auth": "public"})
        raw["admin"] = {"port": free_port()}
        raw["cors"] = {"allow_origins": [f"http://127.0.0.1:{self.stub_port}"]}  # the page served by the stub itself
        self.admin = f"http://127.0.0.1:{raw['admin']['port']}"
        log = folder / "gateway.log"
        log.touch()
        self.stub = subprocess.Popen([sys.executable, "-m", "upstream_stub", "--port", str(self.stub_port),
                                      "--demo-log", str(log)], cwd=ROOT)
        wait_for_port(self.stub_port)
        self.gateway = Running(folder, raw)
        self.url = self.gateway.url

    def refreshes(self) -> float:
        text = requests.get(f"{self.admin}/metrics", timeout=10).text
        lines = [line for line in text.splitlines() if line.startswith('gateway_refreshes_total{result="ok"}')]
        return float(lines[0].split()[1]) if lines else 0.0

    def stop(self) -> None:
        self.gateway.stop()
        self.stub.terminate()
        self.stub.wait(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_binary("chromium", "chromium")
    driver_binary = require_binary("chromedriver", "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = require_binary("chromium", "chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,900",
                     "--disable-gpu", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_binary), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Callable[..., Demo]]:
    made: list[Demo] = []

    def make(*, rotate: bool = False) -> Demo:
        folder = tmp_path / f"demo{len(made)}"
        folder.mkdir()
        made.append(Demo(folder, rotate=rotate))
        return made[-1]

    yield make
    for one in made:
        one.stop()


def until(condition: Callable[[], Any], within: float = 10) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("the page did not get there in time")


def log_in(browser: Any, url: str, mobile: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(url)
    browser.execute_script("localStorage.clear()")
    browser.get(url)
    field = browser.find_element(By.ID, "mobile")
    field.clear()
    field.send_keys(mobile)
    browser.find_element(By.ID, "send-code").click()
    until(lambda: len(browser.find_element(By.ID, "code").get_attribute("value")) == 6)
    browser.find_element(By.ID, "login").click()
    until(lambda: browser.find_element(By.ID, "session").is_displayed())


def call(browser: Any) -> str:
    """Click "Call", and the status the page shows for it (set when the call ends, answered or refused)."""
    from selenium.webdriver.common.by import By

    result = browser.find_element(By.ID, "result")
    browser.execute_script("arguments[0].dataset.status = ''", result)
    browser.find_element(By.ID, "call").click()
    return str(until(lambda: result.get_attribute("data-status")))


# Runs in the page: the client module, with the page's storage (the tokens the page logged in with).
PARALLEL = """
const done = arguments[arguments.length - 1];
import('/demo/toutiao-gateway.js').then(async ({createClient}) => {
  const client = createClient({baseUrl: arguments[0]});
  const answers = await Promise.all(Array.from({length: 10}, () => client.fetch('/v1_0/user/profile')));
  done(answers.map((r) => r.status));
}).catch((e) => done(String(e)));
"""


def test_the_demo_page_logs_in_calls_and_renews_the_access_token(browser: Any, demo: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    site = demo()
    log_in(browser, f"{site.url}/demo/", "13912340001")
    assert call(browser) == "200"
    assert '"name": "user' in browser.find_element(By.ID, "result").text
    before = site.refreshes()
    time.sleep(ACCESS + 0.5)  # the access token has expired
    assert call(browser) == "200"  # after exactly one refresh
    assert site.refreshes() == before + 1
    until(lambda: browser.find_element(By.ID, "renewals").text == "1")
    shot = SCREENSHOT if os.environ.get("GATEWAY_UPDATE_SCREENSHOT") else tmp_path / "demo.png"
    browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # ten calls that fail together: one refresh, counted at the gateway
    time.sleep(ACCESS + 0.5)
    before = site.refreshes()
    assert browser.execute_async_script(PARALLEL, "") == [200] * 10
    assert site.refreshes() == before + 1


def test_two_tabs_with_rotation_refresh_at_once_and_stay_logged_in(browser: Any, demo: Any) -> None:
    site = demo(rotate=True)
    log_in(browser, f"{site.url}/demo/", "13912340002")
    first = browser.current_window_handle
    browser.switch_to.new_window("tab")
    browser.get(f"{site.url}/demo/")  # the same origin: the same localStorage, so logged in here too
    second = browser.current_window_handle
    time.sleep(ACCESS + 0.5)
    before = site.refreshes()
    # The first tab's refresh is held up for a second: the second tab's calls come while it is under way.
    # Without Web Locks the second would spend the same refresh token (two refreshes at the gateway).
    start = "window.__answers = null; const slow = arguments[0];" \
            "import('/demo/toutiao-gateway.js').then(async ({createClient}) => {" \
            "const c = createClient({fetch: (url, init) => (slow && init && init.method === 'PUT')" \
            "  ? new Promise((ok) => setTimeout(ok, 1000)).then(() => fetch(url, init)) : fetch(url, init)});" \
            "const r = await Promise.all([c.fetch('/v1_0/user/profile'), c.fetch('/v1_0/articles')]);" \
            "window.__answers = r.map((x) => x.status); });"
    for handle, slow in ((first, True), (second, False)):  # both tabs start before either is answered
        browser.switch_to.window(handle)
        browser.execute_script(start, slow)
    for handle in (first, second):
        browser.switch_to.window(handle)
        assert until(lambda: browser.execute_script("return window.__answers")) == [200, 200]
    # Web Locks: the second tab waited for the first tab's refresh and used its tokens
    assert site.refreshes() == before + 1
    browser.switch_to.window(second)
    browser.close()
    browser.switch_to.window(first)


def test_a_dead_refresh_token_or_a_logout_brings_back_the_login_form(browser: Any, demo: Any) -> None:
    from selenium.webdriver.common.by import By

    site = demo()
    log_in(browser, f"{site.url}/demo/", "13912340003")
    time.sleep(REFRESH + 0.5)  # both tokens have expired
    assert call(browser) == "403"  # the refresh endpoint's answer, as LoginRequiredError
    until(lambda: browser.find_element(By.ID, "login-form").is_displayed())
    assert "log in" in browser.find_element(By.ID, "message").text.lower()
    assert browser.execute_script("return localStorage.getItem('toutiao-gateway:tokens')") is None
    # logged out in another tab: this one shows the login form too (the storage event)
    log_in(browser, f"{site.url}/demo/", "13912340003")
    first = browser.current_window_handle
    browser.switch_to.new_window("tab")
    browser.get(f"{site.url}/demo/")
    browser.find_element(By.ID, "logout").click()
    until(lambda: browser.find_element(By.ID, "login-form").is_displayed())
    browser.close()
    browser.switch_to.window(first)
    until(lambda: browser.find_element(By.ID, "login-form").is_displayed())


def test_a_page_on_another_origin_that_cors_allows_logs_in_and_calls(browser: Any, demo: Any) -> None:
    site = demo()
    # the page as the stub serves it on its own origin, calling the gateway on another
    log_in(browser, f"http://127.0.0.1:{site.stub_port}/demo/?gateway={site.url}", "13912340004")
    assert call(browser) == "200"
    time.sleep(ACCESS + 0.5)
    before = site.refreshes()
    assert call(browser) == "200"
    assert site.refreshes() == before + 1
