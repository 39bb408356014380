#!/usr/bin/env bash
# Container entrypoint: run one FL participant from its startup kit, mounted read-only at /kit.
#   server | site   NVFlare's own sub_start.sh in the foreground (--once: Docker restarts it, not a bash loop),
#                   with the writable workspace (job store, logs, snapshots) on the /workspace volume.
#   admin           keep the admin kit ready for `docker compose exec admin nvflare ...`.
#   anything else   run as a command (python, nvflare, bash ...).
set -euo pipefail
role=${1:---help}

need_kit() {  # missing, or there but closed to this uid (umask, SELinux, rootless): which, and the fix
  fl-kit-present /kit || exit 2
}

case "$role" in
  server|site)
    need_kit
    fl-kit-check access "$role" || exit 2   # kit readable, volumes writable by this uid: else one line with the fix
    fl-kit-check validity "$role" || exit 2   # its certificates' dates: expired, or this host's clock behind
    mkdir -p /workspace/tmp
    export TMPDIR=/workspace/tmp   # on the volume: large tensors spill here, not to a RAM-backed /tmp
    # No job runs yet: a disk-offload spool here was left by a killed job (NVFlare removes it only at a job's end).
    for spool in "$TMPDIR"/nvflare_tensor_offload_* "$TMPDIR"/fl-job-*.lock; do
      [ -e "$spool" ] || continue
      echo "removing $spool ($(du -sh "$spool" | cut -f1)): left by a job that no longer runs"
      rm -rf "$spool"
    done
    # The healthcheck counts only a registration logged after this point, not one from before a restart.
    stat -c %s /workspace/log.txt 2>/dev/null > /workspace/tmp/log_start || echo 0 > /workspace/tmp/log_start
    if [ "$role" = site ]; then
      fl-kit-check resolves || exit 2
      fl-gpu-check || exit 2   # one line: GPUs, driver, CUDA, bf16; stops when reserved GPUs are unusable
      fl-kit-check watch site &   # while not connected: where it dials and why that fails, every minute
    fi
    # (no --verify: 2.9.0 kits carry no signature.json for it to check; mTLS still checks every certificate)
    exec bash /kit/startup/sub_start.sh --once
    ;;
  admin)
    need_kit
    fl-kit-check access admin || exit 2
    fl-kit-check validity admin || exit 2
    # The CLI writes into the kit's transfer/ folder: work on a private copy of the read-only mount.
    rm -rf "$HOME/admin-kit" && cp -r /kit "$HOME/admin-kit" && chmod -R go-rwx "$HOME/admin-kit"
    echo "admin kit ready: docker compose exec admin nvflare job list --startup-kit $HOME/admin-kit"
    exec sleep infinity
    ;;
  --help|-h)
    echo "usage: fl-entrypoint server|site|admin|<command>"
    ;;
  *)
    exec "$@"
    ;;
esac
