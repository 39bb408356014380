"""No skip may silently turn off an e2e check where it must run: under FL_REQUIRE_DOCKER=1 (CI) every reason an e2e
module or test would skip for fails it instead (tests/e2e/docker_env.py is the one place that decides)."""

import os
import subprocess
import sys

import pytest

from fl_deploy import ROOT

sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import docker_env  # noqa: E402


def test_a_skip_fails_under_ci_and_skips_elsewhere(monkeypatch):
    monkeypatch.setenv("FL_REQUIRE_DOCKER", "1")
    with pytest.raises(pytest.fail.Exception, match="FL_REQUIRE_DOCKER=1, but no Chromium"):
        docker_env.skip_unless_required("no Chromium")
    with pytest.raises(RuntimeError, match="FL_REQUIRE_DOCKER=1, but the suite"):
        docker_env.skip_unless_required("the suite was skipped", module=True)
    monkeypatch.delenv("FL_REQUIRE_DOCKER")
    with pytest.raises(pytest.skip.Exception, match="no Chromium"):
        docker_env.skip_unless_required("no Chromium")


def test_no_e2e_module_skips_by_itself():
    """Every skip in tests/e2e goes through docker_env (which fails it under FL_REQUIRE_DOCKER=1)."""
    found = subprocess.run(["git", "grep", "-nE", r"pytest\.skip\(|pytest\.mark\.skip|importorskip", "--",
                            "tests/e2e", ":!tests/e2e/docker_env.py"], cwd=ROOT, capture_output=True, text=True).stdout
    assert found == "", found
