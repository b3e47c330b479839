"""Serving the API and dashboard under a path, such as ``/workerrmq/``, behind a proxy.

With ``URL_PREFIX=/workerrmq`` a request for ``/workerrmq/api/v1/queues`` reaches the
``/api/v1/queues`` route, and every URL the app makes (the dashboard's script and style
sheet, the API calls the dashboard makes, ``/docs``) starts with the prefix: the WSGI
``SCRIPT_NAME`` is the prefix. A proxy may pass the path on whole or strip the prefix
first; a request outside the prefix is served as it is, so probes that reach the
process directly (``/healthz``) still work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["UrlPrefix"]


class UrlPrefix:
    """WSGI middleware: moves *prefix* from ``PATH_INFO`` to ``SCRIPT_NAME``."""

    def __init__(self, app: WSGIApplication, prefix: str) -> None:
        self.app = app
        self.prefix = prefix.rstrip("/")

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == self.prefix or path.startswith(self.prefix + "/"):
            path = path[len(self.prefix) :] or "/"
        environ["SCRIPT_NAME"] = self.prefix
        environ["PATH_INFO"] = path
        return self.app(environ, start_response)
