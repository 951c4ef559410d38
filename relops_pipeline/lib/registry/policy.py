"""A workflow's rollout policy, the automatic-rollback decision, and the rollout plan.

The policy is the workflow file's `rollout:` mapping (relops_pipeline/lib/workflows.py holds the
defaults). Keys read here, all optional::

    rollout:
      stages: [shadow, canary, ramp, full]   # a subsequence of these, ending with full
      auto_rollback: true                    # false: failures only alert (recommend rollback)
      auto_rollback_on: [canary, gate]       # only these triggers roll back automatically
                                             # (absent: every trigger)
      canary_percent: 10                     # default traffic share of the canary stage
      ramp_percent: 50                       # default traffic share of the ramp stage
      durations_minutes: {shadow: 60, canary: 120, ramp: 240}   # minimum time in each stage
      triggers:                              # canary rollback triggers (see rollout_plan)
        latency_p95_ratio: 1.2               # canary p95 latency / baseline p95 latency
        error_rate_increase: 0.02            # canary error rate - baseline error rate
        refusal_rate_increase: 0.02          # canary refusal rate - baseline refusal rate
        cost_ratio: 1.25                     # canary mean cost / baseline mean cost
      deployer: {type: webhook, url: ..., secret_env: ...}     # see deployers.py

Other keys are left alone (other parts of relops may read them).

Decision table of `decide(policy, state, trigger, release)`:

    auto_rollback | trigger allowed by auto_rollback_on | release in canary or ramp | decision
    false         | -                                   | -                         | alert_only
    true          | no                                  | -                         | alert_only
    true          | yes (or auto_rollback_on absent)    | no (live, shadow, gone)   | alert_only
    true          | yes (or auto_rollback_on absent)    | yes                       | rollback

A release in canary or ramp is rolled back by removing it (traffic returns to live, which is
unchanged). The live release is never rolled back automatically: that is a human decision,
recommended by the alert. A shadow serves no user, so it is never urgent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from relops_pipeline.lib.registry.state import STAGES, RegistryError, RegistryState

TRIGGERS = ("gate", "canary", "drift")  # what sensors report; manual and drill are human/rehearsal
DEFAULT_DURATIONS = {"shadow": 60.0, "canary": 120.0, "ramp": 240.0}
DEFAULT_TRIGGERS = {
    "latency_p95_ratio": 1.2,
    "error_rate_increase": 0.02,
    "refusal_rate_increase": 0.02,
    "cost_ratio": 1.25,
}
# Only stages that serve users must be passed through; shadow and ramp may be skipped.
SKIPPABLE = ("shadow", "ramp")


@dataclass(frozen=True)
class RolloutPolicy:
    stages: tuple[str, ...] = STAGES
    auto_rollback: bool = True
    auto_rollback_on: tuple[str, ...] | None = None  # None: every trigger
    canary_percent: float = 10.0
    ramp_percent: float = 50.0
    durations_minutes: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_DURATIONS))
    triggers: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TRIGGERS))
    deployer: dict[str, Any] | None = None

    def allows_auto(self, trigger: str) -> bool:
        """Whether the policy lets `trigger` roll back automatically (stage not considered)."""
        if not self.auto_rollback:
            return False
        return self.auto_rollback_on is None or trigger in self.auto_rollback_on

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stages"] = list(self.stages)
        d["auto_rollback_on"] = None if self.auto_rollback_on is None else list(self.auto_rollback_on)
        return d


def _percent(errors: list[str], key: str, value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 < value < 100:
        errors.append(f"rollout.{key}: expected a number in (0, 100), got {value!r}")
        return None
    return float(value)


def parse_policy(rollout: Any) -> RolloutPolicy:
    """The policy from a workflow's `rollout` mapping, a Workflow (its `.rollout`), a
    RolloutPolicy (returned as is) or None (the defaults). Raises RegistryError listing every
    problem with its key."""
    if isinstance(rollout, RolloutPolicy):
        return rollout
    if rollout is not None and not isinstance(rollout, Mapping) and hasattr(rollout, "rollout"):
        rollout = rollout.rollout
    if rollout is None:
        return RolloutPolicy()
    if not isinstance(rollout, Mapping):
        raise RegistryError(f"rollout: expected a mapping, got {type(rollout).__name__}")
    errors: list[str] = []
    values: dict[str, Any] = {}
    if "stages" in rollout:
        stages = rollout["stages"]
        if (not isinstance(stages, (list, tuple)) or not stages or any(s not in STAGES for s in stages)
                or list(stages) != sorted(stages, key=STAGES.index) or len(set(stages)) != len(stages)
                or stages[-1] != "full"):
            errors.append(f"rollout.stages: expected stages of {list(STAGES)} in that order, each once, ending with "
                          f"full; got {stages!r}")
        else:
            values["stages"] = tuple(stages)
    if "auto_rollback" in rollout:
        if not isinstance(rollout["auto_rollback"], bool):
            errors.append(f"rollout.auto_rollback: expected true or false, got {rollout['auto_rollback']!r}")
        else:
            values["auto_rollback"] = rollout["auto_rollback"]
    on = rollout.get("auto_rollback_on")
    if on is not None:
        if not isinstance(on, (list, tuple)) or any(t not in TRIGGERS for t in on):
            errors.append(f"rollout.auto_rollback_on: expected a list of {list(TRIGGERS)}, got {on!r}")
        else:
            values["auto_rollback_on"] = tuple(on)
    for key in ("canary_percent", "ramp_percent"):
        if rollout.get(key) is not None:
            p = _percent(errors, key, rollout[key])
            if p is not None:
                values[key] = p
    durations = rollout.get("durations_minutes")
    if durations is not None:
        if not isinstance(durations, Mapping):
            errors.append(f"rollout.durations_minutes: expected a mapping of stage: minutes, got {durations!r}")
        else:
            merged = dict(DEFAULT_DURATIONS)
            for stage, minutes in durations.items():
                if stage not in DEFAULT_DURATIONS:
                    errors.append(f"rollout.durations_minutes: unknown stage {stage!r} (of {list(DEFAULT_DURATIONS)})")
                elif isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not 0 <= minutes < 1e6:
                    errors.append(f"rollout.durations_minutes.{stage}: expected minutes >= 0, got {minutes!r}")
                else:
                    merged[stage] = float(minutes)
            values["durations_minutes"] = merged
    triggers = rollout.get("triggers")
    if triggers is not None:
        if not isinstance(triggers, Mapping):
            errors.append(f"rollout.triggers: expected a mapping, got {triggers!r}")
        else:
            merged = dict(DEFAULT_TRIGGERS)
            for key, value in triggers.items():
                if key not in DEFAULT_TRIGGERS:
                    errors.append(f"rollout.triggers: unknown key {key!r} (known: {', '.join(DEFAULT_TRIGGERS)})")
                    continue
                low = 1.0 if key.endswith("_ratio") else 0.0
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value < 1e6:
                    errors.append(f"rollout.triggers.{key}: expected a number above {low:g}, got {value!r}")
                else:
                    merged[key] = float(value)
            values["triggers"] = merged
    if rollout.get("deployer") is not None:
        if not isinstance(rollout["deployer"], Mapping):
            errors.append(f"rollout.deployer: expected a mapping, got {rollout['deployer']!r}")
        else:
            values["deployer"] = dict(rollout["deployer"])
    if errors:
        raise RegistryError("; ".join(errors))
    return RolloutPolicy(**values)


def decide(policy: Any, state: RegistryState, trigger: str, release: str | None = None) -> tuple[str, str]:
    """("rollback" | "alert_only", why) for a failed check of `trigger` (gate | canary | drift)
    about `release` (default: the candidate in flight). See the module's decision table."""
    pol = parse_policy(policy)
    target = release or state.candidate
    where = state.stage_of(target) if target else None
    if not pol.auto_rollback:
        return "alert_only", f"{state.workflow}: the rollout policy forbids automatic rollback (auto_rollback: false)"
    if not pol.allows_auto(trigger):
        allowed = ", ".join(pol.auto_rollback_on or ()) or "none"
        return "alert_only", (f"{state.workflow}: a failed {trigger} check does not roll back automatically "
                              f"(auto_rollback_on: {allowed})")
    if target is None:
        return "alert_only", f"{state.workflow}: no release is in canary or ramp: nothing to roll back automatically"
    if where in ("canary", "ramp"):
        share = f" at {state.canary_percent:g} %" if state.canary_percent is not None else ""
        return "rollback", (f"{target} is in {where}{share} and the policy allows automatic rollback on {trigger}: "
                            f"traffic returns to {state.live}")
    if where == "live":
        return "alert_only", (f"{target} is live: rolling back the live release is a human decision "
                              f"(last known good: {state.last_known_good or 'none'})")
    if where == "shadow":
        return "alert_only", f"{target} is in shadow and serves no user: remove it by hand if needed"
    return "alert_only", f"{target} does not serve {state.workflow} any more: nothing to roll back"


