"""Private RabbitMQ nodes and a private PostgreSQL, started by a test and stopped after it.

Each node has its own node name, ports, data and log directories and configuration under a
temporary directory, so the machine's shared broker (``rabbit@<host>`` on 5672/15672/25672)
and PostgreSQL (5432) are never touched. The Erlang cookie lives in the temporary ``HOME``
that every node and every ``rabbitmqctl`` call of one set share.

A test that cannot start them (no ``rabbitmq-server`` or ``initdb`` installed) is skipped,
and fails in CI when the server is installed but would not start.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support import free_port, wait_for

RABBITMQ_BIN = Path(os.environ.get("TEST_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
POSTGRES_BIN = Path(os.environ.get("TEST_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
START_TIMEOUT = 90.0


def rabbitmq_installed() -> bool:
    return (RABBITMQ_BIN / "rabbitmq-server").exists()


def postgres_installed() -> bool:
    return (POSTGRES_BIN / "initdb").exists()


def skip_or_fail(reason: str) -> None:
    """Skip on a developer's machine; fail in CI, where the servers are installed."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


class RabbitNode:
    """One RabbitMQ node of its own: ``amqp_port``, ``management_port``, ``dist_port``.

    *config* is extra ``rabbitmq.conf`` text (TLS listeners, say); the plain AMQP listener is
    ``listeners.tcp.default`` unless *config* replaces it.
    """

    def __init__(self, home: Path, name: str, *, config: str = "", tls_management: bool = False) -> None:
        self.home = home
        self.name = name
        self.nodename = f"{name}@localhost"
        self.base = home / name
        self.amqp_port = free_port()
        self.management_port = free_port()
        self.dist_port = free_port()
        self.tls_management = tls_management
        self.process: subprocess.Popen[bytes] | None = None
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq.conf").write_text(self._config(config))
        (self.base / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (self.base / "rabbitmq-env.conf").write_text("")  # not the machine's /etc one

    def _config(self, extra: str) -> str:
        management = (
            ""
            if self.tls_management
            else f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.management_port}\n"
        )
        listener = "" if "listeners.tcp" in extra else f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
        return (
            listener + management + extra.format(node=self) + "log.console = false\nlog.file.level = info\n"
        )

    def env(self) -> dict[str, str]:
        """The environment of this node's server and of ``rabbitmqctl`` calls on it."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),  # the Erlang cookie of this set of nodes
            "LANG": "C.UTF-8",
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.base / "rabbit.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def start(self) -> RabbitNode:
        """Start the node (its data survives a :meth:`kill`); returns without waiting."""
        log = (self.base / "server.out").open("ab")
        self.process = subprocess.Popen(
            [str(RABBITMQ_BIN / "rabbitmq-server")],
            env=self.env(),
            cwd=self.base,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> RabbitNode:
        """Wait until the node has booted: its listeners open only then."""
        wait_for(self._listening, timeout=timeout, interval=0.2, what=f"{self.nodename}'s listeners")
        return self

    def _listening(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.nodename} exited: {self.server_log()[-2000:]}")
        return _port_open(self.amqp_port) and _port_open(self.management_port)

    def kill(self) -> None:
        """SIGKILL the node's whole process group: a crash, not a shutdown."""
        if self.process is None or self.process.poll() is not None:
            return
        self._send_kill()
        self.process.wait(30)
        wait_for(lambda: not _port_open(self.amqp_port), timeout=10, what=f"{self.nodename} to be gone")

    def _send_kill(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop the node; a node that does not stop in time is killed."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
            self.ctl("stop", timeout=30)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()
        # Leftover children (erl_child_setup, inet_gethost) share the process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """``rabbitmqctl -n <this node> ARGS``; raises with its output if it fails."""
        result = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.nodename, *args],
            env=self.env(),
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} on {self.nodename}: {result.stdout}{result.stderr}"
            )
        return result.stdout

    def server_log(self) -> str:
        logs = sorted((self.base / "log").glob("*.log"))
        text = (self.base / "server.out").read_text(errors="replace")
        return text + "".join(p.read_text(errors="replace") for p in logs)

    def amqp_url(self, host: str = "127.0.0.1") -> str:
        return f"amqp://guest:guest@{host}:{self.amqp_port}/%2F"

    def management_url(self, host: str = "127.0.0.1") -> str:
        scheme = "https" if self.tls_management else "http"
        return f"{scheme}://guest:guest@{host}:{self.management_port}"


