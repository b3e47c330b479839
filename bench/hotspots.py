"""Summarise py-spy's collapsed stacks (``bench.run --profile DIR``): where the CPU time goes.

    python -m bench.hotspots DIR/003-worker.txt [--top 25] [--filter workerrmq]

Prints the functions with the most samples on top of the stack (self) and anywhere in it
(inclusive), as shares of all samples. Line numbers are dropped, so a function is one row.
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

#: Leaf frames of threads that wait (py-spy's idle detection misses some): left out by default.
IDLE_LEAVES = (
    "EpollSelector.select",
    "Condition.wait",
    "_worker",
    "Thread.run",
    "Arbiter.wait_for_signals",
    "Event.wait",
    "Arbiter.sleep",
    "select",
    "sleep",
)
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match.group('func')} ({path})"


def summarise(path: Path, top: int, only: str | None, idle: bool = False) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = skipped = 0
    for line in path.read_text(errors="replace").splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        count = int(match.group("count"))
        frames = [
            _short(f)
            for f in match.group("stack").split(";")
            if f and not f.startswith(("process ", "thread "))
        ]
        if not frames:
            continue
        if not idle and frames[-1].split(" (", 1)[0] in IDLE_LEAVES:
            skipped += count
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{path.name}: {total:,} busy samples ({skipped:,} idle ones left out)"]
    for title, counter in (("self", own), ("inclusive", inclusive)):
        lines.append(f"\n  top {top} by {title} time:")
        rows = [(f, n) for f, n in counter.most_common() if not only or only in f][:top]
        lines += [f"  {n / max(total, 1) * 100:5.1f}%  {f}" for f, n in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--filter", help="only functions whose row contains this text")
    parser.add_argument("--idle", action="store_true", help="keep samples of waiting threads")
    args = parser.parse_args()
    for path in args.files:
        print(summarise(path, args.top, args.filter, args.idle))
        print()


if __name__ == "__main__":
    main()
