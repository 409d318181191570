"""The devhost dashboard (devhost/dashboard/) driven in headless Chromium with Playwright.

Real devhost processes (the patterns app, and the agent app against a fake OpenAI server) and the
real page: every assertion is on what a person sees, plus a check through the management API where
an action from the page must have changed the task hub.

Needs Debian's Chromium (`apt-get install -y chromium`) and `pip install playwright`; the
Playwright-managed browsers (`playwright install`) are never used. Missing either fails loudly.
"""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from conftest import ROOT, DevhostProcess, wait_for_status
from tests.fake_openai import FakeOpenAI

pytestmark = pytest.mark.timeout(180)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run"]
WEBHOOKS = "/runtime/webhooks/durabletask"
JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain"}

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # reported by the browser fixture, so every test fails with the reason
    expect = sync_playwright = None


# ----------------------------------------------------------------------------------------------
# fixtures

@pytest.fixture(scope="module")
def browser():
    if sync_playwright is None:
        pytest.fail("the dashboard tests need Playwright's Python package: "
                    ".venv/bin/pip install playwright (no `playwright install`: the browser "
                    "comes from Debian)", pytrace=False)
    if not Path(CHROMIUM).exists():
        found = shutil.which("chromium")
        pytest.fail(f"the dashboard tests need Chromium at {CHROMIUM} (found: {found}); "
                    "install it with: apt-get update && apt-get install -y chromium",
                    pytrace=False)
    expect.set_options(timeout=10_000)
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    """A fresh page that fails the test on script errors or any request leaving loopback."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    problems: list[str] = []

    def only_local(route):
        url = route.request.url
        if re.match(r"^https?://127\.0\.0\.1(:\d+)?/", url):
            route.continue_()
        else:
            problems.append(f"request leaving the machine: {url}")
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    # 4xx answers the page handles still log "Failed to load resource": not a script error.
    page.on("console", lambda m: problems.append(f"console error: {m.text}")
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    page.on("dialog", lambda dialog: dialog.accept())  # the confirm() of terminate / purge
    yield page
    context.close()
    assert not problems, problems


# ----------------------------------------------------------------------------------------------
# helpers

def start(host: DevhostProcess, name: str, instance_id: str | None = None) -> str:
    """Through the management API (no input)."""
    path = f"{WEBHOOKS}/orchestrators/{name}"
    if instance_id:
        path += "/" + quote(instance_id, safe="")
    r = host.request("POST", path)
    assert r.status == 202, r
    return r.json()["id"]


def start_with_input(host: DevhostProcess, name: str, payload) -> str:
    """Through the patterns app's own starter (the SDK client's start_new)."""
    r = host.request("POST", f"/api/orchestrators/{name}", json.dumps(payload), JSON)
    assert r.status == 202, r
    return r.json()["id"]


def status(host: DevhostProcess, instance_id: str) -> dict:
    r = host.request("GET", f"{WEBHOOKS}/instances/{quote(instance_id, safe='')}"
                            "?showHistory=true&showHistoryOutput=true")
    assert r.status in (200, 202), r
    return r.json()


def wait_done(host: DevhostProcess, instance_id: str) -> dict:
    """conftest's wait_for_status for ids that need quoting in a URL."""
    deadline = time.time() + 30
    while time.time() < deadline:
        doc = status(host, instance_id)
        if doc["runtimeStatus"] in ("Completed", "Failed", "Terminated"):
            return doc
        time.sleep(0.05)
    raise AssertionError(f"{instance_id} did not finish: {doc}")


def wait_running(host: DevhostProcess, instance_id: str, event_type: str) -> None:
    """Until the orchestrator's first episode is recorded (e.g. its timer or its wait)."""
    deadline = time.time() + 20
    while time.time() < deadline:
        doc = status(host, instance_id)
        if doc["runtimeStatus"] == "Running" and (
                not event_type or any(e["EventType"] == event_type for e in doc["historyEvents"])):
            return
        time.sleep(0.05)
    raise AssertionError(f"{instance_id} did not start running: {doc}")


def dashboard(host: DevhostProcess, route: str = "") -> str:
    return f"{host.base}/_devhost/{route}"


