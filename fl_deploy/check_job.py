"""Check an NVFlare job folder before it is submitted: everything the server and the sites will need is there.

    python3 -m fl_deploy.check_job jobs/gpt2-fedavg-stream
    python3 -m fl_deploy.check_job /path/to/job --imports     # also resolve every import of custom/*.py

Checks meta.json and its deploy_map, each app's config_fed_server.json / config_fed_client.json (valid JSON, the
client's task script present), every component class that lives in app/custom, and, with --imports, that each
module app/custom imports is either in app/custom or installed here. Run --imports where the sites' Python
environment is (scripts/submit_job.py runs it in the admin container, which is the sites' image; the project's
own folders on the import path there are left out, so a module missing from the job is not found in app_code/): a file missing
from the job then fails here, in one line, instead of in every site's job process after submission.
Exit 0 when the job is complete, 2 with one line per problem otherwise.
"""

import argparse
import ast
import importlib.machinery
import json
import os
import re
import sys

from fl_deploy import APP_CODE, ROOT

CLASS_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\.[A-Z]\w*$")  # module.Class, not a file path


def _load_json(path: str, problems: list):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        problems.append(f"{path} is missing")
    except (OSError, json.JSONDecodeError) as e:
        problems.append(f"{path} is not valid JSON: {e}")
    return None


def _values(config, key: str):
    """Every string value of ``key`` anywhere in a job config (components, workflows, executors, filters...)."""
    if isinstance(config, dict):
        for k, value in config.items():
            if k == key and isinstance(value, str):
                yield value
            else:
                yield from _values(value, key)
    elif isinstance(config, list):
        for item in config:
            yield from _values(item, key)


def _imports(py_file: str) -> set:
    """Absolute module names a source file imports (``a.b`` for ``from a.b import c`` and ``import a.b``)."""
    with open(py_file) as f:
        tree = ast.parse(f.read(), py_file)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _in_custom(custom: str, module: str) -> bool:
    """The module's source is in the custom folder (a.b -> a/b.py or a/b/__init__.py)."""
    base = os.path.join(custom, *module.split("."))
    return os.path.isfile(base + ".py") or os.path.isfile(os.path.join(base, "__init__.py")) or os.path.isdir(base)


def _installed(module: str, custom: str) -> bool:
    """Whether ``module`` is in the job's custom folder or installed here; the project's own source folders (on the
    import path of the venv and of the admin container) do not count: the sites do not have them."""
    ours = {os.path.abspath(p) for p in (ROOT, APP_CODE)}
    path = [custom] + [p for p in sys.path if p and os.path.abspath(p) not in ours]
    return module in sys.builtin_module_names or importlib.machinery.PathFinder.find_spec(module, path) is not None


def _custom_modules(custom: str) -> set:
    """Top-level modules and packages in a custom folder."""
    if not os.path.isdir(custom):
        return set()
    return {f[:-3] if f.endswith(".py") else f for f in os.listdir(custom)
            if f.endswith(".py") or os.path.isdir(os.path.join(custom, f))}


def _sources(custom: str) -> list:
    """Every .py file under a custom folder, relative to it."""
    found = []
    for dirpath, _, files in os.walk(custom):
        found += [os.path.relpath(os.path.join(dirpath, f), custom) for f in files if f.endswith(".py")]
    return sorted(found)


def check_app(job: str, app: str, roles: set, imports: bool) -> list:
    """Problems of one app folder deployed to ``roles`` ('server' and/or site names)."""
    problems = []
    app_dir = os.path.join(job, app)
    if not os.path.isdir(app_dir):
        return [f"deploy_map names app {app!r} but {app_dir} does not exist"]
    custom = os.path.join(app_dir, "custom")
    ours = _custom_modules(custom)
    configs = []
    if "server" in roles:
        configs.append(os.path.join(app_dir, "config", "config_fed_server.json"))
    if roles - {"server"}:
        configs.append(os.path.join(app_dir, "config", "config_fed_client.json"))
    for path in configs:
        config = _load_json(path, problems)
        if config is None:
            continue
        for script in _values(config, "task_script_path"):
            if not os.path.isfile(os.path.join(custom, script)):
                problems.append(f"{os.path.basename(path)} runs {script!r} but {app}/custom/{script} is missing")
        for class_path in filter(CLASS_PATH.match, _values(config, "path")):
            module = class_path.rsplit(".", 1)[0]
            top = module.split(".")[0]
            if top in ours or "." not in module:  # the job's own code: it must be in custom/
                if not _in_custom(custom, module) and (top in ours or not (imports and _installed(top, custom))):
                    problems.append(f"{os.path.basename(path)} uses {class_path} but "
                                    f"{app}/custom/{module.replace('.', '/')}.py is missing")
            elif imports and not _installed(top, custom):
                problems.append(f"{os.path.basename(path)} uses {class_path} but {top!r} is not installed here")
    if imports:
        for source in _sources(custom):
            for name in sorted(_imports(os.path.join(custom, source))):
                top = name.split(".")[0]
                found = _in_custom(custom, name) if top in ours else _installed(top, custom)
                if not found:
                    problems.append(f"{app}/custom/{source} imports {name!r}, which is neither in {app}/custom nor "
                                    "installed")
    return problems


def check_job(job: str, imports: bool = False) -> tuple:
    """(sites the job deploys to, problems found)."""
    if not os.path.isdir(job):
        return [], [f"{job} is not a folder"]
    problems = []
    meta = _load_json(os.path.join(job, "meta.json"), problems)
    if meta is None:
        return [], [p + " (a job folder holds meta.json and one folder per app)" for p in problems]
    deploy_map = meta.get("deploy_map")
    if not isinstance(deploy_map, dict) or not deploy_map:
        return [], [f"{job}/meta.json has no deploy_map: it must map each app to 'server' and the site names"]
    sites = []
    for app, targets in deploy_map.items():
        targets = set(targets or [])
        problems += check_app(job, app, targets, imports)
        sites += sorted(t for t in targets if t != "server")
    return list(dict.fromkeys(sites)), problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m fl_deploy.check_job", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job", help="job folder (meta.json + app folders)")
    p.add_argument("--imports", action="store_true", help="also resolve the imports of app/custom/*.py here")
    p.add_argument("--json", action="store_true", help='print {"sites": [...], "problems": [...]} and exit 0')
    args = p.parse_args(argv)
    sites, problems = check_job(args.job, imports=args.imports)
    if args.json:
        print(json.dumps({"sites": sites, "problems": problems}))
        return 0
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        print("fix: regenerate the job (python scripts/make_job.py --out FOLDER) or restore the missing files",
              file=sys.stderr)
        return 2
    print(f"job {args.job}: complete (sites: {', '.join(sites) or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
