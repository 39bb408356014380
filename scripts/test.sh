#!/usr/bin/env bash
# Run the test suite: unit tests, the process-based federation, and (with a Docker engine) the compose demo.
#
#   scripts/test.sh                  # everything; the compose e2e test skips if no Docker engine answers
#   scripts/test.sh -m "not e2e"     # any pytest arguments pass through
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ] && { sed -n '2,6p' "$0"; exit 0; }
bash scripts/install_venv.sh
exec .venv/bin/python -m pytest -ra "$@"
