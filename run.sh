#!/usr/bin/env bash
# WorkerRMQ in one command.
#   ./run.sh              set up .venv if needed, then run the API and a worker on $BIND (0.0.0.0:5000)
#   ./run.sh test [ARGS]  the same set-up with the test tools, then the static checks and the test suite
#                         (with ARGS: the checks are skipped and ARGS go to pytest)
#   ./run.sh check        the static checks alone: ruff check, ruff format --check, mypy
#   ./run.sh soak         the long fault runs: 100,000 messages per kind of fault
#   ./run.sh bench        the benchmark; writes docs/PERFORMANCE.md and docs/performance.png
#   ./run.sh COMMAND      any other workerrmq command, e.g. ./run.sh keys list
set -euo pipefail
cd "$(dirname "$0")"

venv=.venv

pick_python() {
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
  echo "run.sh: WorkerRMQ needs Python 3.11 or newer" >&2
  exit 1
}

setup() {  # setup [EXTRAS], e.g. setup test,bench
  local extras=${1:-}
  if [ ! -x "$venv/bin/python" ]; then
    "$(pick_python)" -m venv "$venv"
  fi
  # Reinstall only when the project's metadata changed since the last install.
  local stamp="$venv/.installed-${extras:-base}"
  local want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e ".${extras:+[$extras]}"
    echo "$want" > "$stamp"
  fi
}

check() {  # each fails on any finding
  "$venv/bin/ruff" check .
  "$venv/bin/ruff" format --check .
  "$venv/bin/mypy"
}

case "${1:-}" in
  test)
    shift
    setup test,bench
    if [ $# -eq 0 ]; then check; fi
    exec "$venv/bin/python" -m pytest "$@"
    ;;
  check)
    setup test,bench
    check
    ;;
  soak)
    shift
    setup test,bench
    WORKERRMQ_CHAOS_N=${WORKERRMQ_CHAOS_N:-100000} \
      exec "$venv/bin/python" -m pytest -m chaos -p no:cacheprovider -o timeout=3600 -s "$@"
    ;;
  bench)
    shift
    setup test,bench
    exec "$venv/bin/python" -m bench.run "$@"
    ;;
  "")
    setup
    exec "$venv/bin/workerrmq" run
    ;;
  *)
    setup
    exec "$venv/bin/workerrmq" "$@"
    ;;
esac
