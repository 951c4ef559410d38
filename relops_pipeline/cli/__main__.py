"""`python -m relops_pipeline.cli`: the same as the `relops` command."""

from relops_pipeline.cli import run

run()
