#!/usr/bin/env python3
"""A downloaded job result as a Hugging Face model, metrics.csv and plots (--help for options)."""

import sys

from fl_deploy.export_results import main

if __name__ == "__main__":
    sys.exit(main())
