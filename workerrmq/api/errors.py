"""Every error becomes one JSON shape: ``{"error": {"code", "message", "field"?}}``.

No HTML page and no traceback reaches a client; unexpected errors are logged
here with their traceback and answered with a plain 500.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from workerrmq.errors import ServiceUnavailable, TooManyRequests, WorkerRMQError

__all__ = ["register_error_handlers", "error_response"]

log = logging.getLogger("workerrmq.api")

_HTTP_CODES = {
    400: "invalid_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["field"] = field
    response = jsonify({"error": body})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _first_problem(messages: Any) -> tuple[str | None, str]:
    """The first leaf of a webargs error tree, as (dotted field, text).

    webargs keys the tree by location first; only that level is dropped, so a
    field that happens to be named like a location (``headers``) is still named.
    """
    if isinstance(messages, dict) and messages:
        location, errors = next(iter(messages.items()))
        if location in ("json", "query", "form", "view_args", "headers"):
            return _first_leaf(errors)
    return _first_leaf(messages)


def _first_leaf(messages: Any, path: tuple[str, ...] = ()) -> tuple[str | None, str]:
    """The first leaf of a marshmallow error tree, as (dotted field, text)."""
    if isinstance(messages, dict) and messages:
        key, value = next(iter(messages.items()))
        return _first_leaf(value, (*path, str(key)))
    if isinstance(messages, list) and messages:
        return _first_leaf(messages[0], path)
    field = ".".join(p for p in path if p != "_schema") or None
    return field, str(messages)


def handle_domain_error(error: WorkerRMQError) -> Response:
    headers = {}
    if isinstance(error, ServiceUnavailable | TooManyRequests):
        headers["Retry-After"] = str(error.retry_after)
    if error.status >= 500:
        log.warning("%s: %s", error.code, error.message)
    return error_response(
        error.status,
        error.code,
        error.message,
        field=getattr(error, "field", None),
        headers=headers,
    )


def handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    field = None
    message = error.description or error.name
    if "messages" in data:
        field, problem = _first_problem(data["messages"])
        if problem == "Invalid JSON body.":
            message = "request body is not valid JSON"
            field = None
        else:
            message = f"{field}: {problem}" if field else problem
    elif status == 413:
        message = "request body is too large"
    headers = {}
    if status == 405 and getattr(error, "valid_methods", None):
        headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
    code = _HTTP_CODES.get(status, "internal_error" if status >= 500 else "error")
    return error_response(400 if status == 422 else status, code, message, field=field, headers=headers)


def handle_recursion(error: RecursionError) -> Response:
    """JSON nested deeper than Python's recursion limit fails while parsing: the client's fault."""
    if "JSON" in str(error):
        return error_response(400, "invalid_input", "request body is nested too deeply")
    return handle_unexpected(error)


def handle_unexpected(error: Exception) -> Response:
    log.exception("unhandled error: %s", type(error).__name__)
    return error_response(500, "internal_error", "internal error; see the service log")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(WorkerRMQError, handle_domain_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(RecursionError, handle_recursion)
    app.register_error_handler(Exception, handle_unexpected)
