#!/usr/bin/env python3
"""Add a site to the running federation with the same root CA (--help for options)."""

import sys

from fl_deploy.add_site import main

if __name__ == "__main__":
    sys.exit(main())
