"""The approvals sensor: the audit log's approvals, overrides and refusals of a release become
events of its `release_approval` partition (between `release_gate` and `rollout_plan` in the
lineage), and the release's `gate_decision` check is re-evaluated with its new status (a REVIEW
approved passes, a BLOCK overridden warns)."""

from __future__ import annotations

import dagster as dg

from relops_pipeline.defs.beta import with_beta_parameters
from relops_pipeline.defs.evals.partitions import RELEASES_PARTITIONS
from relops_pipeline.defs.gates.metadata import approval_asset_event, glance_check_evaluation
from relops_pipeline.defs.resources import RelopsHomeResource, WarehouseBusy, WarehouseResource


@with_beta_parameters(dg.sensor, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING)
def approvals_sensor(context: dg.SensorEvaluationContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """Report each approval, override and refusal recorded since the last tick (the cursor is
    the last audit event's seq) as a `release_approval` event of the release's partition, and
    the release's decision at a glance as its `gate_decision` check. The audit log is the
    record; this only shows it in the UI, so on a new instance the whole log is shown once."""
    from relops_pipeline.lib.gates.glance import approval_events_since, glance_of_state, latest_gate_suite
    from relops_pipeline.lib.gates.service import latest_gate_decision, release_state

    after = int(context.cursor or 0)
    try:
        with warehouse.read_only(requires="events") as con:
            if con is None:
                return dg.SkipReason("the warehouse has no audit log yet")
            events = approval_events_since(con, after)
            if not events:
                return dg.SkipReason("no approval, override or refusal since the last tick")
            known = set(context.instance.get_dynamic_partitions(RELEASES_PARTITIONS))
            shown = [e for e in events if e.release_key in known]
            asset_events: list[dg.AssetMaterialization | dg.AssetObservation | dg.AssetCheckEvaluation] = [
                approval_asset_event(e, home.home) for e in shown]
            for key in sorted({e.release_key for e in shown}):
                g = glance_of_state(release_state(con, key), latest_gate_suite(con, key))
                if g is not None:
                    asset_events.append(glance_check_evaluation(g, home.home, context.instance,
                                                                latest_gate_decision(con, key)))
    except WarehouseBusy:
        return dg.SkipReason("the warehouse is busy; trying again on the next tick")
    for e in events:
        if e.release_key not in known:
            context.log.warning(f"{e.kind} of {e.release_key} (audit event {e.seq}): not a registered release partition")
    return dg.SensorResult(asset_events=asset_events, cursor=str(events[-1].seq))
