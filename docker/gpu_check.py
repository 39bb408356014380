#!/usr/bin/env python3
"""A site container's GPU start check (docker/entrypoint.sh runs it before the NVFlare client starts).

    fl-gpu-check     logs one line: the GPU(s), the NVIDIA driver, torch's CUDA version, native bf16 or not;
                     exit 2 with one sentence (the driver found, the driver needed, the fix) when GPUs were
                     reserved for this container but torch cannot use them.

GPUs count as reserved when the NVIDIA container runtime put GPU device nodes (/dev/nvidia0, ...) into the
container: compose's `deploy.resources.reservations.devices` does that, the CPU overlay (compose.cpu.yaml) does
not. Without them the site trains on the CPU, and torch is not even imported here (a faster start).

Minimum drivers (Linux) are NVIDIA's "minor version compatibility" floors from the CUDA Toolkit release notes
(table "CUDA Toolkit and Minimum Required Driver Version for CUDA Minor Version Compatibility"): CUDA 13.x needs
580 or newer, CUDA 12.x 525.60.13, CUDA 11.x 450.80.02.
"""

import glob
import os
import re
import subprocess
import sys
import warnings

# torch's CUDA major version -> the oldest NVIDIA Linux driver that runs it (see the docstring for the source)
MIN_DRIVER = {13: (580,), 12: (525, 60, 13), 11: (450, 80, 2)}
# The CUDA 12 build of the pinned torch for hosts whose driver is older than 580 (PyTorch's own wheel index).
CUDA12_BUILD = "cu129"
FIX_CUDA12 = (f"or build the image with torch's CUDA 12 build (FL_TORCH_CUDA={CUDA12_BUILD} in .env, then "
              "docker compose build; it needs driver {need12} or newer)")
FIX_TOOLKIT = ("install the NVIDIA Container Toolkit on this host and configure Docker for it (sudo nvidia-ctk "
               "runtime configure --runtime=docker && sudo systemctl restart docker), then check that "
               "`docker run --rm --gpus all IMAGE nvidia-smi` lists the GPUs")


def version_text(version: tuple) -> str:
    return ".".join(str(v) for v in version)


def parse_version(text: str) -> tuple:
    """'550.54.15' -> (550, 54, 15); () when it holds no number."""
    return tuple(int(x) for x in re.findall(r"\d+", text or "")[:3])


def reserved_gpus(dev: str = "/dev") -> list:
    """The GPU device nodes the container runtime gave this container (/dev/nvidia0, /dev/nvidia1, ...)."""
    return sorted(glob.glob(os.path.join(dev, "nvidia[0-9]*")))


def driver_info(proc: str = "/proc/driver/nvidia", run=subprocess.run) -> tuple:
    """(driver version text or None, [GPU names]) from nvidia-smi (mounted by the toolkit), else from the kernel
    module's /proc entries."""
    try:
        out = run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                  capture_output=True, text=True, timeout=30)
        rows = [[c.strip() for c in line.split(",")] for line in out.stdout.splitlines() if "," in line]
        if out.returncode == 0 and rows:
            return rows[0][-1], [",".join(r[:-1]) for r in rows]
    except (OSError, subprocess.SubprocessError):
        pass
    driver, names = None, []
    try:
        with open(os.path.join(proc, "version")) as f:
            m = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d+\.\d+(?:\.\d+)?)", f.read())
            driver = m.group(1) if m else None
    except OSError:
        pass
    for info in sorted(glob.glob(os.path.join(proc, "gpus", "*", "information"))):
        with open(info) as f:
            m = re.search(r"Model:\s*(.+)", f.read())
            if m:
                names.append(m.group(1).strip())
    return driver, names


def torch_cuda(torch) -> dict:
    """What torch sees: its version, the CUDA it was built for (None: CPU build), whether CUDA initialises (and
    torch's warning when not), and each visible GPU's name and compute capability."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = bool(torch.cuda.is_available())
    gpus = []
    if available:
        for i in range(torch.cuda.device_count()):
            gpus.append((torch.cuda.get_device_name(i), tuple(torch.cuda.get_device_capability(i))))
    return {"version": torch.__version__, "cuda": torch.version.cuda, "available": available, "gpus": gpus,
            "warning": " ".join(str(w.message).strip().split("\n")[0] for w in caught)}


def check(devices: list, driver: str, names: list, t: dict) -> tuple:
    """(exit code, the one line to print): 0 and the start line, or 2 and the error sentence."""
    found = f"{len(devices)} GPU device(s) ({', '.join(names) or ', '.join(devices)})"
    if t["cuda"] is None:
        return 2, (f"error: this site was given {found} with NVIDIA driver {driver or 'unknown'}, but the image's "
                   f"torch {t['version']} is a CPU-only build and needs a CUDA build to use them; rebuild the image "
                   "with the CUDA build (a wheelhouse from scripts/build_wheelhouse.sh without --torch cpu, or an "
                   "empty docker/wheels/, then docker compose build), or run the site without GPUs "
                   "(the CPU overlay compose.cpu.yaml)")
    cuda = parse_version(t["cuda"])
    need = MIN_DRIVER.get(cuda[0], MIN_DRIVER[max(MIN_DRIVER)])
    need_text = version_text(need)
    built = f"torch {t['version']} is built for CUDA {t['cuda']}, which needs NVIDIA driver {need_text} or newer"
    if t["available"]:
        from fl_site.training import NATIVE_BF16_CAPABILITY  # the rule the site's training follows (/src/app_code)

        gpus = "; ".join(f"{name} (compute {major}.{minor}, bf16 "
                         f"{'native' if (major, minor) >= NATIVE_BF16_CAPABILITY else 'not native: fp32'})"
                         for name, (major, minor) in t["gpus"])
        return 0, (f"gpu: {len(t['gpus'])} GPU(s): {gpus}; NVIDIA driver {driver or 'unknown'}; torch "
                   f"{t['version']}, CUDA {t['cuda']}")
    why = f" (torch: {t['warning']})" if t["warning"] else ""
    if driver is None:
        return 2, (f"error: this site was given {found} but no NVIDIA driver is visible in the container (no "
                   f"nvidia-smi, no /proc/driver/nvidia/version), and {built}{why}; {FIX_TOOLKIT}")
    if parse_version(driver) < need:
        fix = f"upgrade the NVIDIA driver on this host to {need_text} or newer"
        if cuda[0] > 12:
            fix += " " + FIX_CUDA12.format(need12=version_text(MIN_DRIVER[12]))
        return 2, f"error: this site's GPUs cannot be used: the host's NVIDIA driver is {driver} but {built}{why}; {fix}"
    return 2, (f"error: this site was given {found} and NVIDIA driver {driver} is new enough ({built}), but torch "
               f"cannot initialise CUDA{why}; the driver's CUDA library is not reachable in the container: "
               f"{FIX_TOOLKIT}, and keep NVIDIA_DRIVER_CAPABILITIES=compute,utility")


def torch_build() -> str:
    """torch's installed version (2.13.0, 2.13.0+cu129, 2.13.0+cpu) without importing it."""
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "not installed"


def main(argv=None, dev: str = "/dev", proc: str = "/proc/driver/nvidia", run=subprocess.run) -> int:
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    devices = reserved_gpus(dev)
    if not devices:
        print(f"gpu: none reserved for this site (no /dev/nvidia* device): training runs on the CPU; torch "
              f"{torch_build()}", flush=True)
        return 0
    import torch

    driver, names = driver_info(proc, run)
    code, line = check(devices, driver, names, torch_cuda(torch))
    print(line, file=sys.stderr if code else sys.stdout, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
