#!/usr/bin/env python3
"""Provision the federation: project.yml -> signed startup kits in workspace/kits/ (--help for options)."""

import sys

from fl_deploy.provision import main

if __name__ == "__main__":
    sys.exit(main())
