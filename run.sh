#!/usr/bin/env bash
# One entry point for setup, the demo and the tests.
#   ./run.sh          create .venv if needed, install recon, run the default demo end to end
#   ./run.sh test     create .venv if needed, install recon, run the test suite
#   ./run.sh ARGS...  anything else is passed to python inside the environment
set -euo pipefail
cd "$(dirname "$0")"
VENV="${RECON_VENV:-.venv}"
PY="${PYTHON:-python3}"

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[run.sh] creating virtual environment in $VENV"
    "$PY" -m venv "$VENV"
  fi
  # Reinstall only when pyproject.toml changed since the last install.
  local stamp="$VENV/.recon-installed"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "[run.sh] installing recon and its dependencies"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q -e ".[test]"
    touch "$stamp"
  fi
}

setup
case "${1:-demo}" in
  demo)
    exec "$VENV/bin/python" -m recon.demo "${@:2}"
    ;;
  test)
    # Two workers (RECON_TEST_WORKERS; 0 = none), each taking whole test files, so that a file's shared runs are
    # made once: most tests wait on XLA compiling, which uses one core.
    # Test files or folders among the arguments replace the default `tests`.
    target=tests
    for arg in "${@:2}"; do
      case "$arg" in tests/*) [ -e "${arg%%::*}" ] && target= ;; esac
    done
    exec "$VENV/bin/python" -m pytest $target -n "${RECON_TEST_WORKERS:-2}" --dist loadfile "${@:2}"
    ;;
  *)
    exec "$VENV/bin/python" "$@"
    ;;
esac
