"""A small client for the RabbitMQ management HTTP API.

Queue, binding and connection administration go through it; publishing goes
over AMQP (:mod:`workerrmq.broker.publisher`). Every method raises a
:mod:`workerrmq.errors` error, never a ``requests`` one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from workerrmq.broker.connect import failure_reason
from workerrmq.errors import BrokerUnavailable, Conflict, InvalidInput, NotFound, WorkerRMQError

__all__ = ["ManagementClient"]


def _q(segment: str) -> str:
    if segment in (".", ".."):
        # requests resolves dot segments (even as %2E): another endpoint would be called.
        raise NotFound(f"{segment!r} cannot be addressed through the management API")
    return quote(segment, safe="")


class ManagementClient:
    """Talks to one management endpoint for one virtual host."""

    def __init__(self, url: str, vhost: str, *, timeout: float = 5.0, ca_file: str = "") -> None:
        """*ca_file* verifies an https *url* (the system's CAs when empty)."""
        # Several comma-separated URLs (one per cluster node): the first that answers serves.
        self._endpoints = [_endpoint(u.strip()) for u in url.split(",") if u.strip()]
        self._current = 0
        self.vhost = vhost
        self.timeout = timeout
        self._http = requests.Session()
        # Passed with each request: requests lets REQUESTS_CA_BUNDLE override a session's own.
        self._verify: str | bool = ca_file or True

    # -- queues -----------------------------------------------------------------

    def list_queues(
        self,
        *,
        name: str | None,
        page: int,
        page_size: int,
        columns: Sequence[str] = (),
        regex: bool = False,
    ) -> dict[str, Any]:
        """One page of queues, as the management API's paged answer, filtered by *name*
        (a part of the name; with *regex*, a regular expression). With *columns* (dotted
        paths such as ``message_stats.publish_details.rate``), each queue has only those."""
        params: dict[str, Any] = {"page": page, "page_size": page_size, "pagination": "true"}
        if name:
            params["name"] = name
            if regex:
                params["use_regex"] = "true"
        if columns:
            params["columns"] = ",".join(columns)
        response = self._request("GET", f"/api/queues/{_q(self.vhost)}", params=params)
        if response.status_code == 400 and page > 1 and "out of range" in response.text:
            # Past the last page: an empty page (with the total), not RabbitMQ's 400.
            first = self.list_queues(name=name, page=1, page_size=1, columns=("name",), regex=regex)
            return {**first, "items": [], "page": page, "page_size": page_size}
        self._raise_for(response)
        return response.json()

    def queue_depths(self, *, timeout: float = 60.0) -> dict[str, int | None]:
        """Every queue of the virtual host with its ready messages (None where the broker has
        no figure yet, e.g. a queue declared moments ago), in one request: the name and the
        figure alone, without the per-queue statistics (``disable_stats``), which keeps the
        answer small and the broker's work light with thousands of queues (the paged listing
        takes 500 a page at most). The figures lag by up to the statistics interval. *timeout*
        (seconds, at least the client's own) is longer than other requests': the answer of a
        virtual host with tens of thousands of queues took over 5 s on a busy broker."""
        params = {"columns": "name,messages_ready", "disable_stats": "true", "enable_queue_totals": "true"}
        path = f"/api/queues/{_q(self.vhost)}"
        rows = self._call("GET", path, params=params, timeout=max(timeout, self.timeout))
        return {row["name"]: row.get("messages_ready") for row in rows}

    def get_queue(self, name: str) -> dict[str, Any]:
        return self._call("GET", self._queue_path(name), missing=f"queue {name!r} not found")

    def declare_queue(self, name: str, *, durable: bool, arguments: dict[str, Any]) -> bool:
        """Declare a queue; True when it was created, False when an identical one existed.

        An existing queue with other settings raises :class:`Conflict`.
        """
        body = {"durable": durable, "auto_delete": False, "arguments": arguments}
        response = self._request("PUT", self._queue_path(name), json=body)
        if response.status_code == 400 and "inequivalent" in response.text:
            raise Conflict(f"queue {name!r} exists with other settings: {_reason(response)}")
        self._raise_for(response)
        return response.status_code == 201

    def delete_queue(self, name: str, *, if_empty: bool, if_unused: bool) -> None:
        params = {}
        if if_empty:
            params["if-empty"] = "true"
        if if_unused:
            params["if-unused"] = "true"
        response = self._request("DELETE", self._queue_path(name), params=params)
        if response.status_code == 400 and (if_empty or if_unused):
            raise Conflict(f"queue {name!r} not deleted: {_reason(response)}")
        self._raise_for(response, missing=f"queue {name!r} not found")

    def purge_queue(self, name: str) -> None:
        self._call("DELETE", self._queue_path(name) + "/contents", missing=f"queue {name!r} not found")

    def queue_bindings(self, name: str) -> list[dict[str, Any]]:
        # The broker lists the implicit default binding even for a queue that does not exist.
        self.get_queue(name)
        return self._call("GET", self._queue_path(name) + "/bindings", missing=f"queue {name!r} not found")

    def bind_queue(
        self, queue: str, exchange: str, routing_key: str, arguments: dict[str, Any] | None = None
    ) -> None:
        """Bind *queue* to *exchange*; *arguments* are a headers exchange's (``x-match`` and headers)."""
        path = f"/api/bindings/{_q(self.vhost)}/e/{_q(exchange)}/q/{_q(queue)}"
        self._call(
            "POST",
            path,
            json={"routing_key": routing_key, "arguments": arguments or {}},
            missing=f"queue {queue!r} or exchange {exchange!r} not found",
        )

    def unbind_queue(self, queue: str, exchange: str, properties_key: str) -> None:
        path = f"/api/bindings/{_q(self.vhost)}/e/{_q(exchange)}/q/{_q(queue)}/{_q(properties_key)}"
        self._call("DELETE", path, missing=f"binding of {queue!r} to {exchange!r} not found")

    # -- exchanges -----------------------------------------------------------------

    def list_exchanges(self) -> list[dict[str, Any]]:
        return self._call("GET", f"/api/exchanges/{_q(self.vhost)}")

    def get_exchange(self, name: str) -> dict[str, Any]:
        return self._call("GET", self._exchange_path(name), missing=f"exchange {name!r} not found")

    def declare_exchange(self, name: str, *, type: str, durable: bool) -> bool:
        """Declare an exchange; True when it was created, False when an identical one existed.

        An existing exchange with other settings raises :class:`Conflict`.
        """
        body = {"type": type, "durable": durable, "auto_delete": False, "internal": False, "arguments": {}}
        response = self._request("PUT", self._exchange_path(name), json=body)
        if response.status_code == 400 and "inequivalent" in response.text:
            raise Conflict(f"exchange {name!r} exists with other settings: {_reason(response)}")
        self._raise_for(response)
        return response.status_code == 201

    def delete_exchange(self, name: str, *, if_unused: bool) -> None:
        params = {"if-unused": "true"} if if_unused else {}
        response = self._request("DELETE", self._exchange_path(name), params=params)
        if response.status_code == 400 and if_unused:
            raise Conflict(f"exchange {name!r} not deleted: {_reason(response)}")
        self._raise_for(response, missing=f"exchange {name!r} not found")

    # -- connections and consumers -------------------------------------------------

    def list_connections(self) -> list[dict[str, Any]]:
        return self._call("GET", f"/api/vhosts/{_q(self.vhost)}/connections")

    def close_connection(self, name: str, reason: str) -> None:
        self._call(
            "DELETE",
            f"/api/connections/{_q(name)}",
            headers={"X-Reason": reason},
            missing=f"connection {name!r} not found",
        )

    def get_connection(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/api/connections/{_q(name)}", missing=f"connection {name!r} not found")

    def queue_consumers(self, name: str) -> list[dict[str, Any]]:
        self.get_queue(name)  # 404 for an unknown queue rather than an empty list
        consumers = self._call("GET", f"/api/consumers/{_q(self.vhost)}")
        return [c for c in consumers if c.get("queue", {}).get("name") == name]

    def publish(self, routing_key: str, body: str) -> bool:
        """Publish through the management API (a diagnostic route; the tests use it)."""
        result = self._call(
            "POST",
            f"/api/exchanges/{_q(self.vhost)}/amq.default/publish",
            json={
                "properties": {},
                "routing_key": routing_key,
                "payload": body,
                "payload_encoding": "string",
            },
        )
        return bool(result.get("routed"))

    def peek_messages(self, queue: str, count: int) -> list[dict[str, Any]]:
        """Up to *count* messages from the head of *queue*, put back as they were."""
        return self._call(
            "POST",
            self._queue_path(queue) + "/get",
            json={"count": count, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 65536},
            missing=f"queue {queue!r} not found",
        )

    def ping(self) -> None:
        self._call("GET", "/api/overview")

    # -- plumbing ---------------------------------------------------------------------

    def _queue_path(self, name: str) -> str:
        return f"/api/queues/{_q(self.vhost)}/{_q(name)}"

    def _exchange_path(self, name: str) -> str:
        return f"/api/exchanges/{_q(self.vhost)}/{_q(name)}"

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        failure = "no URL"
        for offset in range(len(self._endpoints)):
            index = (self._current + offset) % len(self._endpoints)
            base, auth = self._endpoints[index]
            try:
                response = self._http.request(
                    method, base + path, auth=auth, verify=self._verify, **{"timeout": self.timeout, **kwargs}
                )
            except requests.RequestException as exc:
                failure = failure_reason(exc)
                continue
            self._current = index
            return response
        raise BrokerUnavailable(f"RabbitMQ management API unreachable ({failure})")

    def _call(self, method: str, path: str, *, missing: str = "not found", **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        self._raise_for(response, missing=missing)
        if response.status_code == 204 or not response.content:
            return {}
        return response.json()

    @staticmethod
    def _raise_for(response: requests.Response, *, missing: str = "not found") -> None:
        status = response.status_code
        if status < 400:
            return
        if status == 404:
            raise NotFound(missing)
        if status in (401, 403):
            raise BrokerUnavailable("RabbitMQ management API refused WorkerRMQ's credentials")
        if status == 400:
            raise InvalidInput(f"RabbitMQ refused the request: {_reason(response)}")
        if status >= 500:
            raise BrokerUnavailable(f"RabbitMQ management API answered {status}")
        raise WorkerRMQError(f"RabbitMQ management API answered {status}: {_reason(response)}")


def _endpoint(url: str) -> tuple[str, tuple[str, str]]:
    """The base URL without credentials, and the credentials."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    base = urlunsplit(parts._replace(netloc=netloc, path=parts.path.rstrip("/")))
    return base, (parts.username or "guest", parts.password or "guest")


def _reason(response: requests.Response) -> str:
    try:
        return str(response.json().get("reason", response.text))[:300]
    except ValueError:
        return response.text[:300]
