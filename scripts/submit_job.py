#!/usr/bin/env python3
"""Submit the FedAvg job through the admin console, follow it and fetch its results (--help for options).

Runs with the host's own python3 (standard library only), so it puts the project root on the import path itself.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fl_deploy.submit_job import main  # noqa: E402

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a service manager's stop: handled as Ctrl-C
    sys.exit(main())
