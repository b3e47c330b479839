"""The Blueprint all WorkerRMQ APIs use: invalid arguments are 400, not webargs' 422."""

from __future__ import annotations

from typing import Any

import flask
import flask_smorest
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request

from workerrmq.api.schemas import load_json_body

__all__ = ["Blueprint"]


class _Parser(FlaskParser):
    DEFAULT_VALIDATION_STATUS = 400

    def _raw_load_json(self, req: flask.Request) -> Any:
        """webargs' own, decoding with :func:`load_json_body` (integers too long for
        Python are a 400 naming their field, not a 500)."""
        if not is_json_request(req):
            return core.missing
        return load_json_body(req.get_data(cache=True))


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = _Parser()
