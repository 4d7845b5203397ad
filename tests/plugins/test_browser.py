"""The Leadflow page and a run's Summary tab in a real browser, through Airflow's own UI.

An ``airflow api-server`` of ``make run``'s shape (simple auth manager, plugins/ as the plugins
folder, SQLite) serves the session's metadata DB; headless Debian ``chromium`` driven by Selenium
logs in as ``make run``'s admin, opens Leadflow in the nav and the Summary tab of a real
``interaction_reports`` run (``dag.test``), and reads the numbers out of the iframes the UI draws.
They must equal a count over the ledger documents seeded here and the run's XCom.
Screenshots land in the test's tmp folder (docs/images/leadflow-page.png is one of them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pymongo
import pytest
import requests

from devstack import clients
from devstack.airflow_home import LOCAL_PASSWORD, LOCAL_USER, airflow_env
from devstack.run import sync_dags
from devstack.seed import IST, SeedSpec, seed_database
from devstack.services import free_port
from tests.conftest import AIRFLOW_HOME
from tests.helpers import load_dag, task_states, xcom_value

pytestmark = pytest.mark.slow

NOW = datetime.now(UTC)
TODAY = NOW.astimezone(IST).date()
YESTERDAY = TODAY - timedelta(days=1)
# The run of 21:00 covers 20:00-21:00, the last hour of the seeded day: it has sessions to write.
REPORT_HOUR = datetime(YESTERDAY.year, YESTERDAY.month, YESTERDAY.day, 21, tzinfo=IST)
WAIT_S = 60
APT_PACKAGES = ("chromium", "chromium-driver", "fonts-dejavu-core")
CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,1100")


def _browser_packages() -> tuple[str, str]:
    """Debian's chromium and chromedriver; installed with apt-get when missing (as root)."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(
        [
            "apt-get",
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "chromium",
            "chromium-driver",
            "fonts-dejavu-core",
        ],
        check=True,
        env=env,
        timeout=1200,
    )
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert browser, "apt-get installed chromium but it is not on PATH"
    assert driver, "apt-get installed chromium-driver but chromedriver is not on PATH"
    return browser, driver


def _ledger_docs() -> list[dict[str, Any]]:
    """Today's and yesterday's follow-ups, as the DAGs leave them (no phone number, no text kept)."""
    today = NOW - timedelta(minutes=5)
    yesterday = datetime(YESTERDAY.year, YESTERDAY.month, YESTERDAY.day, 15, tzinfo=IST).astimezone(UTC)
    usage = {"model": "gpt-4o-mini", "prompt_tokens": 400, "completion_tokens": 60, "total_tokens": 460}
    pricing = {"category": "utility", "type": "regular", "pricing_model": "PMP", "billable": True}
    rows = [
        ("sent", None, None, None, {"status": "read", "pricing": pricing}, usage, today),
        ("sent", None, None, None, {"status": "delivered", "pricing": pricing}, usage, today),
        ("sent", None, None, "openai_error", {"status": "sent"}, None, today),
        ("skipped", "expired", None, None, None, None, today),
        ("skipped", "opted_out", None, None, None, None, today),
        ("failed", "send_failed", "131026", None, None, usage, today),
        ("dead_lettered", "invalid_phone", None, None, None, None, today),
        ("unknown_outcome", None, "timeout", None, None, usage, today),
        ("sent", None, None, None, {"status": "read"}, usage, yesterday),
    ]
    docs = []
    for n, (state, reason, code, fallback, delivery, openai_usage, at) in enumerate(rows):
        doc = {
            "_id": f"site_visit_reminder:{9000 + n}:{at.isoformat()}",
            "event_type": "site_visit_reminder",
            "user_id": str(9000 + n),
            "state": state,
            "reason": reason,
            "error_code": code,
            "text_source": "template" if fallback else "openai",
            "fallback_reason": fallback,
            "openai_usage": openai_usage,
            "created_at": at,
            "updated_at": at,
        }
        if delivery:
            doc["delivery"] = delivery
        docs.append(doc)
    return docs


