"""Development entry point: ``flask run`` (use ``./run.sh`` or ``workerrmq api`` in production)."""

from workerrmq.api import create_app
from workerrmq.logs import configure_logging
from workerrmq.settings import Settings

settings = Settings.from_env()
configure_logging(settings.log_level, settings.log_format)
app = create_app(settings)
