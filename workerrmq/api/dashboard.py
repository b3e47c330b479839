"""The dashboard at ``/``: a page that signs in with an API key and calls the REST API.

The page itself carries no data and needs no key: a small script
(``static/dashboard.js``) asks for an API key, keeps it in the browser's
``sessionStorage`` and calls ``/api/v1`` with it. No build step: the template,
the script and the style sheet are served as they are.
"""

from __future__ import annotations

from flask import Blueprint, Response, render_template

from workerrmq import __version__
from workerrmq.api.auth import public

blp = Blueprint(
    "dashboard", __name__, static_folder="static", static_url_path="/static", template_folder="templates"
)

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
