"""Issue 4, item 8: the API holds under load.

The API runs as the README starts it (``workerrmq api``: Gunicorn, API_WORKERS=2)
while 32 clients publish single messages with unique ``message_id`` s to one queue
for ``WORKERRMQ_LOAD_SECONDS`` (default 15) seconds. Afterwards:

* no answer was a 5xx (nor any other non-2xx);
* the queue holds exactly the ids that got a 2xx. An id whose request failed on
  the client side (timeout, reset) may or may not be there; any that is, is reported.

Throughput is printed, e.g. ``load: 23,070 requests in 15.0 s = 1,538 requests/s``.

Fifteen seconds is thousands of requests from 32 clients at once, with both API processes
busy the whole time: enough to show that none is answered with a 5xx and none is lost.
``WORKERRMQ_LOAD_SECONDS=60`` runs the longer soak.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pytest
import requests

from tests.conftest import MANAGEMENT_URL, RABBITMQ_URL
from tests.support import free_port, wait_for

CLIENTS = 32
LOAD_SECONDS = float(os.environ.get("WORKERRMQ_LOAD_SECONDS", "15"))
REQUEST_TIMEOUT = 30.0
BIN = Path(sys.executable).parent


@dataclasses.dataclass
class Outcomes:
    """What the clients saw, merged under a lock."""

    acked: set[str] = dataclasses.field(default_factory=set)
    client_errors: dict[str, str] = dataclasses.field(default_factory=dict)  # id -> exception
    refused: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)  # id, status, body
    crashes: list[str] = dataclasses.field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def merge(self, other: Outcomes) -> None:
        with self.lock:
            self.acked |= other.acked
            self.client_errors.update(other.client_errors)
            self.refused += other.refused
            self.crashes += other.crashes
            self.requests += other.requests


class ApiProcess:
    """``workerrmq api`` in its own process group, output in files; always stopped."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.log = workdir / "api.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(BIN / "workerrmq"), "api"],
                cwd=workdir,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, base: str) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"workerrmq api exited with {self.process.returncode}:\n{self.output()[-3000:]}")
            try:
                return requests.get(f"{base}/readyz", timeout=5).status_code == 200
            except requests.ConnectionError:  # not listening yet
                return False

        wait_for(ready, timeout=60, interval=0.1, what=f"{base}/readyz")

    def stop(self) -> int | None:
        """SIGTERM (Gunicorn finishes in-flight requests), then SIGKILL to the group."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            return None


@pytest.fixture
def api(tmp_path: Path, broker: str) -> Iterator[tuple[str, dict[str, str], ApiProcess]]:
    """The API on a free port; yields its base URL, the admin header and the process."""
    token = f"wrmq_load-{uuid.uuid4().hex}"
    env = {
        "BIND": f"127.0.0.1:{free_port()}",
        "API_WORKERS": "2",
        "WORKERRMQ_API_KEY": token,
        "DATABASE_URL": f"sqlite:///{tmp_path}/load.sqlite3",
        "RABBITMQ_URL": RABBITMQ_URL,
        "RABBITMQ_MANAGEMENT_URL": MANAGEMENT_URL,
        "LOG_LEVEL": "WARNING",  # no access line per request
    }
    process = ApiProcess(env, tmp_path)
    try:
        base = f"http://{env['BIND']}"
        process.wait_ready(base)
        yield base, {"Authorization": f"Bearer {token}"}, process
    finally:
        process.stop()


def publisher(
    base: str, auth: dict[str, str], queue: str, client: int, deadline: float, run: str, total: Outcomes
) -> None:
    """One client: publish single messages with unique ids until *deadline*."""
    seen = Outcomes()
    url = f"{base}/api/v1/queues/{queue}/messages"
    message_id = ""
    try:
        with requests.Session() as session:
            session.headers.update(auth)
            seq = 0
            while time.monotonic() < deadline:
                message_id = f"{run}-{client}-{seq}"
                seq += 1
                seen.requests += 1
                try:
                    response = session.post(
                        url,
                        json={"body": {"client": client, "seq": seq}, "message_id": message_id},
                        timeout=REQUEST_TIMEOUT,
                    )
                except requests.RequestException as exc:
                    seen.client_errors[message_id] = type(exc).__name__
                    continue
                if 200 <= response.status_code < 300:
                    seen.acked.add(message_id)
                else:
                    seen.refused.append((message_id, response.status_code, response.text[:300]))
    except Exception as exc:  # noqa: BLE001 - reported by the test, not lost with the thread
        seen.crashes.append(f"client {client} at {message_id}: {exc!r}")
        seen.client_errors.setdefault(message_id, type(exc).__name__)
    finally:
        total.merge(seen)


def drain(queue: str) -> list[str]:
    """Every message id in *queue*, taking the messages; the queue is left empty."""
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        channel = connection.channel()
        expected = channel.queue_declare(queue, passive=True).method.message_count
        channel.basic_qos(prefetch_count=2000)
        ids: list[str] = []
        if expected:
            for method, properties, _ in channel.consume(queue, auto_ack=True, inactivity_timeout=5):
                if method is None:  # nothing for 5 s: there is no more
                    break
                ids.append(properties.message_id)
                if len(ids) >= expected:
                    break
            channel.cancel()
        left = channel.queue_declare(queue, passive=True).method.message_count
        assert left == 0, f"{left} messages arrived while the queue was drained"
        return ids
    finally:
        if connection.is_open:
            connection.close()


@pytest.mark.timeout(LOAD_SECONDS + 300)
def test_32_publishers_lose_nothing_and_see_no_5xx(
    api: tuple[str, dict[str, str], ApiProcess],
    queue_name: Callable[[str], str],
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    base, auth, process = api
    queue = queue_name("load")
    created = requests.post(
        f"{base}/api/v1/queues", json={"name": queue}, headers=auth, timeout=REQUEST_TIMEOUT
    )
    assert created.status_code == 201, created.text

    run = uuid.uuid4().hex[:8]
    outcomes = Outcomes()
    started = time.monotonic()
    deadline = started + LOAD_SECONDS
    threads = [
        threading.Thread(
            target=publisher, name=f"load-{i}", args=(base, auth, queue, i, deadline, run, outcomes)
        )
        for i in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LOAD_SECONDS + REQUEST_TIMEOUT + 30)
    elapsed = time.monotonic() - started
    assert not any(t.is_alive() for t in threads), "a client did not finish"

    # Stopped before draining: a request the client gave up on cannot publish later.
    assert process.stop() == 0, process.output()[-3000:]
    server_output = process.output()

    ids = drain(queue)
    in_queue = set(ids)
    duplicates = {i: n for i, n in collections.Counter(ids).items() if n > 1}
    lost = outcomes.acked - in_queue
    extra = in_queue - outcomes.acked
    unexplained = extra - outcomes.client_errors.keys()
    server_errors = [r for r in outcomes.refused if r[1] >= 500]

    rate = outcomes.requests / elapsed
    summary = (
        f"load: {outcomes.requests:,} requests from {CLIENTS} clients in {elapsed:.1f} s = "
        f"{rate:,.0f} requests/s; {len(outcomes.acked):,} acknowledged "
        f"({len(outcomes.acked) / elapsed:,.0f}/s), {len(outcomes.refused)} refused "
        f"({len(server_errors)} 5xx), {len(outcomes.client_errors)} client-side errors, "
        f"{len(ids):,} in the queue, {len(lost)} lost, {len(extra)} extra "
        f"(from client-side errors), {len(duplicates)} duplicated"
    )
    with capsys.disabled():
        print(f"\n{summary}")
        if outcomes.client_errors:
            kinds = collections.Counter(outcomes.client_errors.values())
            print(
                f"load: client-side errors by kind: {dict(kinds)}; "
                f"of those ids, {len(extra)} reached the queue: {sorted(extra)[:20]}"
            )
    record_property("load_requests_per_second", round(rate, 1))
    record_property("load_summary", summary)

    assert not outcomes.crashes, outcomes.crashes[:10]
    assert not server_errors, f"5xx answers: {server_errors[:10]}"
    assert not outcomes.refused, f"non-2xx answers: {outcomes.refused[:10]}"
    assert not lost, f"{len(lost)} acknowledged ids are not in the queue: {sorted(lost)[:20]}"
    assert not unexplained, f"ids in the queue that were never acknowledged: {sorted(unexplained)[:20]}"
    assert not duplicates, f"ids in the queue more than once: {list(duplicates.items())[:20]}"
    assert outcomes.acked, "nothing was published"
    assert "Traceback" not in server_output, server_output[-3000:]
