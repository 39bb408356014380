#!/usr/bin/env bash
# Run the test suite: unit tests, the process-based federation, and (with a Docker engine) the compose demo.
# First removes the compose stacks of earlier test runs that were killed (their process is gone).
#
#   scripts/test.sh                  # everything; the compose e2e test skips if no Docker engine answers
#   scripts/test.sh -m "not e2e"     # any pytest arguments pass through
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ] && { sed -n '2,6p' "$0"; exit 0; }
bash scripts/install_venv.sh
# Stacks an interrupted earlier run left behind (their test process is gone) hold CPU and ports: remove them.
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  .venv/bin/python -m fl_deploy.harness.compose_stack --remove-stale-test-stacks
fi
exec .venv/bin/python -m pytest -ra "$@"
