#!/usr/bin/env bash
# The image's Python packages (docker/Dockerfile's build stage): torch first and alone, then requirements.txt.
#
#   install_packages.sh VENV WHEELS REQ_DIR
#
# Source: the wheelhouse WHEELS when it holds wheels (no network; scripts/build_wheelhouse.sh fills it), else the
# package indexes: torch from PyPI, whose Linux x86_64 wheel of the pinned torch is the CUDA 13 build (NVIDIA
# driver 580 or newer), or, with TORCH_CUDA set (cu129: CUDA 12.9, driver 525.60.13 or newer; cpu: CPU only), from
# PyTorch's own index for that build. Stops, exit 2, when the torch installed is not the TORCH_CUDA build asked
# for (a wheelhouse filled for another build).
set -euo pipefail
[ $# -eq 3 ] || { sed -n '2,10p' "$0" >&2; exit 2; }
venv=$1 wheels=$2 req=$3
pip=${PIP:-$venv/bin/pip}
py=${PYTHON:-$venv/bin/python}
torch_index=${TORCH_INDEX:-https://download.pytorch.org/whl}
variant=${TORCH_CUDA:-}
case "$variant" in
  ""|cpu|cu[0-9][0-9][0-9]) ;;
  *) echo "error: TORCH_CUDA=$variant is not a torch build: use cu129 (CUDA 12.9), cpu, or leave it empty (PyPI's CUDA 13 build)" >&2; exit 2 ;;
esac
if ls "$wheels"/*.whl >/dev/null 2>&1; then
  src=(--no-index --find-links "$wheels")
  torch_src=("${src[@]}")
  echo "installing from the wheelhouse ($(ls "$wheels"/*.whl | wc -l) wheels), no network"
else
  src=()
  torch_src=()
  [ -z "$variant" ] || torch_src=(--index-url "$torch_index/$variant")
fi
# torch first and alone, so that nothing else resolves a different build of it
"$pip" install --no-cache-dir "${torch_src[@]}" -r "$req/requirements-torch.txt"
"$pip" install --no-cache-dir "${src[@]}" -r "$req/requirements.txt"
installed=$("$py" -c 'from importlib.metadata import version; print(version("torch"))')
if [ -n "$variant" ] && [ "${installed##*+}" != "$variant" ]; then
  echo "error: torch $installed was installed but TORCH_CUDA=$variant asks for its +$variant build: the wheelhouse" \
       "holds another build; refill it (rm docker/wheels/*.whl; scripts/build_wheelhouse.sh --torch $variant) or" \
       "empty it to install from the indexes" >&2
  exit 2
fi
echo "torch $installed installed (TORCH_CUDA=${variant:-empty: the default index})"
