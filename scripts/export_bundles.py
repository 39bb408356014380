#!/usr/bin/env python3
"""One bundle per site host (and the admin) for a federation across hosts (--help for options)."""

import sys

from fl_deploy.export_bundles import main

if __name__ == "__main__":
    sys.exit(main())
