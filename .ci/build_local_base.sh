#!/usr/bin/env bash
# Build a minimal Debian bookworm base image with Python 3.11 locally (no registry can be reached here).
# Users build on a public CUDA/Python base instead; the Dockerfile takes the base as a build argument.
set -euo pipefail
tag=${1:-fl-local-base:bookworm}
if docker image inspect "$tag" >/dev/null 2>&1; then echo "$tag already present"; exit 0; fi
root=$(mktemp -d /var/tmp/rootfs.XXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates,curl,procps,tini \
  bookworm "$root" http://deb.debian.org/debian >/tmp/debootstrap.log 2>&1 \
  || { tail -20 /tmp/debootstrap.log >&2; exit 1; }
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' - "$tag" >/dev/null
echo "built $tag"
