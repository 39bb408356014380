#!/usr/bin/env python3
"""Where the deployment's disk goes (server volume, admin console, results/) and --prune by a documented rule.

Runs with the host's own python3 (standard library only), so it puts the project root on the import path itself.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fl_deploy.disk_usage import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
