"""The status page in a real headless Chromium: the operator logs in, sees the campaign and
its chart, filters the decision log by verdict with the form, and the page's own
Content-Security-Policy blocks nothing of it.

The database holds a realistic day of one campaign, judged by the real inbound use case
at the times the messages arrived: ordinary senders all day, two flooders and a forum raid,
replies sent (and billed) under the caps. With RELOUS_SCREENSHOT=PATH the test saves the
page as its 1280×1600 window shows it there (the README's docs/status-page.png).
"""

from __future__ import annotations

import base64
import os
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from ingest import create_app
from shared.rules.abuse import load_lexicon
from shared.rules.messages import SendResult, SentPart
from shared.settings import Settings
from shared.store.budgets import set_budget
from shared.store.campaigns import find_campaign
from shared.store.db import database_for
from shared.store.replies import claim_batch, record_send, start_sending
from shared.vonage.webhooks import parse_inbound
from tests.helpers import SECRET_KEY, inbound
from tests.workers.defences import senders
from workers.inbound import Keys, judge_batch
from workers.replay.scenarios import FLOOD_TEXTS, SLOGANS, _ordinary_text

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PASSWORD = "browser-status-password"
CAMPAIGN = "33700000001"
PRICE = Decimal("0.0333")


def _day_of_traffic(now: datetime) -> list[tuple[datetime, str, str]]:
    """(time, number, text) over the last 24 h: 90 ordinary senders (5 of them in the last
    minutes), two flooders (40 messages in 4 minutes each) and a raid (70 new numbers in 5
    minutes, 1-3 slogans each)."""
    rng = random.Random(13)
    events = [(now - timedelta(minutes=rng.uniform(0.5, 4)), number, _ordinary_text(rng))
              for number in senders(5, 24)]
    for number in senders(90, 21):
        start = now - timedelta(minutes=rng.uniform(3, 23.5 * 60))
        for _ in range(rng.randint(1, 2)):
            events.append((start + timedelta(minutes=rng.uniform(0, 20)), number,
                           _ordinary_text(rng)))
    for number, hours in zip(senders(2, 22), (6, 1.5), strict=True):
        start = now - timedelta(hours=hours)
        events += [(start + timedelta(seconds=rng.uniform(0, 240)), number,
                    rng.choice(FLOOD_TEXTS)) for _ in range(40)]
    raid = now - timedelta(hours=3)
    for number in senders(70, 23):
        first = raid + timedelta(seconds=rng.uniform(0, 300))
        events += [(first + timedelta(minutes=rng.uniform(0, 10) * index), number,
                    rng.choice(SLOGANS)) for index in range(rng.randint(1, 3))]
    return sorted(event for event in events if event[0] < now)


def seed_day(now: datetime) -> None:
    """Judge the day minute by minute through the inbound use case, and send what is due
    half a minute later (the last 5 minutes' replies stay pending)."""
    lexicon = load_lexicon()
    by_minute: dict[datetime, list[tuple[datetime, str, str]]] = {}
    for event in _day_of_traffic(now):
        by_minute.setdefault(event[0].replace(second=0, microsecond=0), []).append(event)
    with database_for(os.environ["DATABASE_URL"]).transaction() as tx:
        set_budget(tx, CAMPAIGN, now - timedelta(days=1), hourly=Decimal("2"),
                   daily=Decimal("10"), total=Decimal("50"))
        campaign_id = find_campaign(tx, CAMPAIGN).id
        for _, events in sorted(by_minute.items()):
            at = max(event[0] for event in events)
            batch = [parse_inbound(inbound(
                msisdn=number, to=CAMPAIGN, text=text,
                **{"message-timestamp": when.strftime("%Y-%m-%d %H:%M:%S")}))
                for when, number, text in events]
            judge_batch(tx, batch, Keys(SECRET_KEY), at, lexicon)
            send_at = at + timedelta(seconds=30)
            if send_at > now - timedelta(minutes=5):
                continue
            for reply in claim_batch(tx, campaign_id, send_at, 50):
                start_sending(tx, reply, send_at)
                record_send(tx, reply, SendResult(
                    "sent", parts=(SentPart(f"V{reply.id}", PRICE),), segments=1),
                    send_at, None)
        tx.execute("UPDATE replies SET status = 'delivered' WHERE status = 'sent'"
                   " AND id % 4 <> 0")


@pytest.fixture
def served(db, campaign) -> Iterator[str]:
    """The real app on a free port, over a seeded day."""
    campaign(CAMPAIGN)
    seed_day(datetime.now(UTC))
    settings = Settings.from_env().with_overrides(status_password=PASSWORD)
    server = make_server("127.0.0.1", 0, create_app(settings, configure_logs=False),
                         threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)


@pytest.fixture
def browser() -> Iterator:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (/usr/bin/chromium, "
                    "/usr/bin/chromedriver; .ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1280,1600"):
        options.add_argument(argument)
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _log_in(driver) -> None:
    """Basic credentials on every request of the session (reliable in new Chromium, where
    credentials in the URL are not sent to subresources or form submissions)."""
    token = base64.b64encode(f"operator:{PASSWORD}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                           {"headers": {"Authorization": f"Basic {token}"}})


def test_the_operator_logs_in_sees_the_campaign_and_filters_the_log(browser, served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 30)
    _log_in(browser)
    browser.get(f"{served}/status")
    section = wait.until(seen.visibility_of_element_located((By.ID, f"campaign-{CAMPAIGN}")))
    assert section.find_element(By.CLASS_NAME, "number").text == CAMPAIGN
    assert int(browser.find_element(By.ID, f"c{CAMPAIGN}-day-suppress").text) > 50
    assert int(browser.find_element(By.ID, f"c{CAMPAIGN}-day-block").text) > 40
    assert int(browser.find_element(By.ID, f"c{CAMPAIGN}-reply-delivered").text) > 0
    chart = section.find_element(By.CSS_SELECTOR, "img.chart")
    assert int(chart.get_property("naturalWidth")) == 1000, "the data: PNG was drawn"
    verdicts = {cell.text for cell in browser.find_elements(
        By.CSS_SELECTOR, "#log tr.decision td.verdict")}
    assert {"reply", "suppress", "block"} <= verdicts
    if os.environ.get("RELOUS_SCREENSHOT"):
        Path(os.environ["RELOUS_SCREENSHOT"]).parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(os.environ["RELOUS_SCREENSHOT"])

    Select(browser.find_element(By.ID, "verdict-filter")).select_by_value("suppress")
    browser.find_element(By.CSS_SELECTOR, "#filter button[type=submit]").click()
    wait.until(seen.url_contains("verdict=suppress"))
    wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, "#log tr.decision")))
    rows = browser.find_elements(By.CSS_SELECTOR, "#log tr.decision td.verdict")
    assert rows and {cell.text for cell in rows} == {"suppress"}
    assert Select(browser.find_element(By.ID, "verdict-filter")) \
        .first_selected_option.text == "suppress"
    assert browser.find_element(By.ID, f"campaign-{CAMPAIGN}").is_displayed()
    refused = [entry["message"] for entry in browser.get_log("browser")
               if "Content Security Policy" in entry["message"]]
    assert not refused, "the page's own style or chart was blocked"
