"""Gunicorn entry point: ``gunicorn --bind 0.0.0.0:5000 wsgi:app``."""

from app import app

__all__ = ["app"]
