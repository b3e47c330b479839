"""``python -m bench.run --compare REV``: the working tree against another commit, in one run.

Both sides run at once, each its own ``workerrmq api`` and ``workerrmq worker`` with its own
database, from its own code: the working tree as installed, REV exported with ``git archive``
and put first on PYTHONPATH (the same .venv's packages). The relay and publish cases take
turns between the sides, run by run (A B, then B A, ...), so the machine's noise falls on
both; the ratio of each pair of runs gives the spread.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.cases import WORKER_CONTENDERS, Context, Publishers, guarded, relay_once
from bench.common import ROOT, median

#: The cases a comparison runs (``--cases`` picks among them).
COMPARE_CASES = ("relay", "publish")
#: The publish kinds that depend on the side's code (the other two are the broker's own).
PUBLISH_KINDS = ("api_single", "api_batch")
SIDES = ("work", "rev")


def export(revision: str, into: Path) -> Path:
    """Write the tree of git *revision* into *into* (``git archive``), with a COMMIT file that
    names it; returns *into*. Raises RuntimeError for an unknown revision."""
    found = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if found.returncode != 0:
        raise RuntimeError(f"--compare: {revision!r} is not a commit of {ROOT}")
    commit = found.stdout.strip()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=ROOT, capture_output=True, timeout=120, check=True
    )
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    subject = subprocess.run(
        ["git", "log", "-1", "--format=%h%n%s", commit], cwd=ROOT, capture_output=True, text=True, timeout=30
    ).stdout.strip()
    (into / "COMMIT").write_text(f"{subject}\n")
    return into


async def run(sides: dict[str, Context], cases: Sequence[str], contenders: Sequence[str]) -> dict[str, Any]:
    """The relay (each worker contender, each size) and publish runs, side after side."""
    plan = sides["work"].plan
    results: dict[str, Any] = {}
    if "relay" in cases:
        results["relay"] = {
            c: {str(size): {side: [] for side in SIDES} for size in plan.sizes}
            for c in contenders
            if c in WORKER_CONTENDERS
        }
    if "publish" in cases:
        results["publish"] = {kind: {side: [] for side in SIDES} for kind in PUBLISH_KINDS}
        results["publish"]["batch_size"] = plan.batch_size
    publishers: dict[str, Publishers] = {}
    try:
        async with contextlib.AsyncExitStack() as stack:
            for side, ctx in sides.items() if "publish" in cases else ():
                queue = await ctx.broker.declare(ctx.broker.name(f"cmp-publish-{side}"))
                stack.push_async_callback(ctx.broker.delete, queue)
                publishers[side] = await stack.enter_async_context(Publishers(ctx, queue))
            for run_no in range(plan.runs):
                await _one_round(sides, publishers, results, run_no)
    finally:
        for ctx in sides.values():
            ctx.stop_worker()
    return results


async def _one_round(
    sides: dict[str, Context], publishers: dict[str, Publishers], results: dict[str, Any], run_no: int
) -> None:
    """Run *run_no* of every comparison, the sides in turn (A B, then B A the next run)."""
    plan = sides["work"].plan
    order = SIDES if run_no % 2 == 0 else SIDES[::-1]
    of = f"run {run_no + 1}/{plan.runs}"
    for contender, by_size in results.get("relay", {}).items():
        for size in plan.sizes:
            for side in order:
                label = f"compare · relay {_size(size)} · {contender} · {side} · {of}"
                by_size[str(size)][side].append(
                    await guarded(
                        sides[side],
                        label,
                        lambda s=side, z=size, c=contender, lb=label: relay_once(sides[s], c, z, lb),
                    )
                )
    for kind in PUBLISH_KINDS if publishers else ():
        for side in order:
            label = f"compare · publish {kind} · {side} · {of}"
            results["publish"][kind][side].append(await publishers[side].measure(kind, label))


def _size(size: int) -> str:
    return f"{size // 1024} KB" if size >= 1024 else f"{size} B"


# -- the table -------------------------------------------------------------------------------------


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per case, size and figure: each side's median, the ratio of the medians
    (working tree / REV) and the lowest and highest ratio of a pair of runs."""
    out = []
    plan = results.get("meta", {}).get("plan", {})
    for contender, by_size in (results.get("relay") or {}).items():
        for size, by_side in by_size.items():
            for key, unit in (("rate", "msg/s"), ("cpu_us_per_msg", "µs CPU/msg")):
                out.append(_row(f"relay {_size(int(size))} {contender}", unit, by_side, key))
    publish = results.get("publish") or {}
    for kind in PUBLISH_KINDS:
        if kind in publish:
            what = {
                "api_single": f"publish single, {plan.get('publish_clients', '?')} clients",
                "api_batch": f"publish batches of {publish.get('batch_size')}, "
                f"{plan.get('batch_clients', '?')} clients",
            }[kind]
            out.append(_row(what, "msg/s", publish[kind], "rate"))
    return out


def _row(what: str, unit: str, by_side: dict[str, list[dict[str, Any]]], key: str) -> dict[str, Any]:
    values = {
        side: [r.get(key) if isinstance(r, dict) else None for r in by_side.get(side, [])] for side in SIDES
    }
    medians = {side: median([v for v in vs if v is not None]) for side, vs in values.items()}
    pairs = [a / b for a, b in zip(values["work"], values["rev"], strict=False) if a is not None and b]
    work, rev = medians["work"], medians["rev"]
    return {
        "what": what,
        "unit": unit,
        "work": work,
        "rev": rev,
        "ratio": work / rev if work is not None and rev else None,
        "pair_low": min(pairs, default=None),
        "pair_high": max(pairs, default=None),
        "failed": sum(1 for side in SIDES for r in by_side.get(side, []) if "error" in r),
    }


def render(results: dict[str, Any]) -> str:
    """The comparison as a plain-text table, ready to paste into a commit message."""
    meta = results.get("meta", {})
    sides = meta.get("sides", {})
    work = _side_name(sides.get("work", {}), "working tree")
    rev = _side_name(sides.get("rev", {}), meta.get("revision", "REV"))
    runs = meta.get("plan", {}).get("runs", "?")
    table = [("", work, rev, "ratio", "pairs of runs")]
    for r in rows(results):
        spread = (
            f"{r['pair_low']:.2f}–{r['pair_high']:.2f}"
            if r["pair_low"] is not None and r["pair_high"] is not None and r["pair_low"] != r["pair_high"]
            else ""
        )
        if r["failed"]:
            spread += f" [{r['failed']} failed]"
        table.append(
            (
                f"{r['what']}, {r['unit']}",
                _num(r["work"]),
                _num(r["rev"]),
                f"{r['ratio']:.2f}×" if r["ratio"] is not None else "—",
                spread,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    lines = [
        f"--compare: medians of {runs} runs per side, interleaved; ratio = {work} / {rev} "
        "(msg/s: above 1 is faster; CPU/msg: below 1 is leaner)"
    ]
    for row in table:
        lines.append(
            "  ".join(
                [row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))]
            ).rstrip()
        )
    cpu = meta.get("cpu")
    if cpu:
        lines.append(
            f"CPU during the run: {cpu['busy_percent']:.0f}% busy, other processes "
            f"{cpu['others_percent']:.0f}% (100% = every core)"
        )
    return "\n".join(lines)


def _side_name(git: dict[str, Any], fallback: str) -> str:
    commit = git.get("commit")
    if not commit:
        return fallback
    if git.get("changed_files"):
        return f"{commit}+{git['changed_files']} changed"
    return commit


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"
