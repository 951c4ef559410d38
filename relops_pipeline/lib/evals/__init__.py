"""Evals: suites, manifests, runners, scorers and importers (pure logic, no Dagster)."""
