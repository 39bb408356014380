"""One Hugging Face cache per host, shared by every container (issue 15, case 12; NVFlare #1080, datasets #4661):
the hub's model files may stay shared (read-mostly; huggingface_hub locks its files), but each site's datasets
cache, where its prepared data and tokenised shard land, must be its own, on the site's own volume. Checked on the
deployment as Compose resolves it (`docker compose config`), for the one-host stack and for a site bundle. Five
cold starts of four sites in a row: scripts/check_slow_cases.py (docs/reliability.md)."""

import json
import os
import shutil
import subprocess

import pytest

from fl_deploy import ROOT
from fl_deploy.project import load_project


@pytest.fixture(scope="module")
def stack():
    if not shutil.which("docker") or subprocess.run(["docker", "compose", "version"],
                                                    capture_output=True).returncode != 0:
        pytest.skip("needs the docker CLI with Compose v2 (no engine: compose config only)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FL_", "COMPOSE_", "HF_"))}
    run = subprocess.run(["docker", "compose", "config", "--format", "json"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def mounts(service: dict) -> dict:
    return {v["target"]: v for v in service["volumes"]}


def test_each_site_has_its_own_datasets_cache_and_shares_the_hub_cache(stack):
    sites = load_project(os.path.join(ROOT, "project.yml")).sites
    own = set()
    for site in sites:
        svc = stack["services"][site]
        cache = svc["environment"]["HF_DATASETS_CACHE"]
        assert cache.startswith("/workspace/"), cache
        workspace = mounts(svc)["/workspace"]
        assert workspace["type"] == "volume"
        own.add(workspace["source"])
        # The hub's files: the shared cache (HF_HOME), the same volume for every site.
        assert mounts(svc)["/hf-cache"]["source"] == "hf-cache"
        assert svc["environment"].get("HF_HOME", "/hf-cache") == "/hf-cache"
    assert len(own) == len(sites)  # every site's datasets cache on a volume no other container mounts
    others = [s for name, s in stack["services"].items() if name not in sites]
    assert not {mounts(s).get("/workspace", {}).get("source") for s in others} & own
