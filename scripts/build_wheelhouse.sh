#!/usr/bin/env bash
# Download (and build where needed) every pinned Python package into docker/wheels/, so the image builds with
# no network: the path for air-gapped sites, and the one the tests use. Run with the same Python minor version
# as the image's base (3.11 for both default bases).
#
#   scripts/build_wheelhouse.sh            # torch as pip resolves it here (CUDA build on Linux x86_64 from PyPI)
#   scripts/build_wheelhouse.sh --cpu      # torch's CPU-only build from the PyTorch CPU index (much smaller)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
  --cpu) torch_index=(--index-url https://download.pytorch.org/whl/cpu) ;;
  "") torch_index=() ;;
  *) echo "error: unknown option $1 (use --cpu or nothing)" >&2; exit 2 ;;
esac
py=${PYTHON:-python3}
ver=$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
[ "$ver" = "3.11" ] || echo "warning: $py is Python $ver; the default image bases run 3.11, whose wheels may differ" >&2
mkdir -p docker/wheels
"$py" -m pip wheel -q -w docker/wheels "${torch_index[@]}" -r requirements-torch.txt
# torch is already in the folder: find-links keeps pip from fetching another build of it as a dependency
"$py" -m pip wheel -q -w docker/wheels --find-links docker/wheels -r requirements-torch.txt -r requirements.txt
echo "wheelhouse: docker/wheels ($(ls docker/wheels/*.whl | wc -l) wheels, $(du -sh docker/wheels | cut -f1))"
