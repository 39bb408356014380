#!/usr/bin/env bash
# The whole demo: build the image, provision the kits, start the federation, submit the job, show the results.
#
#   scripts/demo.sh            GPUs, GPT-2 and IMDB from the Hugging Face hub
#   scripts/demo.sh --cpu      no GPU: the CPU overlay (compose.cpu.yaml)
#   scripts/demo.sh --tiny     offline: a tiny GPT-2 and IMDB-shaped data made on this host, a short job
#
# Needs only Docker Engine with Compose v2 and python3 (plus nvidia-container-toolkit for GPUs). Settings come
# from .env (created from .env.example on first run); flags and the shell environment override it.
# Tear down everything (TensorBoard too): docker compose --profile "*" down (keeps job store and workspaces),
# or docker compose --profile "*" down -v (deletes them).
set -euo pipefail
cd "$(dirname "$0")/.."

cpu=0 tiny=0
for arg in "$@"; do
  case "$arg" in
    --cpu) cpu=1 ;;
    --tiny) tiny=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "error: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
say() { printf '\n[demo %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

[ -f .env ] || { cp .env.example .env; say "created .env from .env.example"; }
# Containers run as you, so kits, assets and results stay yours (as root: the image's own uid 10001).
if [ "$(id -u)" != 0 ]; then export FL_UID=$(id -u); fi
if [ "$cpu" = 1 ]; then export COMPOSE_FILE=compose.yaml:compose.cpu.yaml; fi
if [ "$tiny" = 1 ]; then
  export HF_HUB_OFFLINE=1 FL_MODEL=/assets/tiny/model FL_DATASET=/assets/tiny/imdb
  export FL_ROUNDS=${FL_ROUNDS_TINY:-3} FL_MAX_STEPS=5 FL_BATCH_SIZE=4 FL_EVAL_SAMPLES=32 FL_SITE_SHM_SIZE=256m
fi
check=(--port); [ "$cpu" = 1 ] && check+=(--cpu)
python3 scripts/check_host.py "${check[@]}"

image=$(docker compose config --images | sort -u | head -n1)  # sort reads all: no SIGPIPE for compose
say "building image $image ($(ls docker/wheels/*.whl 2>/dev/null | wc -l) wheels in docker/wheels; 0 = from PyPI)"
t0=$SECONDS
docker compose build server
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
