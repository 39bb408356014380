"""The house's rules that a newcomer relies on: the image's defaults declared once (fl_deploy/__init__.py) and
repeated only where another syntax needs them, each command's module named after it, no module too long to read."""

import os
import re
import subprocess

import pytest

from fl_deploy import BASE_IMAGE, IMAGE, IMAGE_UID, ROOT


def read(*parts) -> str:
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


def test_the_image_defaults_in_yaml_and_the_dockerfile_are_fl_deploys():
    dockerfile = read("docker", "Dockerfile")
    assert f"ARG BASE_IMAGE={BASE_IMAGE}\n" in dockerfile and f"ARG FL_UID={IMAGE_UID}\n" in dockerfile
    services = read("docker", "services.yaml")
    assert f"${{FL_IMAGE:-{IMAGE}}}" in services and f"${{FL_BASE_IMAGE:-{BASE_IMAGE}}}" in services
    assert f"${{FL_UID:-{IMAGE_UID}}}" in services
    assert f"${{FL_IMAGE:-{IMAGE}}}" in read("compose.yaml")


@pytest.mark.parametrize("script", sorted(f for f in os.listdir(os.path.join(ROOT, "scripts")) if f.endswith(".py")))
def test_each_command_runs_the_module_named_after_it(script):
    """scripts/X.py imports main from fl_deploy's module (or package) X, under the admin or harness folder if it
    runs there: the command's name finds its code."""
    name = script[:-3]
    text = read("scripts", script)
    found = re.search(r"from (fl_deploy(?:\.\w+)*) import \w+", text)
    assert found, f"scripts/{script} imports nothing from fl_deploy"
    module = found.group(1).split(".")[-1]
    assert module == name, (script, module)


def test_no_module_of_fl_deploy_is_over_350_lines_and_none_is_imported_under_another_name():
    for dirpath, _, files in os.walk(os.path.join(ROOT, "fl_deploy")):
        for f in files:
            if f.endswith(".py"):
                with open(os.path.join(dirpath, f)) as fh:
                    lines = fh.read().count("\n")
                assert lines <= 350, f"{os.path.relpath(os.path.join(dirpath, f), ROOT)}: {lines} lines"
    renamed = subprocess.run(["git", "grep", "-nE", r"(import fl_deploy\.\S+|from fl_deploy\S* import \w+) as \w+",
                              "--", "*.py", ":!jobs"], cwd=ROOT, capture_output=True, text=True).stdout
    assert renamed == "", renamed


def test_a_stack_copys_project_gets_its_port_sites_admins_and_server_name(tmp_path):
    """compose_stack.edit_project: the one helper the e2e stacks, the slow cases and the benchmarks edit project.yml
    with; what it writes is what project.py reads."""
    import shutil

    from fl_deploy.harness.compose_stack import edit_project
    from fl_deploy.project import load_project

    shutil.copy(os.path.join(ROOT, "project.yml"), tmp_path / "project.yml")
    port = edit_project(str(tmp_path), 9123, sites=["site-1", "site-2", "site-3"], admins={"m@fl-demo.org": "member"},
                        server_name="fl-hub")
    project = load_project(str(tmp_path / "project.yml"))
    assert port == 9123 and project.port == 9123 and project.server == "fl-hub"
    assert list(project.sites) == ["site-1", "site-2", "site-3"]
    assert [(a.name, a.role) for a in project.admins] == [("admin@fl-demo.org", "project_admin"),
                                                          ("m@fl-demo.org", "member")]


@pytest.mark.parametrize("fact", ["10001", IMAGE, "/home/fl/admin-kit", BASE_IMAGE])
def test_a_deployment_fact_is_written_in_one_python_file(fact):
    """uid 10001, the image tag, the base image and the admin kit's path: one Python file each outside jobs/ (generated)
    and tests/; the rest import it."""
    files = subprocess.run(["git", "grep", "-lF", fact, "--", "*.py", ":!jobs", ":!tests"], cwd=ROOT,
                           capture_output=True, text=True).stdout.split()
    assert len(files) <= 1, (fact, files)


def test_no_two_test_files_share_a_name():
    """pytest.ini puts tests/ and tests/e2e on the path without packages: two test files of one basename break the
    whole run at collection ("import file mismatch"), which a run of one folder does not show."""
    names = {}
    for folder, _, files in os.walk(os.path.join(ROOT, "tests")):
        for name in files:
            if name.startswith("test_") and name.endswith(".py"):
                names.setdefault(name, []).append(os.path.relpath(os.path.join(folder, name), ROOT))
    assert {n: p for n, p in names.items() if len(p) > 1} == {}


def test_every_attribute_used_of_an_imported_project_module_exists():
    """`from fl_deploy import m` then `m.f(...)`: f must exist in m. A rename that misses a caller (a slow case, a
    benchmark: code CI does not run) fails here, not after minutes of the run that reaches it."""
    import ast
    import importlib

    missing = []
    for top in ("fl_deploy", "benchmarks", "scripts", "tests"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in (n for n in files if n.endswith(".py")):
                path = os.path.join(folder, name)
                tree = ast.parse(read(path))
                modules = {}
                for node in ast.walk(tree):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "fl_deploy":
                        for alias in node.names:
                            dotted = f"{node.module}.{alias.name}"
                            try:
                                importlib.util.find_spec(dotted)
                            except ModuleNotFoundError:
                                continue
                            if importlib.util.find_spec(dotted):
                                modules[alias.asname or alias.name] = dotted
                # A name also bound in the file (a local of the same name) is left alone: this check has no scopes.
                rebound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
                rebound |= {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
                for name in rebound:
                    modules.pop(name, None)
                for node in ast.walk(tree):
                    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                            and node.value.id in modules and isinstance(node.ctx, ast.Load):
                        module = importlib.import_module(modules[node.value.id])
                        if not hasattr(module, node.attr):
                            missing.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} {modules[node.value.id]}."
                                           f"{node.attr}")
    assert missing == []
