#!/usr/bin/env python3
"""Upstream's COMPARISON scenario on a machine that has torch and transformers but no nvflare and no network:
gpt2-large's architecture, 6 sites, exchange only, 2 rounds, as provisioned kits on local processes, with the
exchange benchmark's table (benchmarks/exchange.py) as the result.

On a connected machine (this project's .venv):

    .venv/bin/python benchmarks/upstream_scenario.py pack                       # workspace/upstream-wheels/
    .venv/bin/python benchmarks/upstream_scenario.py pack --python-version 3.13 # for another Python

  pack downloads nvflare and the other packages the benchmark needs (tensorboard for the job's TensorBoard
  receiver, psutil, PyYAML) with what they depend on, as wheels for Pythons 3.10, 3.11 and 3.12 on Linux x86_64,
  leaves out what torch and transformers already bring and what a processes run never imports, and stops if the
  folder is over 64 MiB.

On the target machine, in a copy of the project with that folder (nothing fetched):

    python3 benchmarks/upstream_scenario.py run                       # gpt2-774m, 6 sites, 2 rounds
    python3 benchmarks/upstream_scenario.py run --model tiny --sites 2 --rounds 2   # a minute, to try it

  run installs the carried wheels into a folder of their own (pip --target, nothing else changes: the machine's
  torch and transformers stay as they are), then runs benchmarks/exchange.py with that folder first on the path:
  `--deployment processes --configs plain-offload --project ""`, results in --out ($OUT/upstream-scenario when $OUT
  is set, as on a borrowed machine, else results/).

Upstream's figures (NVIDIA/NVFlare examples/advanced/tensor-stream/COMPARISON.md, NVFlare 2.7.1, 32 vCPUs): rounds of
~154-158 s; server peaks of 88.3 GiB (tensor streaming) and 137.8 GiB (without). See docs/benchmarks.md.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # runs before nvflare and fl_deploy exist
WHEELS = os.path.join(ROOT, "workspace", "upstream-wheels")
MANIFEST = "manifest.json"
LIMIT_BYTES = 64 << 20  # what a borrowed machine takes along (the device tool's carry limit)
# What the benchmark's processes import beyond torch and transformers (pins from requirements.txt where it has one)
NEEDED = ["nvflare", "tensorboard", "psutil", "PyYAML"]
# The machine's own, left out of the pack: torch and transformers and what every release of them requires (their
# METADATA: torch 2.x needs filelock, sympy, networkx, jinja2, fsspec, and on Linux x86_64 CUDA's nvidia-* and
# triton; transformers 4.x/5.x needs huggingface-hub, numpy, packaging, regex, tokenizers, safetensors, tqdm).
# typing-extensions stays in: pydantic (for nvflare) needs a newer one than torch asks for.
PROVIDED = {"torch", "transformers", "filelock", "setuptools", "sympy", "mpmath", "networkx", "jinja2",
            "markupsafe", "fsspec", "huggingface-hub", "numpy", "packaging", "regex", "tokenizers", "safetensors",
            "tqdm", "triton"}


# Dependencies that a run of kits as local processes never imports (NVFlare's dashboard and edge web server, its
# Docker job launcher, TensorBoard's web server and image summaries): left out so that wheels for three Python
# versions fit in one pack. benchmarks/upstream_scenario.py run --model tiny checks a pack without them.
UNUSED = {"flask", "flask-jwt-extended", "flask-sqlalchemy", "sqlalchemy", "gunicorn", "werkzeug", "itsdangerous",
          "blinker", "click", "pyjwt", "docker", "pillow", "markdown"}
PYTHONS = "3.10,3.11,3.12"  # torch 2.13 has wheels for 3.10-3.14; these three are the usual GPU-host Pythons


def provided(name: str) -> bool:
    return name in PROVIDED or name in UNUSED or name.startswith("nvidia-")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict:
    """{canonical name: 'name==version'} from requirements.txt."""
    out = {}
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        for line in f:
            m = re.match(r"^\s*([A-Za-z0-9_.-]+)==(\S+)", line)
            if m:
                out[canonical(m.group(1))] = f"{m.group(1)}=={m.group(2)}"
    return out


def wheel_name(path: str) -> str:
    return canonical(os.path.basename(path).split("-")[0])


def pack(out: str, python_versions: list, pip_args: list = ()) -> dict:
    """Download NEEDED with its dependencies as wheels for each Python version (major.minor) on Linux x86_64 into
    out, leave out the PROVIDED and UNUSED ones, write out/manifest.json ({"versions": {version: [wheel files]},
    "bytes": the folder's wheels}); return it. Wheels for every version (pure Python, abi3) are stored once.
    Raises SystemExit(2) over LIMIT_BYTES."""
    pinned = pins()
    wanted = [pinned.get(canonical(n), n) for n in NEEDED]
    os.makedirs(out, exist_ok=True)
    for old in os.listdir(out):
        if old.endswith(".whl") or old == MANIFEST:
            os.remove(os.path.join(out, old))
    versions = {}
    for version in python_versions:
        tmp = tempfile.mkdtemp(prefix="upstream-wheels-")
        try:
            subprocess.run([sys.executable, "-m", "pip", "download", "--isolated", "--quiet", "--only-binary=:all:",
                            "--implementation", "cp", "--python-version", version,
                            "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                            "--platform", "manylinux2014_x86_64", "--platform", "linux_x86_64", "-d", tmp,
                            *pip_args, *wanted], check=True)
            kept = []
            for name in sorted(os.listdir(tmp)):
                if name.endswith(".whl") and not provided(wheel_name(name)):
                    if not os.path.exists(os.path.join(out, name)):
                        shutil.move(os.path.join(tmp, name), os.path.join(out, name))
                    kept.append(name)
            versions[version] = kept
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    files = sorted({n for kept in versions.values() for n in kept})
    size = sum(os.path.getsize(os.path.join(out, n)) for n in files)
    manifest = {"versions": versions, "requirements": wanted, "bytes": size,
                "left_out": sorted(PROVIDED | UNUSED) + ["nvidia-*"]}
    with open(os.path.join(out, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"packed {len(files)} wheels, {size / 2**20:.1f} MiB, for Python {', '.join(versions)}: {out}")
    if size > LIMIT_BYTES:
        print(f"error: the wheels take {size / 2**20:.1f} MiB, over the {LIMIT_BYTES >> 20} MiB a borrowed machine "
              f"takes along; pack fewer Python versions (--python-version 3.11)", file=sys.stderr)
        raise SystemExit(2)
    return manifest


def install(wheels: str, target: str) -> list:
    """Install the pack's wheels into target (pip --target, no index, no dependency resolution: the pack is the
    whole closure); without pip, unpack them (wheels are zip files laid out for site-packages)."""
    with open(os.path.join(wheels, MANIFEST)) as f:
        manifest = json.load(f)
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if here not in manifest["versions"]:
        print(f"error: the wheels in {wheels} were packed for Python {', '.join(manifest['versions'])} but this is "
              f"Python {here}; pack them again on a connected machine: benchmarks/upstream_scenario.py pack "
              f"--python-version {here}", file=sys.stderr)
        raise SystemExit(2)
    files = [os.path.join(wheels, n) for n in manifest["versions"][here]]
    os.makedirs(target, exist_ok=True)
    has_pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0
    if has_pip:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--isolated", "--no-index", "--no-deps",
                        "--no-compile", "--disable-pip-version-check", "--target", target, *files], check=True)
    else:
        for path in files:
            with zipfile.ZipFile(path) as z:
                z.extractall(target)
    return files


def run(args) -> int:
    target = args.target or os.path.join(tempfile.gettempdir(), "upstream-scenario-packages")
    t0 = time.monotonic()
    install(args.wheels, target)
    print(f"installed {args.wheels} into {target} in {time.monotonic() - t0:.0f} s", flush=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [target, ROOT, os.path.join(ROOT, "app_code"),
                                                      env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "exchange.py"), "--deployment", "processes",
           "--model", args.model, "--sites", str(args.sites), "--rounds", str(args.rounds),
           "--configs", args.configs, "--project", "", "--out", args.out]
    print("running: " + " ".join(cmd), flush=True)
    code = subprocess.run(cmd, env=env, cwd=ROOT).returncode
    print(f"scenario finished in {time.monotonic() - t0:.0f} s (exit {code}); table: {args.out}/benchmark.md",
          flush=True)
    return code


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    pk = sub.add_parser("pack", help="download the wheels (connected machine)")
    pk.add_argument("--out", default=WHEELS, help=f"wheel folder (default {os.path.relpath(WHEELS, ROOT)})")
    pk.add_argument("--python-version", default=PYTHONS,
                    help=f"the target's Python, major.minor, comma-separated (default {PYTHONS})")
    rn = sub.add_parser("run", help="install the wheels and run the scenario (target machine)")
    rn.add_argument("--wheels", default=WHEELS, help="the packed wheel folder")
    rn.add_argument("--target", help="install the wheels here (default: a folder under the temp dir)")
    rn.add_argument("--model", default="gpt2-774m", help="model size (benchmarks/exchange.py --model)")
    rn.add_argument("--sites", type=int, default=6)
    rn.add_argument("--rounds", type=int, default=2,
                    help="rounds (default 2: a round moves 37 GB at 6 sites; round 2 is the steady one)")
    rn.add_argument("--configs", default="plain-offload", help="benchmarks/exchange.py configurations")
    default_out = (os.path.join(os.environ["OUT"], "upstream-scenario") if os.environ.get("OUT")
                   else os.path.join(ROOT, "results", f"upstream-scenario-{time.strftime('%Y%m%d-%H%M%S')}"))
    rn.add_argument("--out", default=default_out, help="results folder (default: $OUT/upstream-scenario, or results/)")
    args = p.parse_args(argv)
    if args.command == "pack":
        versions = [v.strip() for v in args.python_version.split(",") if v.strip()]
        if not versions or not all(re.fullmatch(r"3\.\d+", v) for v in versions):
            p.error(f"--python-version {args.python_version}: give major.minor versions, e.g. 3.11,3.12")
        pack(args.out, versions)
        return 0
    if not os.path.isfile(os.path.join(args.wheels, MANIFEST)):
        p.error(f"no packed wheels in {args.wheels}: run `benchmarks/upstream_scenario.py pack` on a connected "
                "machine and bring the folder along")
    if args.sites < 1 or args.rounds < 1:
        p.error("--sites and --rounds must be at least 1")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
