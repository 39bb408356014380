#!/usr/bin/env bash
# Run one of the project's Python tools inside the project image, as you, on this folder: the host needs no
# Python packages. The image is the one compose builds (docker compose build server).
#
#   scripts/in_image.sh scripts/provision.py --force
#   scripts/in_image.sh scripts/add_site.py site-3 --org hospital_c
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] && [ "$1" != "-h" ] && [ "$1" != "--help" ] || { sed -n '2,7p' "$0"; exit 0; }
image=$(docker compose config --images | sort -u | head -n1)  # sort reads all: no SIGPIPE for compose
docker image inspect "$image" >/dev/null 2>&1 || { echo "error: image $image not built: docker compose build server" >&2; exit 2; }
tty=(); [ -t 0 ] && tty=(-it)
user="$(id -u):$(id -g)"  # as you; under rootless Docker you are the container's root (your uid maps elsewhere)
if docker info --format '{{json .SecurityOptions}}' 2>/dev/null | grep -q rootless; then user=0:0; fi
exec docker run --rm "${tty[@]}" -u "$user" -e HOME=/tmp -v "$PWD:/src" -w /src --entrypoint python3 "$image" "$@"
