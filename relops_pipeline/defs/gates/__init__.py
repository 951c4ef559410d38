"""Gates domain: thresholds in force, the release decision per release partition, and the
approvals and overrides that let a release out despite its gate."""

import dagster as dg

from relops_pipeline.defs.gates.assets import gate_thresholds, release_approval, release_gate
from relops_pipeline.defs.gates.sensors import approvals_sensor

assets: list[dg.AssetsDefinition | dg.AssetSpec] = [gate_thresholds, release_gate, release_approval]
jobs: list = []
sensors = [approvals_sensor]
