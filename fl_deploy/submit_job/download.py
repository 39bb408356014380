"""A finished job fetched from the server into results/<job_id>/ on the host: `nvflare job download` in the admin
container, each site's job log (site_logs/) and, for a failed job, the sites' error logs (site_errors/), the rounds
of the jobs a resumed run continues, then the export (HF model, metrics.csv, plots), all made inside the admin
container (where torch is) before one `docker compose cp`. Host side, standard library only."""

import os
import subprocess
import sys
import tempfile

from fl_deploy import disk_usage, lineage
from fl_deploy.host import AdminConsole, HostError

def download(job_id: str, console: AdminConsole, results_dir: str, sites: list, failed: bool = False,
             resumed: tuple = None) -> tuple:
    """Fetch the job into ``results_dir``/<job_id>. resumed: (the job it continues, its first round (1-based)).
    Returns (the folder, the error lines job_errors.py found when ``failed``)."""
    got = console.nvflare("job", "download", job_id, "-o", disk_usage.ADMIN_DOWNLOADS, "--force", check=False)
    if got.get("status") != "ok":
        raise HostError(f"could not download job {job_id}: {got.get('message')} {got.get('hint') or ''}".strip())
    # On the admin's volume, not its writable layer; NVFlare's <job_id>__N when <job_id> was taken; removed below.
    inside = disk_usage.download_path(got, disk_usage.ADMIN_DOWNLOADS, job_id)
    try:  # whatever happens next (an error, Ctrl-C, SIGTERM), the admin volume keeps no copy of the job
        # Before the copy, so that site_logs/ and site_errors/ land in results/<job_id> with the rest.
        run = console.exec("python3", "-m", "fl_deploy.admin.job_errors", job_id, "--startup-kit", console.kit,
                           "-o", inside, "--sites", ",".join(sites or []), check=False)
        errors = (run.stdout or run.stderr).strip().splitlines() if failed else []
        if resumed:  # one training run: the rounds of the jobs this one continues, next to it before the export
            add_earlier_rounds(inside, resumed, results_dir, console)
        # HF-format global model, metrics.csv and plots, made where torch and the model's tokenizer are at hand.
        export = console.exec("python3", "/src/scripts/export_results.py", inside, check=False)
        if export.returncode != 0 and not failed:
            last = (export.stderr or "").strip().splitlines()[-1:]
            print(f"warning: results exported without the HF model / plots: {' '.join(last)}", file=sys.stderr)
        os.makedirs(results_dir, exist_ok=True)
        dest = os.path.join(results_dir, job_id)
        if os.path.exists(dest):
            raise HostError(f"{dest} already exists; move it away to download again")
        console.compose("cp", f"{console.service}:{inside}", dest)
    finally:
        disk_usage.remove_in_admin(inside, console.service, console.env_file, job_id=job_id)
    return dest, errors


def add_earlier_rounds(inside: str, resumed: tuple, results_dir: str, console: AdminConsole):
    """fl_deploy/lineage.py on the host (it reads results/ and the server volume), its files then put next to the
    downloaded job (``inside``, in the admin container)."""
    previous_job, first_round = resumed
    with tempfile.TemporaryDirectory() as staging:
        lineage.add_earlier_rounds(staging, previous_job, first_round, results_dir, env_file=console.env_file)
        tar = subprocess.run(["tar", "-C", staging, "-c", "."], capture_output=True, check=True).stdout
    console.exec("tar", "-x", "-C", inside, input=tar)
