"""The architectures slow case: a tiny Llama and a tiny Qwen2, each with full weights and with LoRA, as FL jobs
through a federation of provisioned processes. CI runs two of the four jobs (Llama full, Qwen2 LoRA); this runs the
same test module with all four (FL_ARCH_JOBS=all): tests/integration/test_architectures_processes.py."""

import os
import re
import subprocess
import sys

from fl_deploy import ROOT

MODULE = "tests/integration/test_architectures_processes.py"


def architectures(args) -> list:
    """[(passed, the job (arch-mode), detail)] from pytest's summary of the module run with every job."""
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", MODULE],
                         cwd=ROOT, env=dict(os.environ, FL_ARCH_JOBS="all"), capture_output=True, text=True,
                         timeout=1800)
    results = [(outcome == "PASSED", job, f"{outcome.lower()}: {MODULE}[{job}]")
               for outcome, job in re.findall(r"^(PASSED|FAILED|ERROR) \S+\[(\S+?)\]", run.stdout, re.M)]
    if run.returncode != 0 and not any(not ok for ok, _, _ in results):
        results.append((False, "", "pytest: " + " | ".join(run.stdout.strip().splitlines()[-3:])[-600:]))
    return results
