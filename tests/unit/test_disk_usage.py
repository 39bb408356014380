"""Disk that grows with every job: where it goes, and --prune's rule (fl_deploy/disk_usage.py)."""

from fl_deploy import disk_usage

JOBS = [{"job_id": "done", "status": "FINISHED:COMPLETED"},
        {"job_id": "failed", "status": "FINISHED:EXECUTION_EXCEPTION"},
        {"job_id": "elsewhere", "status": "FINISHED:COMPLETED"},
        {"job_id": "running", "status": "RUNNING"}]


def results_for(tmp_path, *job_ids):
    for job_id in job_ids:
        (tmp_path / "results" / job_id / "workspace").mkdir(parents=True)
    (tmp_path / "results" / "stray-file-folder").mkdir()  # no workspace/: not a downloaded job
    return str(tmp_path / "results")


def test_prune_keeps_what_a_user_or_a_resume_needs(tmp_path):
    """Only finished jobs whose results are on this host leave the job store; only a completed job's checkpoints go;
    a job not downloaded, a running job and a failed job's checkpoints (its resume) stay."""
    on_host = disk_usage.downloaded(results_for(tmp_path, "done", "failed", "running"))
    assert on_host == {"done", "failed", "running"}
    todo = disk_usage.plan(JOBS, {"done", "failed", "elsewhere", "running"}, on_host)
    assert [(kind, job_id, path) for kind, job_id, path, _ in todo] == [
        ("job store", "done", None), ("checkpoints", "done", "/workspace/checkpoints/done"),
        ("job store", "failed", None)]


def test_du_output_is_read_per_path():
    text = "1024\t/workspace/checkpoints\n8\t/workspace/tmp\ndu: cannot read directory 'x': Permission denied\n"
    assert disk_usage.parse_du(text) == {"/workspace/checkpoints": 2**20, "/workspace/tmp": 8192}


class Run:
    def __init__(self, stdout="", returncode=0):
        self.stdout, self.returncode = stdout, returncode


def test_prune_deletes_by_the_rule_and_reports_each_part(monkeypatch, tmp_path, capsys):
    results = results_for(tmp_path, "done", "failed")
    execs, deleted = [], []

    def compose(*args, **kw):
        execs.append(args)
        if args[:3] == ("exec", "-T", "server") and "du -sk" in args[-1]:
            return Run("2097152\t/workspace\n1048576\t/workspace/checkpoints\n524288\t/workspace/checkpoints/done\n"
                       "1024\t/workspace/checkpoints/failed\n")
        return Run("")

    def nvflare(*args, **kw):
        if args[:2] == ("job", "list"):
            return {"status": "ok", "data": JOBS}
        deleted.append(args)
        return {"status": "ok"}
    monkeypatch.setattr(disk_usage, "compose", compose)
    monkeypatch.setattr(disk_usage, "admin_nvflare", nvflare)
    monkeypatch.setattr(disk_usage, "check_docker", lambda: None)
    monkeypatch.setattr(disk_usage, "writable_layer_bytes", lambda *a: 4096)
    assert disk_usage.main(["--results", results, "--prune"]) == 0
    out = capsys.readouterr().out
    assert "server volume (/workspace): 2.0 GiB" in out and "checkpoints/" in out and "1.0 GiB" in out
    assert "its writable layer: 4.0 KiB" in out
    assert "checkpoints: done (512.0 MiB): completed: its global model is in results/" in out
    assert deleted == [("job", "delete", "done", "--force"), ("job", "delete", "failed", "--force")]
    assert ("exec", "-T", "server", "rm", "-rf", "/workspace/checkpoints/done") in execs
    assert not [e for e in execs if "rm" in e and "/workspace/checkpoints/failed" in e]  # its resume needs it
    stale = [e for e in execs if e[:3] == ("exec", "-T", "admin") and "find" in e[-1]]
    assert stale and "/workspace/staged-jobs" in stale[0][-1] and "-mmin +60" in stale[0][-1]


def test_a_full_server_volume_is_named_from_the_jobs_log_or_the_volume(monkeypatch, tmp_path):
    dest = tmp_path / "result"
    (dest / "workspace").mkdir(parents=True)
    log = dest / "workspace" / "log.txt"
    log.write_text("2026-12-04 02:50:01,000 - LargeModelFedAvg - ERROR - [identity=x] - the server's volume is full: "
                   "12 MiB free on /workspace/tmp, 300 MiB needed\n")
    df = []
    monkeypatch.setattr(disk_usage, "compose", lambda *a, **k: df.append(a) or Run(
        "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/x 1000000 990000 10000 99% /workspace\n"))
    [fact] = disk_usage.facts(str(dest))
    assert fact.startswith("the server's volume filled during the job; its log: the server's volume is full: 12 MiB")
    assert df == []  # the log said it
    log.write_text("nothing about disks\n")
    assert disk_usage.facts(str(dest)) == ["the server's volume is full: 10 MiB free on /workspace (docker compose "
                                           "exec server df -h /workspace); free space with python3 "
                                           "scripts/disk_usage.py --prune"]
    monkeypatch.setattr(disk_usage, "compose", lambda *a, **k: Run("Filesystem ...\n/dev/x 1 1 9000000 1% /w\n"))
    assert disk_usage.facts(None) == []  # plenty free, no log: not this cause


def test_a_second_download_of_a_job_is_read_where_nvflare_put_it(monkeypatch):
    """NVFlare renames a download to <job_id>__1 when <job_id> is taken: the copy follows its reported path, and the
    cleanup takes the download and what the FLARE API left in the admin kit's transfer folder."""
    inside = disk_usage.ADMIN_DOWNLOADS
    got = {"status": "ok", "data": {"download_path": f"{inside}/j1__1"}}
    assert disk_usage.download_path(got, inside, "j1") == f"{inside}/j1__1"
    assert disk_usage.download_path({"status": "ok", "data": {}}, inside, "j1") == f"{inside}/j1"
    assert disk_usage.download_path({"data": {"download_path": "/elsewhere/j1"}}, inside, "j1") == f"{inside}/j1"
    ran = []
    monkeypatch.setattr(disk_usage, "compose", lambda *a, **k: ran.append(a))
    disk_usage.remove_in_admin(f"{inside}/j1__1", "admin", job_id="j1")
    assert ran == [("exec", "-T", "admin", "sh", "-c", f"rm -rf {inside}/j1__1 /home/fl/admin-kit/transfer/j1 "
                                                       "/home/fl/admin-kit/transfer/j1__*")]
