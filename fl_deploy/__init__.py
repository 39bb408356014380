"""The deployment's helper code, behind the commands in scripts/: project.yml -> kits -> containers -> job -> results.

    project        project.yml read and checked once (Project)
    provision      nvflare provision -> workspace/kits/; add_site: one more site with the same root CA;
                   provision_builders: project.yml's own builder (the sites stream their job logs)
    compose_files  compose.participants.yaml / compose.cpu.yaml generated from the Project
    host           the host side: .env, docker compose calls, the admin console, host checks
    job            the job's settings (JobSettings + the sites' TrainSettings) and the job folder (NVFlare recipe)
    check_job      a job folder checked before submission (run in the admin container)
    submit         submit through the admin console, follow, download (host side, standard library only)
    follow         one job's events as JSON lines, from one admin session (run in the admin container)
    job_queue      which jobs hold which sites (run in the admin container): one training job at a time
    diagnose       why a job ended abnormally, as far as the server and Docker know; lineage: a resumed run's rounds
    job_errors     the sites' job logs and error logs of a job (run in the admin container)
    results        the downloaded result as a Hugging Face model, metrics.csv and plots
    bundles        one bundle per site host (several hosts)
    assets         the model and data fetched for offline hosts; the tiny offline stand-ins
    local_federation, compose_stack   a federation as local processes / an isolated compose stack (tests, benchmarks)
    slow_cases     fault cases too slow for CI (a throttled link, repeated cold starts): PASS / FAIL per case

The job's own code (what runs on the server and at the sites) is in app_code/, not here.
"""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP_CODE = os.path.join(ROOT, "app_code")
# The image's unprivileged user when FL_UID is not set (docker/services.yaml passes FL_UID to the build).
IMAGE_UID = 10001
