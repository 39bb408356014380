#!/usr/bin/env python3
"""Fetch the model and the dataset once, for hosts without internet (--help for options)."""

import sys

from fl_deploy.assets import fetch_main

if __name__ == "__main__":
    sys.exit(fetch_main())
