#!/usr/bin/env bash
# Download (and build where needed) every pinned Python package into docker/wheels/, so the image builds with
# no network: the path for air-gapped sites, and the one the tests use. Run with the same Python minor version
# as the image's base (3.11 for both default bases).
#
#   scripts/build_wheelhouse.sh                # torch as pip resolves it here (from PyPI on Linux x86_64: the
#                                              #   CUDA 13 build, NVIDIA driver 580 or newer)
#   scripts/build_wheelhouse.sh --torch cu129  # PyTorch's CUDA 12.9 build of the same torch (driver >= 525.60.13)
#   scripts/build_wheelhouse.sh --torch cpu    # the CPU-only build (much smaller); --cpu says the same
# Without --torch, FL_TORCH_CUDA from the environment or .env picks the build (the image's build argument too).
set -euo pipefail
cd "$(dirname "$0")/.."
variant=${FL_TORCH_CUDA-}
if [ -z "${FL_TORCH_CUDA+set}" ] && [ -f .env ]; then variant=$(sed -n 's/^FL_TORCH_CUDA=//p' .env | tail -n1); fi
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    --cpu) variant=cpu ;;
    --torch) [ $# -ge 2 ] || { echo "error: --torch needs a build: cu129, cpu" >&2; exit 2; }; variant=$2; shift ;;
    *) echo "error: unknown option $1 (use --torch cu129|cpu, --cpu, or nothing)" >&2; exit 2 ;;
  esac
  shift
done
case "$variant" in
  "") torch_index=() ;;
  cpu|cu[0-9][0-9][0-9]) torch_index=(--index-url "${TORCH_INDEX:-https://download.pytorch.org/whl}/$variant") ;;
  *) echo "error: --torch $variant is not a torch build: use cu129 (CUDA 12.9) or cpu" >&2; exit 2 ;;
esac
mkdir -p docker/wheels
# One torch build per wheelhouse (the image installs whichever torch wheel it finds): switching builds needs an
# empty folder.
for old in docker/wheels/torch-*.whl; do
  [ -e "$old" ] && [ -n "$variant" ] || continue
  build=$(basename "$old" | cut -d- -f2)
  [ "${build#*+}" = "$variant" ] || { echo "error: docker/wheels holds $(basename "$old"), not torch's +$variant build:" \
    "empty it first (rm docker/wheels/*.whl), then run this again" >&2; exit 2; }
done
py=${PYTHON:-python3}
ver=$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
[ "$ver" = "3.11" ] || echo "warning: $py is Python $ver; the default image bases run 3.11, whose wheels may differ" >&2
"$py" -m pip wheel -q -w docker/wheels "${torch_index[@]}" -r requirements-torch.txt
# torch is already in the folder: find-links keeps pip from fetching another build of it as a dependency
"$py" -m pip wheel -q -w docker/wheels --find-links docker/wheels -r requirements-torch.txt -r requirements.txt
echo "wheelhouse: docker/wheels ($(ls docker/wheels/*.whl | wc -l) wheels, $(du -sh docker/wheels | cut -f1)," \
     "torch $(basename docker/wheels/torch-*.whl | cut -d- -f2))"
