"""Evals domain: suite versions, release manifests and eval runs per release partition."""

from relops_pipeline.defs.evals.assets import eval_run, eval_suites, release_eval_job, release_manifest
from relops_pipeline.defs.evals.sensors import releases_sensor

assets = [eval_suites, release_manifest, eval_run]
jobs = [release_eval_job]
sensors = [releases_sensor]
