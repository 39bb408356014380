"""A job folder holding GBs of weights (submit_job.py --job-folder) is streamed, never held whole by the host, and
refused above a clear limit with the advice to ship the weights through assets/ and the initial checkpoint."""

import os
import subprocess
import sys

import pytest

from fl_deploy import ROOT
from fl_deploy.submit_job import job_folder
from fl_deploy import submit_job


def make_job(path, weights_mib: int = 0):
    os.makedirs(path / "app" / "custom")
    (path / "meta.json").write_text("{}")
    (path / "app" / "custom" / "client.py").write_text("print('hi')\n")
    if weights_mib:
        with open(path / "app" / "custom" / "model.safetensors", "wb") as f:  # sparse: no disk, all bytes streamed
            f.truncate(weights_mib * 2**20)
    return path


def test_a_small_folder_arrives_whole_and_the_sinks_output_comes_back(tmp_path):
    job = make_job(tmp_path / "job")
    out = tmp_path / "staged"
    run = job_folder.stream(job_folder.reader_command(str(job), True, "admin"),
                            ["sh", "-c", f"mkdir -p {out} && tar -x -C {out} && echo checked"], 2**20)
    assert run.returncode == 0 and run.stdout == b"checked\n"
    assert (out / "app" / "custom" / "client.py").read_text() == "print('hi')\n"


def test_a_big_folder_streams_in_bounded_memory(tmp_path):
    """512 MiB of weights under a 1 GiB limit: the streaming process's peak memory stays far below the folder."""
    job = make_job(tmp_path / "job", weights_mib=512)
    # VmHWM: this process's peak resident memory (ru_maxrss would carry the pytest parent's peak over the exec).
    code = ("import re; from fl_deploy.submit_job import job_folder; "
            f"r = job_folder.stream(job_folder.reader_command({str(job)!r}, True, 'admin'), ['sh', '-c', 'cat >/dev/null; echo ok'], "
            "2**30); print(r.returncode, r.stdout.decode().strip(), "
            "int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) // 1024)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    rc, said, peak_mib = run.stdout.split()
    assert (rc, said) == ("0", "ok"), run.stderr[-2000:]
    assert int(peak_mib) < 100, f"peak {peak_mib} MiB while streaming 512 MiB"


def test_a_folder_above_the_limit_is_refused_with_where_weights_go(tmp_path, monkeypatch):
    job = make_job(tmp_path / "job", weights_mib=8)
    staged, cleaned = tmp_path / "staged", []
    sink = ["sh", "-c", f"mkdir -p {staged} && tar -x -C {staged} && echo checked"]
    monkeypatch.setattr(job_folder, "compose_command", lambda *a, env_file=None: sink)
    monkeypatch.setattr(job_folder, "compose", lambda *a, **kw: cleaned.append(a))
    with pytest.raises(job_folder.TooBig) as e:
        job_folder.stage(str(job), True, "admin", "/home/fl/jobs/x", "true", limit_mib=2)
    text = str(e.value)
    assert text.startswith(f"the job folder {job} holds more than 2 MiB "
                           "(largest: app/custom/model.safetensors (8 MiB))")
    assert "nothing was submitted" in text and "--initial_ckpt" in text and "/assets" in text
    assert cleaned == [("exec", "-T", "admin", "rm", "-rf", "/home/fl/jobs/x")]  # the partial copy is removed


def test_an_unreadable_folder_is_read_by_the_admin_image_and_a_failed_reader_is_named(tmp_path):
    cmd = job_folder.reader_command(str(tmp_path), False, "admin-2")
    assert cmd[:2] == ["docker", "compose"] and "DAC_READ_SEARCH" in cmd and "admin-2" in cmd
    with pytest.raises(submit_job.HostError, match="cannot read the job folder: .*chmod -R u\\+rX"):
        job_folder.stream(["tar", "-C", str(tmp_path / "missing"), "-c", "."], ["cat"], 2**20)


def test_submit_job_stages_a_job_folder_through_the_stream(monkeypatch, tmp_path):
    """stage_job hands the folder to job_folder.stage with the check to run after it, and reads its report."""
    job = make_job(tmp_path / "job")
    calls = []

    def stage(folder, readable, admin, dest, then, env_file=None):
        calls.append((folder, readable, admin, then))
        return subprocess.CompletedProcess([], 0, b'{"sites": ["site-1"], "problems": []}\n', b"")
    from fl_deploy.host import AdminConsole
    from fl_deploy.submit_job import staging

    monkeypatch.setattr(job_folder, "stage", stage)
    dest, report, _ = staging.stage_job(AdminConsole(), folder=str(job))
    assert report == {"sites": ["site-1"], "problems": []}
    assert calls[0][:3] == (str(job), True, "admin")
    assert "fl_deploy.check_job" in calls[0][3] and dest in calls[0][3]
