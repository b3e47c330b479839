"""The image's HEALTHCHECK: exit 0 when every process the container runs answers ``/healthz``.

Which ports to ask follows the command the container runs (PID 1's arguments):
``api`` serves on ``BIND``, ``worker`` on ``WORKER_BIND``, ``run`` on both.
A role given as the first argument (``api``, ``worker`` or ``run``) overrides that.
Standard library only: the slim image has no curl.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

ROLES = {"api": ("BIND",), "worker": ("WORKER_BIND",), "run": ("BIND", "WORKER_BIND")}
DEFAULTS = {"BIND": "0.0.0.0:5000", "WORKER_BIND": "0.0.0.0:5001"}


def container_role() -> str:
    """The workerrmq subcommand PID 1 runs (``run`` when none can be told)."""
    try:
        args = Path("/proc/1/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "run"
    if "workerrmq.supervisor" in args:  # what `worker --processes N` becomes
        return "worker"
    return next((a for a in args if a in ROLES), "run")


def health_url(bind: str) -> str:
    host, _, port = bind.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}/healthz"


def check(role: str) -> list[str]:
    """The problems found, one line each; empty when healthy."""
    problems = []
    for var in ROLES[role]:
        bind = os.environ.get(var, DEFAULTS[var]).strip()
        if not bind:  # WORKER_BIND="" turns a worker's health endpoint off
            continue
        url = health_url(bind)
        try:
            with urllib.request.urlopen(url, timeout=4) as response:
                if response.status != 200:
                    problems.append(f"{url} answered {response.status}")
        except OSError as exc:
            problems.append(f"{url}: {exc}")
    return problems


def main(argv: list[str]) -> int:
    role = argv[0] if argv else container_role()
    if role not in ROLES:
        print(f"unknown role {role!r}; use one of {', '.join(ROLES)}", file=sys.stderr)
        return 2
    problems = check(role)
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
