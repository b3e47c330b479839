"""The packages import down the layers only, read from the modules' imports (grimp).

Top to bottom (a package may import the ones below it, never one above):

    cli, server, supervisor        the commands and what they start
    client                         the HTTP client commands: they import only core
    api | worker                   independent of each other
    services
    store | broker                 independent of each other
    settings | logs | metrics | guard | loop
    errors
    core                           imports nothing else of WorkerRMQ
"""

from __future__ import annotations

import grimp
import pytest

LAYERS = [
    grimp.Layer("cli", "server", "supervisor", independent=False),
    grimp.Layer("client"),
    grimp.Layer("api", "worker"),
    grimp.Layer("services"),
    grimp.Layer("store", "broker"),
    grimp.Layer("settings", "logs", "metrics", "guard", "loop"),
    grimp.Layer("errors"),
    grimp.Layer("core"),
]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("workerrmq", cache_dir=None)


def _shown(dependencies: set[grimp.PackageDependency]) -> list[str]:
    """Each illegal import as ``importer -> ... -> imported``."""
    return sorted(
        " -> ".join((",".join(sorted(r.heads)), *r.middle, ",".join(sorted(r.tails))))
        for d in dependencies
        for r in d.routes
    )


def test_no_package_imports_one_above_it_or_beside_it(graph):
    illegal = graph.find_illegal_dependencies_for_layers(layers=LAYERS, containers={"workerrmq"})
    assert not illegal, _shown(illegal)


def test_every_package_has_a_layer(graph):
    placed = {tail for layer in LAYERS for tail in layer.module_tails}
    children = {module.rpartition(".")[2] for module in graph.find_children("workerrmq")}
    assert children - {"__main__", "wsgi"} == placed


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        ("workerrmq.core", set()),
        ("workerrmq.client", {"workerrmq", "workerrmq.core"}),  # the version, the rules it shares
    ],
)
def test_a_package_imports_only_what_it_may(graph, package, allowed):
    outside = set()
    for module in graph.find_descendants(package) | {package}:
        for imported in graph.find_modules_directly_imported_by(module):
            if imported == package or imported.startswith(f"{package}."):
                continue
            if imported in allowed or any(imported.startswith(f"{a}.") for a in allowed - {"workerrmq"}):
                continue
            outside.add(f"{module} -> {imported}")
    assert not outside, sorted(outside)
