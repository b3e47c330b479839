"""The one HTTP client the operator commands share, and the one map from failures to exit codes."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

from workerrmq import __version__
from workerrmq.core.credentials import redact_url

__all__ = ["EXIT", "ApiClient", "ApiError", "segment"]

#: Exit codes: what failed.
EXIT = {
    "ok": 0,
    "other": 1,  # usage errors and anything not below
    "input": 2,  # the API refused the input (400, 413)
    "auth": 3,  # no, unknown or revoked key (401) or too small a scope (403)
    "not_found": 4,  # 404
    "conflict": 5,  # 409
    "unavailable": 6,  # 503 (broker or database down), gateway errors, no connection, timeout
    "interrupted": 130,
}

_STATUS_EXIT = {
    400: EXIT["input"],
    413: EXIT["input"],
    422: EXIT["input"],
    401: EXIT["auth"],
    403: EXIT["auth"],
    404: EXIT["not_found"],
    409: EXIT["conflict"],
    502: EXIT["unavailable"],
    503: EXIT["unavailable"],
    504: EXIT["unavailable"],
}


class ApiError(Exception):
    """A request failed; ``exit_code`` says how, ``message`` says why."""

    def __init__(self, message: str, exit_code: int, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.status = status


def segment(value: str) -> str:
    """*value* as one URL path segment."""
    return quote(value, safe="")


class ApiClient:
    """Calls the WorkerRMQ REST API at *url* with *key*; raises :class:`ApiError`."""

    def __init__(self, url: str, key: str | None, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._key = key
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"workerrmq-cli/{__version__}"
        if key:
            self.session.headers["Authorization"] = f"Bearer {key}"

    @property
    def key_prefix(self) -> str | None:
        """The key's first characters, as ``/api/v1/keys`` shows them to tell keys apart."""
        return self._key[:12] if self._key else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str, **params: Any) -> Any:
        return self.request("DELETE", path, params=params)

    def request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None
    ) -> Any:
        """The answer's JSON (None when it has no body)."""
        if not self._key:
            raise ApiError(
                'no API key: give --key, set WORKERRMQ_KEY, or put key = "..." in the config file',
                EXIT["auth"],
            )
        where = redact_url(self.url)
        params = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        try:
            response = self.session.request(
                method,
                self.url + path,
                params=params or None,
                json=json,
                timeout=(min(self.timeout, 10.0), self.timeout),
            )
        except requests.Timeout:
            raise ApiError(
                f"the API at {where} did not answer within {self.timeout:g}s", EXIT["unavailable"]
            ) from None
        except requests.ConnectionError as exc:
            raise ApiError(
                f"cannot connect to the API at {where} ({_reason(exc)})", EXIT["unavailable"]
            ) from None
        except requests.RequestException as exc:
            text = self._clean(f"request to {where} failed: {exc}")
            raise ApiError(text, EXIT["other"]) from None
        if response.status_code >= 400:
            raise self._error(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                f"{where} answered {response.status_code} with something that is not "
                "JSON: expected the WorkerRMQ API's base URL (such as http://127.0.0.1:5000); "
                "is --url right?",
                EXIT["other"],
            ) from None

    def _error(self, response: requests.Response) -> ApiError:
        status = response.status_code
        try:
            detail = response.json()["error"]
            text = f"{detail['message']} ({status} {detail.get('code', 'error')})"
        except (ValueError, KeyError, TypeError):
            text = f"HTTP {status} {response.reason or ''}".strip()
            if status < 500:
                # Every WorkerRMQ error has that shape: this answer came from another server.
                text += (
                    f" from {redact_url(self.url)}, which is not the WorkerRMQ API (its errors are "
                    '{"error": {"code", "message"}}): expected its base URL, such as '
                    "http://127.0.0.1:5000; is --url (or WORKERRMQ_URL) right?"
                )
                exit_code = EXIT["other"] if status in (404, 405) else _STATUS_EXIT.get(status, EXIT["other"])
                return ApiError(self._clean(text), exit_code, status)
        if status in (429, 503) and response.headers.get("Retry-After"):
            text += f"; retry after {response.headers['Retry-After']}s"
        return ApiError(self._clean(text), _STATUS_EXIT.get(status, EXIT["other"]), status)

    def _clean(self, text: str) -> str:
        """Never print the key, whatever a server or a library put in a message."""
        return text.replace(self._key, "***") if self._key else text


def _query_value(value: Any) -> Any:
    return str(value).lower() if isinstance(value, bool) else value


def _reason(exc: requests.ConnectionError) -> str:
    text = str(exc)
    for hint in (
        "Connection refused",
        "Name or service not known",
        "No route to host",
        "Temporary failure in name resolution",
        "Network is unreachable",
        "certificate verify failed",
        "Connection reset",
    ):
        if hint in text:
            return hint.lower()
    return "no connection"
