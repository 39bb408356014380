"""Check an NVFlare job folder before it is submitted: everything the server and the sites will need is there.

    python3 -m fl_deploy.check_job jobs/gpt2-fedavg-stream
    python3 -m fl_deploy.check_job /path/to/job --imports     # also resolve every import of custom/*.py

Checks meta.json and its deploy_map (site names, or NVFlare's "@ALL": every connected site), each app's config_fed_server.json / config_fed_client.json (valid JSON, the
client's task script present), every component class that lives in app/custom, and, with --imports, that each
module app/custom imports is either in app/custom or installed here. Run --imports where the sites' Python
environment is (scripts/submit_job.py runs it in the admin container, which is the sites' image; the project's
own folders on the import path there are left out, so a module missing from the job is not found in app_code/): a file missing
from the job then fails here, in one line, instead of in every site's job process after submission.
Exit 0 when the job is complete, 2 with one line per problem otherwise.

What the job needs from the federation (--json, for submit_job.py): the sites it names (deploy_map, and the
`--sites` list of this project's client in task_script_args, which shards the data by position), whether it deploys
to every connected site ("@ALL", as NVFlare's recipe exports write it), and meta.json's min_clients.
"""

import argparse
import ast
import importlib.machinery
import json
import os
import re
import shlex
import sys

from fl_deploy import APP_CODE, ROOT

ALL_SITES = "@ALL"  # NVFlare's deploy_map target for every site connected when the job is deployed
CLASS_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\.[A-Z]\w*$")  # module.Class, not a file path


def job_sites(meta: dict) -> list:
    """The sites a job is deployed to (its meta's deploy_map), without the server; [] for @ALL."""
    sites = []
    for targets in (meta.get("deploy_map") or {}).values():
        for t in targets if isinstance(targets, list) else []:
            name = t if isinstance(t, str) else None
            if name and name != "server" and not name.startswith("@") and name not in sites:
                sites.append(name)
    return sites


def _load_json(path: str, problems: list):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        problems.append(f"{path} is missing")
    except (OSError, json.JSONDecodeError) as e:
        problems.append(f"{path} is not valid JSON: {e}")
    return None


def _values(config, key: str, kind: type = str):
    """Every ``kind`` (string) value of ``key`` anywhere in a job config (components, workflows, executors...)."""
    if isinstance(config, dict):
        for k, value in config.items():
            if k == key and isinstance(value, kind):
                yield value
            else:
                yield from _values(value, key, kind)
    elif isinstance(config, list):
        for item in config:
            yield from _values(item, key, kind)


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


def client_site_list(job: str, app: str) -> list:
    """The ``--sites`` list a client script of ``app`` is started with (task_script_args): this project's client
    shards the data by a site's position in it, so the job needs exactly these sites. [] when none is given."""
    try:
        with open(os.path.join(job, app, "config", "config_fed_client.json")) as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError):
        return []
    for args in _values(config, "task_script_args"):
        words = shlex.split(args)
        for i, word in enumerate(words):
            value = words[i + 1] if word == "--sites" and i + 1 < len(words) else \
                word.split("=", 1)[1] if word.startswith("--sites=") else None
            if value is not None:
                return [s.strip() for s in value.split(",") if s.strip()]
    return []


def server_rounds(job: str, app: str) -> list:
    """The num_rounds values of the app's server config (the rounds this job runs, resumed ones not counted)."""
    try:
        with open(os.path.join(job, app, "config", "config_fed_server.json")) as f:
            return list(_values(json.load(f), "num_rounds", int))
    except (OSError, json.JSONDecodeError):
        return []


def check_job(job: str, imports: bool = False) -> tuple:
    """(what the job needs: {"sites": names it needs, "all_sites": deploys to every connected site (@ALL),
    "min_sites": meta.json's min_clients, "rounds": the rounds it runs, 0 unknown}, problems found)."""
    needs = {"sites": [], "all_sites": False, "min_sites": 0, "rounds": 0}
    if not os.path.isdir(job):
        return needs, [f"{job} is not a folder"]
    problems = []
    meta = _load_json(os.path.join(job, "meta.json"), problems)
    if meta is None:
        return needs, [p + " (a job folder holds meta.json and one folder per app)" for p in problems]
    deploy_map = meta.get("deploy_map")
    if not isinstance(deploy_map, dict) or not deploy_map:
        return needs, [f"{job}/meta.json has no deploy_map: it must map each app to 'server' and the site names "
                       f"(or {ALL_SITES})"]
    sites = []
    for app, targets in deploy_map.items():
        targets = set(targets or [])
        problems += check_app(job, app, targets, imports)
        deployed = sorted(t for t in targets if t not in ("server", ALL_SITES))
        named = client_site_list(job, app) if targets - {"server"} else []
        if ALL_SITES in targets:
            needs["all_sites"] = True
        elif named and set(named) != set(deployed):
            # The client finds its shard by its position in --sites: a site deployed but not listed has none, a
            # site listed but not deployed never answers.
            problems.append(f"{app}: deploy_map sends the app to {', '.join(deployed) or 'no site'} but its client "
                            f"is started with --sites {','.join(named)}: both must name the same sites")
        sites += deployed + named
        if targets & {"server", ALL_SITES}:  # @ALL deploys to the server too
            needs["rounds"] = max([needs["rounds"], *server_rounds(job, app)])
    try:
        needs["min_sites"] = int(meta.get("min_clients") or 0)
    except (TypeError, ValueError):
        problems.append(f"{job}/meta.json: min_clients must be a number, got {meta.get('min_clients')!r}")
    needs["sites"] = list(dict.fromkeys(sites))
    return needs, problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m fl_deploy.check_job", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job", help="job folder (meta.json + app folders)")
    p.add_argument("--imports", action="store_true", help="also resolve the imports of app/custom/*.py here")
    p.add_argument("--json", action="store_true",
                   help='print {"sites": [...], "all_sites": bool, "min_sites": N, "rounds": N, "problems": [...]} and '
                        'exit 0')
    args = p.parse_args(argv)
    needs, problems = check_job(args.job, imports=args.imports)
    if args.json:
        print(json.dumps({**needs, "problems": problems}))
        return 0
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        print("fix: regenerate the job (python scripts/make_job.py --out FOLDER) or restore the missing files",
              file=sys.stderr)
        return 2
    sites = ", ".join(needs["sites"]) or "none named"
    print(f"job {args.job}: complete (sites: {sites}{'; deploys to every connected site' if needs['all_sites'] else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
