"""Test helpers: waiting on conditions, free ports, a TCP proxy for broker outages, and the
shape of the API's error answers."""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import pika

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None],
    *,
    timeout: float = 15.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll *condition* until it returns something truthy; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except AssertionError as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}") from last_error
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; :meth:`cut` drops every connection and
    refuses new ones until :meth:`heal`. Used to take the broker away from a client."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._pairs: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.connections = 0

    def __enter__(self) -> TcpProxy:
        self.heal()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()

    def heal(self) -> None:
        """Accept connections again."""
        if self._listener is not None:
            return
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._stopped.clear()
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """Close the listener and every open connection."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._stopped.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        with self._lock:
            for sock in self._pairs:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._pairs.clear()
        if self._thread is not None:
            self._thread.join(5)

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.update((client, upstream))
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        try:
            while True:
                for key, _ in selector.select(timeout=1):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
                if self._stopped.is_set():
                    return
        except OSError:
            return
        finally:
            selector.close()
            with self._lock:
                self._pairs.discard(a)
                self._pairs.discard(b)
            a.close()
            b.close()


def http_up(url: str) -> bool:
    """True once *url* answers 2xx; False while nothing listens there yet."""
    import requests

    try:
        return requests.get(url, timeout=2).ok
    except requests.ConnectionError:
        return False


def json_error(
    response: Any, status: int | None = None, *, code: str | None = None, field: str | None = None
) -> dict[str, Any]:
    """Check that *response* (a Flask test response) is the API's JSON error
    ``{"error": {"code", "message"}}``, no HTML and no traceback, and return the error.
    Without *status* any 4xx will do; *code* and *field* are checked when given."""
    text = response.get_data(as_text=True)
    if status is None:
        assert 400 <= response.status_code < 500, (response.status_code, text)
    else:
        assert response.status_code == status, text
    assert response.mimetype == "application/json", text
    assert "<html" not in text.lower() and "Traceback" not in text
    error = response.json["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    if field is not None:
        assert error.get("field") == field, error
    return error


@contextlib.contextmanager
def broker_user(
    management_url: str,
    name: str,
    password: str,
    *,
    tags: str = "",
    permissions: tuple[str, str, str] = (".*", ".*", ".*"),
) -> Iterator[None]:
    """A RabbitMQ user with *permissions* (configure, write, read) on the vhost "/", made
    through the management API at *management_url* (an administrator's URL with its
    credentials), and deleted on leaving."""
    import requests

    parts = urlsplit(management_url)
    base = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    auth = (unquote(parts.username or ""), unquote(parts.password or ""))
    created = requests.put(
        f"{base}/api/users/{name}", json={"password": password, "tags": tags}, auth=auth, timeout=10
    )
    created.raise_for_status()
    try:
        configure, write, read = permissions
        requests.put(
            f"{base}/api/permissions/%2F/{name}",
            json={"configure": configure, "write": write, "read": read},
            auth=auth,
            timeout=10,
        ).raise_for_status()
        yield
    finally:
        requests.delete(f"{base}/api/users/{name}", auth=auth, timeout=10)


def put_dead_letters(amqp: Any, dlq: str, source: str, count: int) -> None:
    """Queue *count* dead letters m-1..m-N of *source* in *dlq*, as a worker writes them."""
    amqp.queue_declare(dlq, durable=True)
    for n in range(1, count + 1):
        amqp.basic_publish(
            "",
            dlq,
            json.dumps({"n": n}).encode(),
            pika.BasicProperties(
                message_id=f"m-{n}",
                content_type="application/json",
                delivery_mode=2,
                headers={
                    "x-workerrmq-attempts": 8,
                    "x-workerrmq-source-queue": source,
                    "x-workerrmq-consumer": "c",
                    "x-workerrmq-last-status": 503,
                    "x-workerrmq-last-error": f"HTTP 503: down {n}",
                    "x-workerrmq-dead-lettered-at": "2025-01-01T00:00:00+00:00",
                    "tenant": "acme",
                },
            ),
        )
    wait_for(
        lambda: amqp.queue_declare(dlq, passive=True).method.message_count == count,
        timeout=5,
        what="dead letters queued",
    )
