"""The global models the server saved, as the host sees them: ``checkpoints/<job_id>/progress.json`` on the server's
volume (app_code/fl_server/persistor.py writes it after every round, once the weights are in place). The one place
the host reads it: ``submit_job.py --resume`` and the abnormal-end summary. Standard library only."""

import json

from fl_deploy.host import compose

CHECKPOINTS = "/workspace/checkpoints"  # in the server container (its workspace volume)


def read_progress(job_id: str, env_file: str = None):
    """The job's progress.json as a dict ({"completed_round": 0-based, "checkpoint": path in the server
    container, ...}), or None when the server saved no global model for it (or the server does not answer)."""
    run = compose("exec", "-T", "server", "cat", f"{CHECKPOINTS}/{job_id}/progress.json", check=False,
                  env_file=env_file)
    if run.returncode != 0:
        return None
    try:
        progress = json.loads(run.stdout)
        int(progress["completed_round"])
        return progress
    except (ValueError, KeyError, TypeError):
        return None


def saved_round(job_id: str, env_file: str = None):
    """The last round (1-based) whose global model the server saved for the job, or None."""
    progress = read_progress(job_id, env_file)
    return int(progress["completed_round"]) + 1 if progress else None
