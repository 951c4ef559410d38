"""Gates domain: thresholds in force and the release decision per release partition."""

from relops_pipeline.defs.gates.assets import gate_thresholds, release_gate

assets = [gate_thresholds, release_gate]
jobs: list = []
sensors: list = []
