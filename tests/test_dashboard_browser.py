"""The dashboard at ``/`` in a real browser (Debian's Chromium driven by Playwright).

The real app is served over real HTTP, a real worker engine delivers to a real
endpoint, and everything is done through the page: sign in, create a queue and
a consumer, publish, watch deliveries, dead-letter a message, replay it.

Without Chromium or Playwright the browser tests are skipped on a developer's
machine and fail in CI (``CI`` set).

One browser and one app (over its own SQLite file, served on one port) are shared by
the tests of this module; each test opens its own browser context. The test that needs
no worker ever alive has an app of its own.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pika
import pytest
from flask import Flask
from werkzeug.serving import make_server

from tests.conftest import MANAGEMENT_URL, RABBITMQ_URL
from tests.endpoint import Endpoint
from tests.support import put_dead_letters, wait_for
from workerrmq.api import create_app
from workerrmq.core.consumer import FIELDS
from workerrmq.settings import Settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1366, "height": 768}
# The README's screenshots are rewritten only when asked, so a test run leaves the tree as it was.
DOCS = Path(__file__).resolve().parents[1] / "docs"
STATIC = Path(__file__).resolve().parents[1] / "workerrmq" / "api" / "static"
KEY_STORAGE = "workerrmq.apiKey"

# Deliveries show within a second or two; dead-letter queue depths come from the
# management API's statistics, which RabbitMQ refreshes every few seconds.
DELIVERY_TIMEOUT = 20_000
DLQ_TIMEOUT = 40_000


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _playwright() -> Any:
    try:
        from playwright import sync_api
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    return sync_api


# -- fixtures -------------------------------------------------------------------------------------


def _serve(app: Flask) -> tuple[str, Callable[[], None]]:
    """Serve *app* over HTTP on a free port; returns its URL and a function that stops it."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        thread.join(10)
        server.server_close()

    return f"http://127.0.0.1:{server.server_port}", stop


@pytest.fixture(scope="module")
def shared_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings like conftest's, over a SQLite file that lives as long as the module."""
    folder = tmp_path_factory.mktemp("dashboard")
    return Settings(
        rabbitmq_url=RABBITMQ_URL,
        rabbitmq_management_url=MANAGEMENT_URL,
        database_url=f"sqlite:///{folder}/workerrmq.sqlite3",
        broker_timeout=3.0,
        auth_failure_limit=100_000,
    )


@pytest.fixture(scope="module")
def shared_app(shared_settings: Settings) -> Iterator[Flask]:
    app = create_app(shared_settings)
    app.config["TESTING"] = True
    yield app
    app.extensions["workerrmq"].close()


@pytest.fixture
def settings(shared_settings: Settings) -> Settings:
    return shared_settings


@pytest.fixture
def app(shared_app: Flask) -> Flask:
    """The module's app: conftest's ``client``, ``make_key`` and ``admin`` use it."""
    return shared_app


@pytest.fixture(scope="module")
def live_server(shared_app: Flask) -> Iterator[str]:
    """The module's app served over HTTP on a free port."""
    url, stop = _serve(shared_app)
    yield url
    stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module's tests."""
    sync_api = _playwright()
    # The broker is shared: with thousands of other tests' queues, a refresh of the page may
    # take seconds on a loaded machine. Wait for what the page shows, never time it.
    sync_api.expect.set_options(timeout=15_000)
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[[str], Any]]:
    """Open a page in a context of its own at a 1366×768 viewport, ``base_url`` set to a server.

    JavaScript errors and Content-Security-Policy violations fail the test.
    """
    contexts: list[Any] = []
    problems: list[str] = []

    def open_at(base_url: str) -> Any:
        context = browser.new_context(viewport=VIEWPORT, base_url=base_url)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on(
            "console",
            lambda msg: (
                problems.append(f"console: {msg.text}") if "Content Security Policy" in msg.text else None
            ),
        )
        return page

    yield open_at
    for context in contexts:
        context.close()
    assert not problems, problems


@pytest.fixture
def down_endpoint() -> Iterator[Endpoint]:
    """A real endpoint that answers every request 503."""
    with Endpoint() as down:
        down.respond = lambda _r: (503, {})
        yield down


@pytest.fixture
def browser_page(open_page: Callable[[str], Any], live_server: str) -> Any:
    """A page on the module's app."""
    return open_page(live_server)


def _screenshot(target: Any, name: str, tmp_path: Path) -> None:
    """A screenshot of a page or an element, into docs/ with WORKERRMQ_UPDATE_SCREENSHOTS=1."""
    path = DOCS / name if os.environ.get("WORKERRMQ_UPDATE_SCREENSHOTS") else tmp_path / name
    if hasattr(target, "mouse"):
        target.mouse.move(0, 0)
        target.screenshot(path=str(path), full_page=True)
    else:
        target.page.mouse.move(0, 0)
        target.screenshot(path=str(path))
    assert path.stat().st_size > 5_000, name


def _confirm(page: Any, title: str | re.Pattern[str], text: str | re.Pattern[str] | None = None) -> None:
    """The confirmation dialog asks *title* (saying *text*); confirm it."""
    from playwright.sync_api import expect

    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("heading")).to_have_text(title)
    if text is not None:
        expect(dialog.locator("#confirm-text")).to_have_text(text)
    dialog.locator("#confirm-ok").click()
    expect(dialog).to_be_hidden()


