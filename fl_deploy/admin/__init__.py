"""Code that runs only inside the admin container, with the admin's startup kit and NVFlare's FLARE API:
`docker compose exec admin python3 -m fl_deploy.admin.<module> ...` (scripts/submit_job.py runs them)."""
