"""Release gates: thresholds, statistics, the decision and its reports (pure logic)."""