@pytest.fixture(scope="module")
def served(stack, airflow_settings) -> Iterator[dict[str, Any]]:
    from airflow.models import Variable

    from leadflow.messaging.ledger import INDEXES as LEDGER_INDEXES
    from leadflow.mongo_indexes import ensure_indexes

    with pymongo.MongoClient(stack.mongo_uri, tz_aware=True) as client:
        client.drop_database("leadflow")
    clients.reset(stack.control_url("sheets"))
    clients.set_settings(stack.control_url("sheets"), quota=None)
    for key in ("leadflow_session_report_spreadsheet_id", "leadflow_consolidated_report_spreadsheet_id"):
        Variable.delete(key)
    end = datetime(YESTERDAY.year, YESTERDAY.month, YESTERDAY.day, 21, tzinfo=IST)
    seed_database(stack.mongo_uri, SeedSpec(interactions=300, seed=7, end=end, days=1))
    run = load_dag("interaction_reports").test(logical_date=REPORT_HOUR)
    assert run.state == "success", task_states(run)
    docs = _ledger_docs()
    with pymongo.MongoClient(stack.mongo_uri, tz_aware=True) as client:
        db = client.leadflow
        ensure_indexes(db)
        db.followup_deliveries.create_indexes(LEDGER_INDEXES)
        db.followup_deliveries.insert_many(docs)
    sync_dags()

    port = free_port()
    env = {**os.environ, **airflow_env(AIRFLOW_HOME, api_port=port)}
    log = (AIRFLOW_HOME / "api-server-browser-test.log").open("ab")
    server = subprocess.Popen(
        [sys.executable, "-m", "airflow", "api-server", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, f"api-server exited; see {log.name}"
            try:
                if requests.get(f"{base}/api/v2/version", timeout=2).status_code in (200, 401):
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"api-server not up in 180 s; see {log.name}"
            time.sleep(1)
        yield {"base": base, "run": run, "docs": docs}
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(served) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _browser_packages()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1500,1100",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        _log_in(driver, served["base"])
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, css: str) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
        )
    except TimeoutException:
        raise AssertionError(f"no {css} at {driver.current_url}:\n{driver.page_source[:3000]}") from None


def _log_in(driver: Any, base: str) -> None:
    """The simple auth manager's login form, as a person fills it in after `make run`."""
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{base}/")
    _wait(driver, "input[name=username]").send_keys(LOCAL_USER)
    password = _wait(driver, "input[name=password]")
    password.send_keys(LOCAL_PASSWORD)
    password.send_keys(Keys.RETURN)
    WebDriverWait(driver, WAIT_S).until(lambda d: "/auth/login" not in d.current_url and d.title.startswith("Home"))


def _plugin_frame(driver: Any, url: str, ready_css: str, screenshot: Path) -> None:
    """Open a UI page holding a plugin view and switch into the view's iframe."""
    driver.switch_to.default_content()
    driver.get(url)
    frame = _wait(driver, "iframe")
    driver.switch_to.frame(frame)
    _wait(driver, ready_css)
    driver.switch_to.default_content()
    driver.save_screenshot(str(screenshot))
    driver.switch_to.frame(frame)


def _value(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).get_attribute("data-value")


def test_the_leadflow_page_shows_the_ledgers_numbers(served, browser, tmp_path: Path) -> None:
    _plugin_frame(browser, f"{served['base']}/plugin/leadflow", "#funnel", tmp_path / "leadflow-page.png")
    # Counted here from the seeded documents, per IST day of creation.
    by_day: dict[str, Counter[str]] = {}
    for doc in served["docs"]:
        count = by_day.setdefault(doc["created_at"].astimezone(IST).date().isoformat(), Counter())
        count[doc["state"]] += 1
        count["delivered"] += (doc.get("delivery") or {}).get("status") in ("delivered", "read")
        count["read"] += (doc.get("delivery") or {}).get("status") == "read"
        count["fallbacks"] += bool(doc["fallback_reason"])
        count["reminders_expired"] += doc["state"] == "skipped" and doc["reason"] == "expired"
        count["total_tokens"] += (doc["openai_usage"] or {}).get("total_tokens", 0)
    for day in (TODAY.isoformat(), YESTERDAY.isoformat()):
        for name in ("sent", "delivered", "read", "failed", "skipped", "dead_lettered", "unknown_outcome", "fallbacks"):
            assert _value(browser, f"f-{name}-{day}") == str(by_day[day][name]), (name, day)
        assert _value(browser, f"f-reminders_expired-{day}") == str(by_day[day]["reminders_expired"]), day
        assert _value(browser, f"f-total_tokens-{day}") == str(by_day[day]["total_tokens"]), day
    assert _value(browser, "b-failed_by_code-131026") == "1"
    assert _value(browser, "b-billable_by_category-utility") == "2"
    assert _value(browser, "dlq-reason-invalid_phone") == "1"
    page = browser.page_source
    assert "9000" not in page.replace("site_visit_reminder:9000", "")  # no user detail beyond ids
    assert (tmp_path / "leadflow-page.png").stat().st_size > 20_000


def test_a_report_runs_summary_tab_shows_its_xcom(served, browser, tmp_path: Path) -> None:
    run = served["run"]
    url = f"{served['base']}/dags/{run.dag_id}/runs/{quote(run.run_id, safe='')}/plugin/leadflow-summary"
    _plugin_frame(browser, url, "#task-finish", tmp_path / "summary-tab.png")
    finish = xcom_value(run, "finish")
    assert finish["touched_sessions"] > 0, "the seeded hour wrote nothing: the tab would show no report"
    assert _value(browser, "s-finish-touched_sessions") == str(finish["touched_sessions"])
    assert _value(browser, "s-finish-window.start") == finish["window"]["start"]
    for report in ("session_report", "consolidated_report"):
        for key in ("rows_added", "rows_updated"):
            assert _value(browser, f"s-finish-{report}.{key}") == str(finish[report][key]), (report, key)
    assert (tmp_path / "summary-tab.png").stat().st_size > 10_000
