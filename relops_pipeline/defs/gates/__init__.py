"""Gates domain: thresholds in force and the release decision per release partition."""

from relops_pipeline.defs.gates.assets import gate_thresholds, release_gate, release_gate_job

assets = [gate_thresholds, release_gate]
jobs = [release_gate_job]
sensors: list = []
