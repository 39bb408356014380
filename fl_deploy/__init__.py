"""The deployment's helper code, behind the commands in scripts/: project.yml -> kits -> containers -> job -> results.
A module (or package) per command, named after it; the rest by what it does.

On the host (standard library only where submit_job.py and check_host.py need it):
    project          project.yml read and checked once (Project)
    provision        nvflare provision -> workspace/kits/; provision_builders: project.yml's own builder (the sites
                     stream their job logs); compose_files: compose.participants.yaml / compose.cpu.yaml
    add_site         one more site with the same root CA; renew_kit: one participant's kit signed again, same root CA
    kit_expiry       each kit's certificate dates (check_host, the job preflight, the containers' fl-kit-check)
    export_bundles   one bundle per site host (several hosts)
    check_host       Docker, Compose, the GPUs, a free port; huge_pages: the host's THP mode (a warning);
                     docker_engine: the GPU path (hook, runtime, CDI), Compose's minimum, rootless, Podman, SELinux
    host             .env, `docker compose` calls, the admin console (AdminConsole: service, .env, kit path)
    make_job         the job's settings (JobSettings + the sites' TrainSettings) and the job folder (NVFlare recipe)
    check_job        a job folder checked before submission (on the host and in the admin container)
    submit_job/      submit through the admin console, follow, download: preflight, staging, following, download,
                     summary, abnormal_end; sizing: the server's memory, spool disk and the round predicted
                     from measured slopes (sizing_slopes.json), an oversized job refused
    export_results/  the downloaded result as a Hugging Face model (model_export), metrics.csv (metrics), plots
    round_stats      per round: page faults and CPU s per process (/proc), phase times from NVFlare's log lines
    diagnose, checkpoints, lineage, timeline
                     why a job ended abnormally; the server's saved rounds (progress.json); a resumed run's
                     earlier rounds; where a job's start went
    fetch_assets     the model and data fetched once for offline hosts
    make_tiny_assets the tiny offline stand-ins (tests, the offline demo; --arch gpt2, llama, qwen2, mistral),
                     random-initialised GPT-2 sizes

In the admin container only (python3 -m fl_deploy.admin.<name>):
    admin/follow     one job's events as JSON lines, from one admin session
    admin/job_queue  which jobs hold which sites: one training job at a time
    admin/job_errors the sites' job logs and error logs of a job

Test and benchmark harness, not used by the product:
    harness/local_federation   a federation from provisioned kits as local processes
    harness/compose_stack      an isolated copy of the project as its own compose stack
    harness/check_slow_cases   fault cases too slow for CI (a throttled link, repeated cold starts, a shifted
                               clock: slow_kit_clock): PASS / FAIL

The job's own code (what runs on the server and at the sites) is in app_code/, not here.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP_CODE = os.path.join(ROOT, "app_code")
# The deployment's image, as compose builds it: docker/Dockerfile, docker/services.yaml and compose.yaml repeat these
# defaults in their own syntax; tests/unit/test_layout.py holds them to these values.
IMAGE_UID = 10001  # the image's unprivileged user when FL_UID is not set (services.yaml passes FL_UID to the build)
IMAGE_REPO = "gpt2-fl"  # test and benchmark stacks tag their images IMAGE_REPO:<stack>
IMAGE = f"{IMAGE_REPO}:2.9.0"  # FL_IMAGE's default: the tag follows the pinned NVFlare
BASE_IMAGE = "python:3.11-slim-bookworm"  # FL_BASE_IMAGE's default: the Dockerfile's BASE_IMAGE


def without_packages(script: str, error: ModuleNotFoundError) -> str:
    """The one-line error of a command of scripts/ run by a Python without the project's packages (the host's
    python3): which package it lacks and the two ways to run the command."""
    name = os.path.basename(script)
    return (f"error: scripts/{name} needs the Python package {error.name!r}, which {sys.executable} lacks: run it in "
            f"the image (scripts/in_image.sh scripts/{name} ...) or with the project's .venv (.venv/bin/python "
            f"scripts/{name} ...; scripts/install_venv.sh makes it)")
