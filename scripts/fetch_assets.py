#!/usr/bin/env python3
"""Fetch the model and the dataset once, for hosts without internet (--help for options)."""

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [_ROOT, os.path.join(_ROOT, "app_code")]  # as .venv's project.pth does

if __name__ == "__main__":
    try:
        from fl_deploy.fetch_assets import main

        sys.exit(main())
    except ModuleNotFoundError as missing:  # the host's python3: say how to run it, not a traceback
        from fl_deploy import without_packages

        sys.exit(without_packages(__file__, missing))
