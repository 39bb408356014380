#!/usr/bin/env python3
"""Renew one participant's certificate under the same root CA: a freshly signed kit (--help for options)."""

import sys

from fl_deploy.renew_kit import main

if __name__ == "__main__":
    sys.exit(main())
