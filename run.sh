#!/usr/bin/env bash
# WorkerRMQ in one command.
#   ./run.sh           set up .venv if needed, then serve on $BIND (default 0.0.0.0:5000)
#   ./run.sh test      the same set-up with test tools, then the whole test suite
#   ./run.sh test ARGS pytest arguments, e.g. ./run.sh test -k publish
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

setup() {
  local extras=$1
  if [ ! -x "$venv/bin/python" ]; then
    "$(pick_python)" -m venv "$venv"
  fi
  # Reinstall only when the project's metadata changed since the last install.
  local stamp="$venv/.installed${extras:+-test}"
  local want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e ".$extras"
    echo "$want" > "$stamp"
  fi
}

case "${1:-}" in
  test)
    shift
    setup "[test]"
    exec "$venv/bin/python" -m pytest "$@"
    ;;
  "")
    setup ""
    exec "$venv/bin/workerrmq" run
    ;;
  *)
    setup ""
    exec "$venv/bin/workerrmq" "$@"
    ;;
esac
