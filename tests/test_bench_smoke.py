"""The benchmark of issue 5, quick mode: it runs, cleans up, and reports a number for every case.

No speed is asserted here; ``./run.sh bench`` is the benchmark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workerrmq.broker.management import ManagementClient

ROOT = Path(__file__).resolve().parent.parent
MANAGEMENT_URL = os.environ.get("TEST_RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")


def _rates(runs: list[dict]) -> list[float]:
    return [r["rate"] for r in runs if isinstance(r.get("rate"), float | int) and r["rate"] > 0]


@pytest.mark.timeout(300)
def test_quick_benchmark_reports_every_case(tmp_path: Path, broker: str, mgmt: ManagementClient) -> None:
    env = {**os.environ, "RABBITMQ_URL": broker, "RABBITMQ_MANAGEMENT_URL": MANAGEMENT_URL}
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    results = json.loads((tmp_path / "performance.json").read_text())
    for size, by_contender in results["relay"].items():
        for contender, runs in by_contender.items():
            assert _rates(runs), f"relay {size} {contender}: {runs}"
    for contender, runs in results["latency"].items():
        assert runs and all(
            isinstance(r.get(k), float) for r in runs for k in ("p50_ms", "p99_ms", "max_ms")
        ), f"latency {contender}: {runs}"
    for kind in ("api_single", "mgmt_single", "api_batch"):
        assert _rates(results["publish"][kind]), f"publish {kind}: {results['publish'][kind]}"
    for variant in ("alone", "failing_circuit_on", "failing_circuit_off"):
        assert _rates(results["isolation"][variant]), f"isolation {variant}"
    for run in results["scale"]["runs"]:
        assert {"consuming_seconds", "rss_mb", "idle_cpu_percent"} <= run.keys(), run

    report = (tmp_path / "PERFORMANCE.md").read_text()
    table = report.split("## Against the targets", 1)[1].split("\n\n")[1]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 11, table
    for row in rows:
        assert "no figure" not in row and " — " not in row, row
        assert "met" in row or "missed" in row, row
    for heading in ("Relay throughput", "Latency", "Publish API", "Isolation", "Scale"):
        assert f"## {heading}" in report
    png = (tmp_path / "performance.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000

    # Nothing of the benchmark is left on the broker.
    leftovers = [q["name"] for q in mgmt.list_queues(name="bench-", page=1, page_size=500)["items"]]
    prefix = results["meta"].get("queue_prefix", "bench-")
    assert not [name for name in leftovers if name.startswith(prefix)], leftovers
