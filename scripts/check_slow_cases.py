#!/usr/bin/env python3
"""Fault cases too slow for CI (slow link, cold starts), PASS or FAIL per case (--help for options)."""

import sys

from fl_deploy.harness.check_slow_cases import main

if __name__ == "__main__":
    sys.exit(main())
