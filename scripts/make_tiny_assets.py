#!/usr/bin/env python3
"""Tiny offline stand-ins for GPT-2 and IMDB (tests, the offline demo)."""

import sys

from fl_deploy.make_tiny_assets import main

if __name__ == "__main__":
    sys.exit(main())
