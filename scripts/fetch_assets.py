#!/usr/bin/env python3
"""Fetch the model and the dataset once, for hosts without internet (--help for options)."""

import sys

from fl_deploy.fetch_assets import main

if __name__ == "__main__":
    sys.exit(main())
