#!/usr/bin/env bash
# Create .venv with the pinned stack (for the tests, the benchmarks and running the tools outside containers), with
# the project's packages on its import path (.venv's project.pth: the project root for fl_deploy and benchmarks,
# app_code/ for fl_site, fl_server, fl_common), as the image's PYTHONPATH puts them for the containers.
# torch is installed first and alone: on a CPU-only host that takes the CPU wheel, and no other package can then
# pull a multi-GB CUDA build in as a dependency. Re-running is cheap: it does nothing if the pins are unchanged.
#
#   scripts/install_venv.sh            # uses python3 (3.11 recommended: the images run 3.11)
#   PYTHON=python3.11 scripts/install_venv.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ] && { sed -n '2,10p' "$0"; exit 0; }
py=${PYTHON:-python3}
command -v "$py" >/dev/null || { echo "error: $py not found: install Python 3.11 or set PYTHON" >&2; exit 2; }
stamp=.venv/.requirements.sha
want=$(cat requirements-torch.txt requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
project_path() {  # written every time: the checkout may have moved
  printf '%s\n%s\n' "$PWD" "$PWD/app_code" > "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/project.pth"
}
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then project_path; exit 0; fi
[ -x .venv/bin/python ] || "$py" -m venv .venv
project_path
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements-torch.txt
.venv/bin/python -m pip install -q -r requirements.txt -r requirements-dev.txt
echo "$want" > "$stamp"
echo "venv ready: .venv ($(du -sh .venv | cut -f1))"
