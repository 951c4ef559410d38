"""`python -m relops_pipeline.cli`: the same as the `relops` command."""

import sys

from relops_pipeline.cli import main

sys.exit(main())
