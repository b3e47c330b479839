"""URL_PREFIX: the API and dashboard served under /workerrmq/ by a real ``workerrmq api``."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import requests

from tests.support import free_port, http_up, wait_for
from tests.workers import stop_processes


def test_api_and_dashboard_live_under_the_prefix(tmp_path, broker):
    port = free_port()
    key = "wrmq_prefix-test-admin-key-0123456789abcd"
    env = {
        **os.environ,
        "BIND": f"127.0.0.1:{port}",
        "API_WORKERS": "1",
        "URL_PREFIX": "/workerrmq/",
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
        "WORKERRMQ_API_KEY": key,
    }
    with (tmp_path / "api.log").open("wb") as out:
        api = subprocess.Popen(
            [sys.executable, "-m", "workerrmq.cli", "api"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_up(f"{base}/workerrmq/healthz"), timeout=30, what="the API under the prefix")
        page = requests.get(f"{base}/workerrmq/", timeout=10)
        assert page.status_code == 200
        assert 'data-root="/workerrmq"' in page.text  # the script calls the API under it
        assets = re.findall(r'(?:src|href)="(/[^"?]+)', page.text)
        assert assets and all(a.startswith("/workerrmq/") for a in assets), assets
        for asset in assets:
            assert requests.get(base + asset, timeout=10).status_code == 200, asset
        headers = {"Authorization": f"Bearer {key}"}
        assert requests.get(f"{base}/workerrmq/api/v1/keys", headers=headers, timeout=10).status_code == 200
        assert requests.get(f"{base}/workerrmq/openapi.json", timeout=10).status_code == 200
        # A proxy that strips the prefix before passing the request on is served too.
        assert requests.get(f"{base}/api/v1/keys", headers=headers, timeout=10).status_code == 200
        assert 'data-root="/workerrmq"' in requests.get(f"{base}/", timeout=10).text
    finally:
        stop_processes(api)
