"""The API's server set-up, against real server processes: slow clients, request limits,
Gunicorn's own errors, and the seed's ``gunicorn wsgi:app`` starting a worker beside the API."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.support import free_port, wait_for
from tests.workers import stop_processes

ROOT = Path(__file__).resolve().parent.parent
KEY = "wrmq_server-test-key-0123456789abcdef"
SLOW_CLIENTS = 500
API_COMMAND = [sys.executable, "-m", "workerrmq.cli", "api"]
#: Seconds a stop may take with no request in flight: well below Gunicorn's graceful_timeout
#: (30 s), after which it kills the processes that have not stopped.
STOP_BOUND = 10
#: The seed's command, with the project's Gunicorn.
SEED_COMMAND = [str(Path(sys.executable).parent / "gunicorn"), "--bind", "127.0.0.1:{port}", "wsgi:app"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
        "WORKERRMQ_API_KEY": KEY,
        "WORKER_BIND": "127.0.0.1:0",
        "API_WORKERS": "1",
        **extra,
    }


def _answers(url: str) -> bool:
    """True once *url* answers 200 (the port listens before the app is loaded)."""
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _start(tmp: Path, command: list[str], **env: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start a server command (``{port}`` filled in) from the project root, logging to *tmp*."""
    port = free_port()
    environ = _env(tmp, BIND=f"127.0.0.1:{port}", **env)
    with (tmp / "server.log").open("ab") as log:
        process = subprocess.Popen(
            [c.format(port=port) for c in command],
            cwd=ROOT,
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: process.poll() is None and _answers(f"http://127.0.0.1:{port}/healthz"),
            timeout=90,
            what="the API to answer",
        )
    except AssertionError:
        stop_processes(process)
        raise
    return process, port


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], int]]]:
    """Start server commands like :func:`_start`; stop them after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(command: list[str], **env: str) -> tuple[subprocess.Popen[bytes], int]:
        process, port = _start(tmp_path, command, **env)
        started.append(process)
        return process, port

    yield start
    stop_processes(*started)


@pytest.fixture(scope="module")
def api_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``workerrmq api``, as it serves by default (MAX_REQUEST_BYTES 16 MiB)."""
    process, port = _start(tmp_path_factory.mktemp("api"), API_COMMAND)
    yield port
    stop_processes(process)


def _exchange(
    port: int, head: bytes, body_parts: Iterator[bytes] | list[bytes] = (), timeout: float = 30
) -> tuple[int, dict]:
    """Send raw request bytes; the answer's status and JSON body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        try:
            for part in body_parts:
                sock.sendall(part)
        except OSError:
            pass  # the server answered and closed before the whole body was sent
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.getheader("Content-Type") == "application/json", response.getheaders()
        return response.status, json.loads(response.read())


class SlowHeaderClients:
    """*count* connections that send one header line every *interval* seconds and never
    finish; a connection the server cuts is opened again, so *count* stay open."""

    def __init__(self, port: int, count: int, interval: float) -> None:
        self.port, self.count, self.interval = port, count, interval
        self.socks: list[socket.socket] = []
        self.cut = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SlowHeaderClients:
        for _ in range(self.count):
            self.socks.append(self._open())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        for sock in self.socks:
            sock.close()

    def stop(self) -> int:
        """Stop sending; how many connections are open."""
        self._stop.set()
        self._thread.join(10)
        return sum(sock.fileno() != -1 for sock in self.socks)

    def _open(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: slow\r\n")
        sock.setblocking(False)
        return sock

    def _run(self) -> None:
        line = 0
        while not self._stop.wait(self.interval):
            line += 1
            for i, sock in enumerate(self.socks):
                try:
                    sock.send(b"X-Slow-%d: 1\r\n" % line)
                    sock.recv(4096)  # anything at all (an answer or EOF): the server cut it
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                sock.close()
                self.cut += 1
                self._reopen(i)

    def _reopen(self, i: int) -> None:
        for _ in range(5):
            try:
                self.socks[i] = self._open()
                return
            except OSError:
                continue


def _latencies(url: str, count: int, seconds: float) -> list[float]:
    """Sequential GETs of *url* on fresh connections, one every 0.1 s or so, at least *count*
    of them and for at least *seconds*; a failed request counts as 10 s."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    while len(latencies) < count or time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            ok = requests.get(url, timeout=5).status_code == 200
        except requests.RequestException:
            ok = False
        latencies.append(time.perf_counter() - started if ok else 10.0)
        if sum(t >= 10 for t in latencies) >= 3:
            break  # the server is not answering: no need to wait out every request
        time.sleep(0.1)  # pacing the samples, not waiting for a condition
    return sorted(latencies)


