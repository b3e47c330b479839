"""Gunicorn reads this file from the working directory, so the seed's command
``gunicorn --bind 0.0.0.0:5000 wsgi:app`` serves the API as ``workerrmq api`` does
(the same worker class, limits and timeouts) and starts one supervised worker beside it,
as ``workerrmq run`` does: messages are delivered. Command-line options override these.

``workerrmq api`` and ``workerrmq run`` do not read this file (they configure Gunicorn
themselves), so ``workerrmq run`` never gets a second worker from it. Running more workers
beside ``gunicorn wsgi:app`` (``workerrmq worker``) is fine: each message goes to one.
"""

from workerrmq.logs import configure_logging
from workerrmq.server import seed_options, share_metrics_between_processes
from workerrmq.settings import Settings

_settings = Settings.from_env()
configure_logging(_settings.log_level, _settings.log_format)
share_metrics_between_processes()
globals().update(seed_options(_settings))
