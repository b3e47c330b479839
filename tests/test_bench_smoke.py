"""The benchmark in quick mode: it runs, cleans up, and reports a number for every case.

No speed is asserted here; ``./run.sh bench`` is the benchmark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report as bench_report
from bench import run as bench_run
from workerrmq.broker.management import ManagementClient

ROOT = Path(__file__).resolve().parent.parent
MANAGEMENT_URL = os.environ.get("TEST_RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
#: The commit the comparison test runs against the working tree.
COMPARE_REV = os.environ.get("TEST_BENCH_COMPARE_REV", "HEAD")


def _rates(runs: list[dict]) -> list[float]:
    return [r["rate"] for r in runs if isinstance(r.get("rate"), float | int) and r["rate"] > 0]


def _bench(broker: str, *args: str, timeout: float = 280) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RABBITMQ_URL": broker, "RABBITMQ_MANAGEMENT_URL": MANAGEMENT_URL}
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _assert_no_leftovers(mgmt: ManagementClient, prefix: str) -> None:
    """Nothing of the run is left on the broker: no queue (nor dead-letter queue) of its own."""
    assert prefix.startswith("bench-"), prefix
    leftovers = [q["name"] for q in mgmt.list_queues(name=prefix, page=1, page_size=500)["items"]]
    assert not [name for name in leftovers if name.startswith(prefix)], leftovers


@pytest.mark.timeout(400)
def test_quick_benchmark_reports_every_case(tmp_path: Path, broker: str, mgmt: ManagementClient) -> None:
    """Every case and contender, the scale curve with two points (5 and 20 consumers, each a
    cold start of its own worker), the report, and nothing left behind. 200 messages a relay
    run (--quick's 500 took the seed's design, at tens a second, most of a minute)."""
    _bench(
        broker, "--quick", "--messages", "200", "--scale-counts", "5,20", "--out", str(tmp_path), timeout=380
    )

    results = json.loads((tmp_path / "performance.json").read_text())
    for size, by_contender in results["relay"].items():
        assert set(by_contender) == set(bench_run.RELAY_CONTENDERS)
        for contender, runs in by_contender.items():
            assert _rates(runs), f"relay {size} {contender}: {runs}"
            # The CPU meter brackets the whole run: 200 messages are enough for a figure.
            assert all((r.get("cpu_us_per_msg") or 0) > 0 for r in runs), f"relay {size} {contender}: {runs}"
    for contender, runs in results["latency"].items():
        assert runs and all(
            isinstance(r.get(k), float) for r in runs for k in ("p50_ms", "p99_ms", "max_ms")
        ), f"latency {contender}: {runs}"
    for kind in ("api_single", "mgmt_single", "api_batch", "amqp_batch"):
        assert _rates(results["publish"][kind]), f"publish {kind}: {results['publish'][kind]}"
    for variant in ("alone", "failing_circuit_on", "failing_circuit_off"):
        assert _rates(results["isolation"][variant]), f"isolation {variant}"
    assert results["scale"]["processes"] == 1
    points = results["scale"]["points"]
    assert set(points) == {"5", "20"}
    for count, point in points.items():
        (run,) = point["runs"]
        assert "error" not in run, run
        assert run["consumers"] == int(count)
        assert 0 < run["consuming_seconds"] < 60, run
        assert run["rss_mb"] > 10, run
        assert run["idle_cpu_percent"] >= 0, run

    report = (tmp_path / "PERFORMANCE.md").read_text()
    table = report.split("## Against the targets", 1)[1].split("\n\n")[1]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 17, table
    for row in rows:
        if row.startswith("| scale:"):  # quick mode measures 20 consumers, not 1,000 or 10,000
            assert "no figure" in row, row
            continue
        assert "no figure" not in row and " — " not in row, row
        assert "met" in row or "missed" in row, row
    headings = (
        "Across runs",
        "Relay throughput",
        "Feature costs",
        "Latency",
        "Publish API",
        "Isolation",
        "Scale curves",
    )
    for heading in headings:
        assert f"## {heading}" in report
    # Each feature's row, (a) without the attempt log and (a) through pyreqwest among them.
    features = report.split("## Feature costs", 1)[1].split("\n## ", 1)[0]
    for contender in bench_report.FEATURE_CONTENDERS:
        assert f"| {bench_report.CONTENDER_NAMES[contender]} |" in features, contender
    assert "| 20 |" in report.split("## Scale curves", 1)[1]
    # A quick run shows the history but adds no row to it.
    assert "`8b6278e`" in report.split("## Across runs", 1)[1]
    assert not (tmp_path / "performance-history.json").exists()
    png = (tmp_path / "performance.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000

    _assert_no_leftovers(mgmt, results["meta"]["queue_prefix"])


@pytest.mark.timeout(300)
def test_compare_runs_both_sides_interleaved(tmp_path: Path, broker: str, mgmt: ManagementClient) -> None:
    # Resolved first: a commit made meanwhile (in a shared checkout) must not move HEAD under it.
    rev = subprocess.run(
        ["git", "rev-parse", "--short", COMPARE_REV], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    done = _bench(
        broker,
        "--compare",
        rev,
        "--quick",
        "--runs",
        "2",
        "--messages",
        "300",
        "--sizes",
        "200",
        "--out",
        str(tmp_path),
    )

    results = json.loads((tmp_path / "compare.json").read_text())
    assert results["meta"]["sides"]["rev"]["commit"] == rev
    assert results["meta"]["sides"]["rev"]["source"].endswith("compare-source")
    for side in ("work", "rev"):
        assert len(_rates(results["relay"]["workerrmq"]["200"][side])) == 2, results["relay"]
        for kind in ("api_single", "api_batch"):
            assert len(_rates(results["publish"][kind][side])) == 2, results["publish"][kind]
    # The printed table: one line per figure, each with both medians, the ratio and the spread.
    lines = [line for line in done.stdout.splitlines() if line.startswith(("relay", "publish"))]
    assert len(lines) == 4, done.stdout
    for line in lines:
        assert "×" in line and "–" in line, line
    _assert_no_leftovers(mgmt, results["meta"]["queue_prefix"])


def test_compare_refuses_code_from_elsewhere(tmp_path: Path) -> None:
    """A side whose PYTHONPATH does not lead to its own checkout is refused before it runs."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with pytest.raises(RuntimeError, match="not from"):
        bench_run._check_source(env, tmp_path, tmp_path)
    bench_run._check_source({**env, "PYTHONPATH": str(ROOT)}, tmp_path, ROOT)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scale-counts", "0"], "--scale-counts"),
        (["--scale-counts", "100,many"], "--scale-counts"),
        (["--compare", "HEAD", "--cases", "isolation"], "isolation"),
        (["--compare", "HEAD", "--contenders", "plain"], "plain"),
    ],
)
def test_bad_arguments_are_named(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_run.parse_args(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
