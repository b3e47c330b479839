"""The services of the app handling the current request."""

from __future__ import annotations

from flask import current_app

from workerrmq.services.container import Services

__all__ = ["services"]


def services() -> Services:
    """The services of the app handling the current request."""
    found: Services = current_app.extensions["workerrmq"]
    return found