def row_of(page, text: str):
    return page.locator("tbody tr").filter(has_text=text)


def result_message(page):
    return page.get_by_role("status").filter(has=page.locator("p"))


def look_at(page, path: Path) -> None:
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000


# ----------------------------------------------------------------------------------------------
# 1-3: overview, orchestrations, instance detail

def test_overview_list_and_detail(patterns_host, page, tmp_path):
    host = patterns_host
    first = start(host, "chain")
    wait_for_status(host, first)

    page.goto(dashboard(host))
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.locator("#hub-name")).to_have_text("hub PatternsHub")
    expect(page.get_by_role("link", name="1 Completed", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="0 Failed", exact=True)).to_be_visible()
    expect(page.get_by_role("region", name="Pending work")).to_contain_text("Pending activities")
    expect(row_of(page, first)).to_contain_text("Completed")

    # auto-refresh: a second instance shows up without reloading the page
    second = start(host, "chain")
    wait_for_status(host, second)
    expect(page.get_by_role("link", name="2 Completed", exact=True)).to_be_visible()

    # paused, the page stays as it is; resumed, it catches up
    page.get_by_role("button", name="Pause auto-refresh").click()
    expect(page.get_by_text("Auto-refresh paused")).to_be_visible()
    third = start(host, "chain")
    wait_for_status(host, third)
    page.wait_for_timeout(2600)
    expect(page.get_by_role("link", name="2 Completed", exact=True)).to_be_visible()
    page.get_by_role("button", name="Resume auto-refresh").click()
    expect(page.get_by_role("link", name="3 Completed", exact=True)).to_be_visible()

    # the status card links to the filtered list
    page.get_by_role("link", name="3 Completed", exact=True).click()
    expect(page).to_have_url(re.compile(r"#/instances\?status=Completed$"))
    expect(page.get_by_role("checkbox", name="Completed")).to_be_checked()
    expect(page.locator("tbody tr")).to_have_count(3)

    # orchestrations list: status badge, name; filters by status and id prefix
    page.get_by_role("link", name="Orchestrations", exact=True).click()
    expect(page.get_by_role("heading", name="Orchestrations")).to_be_visible()
    expect(page.locator("tbody tr")).to_have_count(3)
    row = row_of(page, first)
    expect(row).to_contain_text("chain")
    expect(row.locator(".badge")).to_have_text("Completed")
    page.get_by_role("checkbox", name="Running").check()
    expect(page.get_by_text("No orchestrations match these filters.")).to_be_visible()
    page.get_by_role("checkbox", name="Running").uncheck()
    page.get_by_label("Instance ID prefix").fill(first[:12])
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(row_of(page, first)).to_have_count(1)
    page.get_by_role("button", name="Clear").click()
    expect(page.locator("tbody tr")).to_have_count(3)

    # paging with the continuation token: 2 + 1
    page.goto(dashboard(host, "#/instances?top=2"))
    expect(page.locator("tbody tr")).to_have_count(2)
    expect(page.get_by_text("Page 1 of 2 · 1–2 of 3 instances")).to_be_visible()
    expect(page.get_by_role("button", name="← Previous")).to_be_disabled()
    page.get_by_role("button", name="Next →").click()
    expect(page.get_by_text("Page 2 of 2 · 3–3 of 3 instances")).to_be_visible()
    expect(page).to_have_url(re.compile(r"#/instances\?top=2&page=2$"))
    expect(page.locator("tbody tr")).to_have_count(1)
    page.get_by_role("button", name="← Previous").click()
    expect(page.get_by_text("Page 1 of 2 · 1–2 of 3 instances")).to_be_visible()

    # instance detail: status, output, the history timeline with durations
    page.goto(dashboard(host, "#/instances"))
    page.get_by_role("link", name=first).click()
    expect(page).to_have_url(re.compile(rf"#/instances/{first}$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text(first)
    expect(page.locator(".facts .badge")).to_have_text("Completed")
    expect(page.get_by_role("region", name="Output")).to_contain_text('"Hello Tokyo!"')
    page.get_by_role("link", name="History", exact=True).click()
    expect(page).to_have_url(re.compile(rf"#/instances/{first}\?tab=history$"))
    history = page.get_by_role("region", name="History").locator("tbody tr")
    expect(history).to_have_count(5)
    completed = history.filter(has_text="TaskCompleted")
    expect(completed).to_have_count(3)
    for i, city in enumerate(["Tokyo", "Seattle", "London"]):
        expect(completed.nth(i)).to_contain_text("say_hello")
        expect(completed.nth(i)).to_contain_text(f"Hello {city}!")
        expect(completed.nth(i).locator("td").nth(3)).to_have_text(re.compile(r"\d+(\.\d+)? (ms|s)"))
    expect(history.first).to_contain_text("ExecutionStarted")
    expect(history.last).to_contain_text("ExecutionCompleted")
    # results are collapsible: open one and read the pretty JSON
    result = completed.first.locator("details", has_text="Result")
    expect(result.locator("pre")).to_be_hidden()
    result.locator("summary").click()
    expect(result.locator("pre")).to_have_text("Hello Tokyo!")
    # a completed instance cannot be terminated; it can be restarted or purged
    expect(page.get_by_role("button", name="Terminate")).to_be_disabled()
    expect(page.get_by_role("button", name="Raise event")).to_be_disabled()
    expect(page.get_by_role("button", name="Restart")).to_be_enabled()
    look_at(page, tmp_path / "instance-detail.png")

    # a narrow window: no sideways scrolling, the timeline becomes cards
    page.set_viewport_size({"width": 390, "height": 844})
    expect(completed.first).to_contain_text("say_hello")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    look_at(page, tmp_path / "instance-detail-narrow.png")
    page.set_viewport_size({"width": 1280, "height": 900})

    # restart from the page: a link to the new instance; purge: the instance is gone
    page.get_by_role("button", name="Restart").click()
    expect(result_message(page)).to_contain_text("Restarted as")
    new_id = result_message(page).get_by_role("link").inner_text()
    assert wait_for_status(host, new_id)["name"] == "chain"
    page.get_by_role("button", name="Purge").click()
    expect(result_message(page)).to_contain_text("Purged 1 instance")
    assert host.request("GET", f"{WEBHOOKS}/instances/{first}").status == 404
    expect(page.get_by_text("No orchestration instance with this id")).to_be_visible()


def test_raise_event_and_lifecycle_actions_from_the_detail_page(patterns_host, page):
    host = patterns_host
    approval = start_with_input(host, "approval", 120)
    wait_running(host, approval, "TimerCreated")

    page.goto(dashboard(host, f"#/instances/{approval}?tab=history"))
    expect(page.locator(".facts .badge")).to_have_text("Running")
    expect(page.get_by_role("button", name="Rewind")).to_be_disabled()
    page.get_by_label("Event name").fill("Approval")
    page.get_by_label("Payload (JSON, optional)").fill("{not json")
    page.get_by_role("button", name="Raise event").click()
    expect(result_message(page)).to_contain_text("the payload is not valid JSON")
    page.get_by_label("Payload (JSON, optional)").fill('{"by": "the dashboard", "ok": true}')
    page.get_by_role("button", name="Raise event").click()
    expect(result_message(page)).to_contain_text("Event “Approval” raised (HTTP 202)")
    doc = wait_for_status(host, approval)
    assert doc["runtimeStatus"] == "Completed"
    assert doc["output"] == {"approved": {"by": "the dashboard", "ok": True}}
    expect(page.locator(".facts .badge")).to_have_text("Completed")
    expect(page.get_by_role("region", name="History")).to_contain_text("EventRaised")
    expect(page.get_by_role("region", name="History")).to_contain_text("Approval")

    # suspend and resume
    waiting = start(host, "long_wait")
    wait_running(host, waiting, "")
    page.goto(dashboard(host, f"#/instances/{waiting}?tab=history"))
    expect(page.locator(".facts .badge")).to_have_text("Running")
    page.get_by_role("button", name="Suspend").click()
    expect(result_message(page)).to_contain_text("Suspend: accepted (HTTP 202)")
    expect(page.locator(".facts .badge")).to_have_text("Suspended")
    assert status(host, waiting)["runtimeStatus"] == "Suspended"
    page.get_by_role("button", name="Resume").click()
    expect(result_message(page)).to_contain_text("Resume: accepted (HTTP 202)")
    expect(page.locator(".facts .badge")).to_have_text("Running")
    assert status(host, waiting)["runtimeStatus"] == "Running"

    # terminate with a reason
    page.get_by_label(re.compile("^Reason")).fill("stopped from the dashboard")
    page.get_by_role("button", name="Terminate").click()
    expect(result_message(page)).to_contain_text("Terminate: accepted (HTTP 202)")
    doc = wait_for_status(host, waiting)
    assert doc["runtimeStatus"] == "Terminated"
    assert doc["output"] == "stopped from the dashboard"
    expect(page.locator(".facts .badge")).to_have_text("Terminated")
    terminated = page.get_by_role("region", name="History").locator("tbody tr",
                                                                     has_text="ExecutionTerminated")
    expect(terminated).to_contain_text("stopped from the dashboard")

    # the API's refusal reaches the person: the page still shows Running (refresh paused)
    # while the instance was terminated behind its back
    other = start(host, "long_wait")
    wait_running(host, other, "")
    page.goto(dashboard(host, f"#/instances/{other}"))
    expect(page.locator(".facts .badge")).to_have_text("Running")
    page.get_by_role("button", name="Pause auto-refresh").click()
    r = host.request("POST", f"{WEBHOOKS}/instances/{other}/terminate?reason=elsewhere")
    assert r.status == 202, r
    page.get_by_role("button", name="Terminate").click()
    expect(result_message(page)).to_contain_text(
        f"Terminate failed: HTTP 410 — instance '{other}' is already Terminated")
    page.get_by_role("button", name="Resume auto-refresh").click()


def test_entities_view_shows_the_counter_state(patterns_host, page):
    host = patterns_host
    doc = wait_for_status(host, start_with_input(host, "counting", "c1"))
    assert doc["output"]["final"] == 31

    page.goto(dashboard(host, "#/entities"))
    expect(page.get_by_role("heading", name="Entities")).to_be_visible()
    row = row_of(page, "counter")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("c1")
    expect(row.locator("td").nth(3)).to_have_text("31")
    row.get_by_role("link", name="c1").click()
    expect(page).to_have_url(re.compile(r"#/entities/counter/c1$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("@counter@c1")
    expect(page.get_by_role("region", name="State").locator("pre")).to_have_text("31")

    # the name filter and an unknown entity
    page.goto(dashboard(host, "#/entities?name=nothing"))
    expect(page.get_by_text("No entities named “nothing”.")).to_be_visible()
    page.goto(dashboard(host, "#/entities/counter/missing"))
    expect(page.get_by_text("This entity has no state")).to_be_visible()


def test_user_data_is_shown_as_text_never_as_markup(patterns_host, page):
    host = patterns_host
    evil = '<img src=x onerror="window.__pwned=1">'
    instance_id = start(host, "long_wait", instance_id=evil)
    wait_running(host, instance_id, "")
    page.goto(dashboard(host, "#/instances"))
    expect(row_of(page, evil)).to_have_count(1)
    expect(page.locator("main img")).to_have_count(0)
    row_of(page, evil).get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(evil)
    page.get_by_label("Event name").fill("Go")
    page.get_by_label("Payload (JSON, optional)").fill(json.dumps("<b>bold</b><script>x()</script>"))
    page.get_by_role("button", name="Raise event").click()
    assert wait_done(host, instance_id)["runtimeStatus"] == "Completed"
    expect(page.get_by_role("region", name="Output")).to_contain_text(
        "Hello <b>bold</b><script>x()</script>!")
    expect(page.locator("main img, main b, main script")).to_have_count(0)
    assert page.evaluate("window.__pwned") is None


def test_master_key_prompt_when_keys_are_enforced(devhost_factory, tmp_path, page):
    flaky = tmp_path / "flaky-keys"
    flaky.mkdir()
    host = devhost_factory("patterns", env={"FLAKY_DIR": str(flaky),
                                            "DEVHOST_MASTER_KEY": "dashboard-master-key"}).start()
    r = host.request("POST", f"{WEBHOOKS}/orchestrators/chain", None,
                     {"x-functions-key": "dashboard-master-key"})
    assert r.status == 202, r
    instance_id = r.json()["id"]
    page.goto(dashboard(host, "#/instances"))
    expect(page.get_by_role("heading", name="Master key needed")).to_be_visible()
    page.get_by_label("Master key").fill("wrong")
    page.get_by_role("button", name="Use key").click()
    expect(page.get_by_role("heading", name="Master key needed")).to_be_visible()
    page.get_by_label("Master key").fill("dashboard-master-key")
    page.get_by_role("button", name="Use key").click()
    expect(row_of(page, instance_id)).to_have_count(1)
    # ?code= on the address works too, and is dropped from the address bar
    fresh = page.context.new_page()
    fresh.goto(f"{host.base}/_devhost/?code=dashboard-master-key#/instances")
    expect(row_of(fresh, instance_id)).to_have_count(1)
    assert "code=" not in fresh.url
    fresh.close()


# ----------------------------------------------------------------------------------------------
# timeline, semantic history, filters in the URL

def timeline_rows(page):
    return page.get_by_role("list", name="Timeline").locator(":scope > li")


def open_bar(row):
    """Click the row's bar (a person clicks the bar to read its input and output)."""
    row.locator(".tl-bar").click()
    return row.locator(".tl-detail")


def payload(detail, title: str):
    """The input/output/error block titled `title` in an opened bar's details."""
    return detail.locator(".tl-payload").filter(
        has=detail.page.get_by_role("heading", name=title, exact=True))


def test_timeline_bars_carry_results_retries_and_failures(patterns_host, page):
    host = patterns_host
    chain = wait_for_status(host, start(host, "chain"))["instanceId"]
    page.goto(dashboard(host, f"#/instances/{chain}"))
    rows = timeline_rows(page)
    expect(rows).to_have_count(3)
    for i, city in enumerate(["Tokyo", "Seattle", "London"]):
        row = rows.nth(i)
        expect(row).to_contain_text("say_hello")
        expect(row).to_contain_text(f"→ Hello {city}!")
        detail = open_bar(row)
        expect(detail.get_by_role("heading", name="Input")).to_be_visible()
        expect(detail).to_contain_text(city)
        expect(payload(detail, "Output").locator("pre")).to_have_text(f"Hello {city}!")
    # the bars share one axis: each later call starts at or after the one before
    boxes = [rows.nth(i).locator(".tl-bar").bounding_box() for i in range(3)]
    assert boxes[0]["x"] <= boxes[1]["x"] <= boxes[2]["x"], boxes
    expect(page.locator(".tl-episodes .tl-episode")).to_have_count(4)

    # two failed attempts and a success: three bars, the failures red with the error
    retried = start_with_input(host, "retrying", {"key": "tl", "fail_times": 2, "attempts": 3})
    assert wait_for_status(host, retried)["output"] == "ok after 3"
    page.goto(dashboard(host, f"#/instances/{retried}"))
    attempts = timeline_rows(page).filter(has=page.locator(".tl-name", has_text="flaky"))
    expect(attempts).to_have_count(3)
    for i in (0, 1):
        expect(attempts.nth(i)).to_have_attribute("data-status", "failed")
        expect(attempts.nth(i)).to_contain_text(f"ValueError: attempt {i + 1} failed")
        color = attempts.nth(i).locator(".tl-bar").evaluate("b => getComputedStyle(b).backgroundColor")
        red, green, blue = map(int, re.findall(r"\d+", color)[:3])
        assert red > 150 and green < 90 and blue < 90, color
    expect(attempts.nth(1)).to_contain_text("attempt 2")
    expect(attempts.nth(2)).to_contain_text("attempt 3")
    expect(attempts.nth(2)).to_contain_text("→ ok after 3")
    expect(timeline_rows(page).filter(has_text="retry delay before attempt")).to_have_count(2)
    error = open_bar(attempts.first)
    expect(payload(error, "Error")).to_contain_text("attempt 1 failed")

    # a durable timer and an external event that arrives while the page is open (live update)
    waiting = start_with_input(host, "approval", 120)
    wait_running(host, waiting, "TimerCreated")
    page.goto(dashboard(host, f"#/instances/{waiting}"))
    timer = timeline_rows(page).filter(has_text="durable timer")
    expect(timer).to_have_attribute("data-status", "waiting")
    page.evaluate("window.__samePage = true")
    r = host.request("POST", f"{WEBHOOKS}/instances/{waiting}/raiseEvent/Approval",
                     json.dumps({"by": "a reviewer", "ok": True}), JSON)
    assert r.status == 202, r
    event = timeline_rows(page).filter(has_text="Approval")
    expect(event).to_contain_text("raised by a reviewer")
    expect(page.locator(".facts .badge")).to_have_text("Completed")
    expect(timer).to_have_attribute("data-status", "cancelled")
    assert page.evaluate("window.__samePage") is True  # updated in place, never reloaded

    # phone-sized: the Gantt still fits, no sideways scrolling
    page.set_viewport_size({"width": 390, "height": 844})
    expect(event).to_contain_text("raised by a reviewer")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.set_viewport_size({"width": 1280, "height": 900})


def test_sub_orchestration_opens_from_the_parent_timeline(patterns_host, page):
    host = patterns_host
    parent = start(host, "parent")
    doc = wait_for_status(host, parent)
    assert doc["output"] == {"chain": ["Hello Tokyo!", "Hello Seattle!", "Hello London!"],
                             "fan_out": 20}
    page.goto(dashboard(host, f"#/instances/{parent}"))
    rows = timeline_rows(page)
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_have_attribute("data-kind", "suborchestration")
    expect(rows.nth(1)).to_contain_text("fan_out")
    expect(rows.nth(1)).to_contain_text("→ 20")
    rows.nth(1).get_by_role("link", name="open ↗").click()
    child = f"{parent}-child"
    expect(page).to_have_url(re.compile(rf"#/instances/{re.escape(child)}$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text(child)
    expect(timeline_rows(page).filter(has_text="double")).to_have_count(5)
    # and back up through the parent link
    page.locator(".facts").get_by_role("link", name=parent).click()
    expect(page).to_have_url(re.compile(rf"#/instances/{parent}$"))
    # the first child (chain) opens from its bar's details too
    detail = open_bar(timeline_rows(page).nth(0))
    detail.get_by_role("link", name=re.compile("^Open sub-orchestration")).click()
    expect(timeline_rows(page).filter(has_text="say_hello")).to_have_count(3)


def test_entity_calls_read_as_operations_with_their_results(patterns_host, page):
    host = patterns_host
    counting = start_with_input(host, "counting", "sem")
    assert wait_for_status(host, counting)["output"]["final"] == 31
    page.goto(dashboard(host, f"#/instances/{counting}"))
    rows = timeline_rows(page)
    expect(rows).to_have_count(6)
    expect(rows.nth(0)).to_have_attribute("data-kind", "signal")
    adds = rows.filter(has=page.locator(".tl-name", has_text="add")).filter(has_text="→")
    expect(adds).to_have_count(3)
    for i, total in enumerate([11, 21, 31]):
        expect(adds.nth(i)).to_contain_text("@counter@sem")
        expect(adds.nth(i)).to_contain_text(f"→ {total}")
    detail = open_bar(adds.first)
    expect(payload(detail, "Request").locator("pre")).to_have_text("10")
    expect(payload(detail, "Result").locator("pre")).to_have_text("11")
    failed = rows.filter(has=page.locator(".tl-name", has_text="fail"))
    expect(failed).to_have_attribute("data-status", "failed")
    expect(failed).to_contain_text("counter refused")

    # the History tab: the same calls as operations, the raw events one click away
    page.get_by_role("link", name="History", exact=True).click()
    history = page.get_by_role("region", name="History").locator("tbody tr")
    calls = history.filter(has=page.locator(".ev-type", has_text=re.compile("^Entity call$")))
    results = history.filter(has=page.locator(".ev-type", has_text=re.compile("^Entity result$")))
    expect(calls).to_have_count(5)
    expect(results).to_have_count(4)
    expect(history.filter(has_text="Entity signal")).to_have_count(1)
    expect(history.filter(has_text="Entity call failed")).to_contain_text("counter refused")
    expect(results.first).to_contain_text("add on @counter@sem")
    expect(results.first).to_contain_text("Result 11")
    raw = results.first.locator("details", has_text="Raw event")
    expect(raw.locator("pre")).to_be_hidden()
    raw.locator("summary").click()
    expect(raw.locator("pre")).to_contain_text('"EventType": "EventRaised"')
    # the entity link leads to its state
    results.first.get_by_role("link", name="@counter@sem").click()
    expect(page.get_by_role("region", name="State").locator("pre")).to_have_text("31")


def test_list_filters_live_in_the_url(patterns_host, page):
    host = patterns_host
    chains = [wait_for_status(host, start(host, "chain", f"keep-{i}"))["instanceId"] for i in range(3)]
    other = wait_for_status(host, start(host, "fan_out", "keep-fan"))["instanceId"]
    running = start(host, "long_wait", "wait-1")
    wait_running(host, running, "")

    page.goto(dashboard(host, "#/instances"))
    expect(page.locator("tbody tr")).to_have_count(5)
    page.get_by_label("Orchestration name").fill("chain")
    page.get_by_label("Instance ID prefix").fill("keep-")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("tbody tr")).to_have_count(3)
    expect(page).to_have_url(re.compile(r"#/instances\?name=chain&prefix=keep-$"))
    page.get_by_role("checkbox", name="Completed").check()
    expect(page).to_have_url(re.compile(r"#/instances\?status=Completed&name=chain&prefix=keep-$"))
    expect(page.get_by_text("1–3 of 3 instances")).to_be_visible()

    # reload: the filters survive (inputs filled, rows filtered)
    page.reload()
    expect(page.get_by_label("Orchestration name")).to_have_value("chain")
    expect(page.get_by_label("Instance ID prefix")).to_have_value("keep-")
    expect(page.get_by_role("checkbox", name="Completed")).to_be_checked()
    expect(page.locator("tbody tr")).to_have_count(3)
    for instance_id in chains:
        expect(row_of(page, instance_id)).to_have_count(1)
    expect(row_of(page, other)).to_have_count(0)

    # a shared link works in a fresh tab; the back button restores the previous filters
    fresh = page.context.new_page()
    fresh.goto(page.url)
    expect(fresh.locator("tbody tr")).to_have_count(3)
    fresh.close()
    page.go_back()
    expect(page.get_by_role("checkbox", name="Completed")).not_to_be_checked()
    expect(page.get_by_label("Orchestration name")).to_have_value("chain")

    # created range: a window in the future matches nothing; one around now matches all
    page.goto(dashboard(host, "#/instances"))
    page.get_by_label("Created from").fill("2099-01-01T00:00")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("No orchestrations match these filters.")).to_be_visible()
    assert "from=2099-01-01T" in page.url
    page.get_by_label("Created from").fill("2000-01-01T00:00")
    page.get_by_label("Created to").fill("2099-01-01T00:00")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("tbody tr")).to_have_count(5)

    # bad input to the list endpoint: a JSON 400, nothing else
    r = host.request("GET", "/_devhost/api/instances?status=Nope")
    assert r.status == 400 and r.json()["error"]["code"] == "invalid_query", r
    r = host.request("GET", "/_devhost/api/instances?createdFrom=yesterday")
    assert r.status == 400 and "ISO 8601" in r.json()["error"]["message"], r
    r = host.request("GET", "/_devhost/api/changes?since=nan")
    assert r.status == 400, r


# ----------------------------------------------------------------------------------------------
# 5: agents

def test_agents_view_lists_the_thread_and_shows_the_transcript(tmp_path, page):
    with FakeOpenAI() as llm:
        host = DevhostProcess(ROOT, tmp_path / "agent.sqlite", {
            "LLM_PROVIDER": "openai", "OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": "x"})
        try:
            host.start()
            run = "/api/agents/MyDurableAgent/run"
            first = host.request("POST", run, "What are three popular programming languages?", TEXT)
            assert first.status == 200, first
            thread_id = first.headers["x-ms-thread-id"]
            second = host.request("POST", f"{run}?thread_id={quote(thread_id, safe='')}",
                                  "Which one is best for beginners?", TEXT)
            assert second.status == 200, second
            name, key = thread_id.lstrip("@").split("@")
            state = host.request("GET", f"{WEBHOOKS}/entities/{name}/{key}").json()
            assert len(state["messages"]) == 4

            page.goto(dashboard(host, "#/agents"))
            expect(page.get_by_role("heading", name="Agents")).to_be_visible()
            row = row_of(page, thread_id)
            expect(row).to_have_count(1)
            expect(row.locator("td").nth(0)).to_have_text(state["agent"])
            expect(row.locator("td").nth(2)).to_have_text("4")
            expect(row.locator("td").nth(3)).to_have_text(f"{state['totals']['total_tokens']:,}")
            row.get_by_role("link", name=thread_id).click()

            expect(page).to_have_url(re.compile(rf"#/agents/{name}/{key}$"))
            bubbles = page.get_by_role("list", name="Transcript").locator("li")
            expect(bubbles).to_have_count(4)
            expect(bubbles.nth(0)).to_contain_text("User")
            expect(bubbles.nth(0)).to_contain_text("What are three popular programming languages?")
            expect(bubbles.nth(1)).to_contain_text(first.text)
            expect(bubbles.nth(2)).to_contain_text("Which one is best for beginners?")
            expect(bubbles.nth(3)).to_contain_text(second.text)
            reply = state["messages"][3]
            expect(bubbles.nth(3)).to_contain_text(reply["model"])
            expect(bubbles.nth(3)).to_contain_text(f"{reply['usage']['total_tokens']} tokens")
            expect(bubbles.nth(3)).to_contain_text(re.compile(r"turn \d+(\.\d+)? (ms|s)"))
            expect(page.locator(".facts")).to_contain_text(thread_id)
            look_at(page, tmp_path / "agent-thread.png")

            # each reply links to its turn's timeline: lease, model call (model, tokens), append
            bubbles.nth(3).get_by_role("link", name="Turn timeline →").click()
            turn_id = reply["turnId"]
            expect(page).to_have_url(re.compile(rf"#/instances/turn-{key}-{turn_id}$"))
            rows = timeline_rows(page)
            acquire = rows.filter(has=page.locator(".tl-name", has_text="acquire"))
            expect(acquire).to_have_attribute("data-kind", "entity")
            expect(acquire).to_contain_text(f"@{name}@{key}")
            detail = open_bar(acquire)
            expect(payload(detail, "Result")).to_contain_text('"granted": true')
            model = rows.filter(has=page.locator(".tl-name", has_text="call_llm"))
            expect(model).to_have_count(1)
            expect(model).to_contain_text(f"{reply['model']} · {reply['usage']['total_tokens']} tokens")
            expect(open_bar(model)).to_contain_text(second.text)
            expect(rows.filter(has=page.locator(".tl-name", has_text="append_turn"))).to_have_attribute(
                "data-status", "completed")
            look_at(page, tmp_path / "turn-timeline.png")
            # ... and the turn's orchestration links back to its thread
            page.locator(".facts").get_by_role("link", name=thread_id).click()
            expect(page).to_have_url(re.compile(rf"#/agents/{name}/{key}$"))

            page.get_by_role("link", name="Raw entity state →").click()
            expect(page.get_by_role("region", name="State")).to_contain_text('"threadId"')

            # metrics: both turns, their latencies
            page.get_by_role("link", name="Metrics", exact=True).click()
            expect(page.get_by_label("Turns completed: 2")).to_be_visible()
            expect(page.get_by_label(re.compile(r"^Turn latency p50: \d+(\.\d+)? (ms|s)$"))).to_be_visible()
            expect(page.get_by_label(re.compile(r"^Model latency p95: \d+(\.\d+)? (ms|s)$"))).to_be_visible()
            expect(page.get_by_label("Running orchestrations: 0")).to_be_visible()
        finally:
            host.kill()