# ---------------------------------------------------------------------------------------------
# The plan


def _thresholds_dict(thresholds: Any) -> dict[str, Any]:
    if thresholds is None:
        return {}
    if isinstance(thresholds, Mapping):
        return dict(thresholds)
    if hasattr(thresholds, "as_dict"):
        return thresholds.as_dict()
    raise RegistryError(f"thresholds: expected Thresholds, a mapping or None, got {type(thresholds).__name__}")


def rollout_plan(workflow_cfg: Any, thresholds: Any = None) -> dict[str, Any]:
    """A release's rollout plan: stages with traffic shares and minimum durations, the
    rollback triggers (canary metrics from `rollout.triggers`, budgets from the gate
    thresholds, the gate and drift checks) and what each does under the policy.

    `workflow_cfg`: a Workflow (or any object with `.name`, `.rollout`) or a mapping with
    `name` and `rollout`. `thresholds`: the gate's Thresholds (or its `as_dict()`), or None.
    JSON-serialisable."""
    if isinstance(workflow_cfg, Mapping):
        name, rollout = workflow_cfg.get("name"), workflow_cfg.get("rollout")
    else:
        name, rollout = getattr(workflow_cfg, "name", None), getattr(workflow_cfg, "rollout", None)
    pol = parse_policy(rollout)
    th = _thresholds_dict(thresholds)

    stages = []
    for stage in pol.stages:
        entry: dict[str, Any] = {"stage": stage}
        if stage == "shadow":
            entry.update(traffic_percent=0.0, mirrored=True,
                         advance_when="no more errors or refusals than the live release on mirrored requests")
        elif stage == "canary":
            entry.update(traffic_percent=pol.canary_percent, mirrored=False,
                         advance_when="canary analysis passes against the live release over the same window")
        elif stage == "ramp":
            entry.update(traffic_percent=pol.ramp_percent, mirrored=False,
                         advance_when="canary analysis still passes at the larger share")
        else:
            entry.update(traffic_percent=100.0, mirrored=False,
                         advance_when="promotes the release to live; the previous live becomes last known good")
        entry["min_minutes"] = pol.durations_minutes.get(stage, 0.0) if stage != "full" else 0.0
        stages.append(entry)

    def action(trigger: str) -> str:
        return "rollback" if pol.allows_auto(trigger) else "alert_only"

    in_flight = [s for s in pol.stages if s in ("canary", "ramp")]
    t = pol.triggers
    triggers: list[dict[str, Any]] = [
        {"trigger": "canary", "metric": "latency_p95_ratio", "op": ">", "threshold": t["latency_p95_ratio"],
         "critical": True, "source": "rollout.triggers",
         "meaning": f"canary p95 latency above {t['latency_p95_ratio']:g} x that of the live release in the same window"},
        {"trigger": "canary", "metric": "error_rate_increase", "op": ">", "threshold": t["error_rate_increase"],
         "critical": True, "source": "rollout.triggers",
         "meaning": f"canary error rate more than {t['error_rate_increase']:.1%} above that of the live release"},
        {"trigger": "canary", "metric": "refusal_rate_increase", "op": ">", "threshold": t["refusal_rate_increase"],
         "critical": True, "source": "rollout.triggers",
         "meaning": f"canary refusal rate more than {t['refusal_rate_increase']:.1%} above that of the live release"},
        {"trigger": "canary", "metric": "cost_ratio", "op": ">", "threshold": t["cost_ratio"],
         "critical": False, "source": "rollout.triggers",
         "meaning": f"canary mean cost per request above {t['cost_ratio']:g} x that of the live release"},
    ]
    if th.get("latency_p95_budget_ms"):
        budget = float(th["latency_p95_budget_ms"])
        triggers.append({"trigger": "canary", "metric": "latency_p95_ms", "op": ">", "threshold": budget,
                         "critical": True, "source": "thresholds.latency_p95_budget_ms",
                         "meaning": f"canary p95 latency above the gate budget of {budget:g} ms"})
    if th.get("cost_per_sample_budget_usd"):
        budget = float(th["cost_per_sample_budget_usd"])
        triggers.append({"trigger": "canary", "metric": "cost_usd_mean", "op": ">", "threshold": budget,
                         "critical": False, "source": "thresholds.cost_per_sample_budget_usd",
                         "meaning": f"canary mean cost per request above the gate budget of ${budget:g}"})
    triggers.append({"trigger": "gate", "metric": "decision", "op": "not releasable", "threshold": None,
                     "critical": True, "source": "gate",
                     "meaning": "the latest gate decision of the release is BLOCK or an unapproved REVIEW"})
    triggers.append({"trigger": "drift", "metric": "drift_status", "op": "error", "threshold": None,
                     "critical": False, "source": "drift",
                     "meaning": "a critical column of the production traffic of the release drifted"})
    for trig in triggers:
        trig["action_in_canary_or_ramp"] = action(trig["trigger"])
        trig["action_when_live"] = "alert_only"
        trig["applies_in"] = in_flight + ["live"]

    return {
        "workflow": name,
        "stages": stages,
        "min_total_minutes": sum(s["min_minutes"] for s in stages),
        "auto_rollback": pol.auto_rollback,
        "auto_rollback_on": None if pol.auto_rollback_on is None else list(pol.auto_rollback_on),
        "triggers": triggers,
        "thresholds_version": th.get("version"),
        "rollback_target": "the live release for a candidate in canary or ramp; the last known good for live",
    }
