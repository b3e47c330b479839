"""The dashboard at ``/``: a page that signs in with an API key and calls the REST API.

The page itself carries no data and needs no key: a small script
(``static/dashboard.js``, with its SVG charts in ``static/charts.js``) asks for an API
key, keeps it in the browser's ``sessionStorage`` and calls ``/api/v1`` with it. No
build step: the template, the scripts and the style sheet are served as they are.

The API reference at ``/docs`` (flask-smorest's Swagger UI page) loads Swagger UI's
files from here too, out of the pinned ``swagger-ui-bundle`` package, so it works
offline and never asks a CDN.
"""

from __future__ import annotations

from flask import Blueprint, Response, render_template, send_from_directory
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from workerrmq import __version__
from workerrmq.api.auth import public

blp = Blueprint(
    "dashboard", __name__, static_folder="static", static_url_path="/static", template_folder="templates"
)

#: Where the Swagger UI page loads its files from, relative to ``/docs`` so that it also
#: works under ``URL_PREFIX`` (the app sets ``OPENAPI_SWAGGER_UI_URL`` to it).
SWAGGER_UI_URL = "docs/assets/"
# The files flask-smorest's page asks for; nothing else of the package is served.
_SWAGGER_FILES = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"})

# Everything the page loads comes from this origin; no inline script or style.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


@blp.route("/")
@public
def index() -> Response:
    response = Response(render_template("dashboard.html", version=__version__))
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


@blp.route("/favicon.ico")
@public
def favicon() -> Response:
    """Browsers ask for ``/favicon.ico`` whatever the page links; answer with the page's SVG icon."""
    response = send_from_directory(blp.static_folder or "static", "favicon.svg", mimetype="image/svg+xml")
    response.cache_control.max_age = 86400
    return response


@blp.route("/docs/assets/<path:filename>")
@public
def swagger_asset(filename: str) -> Response:
    """One of Swagger UI's files, from the installed ``swagger-ui-bundle`` package."""
    if filename not in _SWAGGER_FILES:
        return Response("not found\n", status=404, mimetype="text/plain")
    response = send_from_directory(swagger_ui_path, filename)
    response.cache_control.max_age = 86400
    return response
