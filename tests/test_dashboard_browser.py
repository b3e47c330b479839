"""The dashboard at ``/`` in a real browser (Debian's Chromium driven by Playwright).

The real app is served over real HTTP, a real worker engine delivers to a real
endpoint, and everything is done through the page: sign in, create a queue and
a consumer, publish, watch deliveries, dead-letter a message, replay it.

Without Chromium or Playwright the browser tests are skipped on a developer's
machine and fail in CI (``CI`` set).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

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
# The README's screenshot is rewritten only when asked, so a test run leaves the tree as it was.
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "dashboard.png"
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


@pytest.fixture
def live_server(app) -> Iterator[str]:
    """The app, as built for the tests, served over HTTP on a free port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)
    server.server_close()


@pytest.fixture
def browser_page(live_server: str) -> Iterator[Any]:
    """A Chromium page at a 1366×768 viewport, with ``base_url`` set to the live server.

    JavaScript errors and Content-Security-Policy violations fail the test.
    """
    sync_api = _playwright()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport=VIEWPORT, base_url=live_server)
        context.set_default_timeout(15_000)
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on(
            "console",
            lambda msg: (
                problems.append(f"console: {msg.text}") if "Content Security Policy" in msg.text else None
            ),
        )
        try:
            yield page
        finally:
            context.close()
            browser.close()
        assert not problems, problems


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
    app,
    settings,
    start_engine,
    endpoint,
    admin,
    queue_name,
    tmp_path,
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    start_engine(settings)
    token = _token(admin)
    queue = queue_name("dash")
    status = page.get_by_role("status")

    _sign_in(page, token)
    assert token not in page.url

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
    expect(cell("dead-letter-count")).to_have_text("0")

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

    # Fixed: replay from the page, and it is delivered.
    endpoint.respond = lambda _r: (200, {})
    row.get_by_role("button", name=f"Replay the dead letters of {queue}").click()
    expect(status).to_have_text(f"Replayed 1 message of {queue}.")
    expect(cell("delivered")).to_have_text("2", timeout=DELIVERY_TIMEOUT)
    assert len(endpoint.delivered_ids()) == 2
    assert endpoint.bodies()[-1] == b"this one fails"
    expect(cell("dead-letter-count")).to_have_text("0", timeout=DLQ_TIMEOUT)

    # The key is in this tab's session storage only: not in local storage, not in a cookie.
    assert page.evaluate("k => sessionStorage.getItem(k)", KEY_STORAGE) == token
    assert page.evaluate("() => localStorage.length") == 0
    assert token not in page.evaluate("() => JSON.stringify(Object.entries(localStorage))")
    assert page.evaluate("() => document.cookie") == ""
    assert not [c for c in page.context.cookies() if token in c["value"]]

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

    page.mouse.move(0, 0)
    update_docs = os.environ.get("WORKERRMQ_UPDATE_SCREENSHOTS")
    screenshot = DOCS_SCREENSHOT if update_docs else tmp_path / "dashboard.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000

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


def test_dashboard_warns_while_no_worker_runs_its_consumers(
    browser_page,
    app,
    client,
    admin,
    queue_name,
) -> None:
    """Consumers set to run and no worker alive: nothing is delivered, and the page says so
    in a banner (from /readyz) until a worker heartbeats."""
    from playwright.sync_api import expect

    from workerrmq.store.workers import WorkerIdentity

    page = browser_page
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