def _token(header: dict[str, str]) -> str:
    return header["Authorization"].split(" ", 1)[1]


def _sign_in(page: Any, token: str) -> None:
    from playwright.sync_api import expect

    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in to WorkerRMQ")).to_be_visible()
    page.get_by_label("API key").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("status")).to_have_text("Signed in.")
    expect(page.get_by_role("heading", name="Consumers", exact=True)).to_be_visible()


def _consumer_row(page: Any, name: str) -> Any:
    table = page.get_by_role("table", name="Consumers", exact=True)
    return table.get_by_role("row").filter(has=page.get_by_role("rowheader", name=name, exact=True))


# -- without a browser ----------------------------------------------------------------------------


def test_page_and_its_files_are_public(client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "text/html" in page.content_type
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"
    html = page.get_data(as_text=True)
    for name, kind in (("dashboard.js", "javascript"), ("dashboard.css", "text/css")):
        assert f"/static/{name}" in html
        response = client.get(f"/static/{name}")  # no key
        assert response.status_code == 200, name
        assert kind in response.content_type
    assert client.get("/static/nothing-here.js").status_code == 404
    assert client.get("/api/v1/queues").status_code == 401  # the API still needs a key


def test_script_keeps_the_key_out_of_durable_storage_and_html() -> None:
    script = (STATIC / "dashboard.js").read_text()
    for forbidden in (
        "localStorage",
        "document.cookie",
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "eval(",
    ):
        assert forbidden not in script, forbidden
    assert "sessionStorage" in script


# -- in the browser -------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_dashboard_end_to_end(
    browser_page,
    open_page,
    live_server,
    app,
    client,
    settings,
    start_engine,
    endpoint,
    admin,
    queue_name,
    make_consumer,
    down_endpoint,
    amqp,
    tmp_path,
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    # The charts' history: a sample each second; the health watch looks twice a second.
    start_engine(settings, history_step=1.0, health_interval=0.5)
    token = _token(admin)
    queue = queue_name("dash")
    status = page.get_by_role("status")

    # A consumer whose endpoint is down: its circuit opens at the first failure and it is
    # degraded a second later, while the page is used for the rest.
    sick, sick_queue = make_consumer(
        down_endpoint.url,
        circuit_threshold=1,
        circuit_cooldown=30,
        degraded_after=1,
        initial_delay=0.05,
        max_attempts=100,
    )
    amqp.basic_publish("", sick_queue, b"{}", pika.BasicProperties(message_id="sick-1"))

    _sign_in(page, token)
    assert token not in page.url
    # The broker is shared with other tests, whose queues may be thousands: list only this
    # test's (the unfiltered list shows the first 500 by name).
    page.get_by_label("Filter by name").fill(queue)

    # A queue, through the page.
    queue_form = page.get_by_role("form", name="Create a queue")
    queue_form.get_by_label("Queue name").fill(queue)
    queue_form.get_by_role("button", name="Create queue").click()
    expect(status).to_have_text(f"Queue {queue} is ready.")
    queues = page.get_by_role("table", name="Queues", exact=True)
    expect(queues.get_by_role("rowheader", name=queue, exact=True)).to_be_visible()

    # A consumer on it, delivering to the test endpoint.
    consumer_form = page.get_by_role("form", name="Create a consumer")
    consumer_form.get_by_label("Queue", exact=True).fill(queue)
    consumer_form.get_by_label("Target URL").fill(endpoint.url)
    consumer_form.get_by_label("Max attempts").fill("2")
    consumer_form.get_by_label("Initial delay (s)").fill("0.05")
    consumer_form.get_by_role("button", name="Create consumer").click()
    expect(status).to_contain_text(f"Consumer {queue} created on {queue}")
    row = _consumer_row(page, queue)
    cell = lambda col: row.locator(f'[data-col="{col}"]')  # noqa: E731
    expect(cell("queue")).to_have_text(queue)
    expect(cell("target")).to_have_text(endpoint.url)
    expect(cell("state")).to_contain_text("consuming", timeout=DELIVERY_TIMEOUT)
    expect(cell("state")).to_contain_text("running")
    expect(cell("circuit")).to_have_text("closed")
    expect(cell("health")).to_be_hidden()  # healthy: no badge
    expect(cell("dead-letter-count")).to_have_text("0")
    # The queue's ready and consumer counts were read live, and the row says so.
    figures = queues.get_by_role("row").filter(has=page.get_by_role("rowheader", name=queue, exact=True))
    expect(figures.locator('[data-col="figures"]')).to_have_text("live")
    expect(figures.locator('[data-col="figures"] span')).to_have_attribute("title", re.compile("read live"))
    # Nothing to replay: no Replay button.
    expect(row.get_by_role("button", name=f"Replay the dead letters of {queue}")).to_be_hidden()

    # Workers: the worker list, with what each runs (the fallback without /api/v1/workers
    # is tested below).
    workers = page.get_by_role("table", name="Workers", exact=True)
    expect(workers.get_by_role("row").filter(has_text=queue)).to_have_count(1)
    expect(workers.locator('[data-col="consumers"]')).to_contain_text(f"{queue} (consuming")
    expect(workers.locator('[data-col="state"]')).to_have_text("alive")

    # Connections: at least the worker's and the API's own.
    connections = page.get_by_role("table", name="Broker connections")
    expect(connections.get_by_role("rowheader")).not_to_have_count(0)

    # Publish through the page; the delivered count rises.
    publish_form = page.get_by_role("form", name="Publish a message")
    publish_form.get_by_label("Queue", exact=True).fill(queue)
    publish_form.get_by_label("Message body").fill("hello from the dashboard")
    publish_form.get_by_role("button", name="Publish", exact=True).click()
    published = re.compile(rf"^Published message \S+ to {re.escape(queue)}\.$")
    expect(status).to_have_text(published)
    expect(cell("delivered")).to_have_text("1", timeout=DELIVERY_TIMEOUT)
    assert endpoint.bodies() == [b"hello from the dashboard"]

    # The endpoint fails: two attempts, then the message is dead-lettered.
    endpoint.respond = lambda _r: (503, {})
    first = status.text_content()
    publish_form.get_by_label("Message body").fill("this one fails")
    publish_form.get_by_role("button", name="Publish", exact=True).click()
    expect(status).not_to_have_text(first or "")
    expect(status).to_have_text(published)
    expect(cell("dead-lettered")).to_have_text("1", timeout=DELIVERY_TIMEOUT)
    expect(cell("failed")).to_have_text("2")
    expect(cell("retried")).to_have_text("1")
    expect(cell("last-error")).to_contain_text("503")
    expect(cell("dead-letter-count")).to_have_text("1", timeout=DLQ_TIMEOUT)
    expect(cell("delivered")).to_have_text("1")

    failed_id = endpoint.ids()[-1]

    # What happened to it, in two clicks: the consumer's dead letters, then the message.
    row.get_by_role("button", name=f"Show the dead letters of {queue}").click()
    dead_letters = page.get_by_role("table", name="Dead letters")
    letter = dead_letters.get_by_role("row").filter(has_text=failed_id)
    expect(letter.locator('[data-col="attempts"]')).to_have_text("2")
    expect(letter.locator('[data-col="last-status"]')).to_have_text("503")
    expect(letter.locator('[data-col="body"]')).to_contain_text("this one fails")
    letter.get_by_role("button", name=f"Show the attempts of {failed_id}").click()
    history = page.get_by_role("table", name="Attempts of the message")
    expect(history.get_by_role("row")).to_have_count(3)  # a header row and two attempts
    expect(history.locator('[data-col="outcome"]')).to_have_text(["dead lettered", "retry"])
    expect(history.locator('[data-col="status"]')).to_have_text(["503", "503"])
    expect(page.locator("#history-summary")).to_contain_text(f"Message {failed_id}: 2 attempts")
    _screenshot(page.locator("#dead-letters"), "dashboard-dead-letters.png", tmp_path)
    _screenshot(page.locator("#message-history"), "dashboard-message-history.png", tmp_path)

    # Fixed: replay from the consumer's row after a confirmation, and it is delivered.
    endpoint.respond = lambda _r: (200, {})
    page.get_by_role("button", name="Close").click()
    row.get_by_role("button", name=f"Replay the dead letters of {queue}").click()
    _confirm(page, "Replay 1 dead letter?", re.compile(rf"dead-letter queue of {re.escape(queue)} back to"))
    expect(status).to_have_text(re.compile(rf"^Replayed 1 message of {re.escape(queue)}(; 0 remain)?\.$"))
    expect(cell("delivered")).to_have_text("2", timeout=DELIVERY_TIMEOUT)
    assert len(endpoint.delivered_ids()) == 2
    assert endpoint.bodies()[-1] == b"this one fails"
    expect(cell("dead-letter-count")).to_have_text("0", timeout=DLQ_TIMEOUT)

    # The charts, sampled by the page: the consumer's deliveries and failures are drawn.
    charts = (
        page.get_by_role("list", name="Consumer charts")
        .get_by_role("listitem")
        .filter(has=page.get_by_role("heading", name=f"Consumer {queue}", exact=True))
    )
    delivered_line = charts.locator('[data-chart="throughput"] path[data-series="delivered"]')
    expect(delivered_line).to_have_attribute("d", re.compile(r"^M[\d.]+ [\d.]+ L"))
    assert int(delivered_line.get_attribute("data-points") or 0) >= 2
    expect(charts.locator('[data-chart="error-rate"] svg')).to_have_attribute(
        "aria-label", f"Error rate of {queue}, percent"
    )
    expect(charts.locator('[data-chart="throughput"] .figures')).to_contain_text(
        re.compile(r"[12] delivered")
    )

    # A page opened now draws them at once, from the workers' samples (GET
    # /api/v1/stats/history): its own samples alone would count none of the deliveries above.
    fresh = open_page(live_server)
    _sign_in(fresh, token)
    expect(fresh.locator("#charts")).to_have_attribute("data-history-samples", re.compile(r"^[1-9]\d*$"))
    expect(fresh.locator("#charts-note")).to_contain_text(
        "sampled by the workers every 1 s, then by this page"
    )
    fresh_card = (
        fresh.get_by_role("list", name="Consumer charts")
        .get_by_role("listitem")
        .filter(has=fresh.get_by_role("heading", name=f"Consumer {queue}", exact=True))
    )
    expect(fresh_card.locator('[data-chart="throughput"] .figures')).to_contain_text(
        re.compile(r"in the window [12] delivered, [12] failed attempts")
    )
    fresh_line = fresh_card.locator('[data-chart="throughput"] path[data-series="delivered"]')
    expect(fresh_line).to_have_attribute("d", re.compile(r"^M[\d.]+ [\d.]+ L"))
    fresh.close()

    # The key is in this tab's session storage only: not in local storage, not in a cookie.
    assert page.evaluate("k => sessionStorage.getItem(k)", KEY_STORAGE) == token
    assert page.evaluate("() => localStorage.length") == 0
    assert token not in page.evaluate("() => JSON.stringify(Object.entries(localStorage))")
    assert page.evaluate("() => document.cookie") == ""
    assert not [c for c in page.context.cookies() if token in c["value"]]

    # The consumer whose endpoint is down is marked degraded on its row: since when, and why.
    sick_row = _consumer_row(page, sick["name"])
    badge = sick_row.locator('[data-col="health"]')
    expect(badge).to_have_text(re.compile(r"^degraded since \d"), timeout=DELIVERY_TIMEOUT)
    expect(badge).to_have_attribute("title", re.compile(r"^circuit open since "))
    expect(sick_row.locator(".health-reason")).to_have_text(re.compile(r"^circuit open since "))
    degraded = client.get(f"/api/v1/consumers/{sick['id']}", headers=admin).json
    assert degraded["health"] == "degraded"
    assert (
        badge.get_attribute("title") == f"{degraded['degraded_reason']} (since {degraded['degraded_since']})"
    )
    expect(cell("health")).to_be_hidden()

    # Made for a laptop screen: nothing sticks out sideways at 1366 px.
    assert page.evaluate("() => document.documentElement.scrollWidth") <= VIEWPORT["width"]
    overflowing = page.evaluate("""() => Array.from(document.querySelectorAll('.table-wrap'))
        .filter((w) => !w.hidden && w.scrollWidth > w.clientWidth).map((w) => w.id || w.innerText)""")
    assert overflowing == []

    # The broker is shared with other tests: show only this test's queues in the screenshot.
    page.get_by_label("Filter by name").fill(queue)
    expect(page.locator("#queues-count")).to_have_text("2 shown")
    expect(queues.get_by_role("rowheader", name=f"{queue}.dlq", exact=True)).to_be_visible()
    page.get_by_label("Filter by name").blur()

    _screenshot(page, "dashboard.png", tmp_path)
    _screenshot(page.locator("#charts"), "dashboard-charts.png", tmp_path)
    client.delete(f"/api/v1/consumers/{sick['id']}", headers=admin)

    # Pause and resume from the page.
    row.get_by_role("button", name=f"Pause {queue}").click()
    expect(status).to_have_text(f"Paused {queue}; it is now paused.")
    expect(cell("state")).to_contain_text("paused")
    expect(cell("state")).to_contain_text("stopped", timeout=DELIVERY_TIMEOUT)  # the worker's word
    row.get_by_role("button", name=f"Resume {queue}").click()
    expect(status).to_have_text(f"Resumed {queue}; it is now running.")
    expect(cell("state")).to_contain_text("running")
    expect(cell("state")).to_contain_text("consuming", timeout=DELIVERY_TIMEOUT)

    # Signing out forgets the key; a reload does not sign in again.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to WorkerRMQ")).to_be_visible()
    for name in ("Refresh now", "Sign out"):  # the header's controls go with the key
        expect(page.get_by_role("button", name=name)).to_be_hidden()
    expect(page.get_by_text("Refresh live every")).to_be_hidden()
    expect(page.get_by_label("API key")).to_be_focused()
    assert page.evaluate("() => sessionStorage.length") == 0
    page.reload()
    expect(page.get_by_role("heading", name="Sign in to WorkerRMQ")).to_be_visible()
    expect(page.get_by_role("heading", name="Consumers", exact=True)).to_be_hidden()


def test_dashboard_shows_api_errors_and_escapes_text(
    browser_page,
    client,
    admin,
    make_key,
    queue_name,
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    alert = page.get_by_role("alert")

    # An API without /api/v1/workers (an older server): the page shows, per consumer, how
    # many workers report running it instead. Only this one route is answered by the browser.
    page.route(
        "**/api/v1/workers",
        lambda route: route.fulfill(
            status=404, json={"error": {"code": "not_found", "message": "not found"}}
        ),
    )

    # The broker could not be asked live (stats_age_seconds null): the queue list is the
    # management API's sample, and each row says so. The real answer, with that one field changed.
    def sampled(route: Any) -> None:
        answer = route.fetch()
        body = answer.json()
        for item in body.get("items", []):
            item["stats_age_seconds"] = None
        route.fulfill(response=answer, json=body)

    page.route(re.compile(r"/api/v1/queues\?"), sampled)

    # A wrong key: refused, nothing stored.
    page.goto("/")
    page.get_by_label("API key").fill("wrmq_not-a-real-key")
    page.get_by_role("button", name="Sign in").click()
    expect(alert).to_have_text("Sign-in failed: unknown or revoked API key")
    expect(page.get_by_label("API key")).to_have_attribute("aria-invalid", "true")
    assert page.evaluate("() => sessionStorage.length") == 0

    # A consumer whose name looks like markup, created through the API, shows as text.
    queue = queue_name("dash")
    assert client.post("/api/v1/queues", json={"name": queue}, headers=admin).status_code == 201
    evil = '<img src=x onerror="window.pwned=1">'
    created = client.post(
        "/api/v1/consumers",
        headers=admin,
        json={"name": evil, "queue": queue, "target_url": "http://127.0.0.1:9/hook"},
    )
    assert created.status_code == 201, created.json

    _sign_in(page, _token(admin))
    expect(_consumer_row(page, evil)).to_have_count(1)
    assert page.evaluate("() => window.pwned") is None
    page.get_by_label("Filter by name").fill(queue)
    sampled_row = (
        page.get_by_role("table", name="Queues", exact=True)
        .get_by_role("row")
        .filter(has=page.get_by_role("rowheader", name=queue, exact=True))
    )
    expect(sampled_row.locator('[data-col="figures"]')).to_have_text("sampled")
    expect(sampled_row.locator('[data-col="figures"] span')).to_have_attribute(
        "title", re.compile("management API's sample, up to 5 s old")
    )
    by_consumer = page.get_by_role("table", name="Workers running each consumer")
    expect(
        by_consumer.get_by_role("row")
        .filter(has=page.get_by_role("rowheader", name=evil, exact=True))
        .locator('[data-col="workers"]')
    ).to_have_text("0")
    expect(page.get_by_text("This API has no worker list")).to_be_visible()
    expect(page.get_by_role("table", name="Workers", exact=True)).to_be_hidden()
    assert page.locator("#consumers-table img").count() == 0

    # An invalid queue name: the API's message, at the form, on the field it names.
    queue_form = page.get_by_role("form", name="Create a queue")
    queue_form.get_by_label("Queue name").fill("no spaces allowed")
    queue_form.get_by_role("button", name="Create queue").click()
    expect(alert).to_contain_text("Creating the queue failed: name: may only contain")
    expect(queue_form.get_by_label("Queue name")).to_have_attribute("aria-invalid", "true")
    expect(queue_form.get_by_label("Queue name")).to_be_focused()

    # A publish to a queue that does not exist: 404, shown.
    publish_form = page.get_by_role("form", name="Publish a message")
    publish_form.get_by_label("Queue", exact=True).fill(queue_name("missing"))
    publish_form.get_by_label("Message body").fill("x")
    publish_form.get_by_role("button", name="Publish", exact=True).click()
    expect(alert).to_contain_text("Publishing failed:")
    expect(alert).to_contain_text("not found")

    # A read key may look but not change: the 403 is shown.
    page.get_by_role("button", name="Sign out").click()
    _sign_in(page, _token(make_key("read")))
    expect(_consumer_row(page, evil)).to_have_count(1)
    _consumer_row(page, evil).get_by_role("button", name=f"Pause {evil}").click()
    expect(alert).to_contain_text("failed: this needs a key with scope 'admin'")
    page.unroute_all(behavior="ignoreErrors")  # the page refreshes on: no answer altered after the test


def test_dashboard_warns_while_no_worker_runs_its_consumers(
    open_page,
    make_settings,
    make_app,
    queue_name,
) -> None:
    """Consumers set to run and no worker alive: nothing is delivered, and the page says so
    in a banner (from /readyz) until a worker heartbeats. An app of its own: the module's
    app has seen workers."""
    from playwright.sync_api import expect

    from workerrmq.store.workers import WorkerIdentity

    client, admin = make_app(make_settings())
    app = client.application
    url, stop = _serve(app)
    page = open_page(url)
    queue = queue_name("dash")
    created = client.post(
        "/api/v1/consumers",
        headers=admin,
        json={"queue": queue, "target_url": "http://127.0.0.1:9/hook", "create_queue": True},
    )
    assert created.status_code == 201, created.json

    _sign_in(page, _token(admin))
    banner = page.get_by_role("region", name="Service warning")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("no worker is alive: 1 running consumer delivers nothing")
    expect(banner).to_contain_text("workerrmq worker")

    # A worker registers (as a worker process does): the banner goes at the next refresh.
    app.extensions["workerrmq"].workers.register(
        WorkerIdentity("dash-worker", "test-host", os.getpid(), "test")
    )
    expect(banner).to_be_hidden(timeout=10_000)
    expect(page.get_by_role("table", name="Workers", exact=True).locator('[data-col="state"]')).to_have_text(
        "alive"
    )
    stop()


# -- the fixes, the API reference -----------------------------------------------------------------


def test_favicon_and_docs_assets_are_served_locally(client) -> None:
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.content_type.startswith("image/svg+xml")
    assert icon.get_data(as_text=True).startswith("<svg")
    docs = client.get("/docs")
    assert docs.status_code == 200
    html = docs.get_data(as_text=True)
    assert "cdn" not in html.lower()
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "the page loads something from elsewhere"
    for name in ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"):
        assert f'"docs/assets/{name}"' in html
        asset = client.get(f"/docs/assets/{name}")  # no key
        assert asset.status_code == 200, name
        assert len(asset.data) > 10_000, name
    assert client.get("/docs/assets/index.html").status_code == 404  # only what the page uses
    assert client.get("/docs/assets/../../dashboard.py").status_code == 404


def test_docs_render_offline(browser_page, tmp_path) -> None:
    """/docs renders every operation with each request to anywhere but this server refused."""
    from playwright.sync_api import expect

    page = browser_page
    here = urlsplit(page.context.request.get("/healthz").url).netloc
    elsewhere: list[str] = []

    def only_here(route: Any) -> None:
        if urlsplit(route.request.url).netloc == here:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.context.route("**/*", only_here)
    page.goto("/docs")
    expect(page.locator(".opblock").first).to_be_visible()
    expect(
        page.locator(".opblock-summary-path", has_text="/api/v1/consumers/{ref}/dead-letters/replay")
    ).not_to_have_count(0)
    assert page.locator(".opblock").count() > 20
    assert elsewhere == []
    icon = page.context.request.get("/favicon.ico")
    assert icon.ok and icon.headers["content-type"].startswith("image/svg+xml")


@pytest.mark.timeout(120)
def test_queue_table_shows_what_it_counts_purge_and_delete(browser_page, client, admin, amqp) -> None:
    from playwright.sync_api import expect

    page = browser_page
    prefix = f"rows-{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}-{n}" for n in range(7)]
    for name in names:
        assert client.post("/api/v1/queues", json={"name": name}, headers=admin).status_code == 201
    try:
        for n in range(3):
            amqp.basic_publish("", names[0], f"m{n}".encode())
        _sign_in(page, _token(admin))
        page.get_by_label("Filter by name").fill(prefix)
        expect(page.locator("#queues-count")).to_have_text("7 shown")
        queues = page.get_by_role("table", name="Queues", exact=True)
        expect(queues.get_by_role("rowheader")).to_have_count(7)
        wrap = page.locator("#queues .table-wrap")
        # Every row the count speaks of is on the page: the box does not scroll them away.
        assert wrap.evaluate("w => w.scrollHeight <= w.clientHeight + 1")
        for header in queues.get_by_role("rowheader").all():
            bottom = "h => h.getBoundingClientRect().bottom"
            assert header.evaluate(bottom) <= wrap.evaluate("w => w.getBoundingClientRect().bottom") + 1

        first = queues.get_by_role("row").filter(has=page.get_by_role("rowheader", name=names[0], exact=True))
        expect(first.locator('[data-col="ready"]')).to_have_text("3", timeout=DLQ_TIMEOUT)
        first.get_by_role("button", name=f"Purge {names[0]}").click()
        _confirm(page, f"Purge {names[0]}?", re.compile(r"^Drop 3 messages ready in "))
        expect(page.get_by_role("status")).to_have_text(f"Purged {names[0]}.")
        assert amqp.queue_declare(names[0], passive=True).method.message_count == 0

        # Cancel leaves the queue; confirming deletes it.
        last = queues.get_by_role("row").filter(has=page.get_by_role("rowheader", name=names[-1], exact=True))
        last.get_by_role("button", name=f"Delete queue {names[-1]}").click()
        expect(page.get_by_role("dialog")).to_contain_text(f"Delete queue {names[-1]}?")
        page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
        expect(page.get_by_role("dialog")).to_be_hidden()
        assert client.get(f"/api/v1/queues/{names[-1]}", headers=admin).status_code == 200
        last.get_by_role("button", name=f"Delete queue {names[-1]}").click()
        _confirm(page, f"Delete queue {names[-1]}?")
        expect(page.get_by_role("status")).to_have_text(f"Deleted queue {names[-1]}.")
        expect(queues.get_by_role("rowheader")).to_have_count(6)
        assert client.get(f"/api/v1/queues/{names[-1]}", headers=admin).status_code == 404
    finally:
        for name in names:
            client.delete(f"/api/v1/queues/{name}", headers=admin)


# -- consumers: edit, delete, dead letters ------------------------------------------------------------


@pytest.mark.timeout(120)
def test_consumer_form_has_every_field_keeps_secrets_and_saves_changes(
    browser_page, client, admin, make_queue, settings, start_engine, endpoint, amqp, tmp_path
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    queue = make_queue("edit")
    secret_header = "s3cr3t-" + uuid.uuid4().hex
    signing_secret = "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cw=="
    long_url = "http://127.0.0.1:9/hooks/" + "/".join(f"segment-{n:02d}" for n in range(14)) + "?tenant=acme"
    created = client.post(
        "/api/v1/consumers",
        headers=admin,
        json={
            "queue": queue,
            "target_url": long_url,
            "headers": {"Authorization": f"Bearer {secret_header}", "X-Team": "blue"},
            "signing_secret": signing_secret,
            "state": "paused",
        },
    )
    assert created.status_code == 201, created.json
    consumer_id = created.json["id"]

    _sign_in(page, _token(admin))
    row = _consumer_row(page, queue)
    target = row.locator('[data-col="target"]')
    # The whole target URL can be read: it wraps, it is not cut.
    expect(target).to_have_text(long_url)
    assert target.evaluate("c => c.scrollWidth <= c.clientWidth + 1 && c.scrollHeight <= c.clientHeight + 1")
    expect(target).to_have_attribute("title", long_url)

    row.get_by_role("button", name=f"Edit {queue}").click()
    dialog = page.get_by_role("dialog", name=f"Edit consumer {queue}")
    expect(dialog).to_be_visible()
    # Every field of the definition has a control, generated from the API's schema.
    for name in FIELDS:
        expect(dialog.get_by_label(name, exact=True)).to_have_count(1)
    expect(dialog.get_by_label("max_attempts", exact=True)).to_have_value("8")
    expect(dialog.get_by_label("method", exact=True)).to_have_value("POST")
    # Secrets are write-only: not prefilled, not in the page.
    secret = dialog.get_by_label("signing_secret", exact=True)
    expect(secret).to_have_value("")
    expect(secret).to_have_attribute("type", "password")
    expect(secret).to_have_attribute("placeholder", "*** (kept)")
    expect(dialog.get_by_label("headers", exact=True)).to_have_value(re.compile(r'"Authorization": "\*\*\*"'))
    content = page.content()
    assert secret_header not in content and signing_secret not in content
    _screenshot(dialog, "dashboard-edit-consumer.png", tmp_path)

    # A bad value: the API's message, on the field it names.
    dialog.get_by_label("max_attempts", exact=True).fill("1000")
    dialog.get_by_role("button", name="Save changes").click()
    expect(dialog.locator("#edit-form-error")).to_contain_text("max_attempts")
    expect(dialog.get_by_label("max_attempts", exact=True)).to_have_attribute("aria-invalid", "true")

    dialog.get_by_label("max_attempts", exact=True).fill("3")
    dialog.get_by_label("timeout", exact=True).fill("5")
    dialog.get_by_label("retry_on", exact=True).fill("timeout, 5xx")
    dialog.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_have_text(
        f"Saved {queue}: timeout, max_attempts, retry_on changed."
    )
    saved = client.get(f"/api/v1/consumers/{consumer_id}", headers=admin).json
    assert (saved["max_attempts"], saved["timeout"], saved["retry_on"]) == (3, 5.0, ["timeout", "5xx"])
    assert saved["signing"] is True  # the secret was kept
    assert saved["headers"]["Authorization"] == "***" and saved["state"] == "paused"
    stored = client.application.extensions["workerrmq"].consumers.store.get(consumer_id)
    assert dict(stored.headers)["Authorization"] == f"Bearer {secret_header}"

    # auth is a small form of its own: its type, then that type's fields. Secrets are never
    # prefilled; left empty they are sent as ***, which keeps the stored one. The other object
    # fields are JSON boxes, and one that is not JSON is refused at the page, naming the field.
    password = "pw-" + uuid.uuid4().hex
    auth_queue = make_queue("auth")
    with_auth = client.post(
        "/api/v1/consumers",
        headers=admin,
        json={
            "queue": auth_queue,
            "target_url": endpoint.url,
            "auth": {"type": "basic", "username": "ops", "password": password},
            "batch": {"max_messages": 20},
            "state": "paused",
        },
    )
    assert with_auth.status_code == 201, with_auth.json
    auth_id = with_auth.json["id"]
    auth_row = _consumer_row(page, auth_queue)
    auth_row.get_by_role("button", name=f"Edit {auth_queue}").click()
    dialog = page.get_by_role("dialog", name=f"Edit consumer {auth_queue}")
    expect(dialog.get_by_label("auth", exact=True)).to_have_value("basic")
    expect(dialog.get_by_label("auth.username")).to_have_value("ops")
    stored_password = dialog.get_by_label("auth.password")
    expect(stored_password).to_have_value("")
    expect(stored_password).to_have_attribute("type", "password")
    expect(stored_password).to_have_attribute("placeholder", "*** (kept)")
    expect(dialog.get_by_label("auth.token", exact=True)).to_be_hidden()  # another type's field
    batch_box = dialog.get_by_label("batch", exact=True)
    expect(batch_box).to_have_value(re.compile(r'"max_messages": 20'))
    expect(dialog.get_by_label("source", exact=True)).to_have_value("")
    assert password not in page.content()
    _screenshot(dialog.locator(".auth-field"), "dashboard-edit-auth.png", tmp_path)
    dialog.get_by_role("button", name="Save changes").click()  # nothing changed: nothing sent
    expect(page.get_by_role("status")).to_have_text(f"Nothing changed in {auth_queue}.")

    auth_row.get_by_role("button", name=f"Edit {auth_queue}").click()
    batch_text = batch_box.input_value()
    batch_box.fill('{"max_messages": 20')
    dialog.get_by_role("button", name="Save changes").click()
    expect(dialog.locator("#edit-form-error")).to_contain_text("Saving failed: batch is not valid JSON")
    expect(batch_box).to_have_attribute("aria-invalid", "true")
    expect(batch_box).to_be_focused()
    batch_box.fill(" ".join(batch_text.split()))  # the same value, only laid out anew
    # Another type needs its own secret: the API's 400 is shown, naming it.
    dialog.get_by_label("auth", exact=True).select_option("bearer")
    dialog.get_by_role("button", name="Save changes").click()
    expect(dialog.locator("#edit-form-error")).to_contain_text("token")
    dialog.get_by_label("auth", exact=True).select_option("basic")
    dialog.get_by_label("auth.username").fill("ops2")
    dialog.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_have_text(
        f"Saved {auth_queue}: auth changed."
    )  # batch reformatted only
    kept = client.application.extensions["workerrmq"].consumers.store.get(auth_id).auth
    assert kept == {"type": "basic", "username": "ops2", "password": password}
    assert client.get(f"/api/v1/consumers/{auth_id}", headers=admin).json["auth"]["password"] == "***"
    # And the endpoint, which demands exactly that user and password, takes a delivery.
    basic = "Basic " + base64.b64encode(f"ops2:{password}".encode()).decode()
    endpoint.respond = lambda r: (200 if r.headers.get("Authorization") == basic else 401, {})
    start_engine(settings)
    assert client.post(f"/api/v1/consumers/{auth_id}/resume", headers=admin).status_code == 200
    amqp.basic_publish("", auth_queue, b'{"after": "edit"}', pika.BasicProperties(message_id="auth-1"))
    wait_for(
        lambda: [r for r in endpoint.received if r.status == 200 and b'"after"' in r.body],
        timeout=30,
        what="a delivery the endpoint accepted",
    )
    assert not [r for r in endpoint.received if r.status != 200]
    assert client.delete(f"/api/v1/consumers/{auth_id}", headers=admin).status_code == 204

    # Delete, after a confirmation: Cancel keeps it.
    row.get_by_role("button", name=f"Delete consumer {queue}").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    assert client.get(f"/api/v1/consumers/{consumer_id}", headers=admin).status_code == 200
    row.get_by_role("button", name=f"Delete consumer {queue}").click()
    _confirm(page, f"Delete consumer {queue}?")
    expect(page.get_by_role("status")).to_have_text(f"Deleted consumer {queue}.")
    expect(row).to_have_count(0)
    assert client.get(f"/api/v1/consumers/{consumer_id}", headers=admin).status_code == 404


@pytest.mark.timeout(120)
def test_dead_letter_view_replays_and_discards_a_selection(
    browser_page, client, admin, amqp, make_queue, tmp_path
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    queue = make_queue("dlv")
    created = client.post(
        "/api/v1/consumers",
        headers=admin,
        json={"queue": queue, "target_url": "http://127.0.0.1:9/hook", "state": "paused"},
    )
    assert created.status_code == 201, created.json
    dlq = f"{queue}.dlq"
    put_dead_letters(amqp, dlq, queue, 3)  # m-1..m-3, JSON bodies
    amqp.basic_publish(
        "",
        dlq,
        b"\x00\xff\x10",
        pika.BasicProperties(
            message_id="m-bin", headers={"x-workerrmq-attempts": 2, "x-workerrmq-last-status": "none"}
        ),
    )

    _sign_in(page, _token(admin))
    row = _consumer_row(page, queue)
    expect(row.locator('[data-col="dead-letter-count"]')).to_have_text("4", timeout=DLQ_TIMEOUT)
    row.get_by_role("button", name=f"Show the dead letters of {queue}").click()
    view = page.locator("#dead-letters")
    expect(view.get_by_role("heading", level=2)).to_have_text(f"Dead letters of {queue}")
    table = page.get_by_role("table", name="Dead letters")
    expect(page.locator("#dead-letters-count")).to_have_text("4 dead letters")
    expect(table.get_by_role("rowheader")).to_have_text(["m-1", "m-2", "m-3", "m-bin"])
    first = table.get_by_role("row").filter(has=page.get_by_role("rowheader", name="m-1"))
    expect(first.locator('[data-col="last-error"]')).to_have_text("HTTP 503: down 1")
    expect(first.locator('[data-col="headers"]')).to_contain_text('"tenant": "acme"')
    expect(first.locator('[data-col="body"]')).to_contain_text(json.dumps({"n": 1}))
    binary = table.get_by_role("row").filter(has=page.get_by_role("rowheader", name="m-bin"))
    expect(binary.locator('[data-col="body"]')).to_contain_text("hex, 3 bytes")
    expect(binary.locator('[data-col="body"] pre')).to_have_text("00 ff 10")

    # Replay two of them: only those move; the others stay, in their order.
    expect(view.get_by_role("button", name="Replay selected")).to_be_disabled()
    table.get_by_label("Select m-1").check()
    table.get_by_label("Select m-3").check()
    view.get_by_role("button", name="Replay selected (2)").click()
    _confirm(
        page, "Replay 2 dead letters?", re.compile("^Move the 2 selected messages from the dead-letter queue")
    )
    expect(page.get_by_role("status")).to_have_text(f"Replayed 2 messages of {queue}; 2 remain.")
    expect(table.get_by_role("rowheader")).to_have_text(["m-2", "m-bin"])
    wait_for(
        lambda: amqp.queue_declare(queue, passive=True).method.message_count == 2, timeout=10, what="replayed"
    )

    # Discard one.
    table.get_by_label("Select m-bin").check()
    view.get_by_role("button", name="Discard selected (1)").click()
    _confirm(page, "Discard 1 dead letter?", re.compile("cannot be brought back"))
    expect(page.get_by_role("status")).to_have_text(f"Discarded 1 message of {queue}; 1 remain.")
    expect(table.get_by_role("rowheader")).to_have_text(["m-2"])

    # Discard all, then nothing is offered to replay.
    view.get_by_role("button", name="Discard all").click()
    _confirm(page, "Discard 1 dead letter?")
    expect(page.locator("#dead-letters-empty")).to_be_visible()
    expect(view.get_by_role("button", name="Replay all")).to_be_hidden()
    assert amqp.queue_declare(dlq, passive=True).method.message_count == 0
