#!/usr/bin/env bash
# The whole demo: build the image, provision the kits, start the federation, submit the job, show the results.
#
#   scripts/demo.sh            GPUs, GPT-2 and IMDB from the Hugging Face hub
#   scripts/demo.sh --cpu      no GPU: the CPU overlay (compose.cpu.yaml); chosen by itself on a host with no
#                              NVIDIA GPU
#   scripts/demo.sh --tiny     offline: a tiny GPT-2 and IMDB-shaped data made on this host, a short job
#
# Needs only Docker Engine with Compose v2 and python3 (plus nvidia-container-toolkit for GPUs). Settings come
# from .env (created from .env.example on first run); the shell environment overrides it. What this run chooses
# (CPU overlay, the tiny job, your uid) is recorded at the end of .env, so every later command on this host
# (docker compose ..., submit_job.py, a restart) does the same. If the image build cannot reach PyPI from inside
# Docker (TLS-intercepting proxy, air gap), the wheelhouse is built on this host and the image from it.
# Tear down everything (TensorBoard too): docker compose --profile "*" down (keeps job store and workspaces),
# or docker compose --profile "*" down -v (deletes them).
set -euo pipefail
cd "$(dirname "$0")/.."

cpu=0 tiny=0
for arg in "$@"; do
  case "$arg" in
    --cpu) cpu=1 ;;
    --tiny) tiny=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "error: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
say() { printf '\n[demo %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

[ -f .env ] || { cp .env.example .env; say "created .env from .env.example"; }
# The choices of this run, recorded in .env below: containers run as you, so kits, assets and results stay yours
# (as root: the image's own uid 10001).
chosen=()
if [ "$(id -u)" != 0 ]; then chosen+=("FL_UID=$(id -u)"); fi
if [ "$cpu" = 0 ]; then  # the GPU path Docker takes (hook, runtime or CDI); CPU only on a host with no NVIDIA GPU
  gpu_rc=0; gpu_path=$(python3 -m fl_deploy.docker_engine gpu) || gpu_rc=$?
  case $gpu_rc in
    0) say "$gpu_path" ;;
    3) say "$gpu_path: running on CPU (the overlay compose.cpu.yaml), as with --cpu"; cpu=1 ;;
    4) ;;  # Docker did not answer: check_host.py below names why
    *) exit 2 ;;  # a GPU Docker cannot pass: the line above says the fix (or --cpu)
  esac
fi
if [ "$cpu" = 1 ]; then chosen+=(COMPOSE_FILE=compose.yaml:compose.cpu.yaml); fi
if [ "$tiny" = 1 ]; then
  while IFS= read -r line; do  # docker/tiny-job.env: the tiny job's one home
    case "$line" in ""|"#"*) continue;; FL_ROUNDS=*) line="FL_ROUNDS=${FL_ROUNDS_TINY:-${line#FL_ROUNDS=}}";; esac
    chosen+=("$line")
  done < docker/tiny-job.env
fi
python3 -m fl_deploy.host record .env scripts/demo.sh "${chosen[@]}"
if [ ${#chosen[@]} -gt 0 ]; then
  export "${chosen[@]}"  # this run too, over anything the shell had
  say "recorded in .env (its last block) for every later command on this host: ${chosen[*]}"
fi
check=(--port); [ "$cpu" = 1 ] && check+=(--cpu)
python3 scripts/check_host.py "${check[@]}"

image=$(docker compose config --images | sort -u | head -n1)  # sort reads all: no SIGPIPE for compose
wheels() { ls docker/wheels/*.whl 2>/dev/null | wc -l; }
build() { docker compose build server 2>&1 | tee "$build_log"; return "${PIPESTATUS[0]}"; }
build_log=$(mktemp); trap 'rm -f "$build_log"' EXIT
say "building image $image ($(wheels) wheels in docker/wheels; 0 = from PyPI)"
t0=$SECONDS
if ! build; then
  # pip inside the build could not reach PyPI (a TLS-intercepting proxy, an air gap): the host's pip may.
  if [ "$(wheels)" != 0 ] || ! grep -qE "CERTIFICATE_VERIFY_FAILED|Could not fetch URL|NewConnectionError|Failed to \
establish a new connection|Temporary failure in name resolution|ProxyError|Network is unreachable|No matching \
distribution found|Max retries exceeded|ReadTimeoutError" "$build_log"; then
    echo "error: docker compose build failed (its output is above)" >&2; exit 1
  fi
  wheelhouse=(scripts/build_wheelhouse.sh); [ "$cpu" = 1 ] && wheelhouse+=(--cpu)
  say "pip cannot reach PyPI from inside Docker here; building the wheelhouse on this host (${wheelhouse[*]}), then the image from it"
  if ! bash "${wheelhouse[@]}"; then
    echo "error: the image build cannot reach PyPI from inside Docker and building the wheelhouse on this host" \
         "failed too (above); fix: run ${wheelhouse[*]} where pip reaches PyPI or a mirror (PIP_INDEX_URL)," \
         "copy docker/wheels/ here and run the demo again, or docker load an image built elsewhere" >&2
    exit 2
  fi
  build || { echo "error: docker compose build failed with the wheelhouse too (its output is above)" >&2; exit 1; }
fi
say "image built in $((SECONDS - t0))s: $(docker image inspect "$image" --format '{{.Size}}' | awk '{printf "%.2f GB", $1/1e9}')"

in_image() { bash scripts/in_image.sh "$@"; }  # the project's tools run in the image, as you
if [ -d workspace/kits ]; then
  say "kits already provisioned in workspace/kits (python3 scripts/provision.py --force to redo)"
else
  say "provisioning project.yml"
  in_image scripts/provision.py
fi
if [ "$tiny" = 1 ] && [ ! -f assets/tiny/model/config.json ]; then
  say "making the tiny offline model and dataset in assets/tiny"
  in_image scripts/make_tiny_assets.py --out assets/tiny
fi

say "starting the federation"
t0=$SECONDS
docker compose up -d --no-build --wait
say "all services healthy (sites registered) in $((SECONDS - t0))s"
docker compose ps

say "submitting the job through the admin console"
t0=$SECONDS
python3 scripts/submit_job.py
say "job finished in $((SECONDS - t0))s from submission"
echo "Logs: docker compose logs -f server site-1   Stop everything: docker compose --profile \"*\" down"
[ ${#chosen[@]} -eq 0 ] || echo "This run's choices stay in .env (its last block) for every later command: ${chosen[*]}"
