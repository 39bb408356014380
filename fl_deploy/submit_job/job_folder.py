"""Copy a job folder (`submit_job.py --job-folder DIR`) into the admin container as a stream, refusing one that holds
weights.

The folder goes as a tar stream from its reader (tar on the host, or a one-off container of the admin service when
this user may not read it) to the admin container, 1 MiB at a time: the host never holds it whole. A folder above
MAX_JOB_FOLDER_MIB is refused, without submitting, once that many bytes went through, because NVFlare 2.9 keeps a
submitted job whole: the server reads the upload into memory, stores a copy per job in its job store
(apis/impl/job_def_manager.py, create()) and sends it whole to every site (get_content()). Weights belong where
the server and the sites read them: assets/ (mounted read-only at /assets in every container), named by the job
(`--model /assets/models/NAME` for the weights the sites start from, `--initial_ckpt PATH` for the global model the
server starts from; scripts/make_job.py --help).
"""

import os
import subprocess
import threading

from fl_deploy.host import HostError, compose, compose_command

MAX_JOB_FOLDER_MIB = 64  # our generated job is ~0.2 MiB (code + config); a tokenizer is a few MiB
CHUNK = 2**20

ADVICE = ("NVFlare keeps a submitted job whole (in the server's memory, in its job store once per job, sent whole to "
          "every site), so weights do not belong in a job folder. Put them in assets/ (mounted read-only at /assets "
          "in the server and every site) and let the job name them: --model /assets/models/NAME for the weights the "
          "sites start from, or --initial_ckpt /assets/NAME/FL_global_model.pt for the global model the server "
          "starts from (scripts/make_job.py --help)")


class TooBig(HostError):
    """The job folder holds more than the limit."""


def reader_command(folder: str, readable: bool, admin: str, env_file=None) -> list:
    """tar of ``folder`` to stdout: by this user when it may read every file, else by a one-off container of the
    admin service that reads it as root with only the capability to read any file (NVFlare's exporter writes
    0700 folders)."""
    folder = os.path.abspath(folder)
    if readable:
        return ["tar", "-C", folder, "-c", "."]
    return compose_command("run", "--rm", "--no-deps", "-T", "-u", "0", "--cap-add", "DAC_READ_SEARCH", "-v",
                           f"{folder}:/job-in:ro", "--entrypoint", "tar", admin, "-C", "/job-in", "-c", ".",
                           env_file=env_file)


def stream(source: list, sink: list, limit_bytes: int) -> subprocess.CompletedProcess:
    """Run ``source`` | ``sink`` through this process, CHUNK bytes at a time; returns the sink's CompletedProcess
    (stdout, stderr: bytes). Raises TooBig (both killed) once more than limit_bytes went through, HostError when the
    source fails."""
    src = subprocess.Popen(source, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dst = subprocess.Popen(sink, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = {}
    readers = [threading.Thread(target=lambda k=k, f=f: out.__setitem__(k, f.read()), daemon=True)
               for k, f in (("stdout", dst.stdout), ("stderr", dst.stderr), ("source_err", src.stderr))]
    for t in readers:
        t.start()
    sent, too_big = 0, False
    try:
        while chunk := src.stdout.read(CHUNK):
            sent += len(chunk)
            if sent > limit_bytes:
                too_big = True
                break
            dst.stdin.write(chunk)
    except BrokenPipeError:
        pass  # the sink ended early: its own error says why
    finally:
        if too_big:
            src.kill()
            dst.kill()
        try:
            dst.stdin.close()
        except BrokenPipeError:
            pass
        src.stdout.close()
        src.wait()
        dst.wait()
        for t in readers:
            t.join(30)
    if too_big:
        raise TooBig(f"more than {limit_bytes / 2**20:.0f} MiB")
    if src.returncode != 0:
        why = " ".join(out.get("source_err", b"").decode(errors="replace").split())[-300:]
        raise HostError(f"cannot read the job folder: {why}; make it readable (chmod -R u+rX) or copy it somewhere "
                        "you own")
    return subprocess.CompletedProcess(sink, dst.returncode, out.get("stdout", b""), out.get("stderr", b""))


def biggest_files(folder: str, count: int = 3) -> list:
    """[(bytes, relative path)] of the largest files this user can see in ``folder``, largest first."""
    sizes = []
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            try:
                sizes.append((os.lstat(path).st_size, os.path.relpath(path, folder)))
            except OSError:
                continue
    return sorted(sizes, reverse=True)[:count]


def stage(folder: str, readable: bool, admin: str, dest: str, then: str, env_file=None,
          limit_mib: float = MAX_JOB_FOLDER_MIB) -> subprocess.CompletedProcess:
    """Copy ``folder`` into ``dest`` in the admin container (owned by its user, whatever the modes were), then run
    the shell command ``then`` there, in one `docker compose exec`. Refuses (TooBig, naming the largest files and
    where weights go) a folder above limit_mib, and removes the partial copy."""
    sink = compose_command("exec", "-T", admin, "sh", "-c",
                           f"mkdir -p {dest} && tar -x --no-same-owner -C {dest} && chmod -R u+rwX {dest} && {then}",
                           env_file=env_file)
    try:
        return stream(reader_command(folder, readable, admin, env_file), sink, int(limit_mib * 2**20))
    except TooBig:
        compose("exec", "-T", admin, "rm", "-rf", dest, check=False, env_file=env_file)
        largest = ", ".join(f"{p} ({b / 2**20:.0f} MiB)" for b, p in biggest_files(folder) if b >= 2**20)
        raise TooBig(f"the job folder {folder} holds more than {limit_mib:g} MiB"
                     + (f" (largest: {largest})" if largest else "") + f"; nothing was submitted. {ADVICE}")
