#!/usr/bin/env python3
"""Generate the FedAvg job folder (jobs/gpt2-fedavg-stream by default); --help lists every job setting."""

import sys

from fl_deploy.make_job import main

if __name__ == "__main__":
    sys.exit(main())
