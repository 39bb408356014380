"""Shared by the e2e modules: skip without a Docker engine, or fail when CI says one must be there."""

import os
import subprocess

import pytest


def docker_ready() -> bool:
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0 and \
            subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def require_docker():
    """Call at module level: skips the module without Docker + Compose v2, unless FL_REQUIRE_DOCKER=1."""
    if not docker_ready():
        if os.environ.get("FL_REQUIRE_DOCKER") == "1":
            raise RuntimeError("FL_REQUIRE_DOCKER=1 but no Docker engine with Compose v2 answers")
        pytest.skip("no Docker engine with Compose v2 (set FL_REQUIRE_DOCKER=1 to make this an error)",
                    allow_module_level=True)


def skip_unless_required(reason: str, module: bool = False):
    """Skip an e2e check for ``reason``; under FL_REQUIRE_DOCKER=1 (CI) that check fails instead: nothing may turn
    an e2e check off silently where it must run."""
    if os.environ.get("FL_REQUIRE_DOCKER") == "1":
        if module:
            raise RuntimeError(f"FL_REQUIRE_DOCKER=1, but {reason}")
        pytest.fail(f"FL_REQUIRE_DOCKER=1, but {reason}")
    pytest.skip(reason, allow_module_level=module)