def _short_timeouts(tmp_path: Path, **timeouts: float) -> list[str]:
    """A Gunicorn command serving the API with its own options, but *timeouts* (names of
    :mod:`workerrmq.server` constants, e.g. ``BODY_TIMEOUT=2.0``) short, to keep a test short."""
    config = tmp_path / "gunicorn_short_timeouts.py"
    lines = [f"server.{name} = {seconds!r}\n" for name, seconds in timeouts.items()]
    config.write_text(
        "from workerrmq import server\n"
        "from workerrmq.settings import Settings\n"
        + "".join(lines)
        + "globals().update(server.gunicorn_options(Settings.from_env()))\n"
    )
    return [sys.executable, "-m", "gunicorn", "-c", str(config), "wsgi:app"]


def test_slow_header_clients_leave_the_api_answering(serve, tmp_path):
    """A 3 s header deadline instead of 10 s: the same churn (every slow connection cut and
    opened again) in a third of the time. ``test_slow_headers_get_a_json_408`` shows that
    ``workerrmq api`` itself has the 10 s deadline."""
    header_timeout = 3.0
    _, port = serve(_short_timeouts(tmp_path, HEADER_TIMEOUT=header_timeout))
    with SlowHeaderClients(port, SLOW_CLIENTS, interval=header_timeout / 2) as slow:
        # Past the header deadline and the next line, so the server has cut every slow
        # connection once (and the clients have opened them again).
        seconds = header_timeout + 2 * slow.interval + 1
        latencies = _latencies(f"http://127.0.0.1:{port}/healthz", 50, seconds)
        held = slow.stop()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"\n{held} slow-header connections held; normal client over {len(latencies)} requests: "
        f"p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; "
        f"{slow.cut} slow connections cut by the header timeout"
    )
    assert held == SLOW_CLIENTS
    assert p99 < 1.0, f"p99 {p99:.2f} s with {SLOW_CLIENTS} slow clients"
    assert slow.cut >= SLOW_CLIENTS, "every slow connection is cut at the header timeout"


def test_slow_headers_get_a_json_408(api_port):
    port = api_port
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: slow\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()  # waits for the server's header timeout
        assert response.status == 408
        assert json.loads(response.read())["error"]["code"] == "request_timeout"


def test_slow_body_is_cut_off_by_the_body_timeout(serve, tmp_path):
    _, port = serve(_short_timeouts(tmp_path, BODY_TIMEOUT=2.0))
    head = (
        f"POST /api/v1/queues/any/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"body": '
    ).encode()
    status, body = _exchange(port, head)
    assert status == 408, body
    assert body["error"] == {"code": "request_timeout", "message": "request body not received within 2 s"}


def test_oversized_chunked_upload_gets_413(api_port):
    port = api_port  # MAX_REQUEST_BYTES defaults to 16 MiB
    head = (
        f"POST /api/v1/queues/any/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"a" * 65536
    chunks = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 320 + [b"0\r\n\r\n"]  # 20 MiB
    status, body = _exchange(port, head, chunks)
    assert status == 413, body
    assert body["error"]["code"] == "payload_too_large"
    # A declared length over the limit is refused before any of the body is read.
    status, body = _exchange(port, head.replace(b"Transfer-Encoding: chunked", b"Content-Length: 20971520"))
    assert (status, body["error"]["code"]) == (413, "payload_too_large")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-H: v\r\n" * 200 + b"\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"NOT HTTP\r\n\r\n", 400),
    ],
    ids=["request-line", "too-many-headers", "header-too-large", "malformed"],
)
def test_gunicorn_own_errors_are_json(api_port, request_bytes, status):
    answer, body = _exchange(api_port, request_bytes)
    assert answer == status
    assert set(body["error"]) == {"code", "message"}


