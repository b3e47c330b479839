"""The dashboard at ``/``: a page that signs in with an API key and calls the REST API."""

from __future__ import annotations

from flask import Blueprint, render_template

from workerrmq.api.auth import public

blp = Blueprint("dashboard", __name__, static_folder="static", static_url_path="/static",
                template_folder="templates")


@blp.route("/")
@public
def index() -> str:
    return render_template("dashboard.html")