@contextlib.contextmanager
def rabbit_nodes(count: int, *, config: str = "", tls_management: bool = False) -> Iterator[list[RabbitNode]]:
    """*count* private nodes, started together and stopped (or killed) at the end."""
    if not rabbitmq_installed():
        pytest.skip(f"rabbitmq-server is not installed under {RABBITMQ_BIN}")
    home = Path(tempfile.mkdtemp(prefix="wrmq-rabbit-"))
    cookie = home / ".erlang.cookie"
    cookie.write_text(secrets.token_hex(20))
    cookie.chmod(0o400)
    tag = uuid.uuid4().hex[:6]
    nodes = [
        RabbitNode(home, f"wrmq-{tag}-{i}", config=config, tls_management=tls_management)
        for i in range(1, count + 1)
    ]
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            try:
                node.wait_ready()
            except (RuntimeError, AssertionError, subprocess.SubprocessError) as exc:
                skip_or_fail(f"a private RabbitMQ node would not start: {exc}"[:3000])
        yield nodes
    finally:
        # Their data is deleted next, so a graceful stop (a rabbitmqctl call and a shutdown of
        # several seconds, node after node) would keep nothing: kill them all at once.
        for node in nodes:
            node._send_kill()
        for node in nodes:
            node.kill()
        shutil.rmtree(home, ignore_errors=True)


def cluster(nodes: list[RabbitNode]) -> None:
    """Join every node after the first to the first (``rabbitmqctl join_cluster``).

    Each node's ``stop_app`` and ``start_app`` (seconds each) run at the same time as the
    other nodes'; the joins themselves, which change the first node's cluster, one at a time.
    """
    first, others = nodes[0], nodes[1:]
    with concurrent.futures.ThreadPoolExecutor(len(others) or 1) as pool:
        list(pool.map(lambda node: node.ctl("stop_app"), others))
        for node in others:
            node.ctl("join_cluster", first.nodename)
        list(pool.map(lambda node: node.ctl("start_app"), others))
    for node in nodes:
        node.wait_ready()


class PrivatePostgres:
    """A PostgreSQL server of its own, run as the ``postgres`` OS user (it refuses root)."""

    def __init__(self, *, settings: dict[str, str], hba: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="wrmq-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.settings = settings
        self.hba = hba

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(POSTGRES_BIN / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]}: {result.stdout}{result.stderr}")

    def own(self, path: Path) -> Path:
        """Give *path* to the server's user (key files must be its own and 0600)."""
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")
        return path

    def start(self) -> PrivatePostgres:
        self.own(self.dir)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        (self.data / "pg_hba.conf").write_text(self.hba)
        options = [f"-p {self.port}", "-c listen_addresses=localhost", f"-k {self.dir}"]
        options += [f"-c {key}={value}" for key, value in self.settings.items()]
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            " ".join(options),
            "start",
            timeout=90,
        )
        return self

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():  # pg_ctl failed: kill the postmaster this test started
            with contextlib.suppress(ValueError, ProcessLookupError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def _port_open(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def management_get(node: RabbitNode, path: str, **kwargs: object) -> object:
    """GET *path* from the node's management API (JSON)."""
    scheme = "https" if node.tls_management else "http"
    response = requests.get(
        f"{scheme}://localhost:{node.management_port}{path}", auth=("guest", "guest"), timeout=10, **kwargs
    )  # type: ignore[arg-type]
    response.raise_for_status()
    return response.json()


def elapsed_since(start: float) -> float:
    return time.monotonic() - start
