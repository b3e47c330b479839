"""The HTTP API: an app factory that wires settings, services, auth, errors and blueprints."""

from __future__ import annotations

import logging
import time

from flask import Flask, g, request
from flask.wrappers import Response
from flask_smorest import Api

from workerrmq import __version__
from workerrmq.api import (
    access,
    attempts,
    connections,
    consumers,
    dashboard,
    exchanges,
    health,
    history,
    keys,
    managed,
    messages,
    no_worker,
    queues,
    schemas,
    seed,
    workers,
)
from workerrmq.api.auth import init_auth
from workerrmq.api.errors import register_error_handlers
from workerrmq.api.prefix import UrlPrefix
from workerrmq.api.proxies import TrustedProxies
from workerrmq.services.container import Services
from workerrmq.settings import Settings

__all__ = ["create_app"]


class _Api(Api):
    ERROR_SCHEMA = schemas.Error


log = logging.getLogger("workerrmq.api")


def create_app(settings: Settings | None = None) -> Flask:
    """Build the API. Migrates the database and makes sure an admin key exists."""
    settings = settings or Settings.from_env()
    # No app-wide static folder: the dashboard blueprint serves /static.
    app = Flask("workerrmq", static_folder=None)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        API_TITLE="WorkerRMQ",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL=dashboard.SWAGGER_UI_URL,  # served from swagger-ui-bundle, no CDN
        API_SPEC_OPTIONS={
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearer": []}],
        },
    )
    services = Services.build(settings)
    services.prepare()  # a wrong SECRET_KEY stops here, naming it
    app.extensions["workerrmq"] = services

    app.before_request(_start_timer)
    no_worker.init_app(app)
    init_auth(app, failure_limit=settings.auth_failure_limit)
    api = _Api(app)
    for module in (
        queues,
        exchanges,
        messages,
        consumers,
        attempts,
        history,
        workers,
        connections,
        keys,
        managed,
        seed,
    ):
        api.register_blueprint(module.blp)
    app.register_blueprint(health.blp)
    app.register_blueprint(dashboard.blp)
    register_error_handlers(app)
    app.after_request(_log_request)
    app.wsgi_app = TrustedProxies(app.wsgi_app, settings.trusted_proxies)  # type: ignore[method-assign]
    if settings.url_prefix:
        app.wsgi_app = UrlPrefix(app.wsgi_app, settings.url_prefix)  # type: ignore[method-assign]
    return app


def _start_timer() -> None:
    g.started = time.perf_counter()


def _log_request(response: Response) -> Response:
    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    key_name = key.name if (key := g.get("key")) else None
    access.record(request.method, request.path, route, response.status_code, elapsed, key_name)
    return response
