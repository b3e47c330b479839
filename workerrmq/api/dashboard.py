"""The dashboard at ``/``: a page that signs in with an API key and calls the REST API.

The page itself carries no data and needs no key: a small script
(``static/dashboard.js``) asks for an API key, keeps it in the browser's
``sessionStorage`` and calls ``/api/v1`` with it. No build step: the template,
the script and the style sheet are served as they are.
"""

from __future__ import annotations

import os

from flask import Blueprint, Response, render_template
from flask.blueprints import BlueprintSetupState

from workerrmq import __version__
from workerrmq.api.auth import public

blp = Blueprint("dashboard", __name__, static_folder="static", static_url_path="/static",
                template_folder="templates")

# Everything the page loads comes from this origin; no inline script or style.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


@blp.record_once
def _serve_static_files(state: BlueprintSetupState) -> None:
    """Make ``/static/...`` serve this blueprint's files.

    The app's own static route (``Flask("workerrmq")`` gets one for
    ``workerrmq/static``) is registered first and has the same URL rule, so it
    wins; while that folder does not exist, point it at the dashboard's files.
    """
    app = state.app
    if blp.static_folder and not (app.static_folder and os.path.isdir(app.static_folder)):
        app.static_folder = blp.static_folder


@blp.route("/")
@public
def index() -> Response:
    response = Response(render_template("dashboard.html", version=__version__))
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response
