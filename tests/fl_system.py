"""The tests' name for scripts/local_federation.py (the process-based federation the benchmark also uses)."""

from local_federation import *  # noqa: F401,F403
from local_federation import ROOT, VENV_BIN, ProcessFederation, free_port, round_start_times, write_project  # noqa: F401