#: A Gunicorn configuration with the API's options, where the first API process to load the
#: app holds there, its event loop not yet running, until Gunicorn's SIGTERM has reached it.
HOLD_ONE_LOADED_PROCESS = """\
import os
import signal
import time

from workerrmq import server
from workerrmq.settings import Settings

globals().update(server.gunicorn_options(Settings.from_env()))


def post_worker_init(worker):
    signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGTERM}})
    try:
        os.close(os.open({marker!r}, os.O_CREAT | os.O_EXCL))  # the first process only
    except FileExistsError:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGTERM}})
        return
    deadline = time.monotonic() + 60
    while signal.SIGTERM not in signal.sigpending() and time.monotonic() < deadline:
        time.sleep(0.01)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGTERM}})
"""


def _stop_time(process: subprocess.Popen[bytes]) -> float:
    """Send SIGTERM to *process*; the seconds it took to exit 0 (fails past STOP_BOUND)."""
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    try:
        code = process.wait(STOP_BOUND)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {STOP_BOUND} s after SIGTERM (graceful_timeout is 30 s)")
    assert code == 0
    return time.monotonic() - started


def test_sigterm_while_an_api_process_loads_stops_within_seconds(serve, tmp_path):
    """SIGTERM reaches one API process before its event loop runs (it is loading the app)
    while a client holds an idle kept-alive connection to the other: both stop at once."""
    marker = tmp_path / "holding"
    config = tmp_path / "gunicorn_hold.py"
    config.write_text(HOLD_ONE_LOADED_PROCESS.format(marker=str(marker)))
    command = [sys.executable, "-m", "gunicorn", "-c", str(config), "wsgi:app"]
    gunicorn, port = serve(command, API_WORKERS="2")
    wait_for(marker.exists, timeout=60, what="one API process to hold after loading the app")
    with requests.Session() as client:
        assert client.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        seconds = _stop_time(gunicorn)
    print(f"\nstopped {seconds:.2f} s after SIGTERM (one process loading, one idle keep-alive)")


def test_sigterm_lets_a_request_in_flight_finish(serve, tmp_path):
    """A request whose body is still arriving at SIGTERM gets the app's answer, then the
    server stops."""
    gunicorn, port = serve(API_COMMAND)
    body = b'{"queueName": "graceful-stop"}'
    head = (
        b"POST /createQueue HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body[:5])
        gunicorn.send_signal(signal.SIGTERM)
        wait_for(
            lambda: "Worker shutting down" in (tmp_path / "server.log").read_text(),
            timeout=30,
            what="the API process to begin stopping",
        )
        sock.sendall(body[5:])
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 401  # the app's own answer: no key was sent
        assert json.loads(response.read())["error"]["code"] == "unauthorized"
    assert gunicorn.wait(STOP_BOUND) == 0


def test_sigterm_closes_idle_connections_at_once(serve):
    """A kept-alive connection waiting for its next request, and one that has sent nothing
    yet, are closed at SIGTERM: neither holds the stop until its keep-alive or header
    timeout, and the silent one gets no 408."""
    gunicorn, port = serve(API_COMMAND)
    with (
        requests.Session() as pooled,
        socket.create_connection(("127.0.0.1", port), timeout=30) as fresh,
    ):
        assert pooled.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        seconds = _stop_time(gunicorn)
        assert fresh.recv(100) == b""
    print(f"\nstopped {seconds:.2f} s after SIGTERM (two idle connections)")


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        path = Path(f"/proc/{todo.pop()}/task")
        for task in path.glob("*/children") if path.exists() else []:
            for child in map(int, task.read_text().split()):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def _running(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "zombie" not in status.read_text()
    except OSError:
        return False


def test_seed_gunicorn_command_delivers(serve, endpoint, queue_name):
    gunicorn, port = serve(SEED_COMMAND, DEFAULT_TARGET_URL=endpoint.url)
    base, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {KEY}"}
    queue = queue_name("seedgunicorn")
    for path, body in [
        ("/createQueue", {"queueName": queue}),
        ("/createConsumer", {"queueName": queue}),
        ("/messagePublish", {"queueName": queue, "message": "Hello, World!"}),
    ]:
        response = requests.post(base + path, json=body, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
    wait_for(lambda: endpoint.bodies() == [b"Hello, World!"], timeout=60, what="the delivery")

    processes = _descendants(gunicorn.pid)
    assert len(processes) == 3, "one API process, and one supervisor with its worker"
    gunicorn.send_signal(signal.SIGTERM)
    assert gunicorn.wait(90) == 0
    wait_for(
        lambda: not any(_running(pid) for pid in processes),
        timeout=30,
        what="every process of gunicorn to exit",
    )
