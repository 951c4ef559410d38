"""Synthetic production traces for the demo world, and a fast bulk generator for benchmarks.

Everything here only writes files: OTLP/JSON lines as the OpenTelemetry collector's file
exporter writes them (one `{"resourceSpans": [...]}` object per line, ids in lowercase hex,
`*UnixNano` and `intValue` as strings, `status` `{}` when unset) with the latest OTel GenAI
semantic conventions (`gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`,
`gen_ai.response.model`, `gen_ai.usage.input_tokens/output_tokens`,
`gen_ai.response.finish_reasons` as an arrayValue, `gen_ai.system_instructions`,
`gen_ai.input.messages` / `gen_ai.output.messages` as JSON strings, `error.type` and status
code 2 on errors).

The demo world (`generate_demo_traces`)
---------------------------------------
Files: `<landing>/<workflow>/<YYYY-MM-DD>.otlp.jsonl`, one per workflow per UTC day, one trace
per line (all spans of a trace in one resourceSpans entry, in two scopes: the application's
and the GenAI instrumentation's; the legacy batch job's line holds all its traces). Every day
is generated from its own random stream seeded by (seed, scale, workflow, date), so a day's
file is byte-identical whenever it is re-generated (re-delivery) and does not depend on which
other days were written. Files are written to a
hidden temp name and renamed, so a sensor never sees half a file.

Release scheme: resource `service.name` = workflow, `service.version` = "1.3.0",
`relops.release` = "support-triage@v1.3.0". A canary release gets its canary share of traffic
(10 % for every demo release: every 10th trace, weighted round-robin with a random phase per
day) from its canary time until it takes over, is rolled back, or the period ends. Day offsets
below are from `start` (default Monday 2026-09-28; week 1 = days 0-6); canary and full times
are 10:00 UTC. `release_schedule(start)` and the summary's `releases` give the absolute times.

support-triage (classify + answer a support ticket; root `invoke_agent`, one `chat` span,
for order topics sometimes chat(tool_calls) -> execute_tool lookup_order -> chat):
  v1.2.0  live before start. gpt-4o-mini, temperature 0.7, no JSON mode: ~4 % of replies are
          JSON wrapped in a ```json fence; classification accuracy ~0.90.
  v1.3.0  canary day 8 (Tue wk 2) -> full day 10. JSON mode + temperature 0.2: no fences,
          replies ~10 % shorter, accuracy ~0.94. Same model, same prompt length.
  v1.4.0  canary day 22 (Tue wk 4) -> full day 25. Model switch gpt-4o-mini -> gpt-4.1-mini:
          ~15 % lower latency, ~15 % more output tokens, ~2.7x price per token, accuracy 0.96.
  v1.5.0  canary day 43 (Tue wk 7), ROLLED BACK day 45 15:00, never takes over. Adds the
          account-deletion category but lowers max_tokens 400 -> 256: ~10 % of replies end
          with finish_reason "length" (truncated, invalid JSON), more thumbs-down.
  v1.5.1  canary day 49 (Mon wk 8) -> full day 51. account-deletion category, max_tokens 400.
doc-qa (RAG over the product docs; root `chain`, a `retrieval` span, a `chat` span carrying the
online score relops.score.groundedness):
  v2.0.0  live before start. gpt-4o-mini, top_k 4, groundedness mean ~0.80.
  v2.1.0  canary day 15 (Tue wk 3) -> full day 17. top_k 4 -> 8: ~+80 % input tokens,
          slower retrieval and first token, groundedness ~0.86.
  v2.2.0  canary day 29 (Tue wk 5) -> full day 32. Model switch gpt-4o-mini -> gpt-4.1-nano
          (cost cut): ~35 % lower latency, cheaper, groundedness ~0.74, fewer thumbs-up.
  v2.3.0  canary day 44 (Wed wk 7) -> full day 46. gpt-4.1-mini + "cite your sources" prompt:
          groundedness ~0.87, ~30 % longer answers with [n] citations, dearer.
  v2.4.0  canary day 53 (Fri wk 8) at 50 % until the period ends (doc-qa is low-traffic: at 10 %
          its canary would take days to gather evidence): no full or rollback time in
          the traces, because relops is meant to roll it back. Model switch gpt-4.1-mini ->
          gpt-5-mini (reasoning effort minimal, no temperature), same prompt and retrieval;
          its eval ships, but in production the first token waits for the reasoning: trace
          latency p95 ~+37 % (chat spans ~+41 %), and it refuses about half of the questions
          that paste a configuration (~6 % of traffic, none in the eval suite), so refusals go
          ~1 % -> ~4 % of traces (~1.2 % -> ~4.2 % counting content_filter). Cost per trace
          ~5 % lower (cheaper input, dearer output), groundedness ~0.87.
          At scale 1.0 its canary gets ~400 traces over its 2.5 days.

Drift (support-triage only, from DRIFT_START_DAY = day 35 = Monday of week 6): a new topic
`account-deletion` (~18 % of tickets; releases before v1.5 classify it as other/login and get
more thumbs-down) and tickets ~40 % longer in characters and ticket tokens (the new in-app
widget attaches the previous conversation; total input_tokens, which include the fixed
system prompt, rise ~20 %). Weeks 1-5 are stationary in topic mix, language mix and ticket
length (releases change outputs, latency and cost, not inputs).

Everywhere: latency log-normal with a heavy tail (provider queueing) and a time-of-day load
factor; traffic follows hour-of-day and weekday curves; ~1.5 % of LLM calls fail
(RateLimitError, often retried; APITimeoutError after 20 s; InternalServerError), ~1 %
refusals ("I'm sorry, but I can't help with that."; doc-qa v2.4.0 adds its config refusals),
finish reasons mostly stop with some length / tool_calls and rare content_filter; user
feedback `relops.feedback` (intValue 1 = thumbs up, 0 = down) on ~15 % of root spans;
`relops.topic` / `relops.language` on root and chat spans. About 2.5 % of traces (single-span,
so ~1 % of spans) come from a legacy nightly batch job (from 02:00 UTC, all its spans in one
line, legacy `gen_ai.system` attribute, no message content) whose resource has no
service.version and no relops.release: they count in `spans_without_release`.
Malformed lines (MALFORMED_LINES, fixed day offsets, never a file's first line): a truncated
trace line (that trace is lost) or a collector log line that is not JSON.

Expected ingest of a generated landing folder: accepted spans = summary.spans, rejected
lines = summary.malformed_lines, spans with unknown release = summary.spans_without_release.

The bench generator (`write_bench_traces`)
-----------------------------------------
One trace of one chat span per line, same shape, from precomputed pools of span bodies and
resources; only ids and timestamps vary per line. Streams in chunks: memory stays flat.
"""

from __future__ import annotations

import json
import math
import os
import random
from bisect import bisect
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any

from relops_pipeline.lib.schema import UNKNOWN

DEFAULT_START = date(2026, 9, 28)  # a Monday; 8 weeks later is Monday 2026-11-23
DEFAULT_WEEKS = 8
DRIFT_START_DAY = 35  # Monday of week 6
CANARY_SHARE = 0.10

# USD per 1M tokens, in the shape of relops.yaml `prices:`. Responses report dated snapshots
# (RESPONSE_MODELS); the loader prices them by longest configured prefix.
PRICES_PER_MTOK: dict[str, dict[str, float]] = {
    "gpt-4o-mini": {"input": 0.15, "output": 0.60},
    "gpt-4.1-mini": {"input": 0.40, "output": 1.60},
    "gpt-4.1-nano": {"input": 0.10, "output": 0.40},
    "gpt-5-mini": {"input": 0.25, "output": 2.00},
}
RESPONSE_MODELS = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-5-mini": "gpt-5-mini-2025-08-07",
}
# (time to first token ms, ms per output token); gpt-5-mini's first token waits for its
# (minimal) reasoning.
_MODEL_SPEED = {"gpt-4o-mini": (240.0, 3.3), "gpt-4.1-mini": (200.0, 2.6), "gpt-4.1-nano": (150.0, 1.9),
                "gpt-5-mini": (310.0, 3.7)}

WORKFLOWS = ("support-triage", "doc-qa")
# (workflow, day offset, kind); kind "truncated" replaces a trace line with its first part.
MALFORMED_LINES: tuple[tuple[str, int, str], ...] = (
    ("support-triage", 3, "truncated"),
    ("doc-qa", 8, "not_json"),
    ("support-triage", 12, "not_json"),
    ("doc-qa", 20, "truncated"),
    ("support-triage", 33, "truncated"),
    ("doc-qa", 41, "truncated"),
    ("support-triage", 52, "not_json"),
)
LEGACY_SHARE = 0.025  # of traces; single-span traces, so ~1 % of spans
FEEDBACK_SHARE = 0.15


# --------------------------------------------------------------------------- releases


@dataclass(frozen=True)
class _Behaviour:
    model: str
    temperature: float | None = 0.7  # None: not sent (gpt-5 models only take the default)
    max_tokens: int = 400
    json_mode: bool = False
    fence_rate: float = 0.0
    accuracy: float = 0.9
    output_scale: float = 1.0
    knows_account_deletion: bool = False
    top_k: int = 4
    groundedness: float = 0.8
    citations: bool = False
    config_refusal: float = 0.0  # doc-qa: share of questions with a pasted configuration refused


@dataclass(frozen=True)
class _ReleaseDef:
    workflow: str
    version: str
    canary_day: int | None  # None: live before the period starts
    full_day: int | None  # None with rollback_day None: still in canary when the period ends
    rollback_day: int | None
    changes: str
    behaviour: _Behaviour
    rollback_hour: int = 15
    canary_share: float = CANARY_SHARE  # of traffic while in canary: 1 request in round(1 / share)


_RELEASE_DEFS: tuple[_ReleaseDef, ...] = (
    _ReleaseDef("support-triage", "1.2.0", None, None, None,
                "baseline: gpt-4o-mini, temperature 0.7, no JSON mode (~4% fenced JSON), accuracy ~0.90",
                _Behaviour("gpt-4o-mini", 0.7, 400, False, 0.04, 0.90)),
    _ReleaseDef("support-triage", "1.3.0", 8, 10, None,
                "JSON mode + temperature 0.2: no fenced JSON, ~10% shorter replies, accuracy ~0.94",
                _Behaviour("gpt-4o-mini", 0.2, 400, True, 0.0, 0.94, 0.9)),
    _ReleaseDef("support-triage", "1.4.0", 22, 25, None,
                "model switch gpt-4o-mini -> gpt-4.1-mini: ~15% lower latency, ~15% more output "
                "tokens, ~2.7x price per token, accuracy ~0.96",
                _Behaviour("gpt-4.1-mini", 0.2, 400, True, 0.0, 0.96, 1.035)),
    _ReleaseDef("support-triage", "1.5.0", 43, None, 45,
                "adds account-deletion category but max_tokens 400 -> 256: ~10% finish_reason "
                "length (truncated JSON), more thumbs-down; rolled back after the canary",
                _Behaviour("gpt-4.1-mini", 0.2, 256, True, 0.0, 0.96, 1.035, True)),
    _ReleaseDef("support-triage", "1.5.1", 49, 51, None,
                "account-deletion category with max_tokens 400 (fixed v1.5.0)",
                _Behaviour("gpt-4.1-mini", 0.2, 400, True, 0.0, 0.96, 1.035, True)),
    _ReleaseDef("doc-qa", "2.0.0", None, None, None,
                "baseline: gpt-4o-mini, top_k 4, groundedness ~0.80",
                _Behaviour("gpt-4o-mini", 0.3, 600, top_k=4, groundedness=0.80)),
    _ReleaseDef("doc-qa", "2.1.0", 15, 17, None,
                "retrieval top_k 4 -> 8: ~+80% input tokens, slower, groundedness ~0.86",
                _Behaviour("gpt-4o-mini", 0.3, 600, top_k=8, groundedness=0.86)),
    _ReleaseDef("doc-qa", "2.2.0", 29, 32, None,
                "model switch gpt-4o-mini -> gpt-4.1-nano: ~35% lower latency, cheaper, "
                "groundedness ~0.74, fewer thumbs-up",
                _Behaviour("gpt-4.1-nano", 0.3, 600, top_k=8, groundedness=0.74)),
    _ReleaseDef("doc-qa", "2.3.0", 44, 46, None,
                "gpt-4.1-mini + cite-your-sources prompt: groundedness ~0.87, ~30% longer answers "
                "with [n] citations, dearer",
                _Behaviour("gpt-4.1-mini", 0.3, 600, top_k=8, groundedness=0.87, output_scale=1.2,
                           citations=True)),
    _ReleaseDef("doc-qa", "2.4.0", 53, None, None,
                "model switch gpt-4.1-mini -> gpt-5-mini (reasoning effort minimal): same eval quality, "
                "but in production ~+37% trace latency p95 and refusals ~1% -> ~4% (it refuses about "
                "half of the questions with a pasted configuration); in canary until the period ends",
                _Behaviour("gpt-5-mini", None, 600, top_k=8, groundedness=0.87, output_scale=1.2,
                           citations=True, config_refusal=0.5), canary_share=0.5),
)
_DEPLOY_HOUR = 10


def release_tag(workflow: str, version: str) -> str:
    """The `relops.release` value of a workflow version: "support-triage@v1.3.0"."""
    return f"{workflow}@v{version}"


@dataclass(frozen=True)
class Release:
    """One release of the demo world's schedule (times naive UTC)."""

    workflow: str
    version: str  # resource service.version
    release: str  # resource relops.release
    model: str
    canary_start: datetime | None  # None: live before the period starts
    full_start: datetime | None  # None: never took over (rolled back, or still in canary)
    rolled_back_at: datetime | None  # None with full_start None: in canary when the period ends
    changes: str
    canary_share: float | None = None  # share of traffic in canary (None: live before the period)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("canary_start", "full_start", "rolled_back_at"):
            d[k] = d[k].isoformat() if d[k] else None
        return d


def release_schedule(start: date = DEFAULT_START) -> list[Release]:
    """The demo world's releases with absolute times for a period starting at `start`."""
    t0 = datetime(start.year, start.month, start.day)

    def at(day: int | None, hour: int) -> datetime | None:
        return None if day is None else t0 + timedelta(days=day, hours=hour)

    return [
        Release(r.workflow, r.version, release_tag(r.workflow, r.version), r.behaviour.model,
                at(r.canary_day, _DEPLOY_HOUR), at(r.full_day, _DEPLOY_HOUR),
                at(r.rollback_day, r.rollback_hour), r.changes,
                None if r.canary_day is None else r.canary_share)
        for r in _RELEASE_DEFS
    ]


class _Router:
    """Which release serves a trace at time t (seconds from the period start)."""

    def __init__(self, workflow: str):
        defs = [r for r in _RELEASE_DEFS if r.workflow == workflow]
        self.full = [((r.full_day * 86400 + _DEPLOY_HOUR * 3600) if r.full_day is not None else -1, r)
                     for r in defs if r.full_day is not None or r.canary_day is None]
        self.canary: list[tuple[float, float, _ReleaseDef]] = []
        for r in defs:
            if r.canary_day is None:
                continue
            lo = r.canary_day * 86400 + _DEPLOY_HOUR * 3600
            hi: float
            if r.full_day is not None:
                hi = r.full_day * 86400 + _DEPLOY_HOUR * 3600
            elif r.rollback_day is not None:
                hi = r.rollback_day * 86400 + r.rollback_hour * 3600
            else:  # still in canary when the generated period ends
                hi = math.inf
            self.canary.append((lo, hi, r))
        self.seen = 0  # traces seen inside a canary window (this day)
        self.phase_u = 0.0

    def new_day(self, rng: random.Random) -> None:
        self.seen = 0
        self.phase_u = rng.random()

    def pick(self, t: float) -> _ReleaseDef:
        base = self.full[0][1]
        for since, r in self.full:
            if since <= t:
                base = r
        for lo, hi, r in self.canary:
            if lo <= t < hi:
                # weighted round-robin, like a load balancer: every 10th request in the window
                # (at the default share), from a random phase per day
                period = round(1 / r.canary_share)
                self.seen += 1
                if (self.seen + int(self.phase_u * period)) % period == 0:
                    return r
        return base


# --------------------------------------------------------------------------- summary


@dataclass
class DemoTraceSummary:
    """What generate_demo_traces wrote; enough to predict the ingest outcome exactly."""

    landing_dir: str
    seed: int
    scale: float
    start: date
    end: date  # last day written (inclusive)
    files: list[str] = field(default_factory=list)  # relative to landing_dir, posix
    lines: int = 0
    traces: int = 0  # complete traces in valid lines
    spans: int = 0  # spans in valid lines (= expected accepted)
    malformed_lines: int = 0  # (= expected rejected)
    malformed: list[dict[str, Any]] = field(default_factory=list)  # {file, line, kind}
    spans_without_release: int = 0
    traces_without_release: int = 0
    spans_by_file: dict[str, int] = field(default_factory=dict)
    spans_by_workflow_release: dict[str, dict[str, int]] = field(default_factory=dict)
    traces_by_workflow_release: dict[str, dict[str, int]] = field(default_factory=dict)
    drift_start: date = field(default=DEFAULT_START + timedelta(days=DRIFT_START_DAY))
    releases: list[Release] = field(default_factory=list)
    prices_per_mtok: dict[str, dict[str, float]] = field(
        default_factory=lambda: {m: dict(p) for m, p in PRICES_PER_MTOK.items()})
    seconds: float = 0.0
    bytes_written: int = 0

    def expected_ingest(self) -> dict[str, int]:
        """Counts an exact ingest of the landing folder must report."""
        return {
            "files": len(self.files),
            "accepted_spans": self.spans,
            "rejected_lines": self.malformed_lines,
            "unknown_release_spans": self.spans_without_release,
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("start", "end", "drift_start"):
            d[k] = getattr(self, k).isoformat()
        d["releases"] = [r.to_dict() for r in self.releases]
        return d


# --------------------------------------------------------------------------- OTLP helpers


def _s(k: str, v: str) -> dict:
    return {"key": k, "value": {"stringValue": v}}


def _i(k: str, v: int) -> dict:
    return {"key": k, "value": {"intValue": str(int(v))}}


def _d(k: str, v: float) -> dict:
    return {"key": k, "value": {"doubleValue": v}}


def _arr(k: str, vals: Iterable[str]) -> dict:
    return {"key": k, "value": {"arrayValue": {"values": [{"stringValue": x} for x in vals]}}}


def _js(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _jsa(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


_APP_SCOPE_VERSION = "0.9.2"
_GENAI_SCOPE = {"name": "opentelemetry.util.genai.handler", "version": "0.5b0"}
_GENAI_SCHEMA = "https://opentelemetry.io/schemas/1.37.0"
_LEGACY_SCOPE = {"name": "opentelemetry.instrumentation.openai_v2", "version": "2.0b0"}
_LEGACY_SCHEMA = "https://opentelemetry.io/schemas/1.28.0"
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _resp_id(rng: random.Random, prefix: str = "chatcmpl-") -> str:
    n = rng.getrandbits(174)
    out = []
    for _ in range(29):
        n, r = divmod(n, 62)
        out.append(_B62[r])
    return prefix + "".join(out)


def _pod_uuid(*parts: Any) -> str:
    h = random.Random(":".join(map(str, parts))).getrandbits(128)
    x = f"{h:032x}"
    return f"{x[:8]}-{x[8:12]}-4{x[13:16]}-a{x[17:20]}-{x[20:]}"


def _resource(workflow: str, version: str | None, pod: int) -> dict:
    attrs = [
        _s("telemetry.sdk.language", "python"),
        _s("telemetry.sdk.name", "opentelemetry"),
        _s("telemetry.sdk.version", "1.38.0" if version else "1.26.0"),
        _s("service.name", workflow),
    ]
    if version:
        attrs += [_s("service.version", version), _s("relops.release", release_tag(workflow, version))]
        attrs += [_s("service.instance.id", _pod_uuid(workflow, version, pod)),
                  _s("deployment.environment.name", "production")]
    else:
        attrs += [_s("service.instance.id", _pod_uuid(workflow, "legacy", pod)),
                  _s("relops.job", "nightly-batch")]
    return {"attributes": attrs}


# --------------------------------------------------------------------------- text pools

_PRODUCT = "Acme Relay"
_TOPIC_WEIGHTS = {"billing": 0.24, "login": 0.18, "shipping": 0.20, "refund": 0.14, "bug": 0.16,
                  "feature-request": 0.08}
_DRIFT_TOPIC = "account-deletion"
_DRIFT_SHARE = 0.18
_DRIFT_LENGTH = 1.4
_LANG_WEIGHTS = {"en": 0.78, "de": 0.09, "fr": 0.07, "es": 0.06}
_CHARS_PER_TOKEN = {"en": 4.0, "de": 3.4, "fr": 3.5, "es": 3.6}
_ORDER_TOPICS = {"billing", "shipping", "refund"}

_TICKET = {
    "en": {
        "billing": [
            "I was charged twice for my {plan} subscription this month ({amount}).",
            "My invoice {invoice} shows {amount} but my plan should cost less.",
            "Why did my card get charged {amount} on {day}? I did not upgrade.",
            "Can you send me a corrected invoice for order {order}? The VAT number is missing.",
            "The billing page says my payment failed but my bank shows the charge of {amount}.",
        ],
        "login": [
            "I can't log in, the app keeps saying my password is wrong even after a reset.",
            "The two-factor code never arrives on my phone ({device}).",
            "I get 'session expired' right after signing in on {device}.",
            "My account is locked after too many attempts, please unlock it.",
            "Single sign-on stopped working for our team since {day}.",
        ],
        "shipping": [
            "My order {order} still shows 'in transit' after ten days.",
            "The tracking number for order {order} does not work on the carrier site.",
            "The hardware key from order {order} was delivered to the wrong address.",
            "When will order {order} ship? It was promised for {day}.",
            "The parcel for order {order} arrived damaged.",
        ],
        "refund": [
            "I would like a refund for order {order}, the product did not work for us.",
            "I cancelled within 14 days but I still have not received my refund of {amount}.",
            "Please refund the duplicate payment of {amount} for order {order}.",
            "You promised a partial refund for the outage on {day}, where is it?",
        ],
        "bug": [
            "Webhooks are delivered twice since version {version} of the SDK.",
            "The dashboard crashes when I open the delivery log on {device}.",
            "Exporting events to CSV produces an empty file.",
            "After the update to {version} retries are not respected anymore.",
            "The API returns 500 when the payload contains emojis.",
        ],
        "feature-request": [
            "It would be great to filter the delivery log by endpoint.",
            "Please add a dark mode to the dashboard.",
            "Can you support signing secrets rotation without downtime?",
            "We need an EU data residency option for our {plan} plan.",
        ],
        "account-deletion": [
            "Please delete my account and all personal data associated with {email}.",
            "Under the GDPR I request the erasure of all my data, including backups.",
            "I cancelled my {plan} subscription, how do I remove my account permanently?",
            "Close our organisation account and confirm in writing that the data is deleted.",
        ],
        "_filler": [
            "I already tried logging out and in again.",
            "This is quite urgent for us because our customers are affected.",
            "We have been using {product} for two years and never had this problem.",
            "I attached a screenshot of the error message.",
            "Our account email is {email}.",
            "I contacted you last week about this but got no answer.",
            "The issue happens on {device} as well as in the browser.",
            "Could you please look into this as soon as possible?",
            "Our plan is {plan} with about 40 seats.",
            "Thanks in advance for your help.",
            "We are on the {plan} plan and use the Python SDK {version}.",
            "Nothing changed on our side as far as I know.",
            "Two of my colleagues see the same thing.",
            "I checked the status page but it says everything is operational.",
            "Please call me back if that is easier, I am available all afternoon.",
            "The problem started on {day} around noon.",
            "I am not very technical, so please explain the steps simply.",
            "Our finance team needs this sorted before the end of the month.",
        ],
        "_thread": [
            "> On {day}, {product} Support wrote: thank you for reaching out, we are looking into it.",
            "> Previous message: I still see the same problem on {device}.",
            "> Agent note: customer was asked for the order number and replied with {order}.",
            "> On {day} I wrote: is there any update on this?",
        ],
        "_greeting": ["Hello,", "Hi team,", "Hi,", "Dear support,", ""],
        "_signoff": ["Thanks, {name}", "Best regards, {name}", "{name}", "Cheers, {name}"],
    },
    "de": {
        "billing": ["Mir wurde das {plan}-Abo diesen Monat doppelt berechnet ({amount}).",
                    "Die Rechnung {invoice} ist zu hoch, bitte prüfen."],
        "login": ["Ich kann mich nicht anmelden, das Passwort wird nicht akzeptiert.",
                  "Der Zwei-Faktor-Code kommt auf meinem {device} nicht an."],
        "shipping": ["Meine Bestellung {order} ist seit zehn Tagen unterwegs.",
                     "Die Sendungsnummer für Bestellung {order} funktioniert nicht."],
        "refund": ["Ich möchte eine Rückerstattung für Bestellung {order}.",
                   "Die Erstattung von {amount} ist noch nicht angekommen."],
        "bug": ["Seit Version {version} werden Webhooks doppelt zugestellt.",
                "Das Dashboard stürzt beim Öffnen des Protokolls ab."],
        "feature-request": ["Bitte einen Dunkelmodus für das Dashboard einbauen.",
                            "Wir brauchen Datenhaltung in der EU."],
        "account-deletion": ["Bitte löschen Sie mein Konto und alle Daten zu {email}.",
                             "Gemäß DSGVO verlange ich die Löschung meiner Daten."],
        "_filler": ["Das ist für uns dringend.", "Ich habe es schon mehrfach versucht.",
                    "Unsere Konto-E-Mail ist {email}.", "Vielen Dank im Voraus."],
        "_thread": ["> Am {day} schrieb der Support: Wir prüfen das.",
                    "> Vorherige Nachricht: Das Problem besteht weiterhin."],
        "_greeting": ["Hallo,", "Guten Tag,", ""],
        "_signoff": ["Viele Grüße, {name}", "{name}"],
    },
    "fr": {
        "billing": ["J'ai été facturé deux fois pour l'abonnement {plan} ({amount}).",
                    "La facture {invoice} est incorrecte."],
        "login": ["Je n'arrive pas à me connecter, mon mot de passe est refusé.",
                  "Le code de vérification n'arrive pas sur mon {device}."],
        "shipping": ["Ma commande {order} est en transit depuis dix jours.",
                     "Le numéro de suivi de la commande {order} ne fonctionne pas."],
        "refund": ["Je souhaite un remboursement pour la commande {order}.",
                   "Le remboursement de {amount} n'est toujours pas arrivé."],
        "bug": ["Depuis la version {version}, les webhooks sont envoyés deux fois.",
                "Le tableau de bord plante à l'ouverture du journal."],
        "feature-request": ["Merci d'ajouter un mode sombre.", "Nous avons besoin d'un hébergement dans l'UE."],
        "account-deletion": ["Merci de supprimer mon compte et toutes les données liées à {email}.",
                             "Conformément au RGPD, je demande l'effacement de mes données."],
        "_filler": ["C'est urgent pour nous.", "J'ai déjà essayé plusieurs fois.",
                    "L'e-mail du compte est {email}.", "Merci d'avance."],
        "_thread": ["> Le {day}, le support a écrit : nous regardons cela.",
                    "> Message précédent : le problème persiste."],
        "_greeting": ["Bonjour,", ""],
        "_signoff": ["Cordialement, {name}", "{name}"],
    },
    "es": {
        "billing": ["Me cobraron dos veces la suscripción {plan} ({amount}).",
                    "La factura {invoice} no es correcta."],
        "login": ["No puedo iniciar sesión, la contraseña no funciona.",
                  "El código de verificación no llega a mi {device}."],
        "shipping": ["Mi pedido {order} lleva diez días en tránsito.",
                     "El número de seguimiento del pedido {order} no funciona."],
        "refund": ["Quiero un reembolso del pedido {order}.", "El reembolso de {amount} todavía no ha llegado."],
        "bug": ["Desde la versión {version} los webhooks llegan duplicados.",
                "El panel se cierra al abrir el registro de entregas."],
        "feature-request": ["Por favor, añadan un modo oscuro.", "Necesitamos alojamiento de datos en la UE."],
        "account-deletion": ["Por favor, eliminen mi cuenta y todos los datos de {email}.",
                             "Según el RGPD solicito la supresión de mis datos."],
        "_filler": ["Es urgente para nosotros.", "Ya lo he intentado varias veces.",
                    "El correo de la cuenta es {email}.", "Gracias de antemano."],
        "_thread": ["> El {day}, soporte escribió: lo estamos revisando.",
                    "> Mensaje anterior: el problema continúa."],
        "_greeting": ["Hola,", ""],
        "_signoff": ["Saludos, {name}", "{name}"],
    },
}

_REPLY = {
    "en": {
        "billing": ["I checked your account and can confirm the duplicate charge.",
                    "A corrected invoice has been issued and sent to your billing email.",
                    "The second charge will be reversed within 5-7 business days."],
        "login": ["I have reset your two-factor settings, please try signing in again.",
                  "Your account has been unlocked.", "Please clear your browser cookies and retry."],
        "shipping": ["I contacted the carrier about your parcel.",
                     "Your order is now expected to arrive within three business days.",
                     "A replacement will be shipped free of charge."],
        "refund": ["Your refund has been approved.",
                   "The amount will appear on your statement within 5-10 business days."],
        "bug": ["Thank you for the detailed report, our engineers are investigating.",
                "As a workaround, please pin the SDK to the previous version.",
                "I have linked your ticket to the known issue so you get updates."],
        "feature-request": ["Thanks for the suggestion, I have shared it with our product team.",
                            "This is on our roadmap, I cannot share a date yet."],
        "account-deletion": ["Your deletion request has been registered.",
                             "All personal data will be erased within 30 days and you will get a confirmation."],
        "other": ["I have forwarded your message to the right team."],
        "_generic": ["Thank you for contacting {product} support.", "Sorry for the inconvenience.",
                     "Let me know if there is anything else I can help with.",
                     "I have added a note to your account.", "Best regards, the {product} team.",
                     "I understand how frustrating this is, especially when your customers are affected.",
                     "You will receive an email confirmation shortly.",
                     "If the problem persists, reply to this message and we will escalate it.",
                     "Our help center has a step-by-step guide on this topic.",
                     "I have set the ticket to pending while we wait for your reply.",
                     "For your security, never share your password with anyone, including us."],
    },
    "de": {"_generic": ["Vielen Dank für Ihre Nachricht an den {product}-Support.",
                        "Wir haben Ihr Anliegen geprüft und kümmern uns darum.",
                        "Entschuldigen Sie die Unannehmlichkeiten.", "Viele Grüße, Ihr {product}-Team."]},
    "fr": {"_generic": ["Merci d'avoir contacté le support {product}.",
                        "Nous avons examiné votre demande et nous nous en occupons.",
                        "Veuillez nous excuser pour la gêne occasionnée.", "Cordialement, l'équipe {product}."]},
    "es": {"_generic": ["Gracias por contactar con el soporte de {product}.",
                        "Hemos revisado su solicitud y nos estamos ocupando.",
                        "Disculpe las molestias.", "Saludos, el equipo de {product}."]},
}

_REFUSAL = "I'm sorry, but I can't help with that."
CONFIG_REFUSAL = ("I'm sorry, but I can't help with configuration that may contain credentials. "
                   "Please remove any secrets or URLs with tokens and ask again.")

_SUPPORT_SYSTEM_BASE = (
    "You are the support triage assistant of {product}, a webhook delivery platform. "
    "Read the customer ticket and classify it into exactly one category: {cats}. "
    "Assign a priority (low, normal, high, urgent): urgent only for outages affecting "
    "production traffic, high for payment problems and locked accounts. Detect the language "
    "of the ticket (ISO 639-1 code). Write a short, polite reply in the customer's language "
    "that acknowledges the problem, states the next step and never promises refunds above "
    "the invoice amount. Do not ask for passwords or full card numbers. If the ticket "
    "mentions an order number, you may call the lookup_order tool to get its status. "
    "Respond with a JSON object with the keys category, priority, language and reply, and "
    "nothing else."
)
_DELETION_POLICY = (
    " Account deletion and data erasure requests (GDPR article 17) are category "
    "account-deletion, priority high; confirm that deletion completes within 30 days."
)
_CATS_OLD = ["billing", "login", "shipping", "refund", "bug", "feature-request", "other"]
_CATS_NEW = _CATS_OLD[:-1] + ["account-deletion", "other"]

_AREAS = {
    "installation": [
        "Install the CLI with `pip install acme-relay` or download the binary from the releases page.",
        "The agent requires Python 3.10 or later and outbound HTTPS on port 443.",
        "Run `relay init` to create relay.yaml in the current directory.",
        "On Kubernetes, install the Helm chart `acme/relay` and set `apiKey` in the values file.",
        "Upgrades are backwards compatible within a major version.",
    ],
    "configuration": [
        "Endpoints are declared under `endpoints:` in relay.yaml with a url and a secret.",
        "Retries use exponential backoff, configurable with `retry.max_attempts` (default 8).",
        "Set `delivery.timeout_ms` to change the per-attempt timeout (default 10000).",
        "Environment variables override file settings when prefixed with RELAY_.",
        "Rate limits are set per endpoint with `rate_limit.per_second`.",
    ],
    "api": [
        "All API requests are authenticated with a bearer token in the Authorization header.",
        "POST /v1/events publishes an event; the response contains the event id.",
        "List deliveries with GET /v1/deliveries?endpoint_id=...; results are paginated by cursor.",
        "The API returns 429 with a Retry-After header when the rate limit is exceeded.",
        "Webhook payloads are signed with HMAC-SHA256 in the Relay-Signature header.",
    ],
    "billing": [
        "Plans are billed monthly per delivered event above the included quota.",
        "Invoices are available under Settings > Billing and are emailed to the billing contact.",
        "Downgrades take effect at the end of the current billing period.",
        "Annual plans get a 15% discount and are invoiced up front.",
    ],
    "integrations": [
        "The Slack integration posts failed deliveries to a channel of your choice.",
        "Datadog metrics are exported every 60 seconds when the integration is enabled.",
        "Use the Terraform provider `acme/relay` to manage endpoints as code.",
        "The Zapier app exposes new-delivery and failed-delivery triggers.",
    ],
    "troubleshooting": [
        "A delivery marked failed after all retries can be replayed from the dashboard.",
        "Signature mismatches are usually caused by re-serialising the body before verification.",
        "Check the delivery log for the HTTP status returned by your endpoint.",
        "Timeouts mean your endpoint did not answer within delivery.timeout_ms.",
        "Duplicate deliveries can happen; make handlers idempotent using the event id.",
    ],
    "security": [
        "Secrets can be rotated without downtime: both old and new secrets are valid for 24 hours.",
        "Data is encrypted at rest with AES-256 and in transit with TLS 1.2 or later.",
        "SSO via SAML 2.0 is available on the Business plan.",
        "Audit logs are retained for 365 days.",
    ],
}
_AREA_WEIGHTS = {"installation": 0.16, "configuration": 0.2, "api": 0.22, "billing": 0.08,
                 "integrations": 0.1, "troubleshooting": 0.18, "security": 0.06}
_QUESTIONS = {
    "en": {
        "installation": ["How do I install the relay CLI on Ubuntu?", "What are the requirements to run the agent?",
                         "How do I deploy relay on Kubernetes?"],
        "configuration": ["How do I change the number of retries?", "Where do I set the delivery timeout?",
                          "Can I override config with environment variables?"],
        "api": ["How do I authenticate API requests?", "How do I list failed deliveries for one endpoint?",
                "What does a 429 from the API mean?", "How do I verify the webhook signature?"],
        "billing": ["When does a downgrade take effect?", "Where can I download my invoices?"],
        "integrations": ["How do I send failed deliveries to Slack?", "Is there a Terraform provider?"],
        "troubleshooting": ["Why do I get signature mismatch errors?", "How do I replay a failed delivery?",
                            "Why are some events delivered twice?", "What does a delivery timeout mean?"],
        "security": ["How do I rotate webhook secrets without downtime?", "Do you support SAML SSO?"],
    },
    "de": {"_any": ["Wie ändere ich die Anzahl der Wiederholungen?", "Wie prüfe ich die Webhook-Signatur?",
                    "Wo finde ich meine Rechnungen?"]},
    "fr": {"_any": ["Comment installer le CLI relay ?", "Comment rejouer une livraison échouée ?",
                    "Comment faire tourner les secrets sans interruption ?"]},
    "es": {"_any": ["¿Cómo autentico las peticiones a la API?", "¿Por qué recibo eventos duplicados?",
                    "¿Dónde configuro el tiempo de espera?"]},
}
_DOCQA_SYSTEM = (
    "You answer questions about {product} using only the documentation excerpts provided in "
    "the user message. If the excerpts do not contain the answer, say so. Answer concisely in "
    "the language of the question and include commands or configuration keys verbatim."
)
_DOCQA_CITE = " Cite the excerpts you used as [n] after each sentence and list the sources at the end."

_NAMES = ["Anna", "Ben", "Carla", "David", "Elif", "Femi", "Greta", "Hiro", "Ines", "Jonas", "Kim", "Lena",
          "Marco", "Nora", "Omar", "Paula", "Rui", "Sara", "Tom", "Yara"]
_PLANS = ["Starter", "Team", "Business", "Enterprise"]
_DEVICES = ["iPhone 15", "Pixel 8", "Galaxy S23", "an iPad", "Windows 11", "macOS 15"]
_VERSIONS = ["2.14.0", "2.14.1", "2.15.0", "3.0.0"]
_ERR_MESSAGES = {
    "RateLimitError": "Error code: 429 - Rate limit reached for {model} in organization org-acme on tokens "
                      "per min (TPM): Limit 2000000. Please try again in 1.2s.",
    "APITimeoutError": "Request timed out.",
    "InternalServerError": "Error code: 500 - The server had an error while processing your request. Sorry about that!",
}

# Traffic: hour-of-day weights (UTC) and weekday factors (Mon..Sun).
_HOURLY = {
    "support-triage": [0.15, 0.12, 0.1, 0.1, 0.12, 0.2, 0.35, 0.6, 0.85, 1.0, 1.0, 0.95, 0.9, 0.95, 1.0, 1.0,
                       0.9, 0.75, 0.6, 0.5, 0.42, 0.35, 0.28, 0.2],
    "doc-qa": [0.2, 0.15, 0.12, 0.12, 0.15, 0.25, 0.4, 0.6, 0.8, 0.95, 1.0, 1.0, 0.9, 0.95, 1.0, 1.0, 0.95,
               0.85, 0.7, 0.55, 0.45, 0.38, 0.3, 0.25],
}
_WEEKDAY = {"support-triage": [1.12, 1.06, 1.02, 1.0, 0.93, 0.48, 0.42],
            "doc-qa": [1.08, 1.08, 1.05, 1.03, 0.92, 0.6, 0.52]}
_BASE_DAILY = {"support-triage": 500.0, "doc-qa": 430.0}


def _cum(weights: dict[str, float]) -> tuple[list[str], list[float]]:
    keys = list(weights)
    return keys, list(accumulate(weights[k] for k in keys))


class _Pick:
    """Weighted choice with precomputed cumulative weights (rng.choices recomputes them)."""

    def __init__(self, weights: dict[str, float]):
        self.keys, self.cum = _cum(weights)
        self.total = self.cum[-1]

    def __call__(self, rng: random.Random) -> str:
        return self.keys[bisect(self.cum, rng.random() * self.total)]


_PICK_LANG = _Pick(_LANG_WEIGHTS)
_PICK_TOPIC = _Pick(_TOPIC_WEIGHTS)
_PICK_TOPIC_DRIFT = _Pick({**{k: v * (1 - _DRIFT_SHARE) for k, v in _TOPIC_WEIGHTS.items()},
                           _DRIFT_TOPIC: _DRIFT_SHARE})
_PICK_AREA = _Pick(_AREA_WEIGHTS)


def _slots(rng: random.Random, start_day: date) -> dict[str, str]:
    name = _choice(rng, _NAMES)
    return {
        "order": f"A{rng.randrange(100000, 999999)}",
        "invoice": f"INV-{rng.randrange(10000, 99999)}",
        "amount": f"${rng.randrange(9, 480)}.{rng.randrange(0, 100):02d}",
        "plan": _choice(rng, _PLANS),
        "device": _choice(rng, _DEVICES),
        "version": _choice(rng, _VERSIONS),
        "name": name,
        "email": f"{name.lower()}.{rng.randrange(10, 99)}@example.com",
        "day": (start_day - timedelta(days=rng.randrange(1, 12))).strftime("%b %d"),
        "product": _PRODUCT,
    }


def _choice(rng: random.Random, seq: list):
    return seq[int(rng.random() * len(seq))]


def _fill_to(rng: random.Random, parts: list[str], pool: list[str], target: int, slots: dict | None,
             cycle: bool = True) -> int:
    """Append sentences of `pool` to `parts` until their joined length reaches `target`.

    Walks the pool in a random cyclic order (random start, random stride coprime with its
    size) so no sentence repeats before the pool is used up; `cycle=False` stops there.
    Returns the joined length."""
    size = sum(len(p) + 1 for p in parts)
    n = len(pool)
    i = int(rng.random() * n)
    step = 1 + int(rng.random() * (n - 1)) if n > 1 else 1
    while math.gcd(step, n) != 1:
        step -= 1
    used = 0
    while size < target:
        if used == n and not cycle:
            break
        s = pool[(i + used * step) % n]
        if slots is not None:
            s = s.format(**slots)
        parts.append(s)
        size += len(s) + 1
        used += 1
    return size


# --------------------------------------------------------------------------- the world


class _DayWriter:
    """Generates one workflow-day: its lines plus the counts the summary needs."""

    def __init__(self, workflow: str, day_index: int, day: date, seed: int, scale: float):
        self.workflow = workflow
        self.day_index = day_index
        self.day = day
        self.rng = random.Random(f"relops-demo:{int(seed)}:{float(scale)!r}:{workflow}:{day.isoformat()}")
        self.day_ns = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000_000
        self.lines_written = 0
        self.spans_by_tag: Counter[str] = Counter()  # release tag or UNKNOWN -> spans in valid lines
        self.traces_by_tag: Counter[str] = Counter()
        self.bad: list[tuple[int, str]] = []
        hourly = _HOURLY[workflow]
        self.hour_cum = list(accumulate(hourly))
        self.load_by_hour = [h / max(hourly) for h in hourly]
        self.drift = workflow == "support-triage" and day_index >= DRIFT_START_DAY
        self.router = _Router(workflow)
        self.resources: dict[tuple[str | None, int], dict] = {}

    # -- ids and time

    def _tid(self) -> str:
        return f"{self.rng.getrandbits(128) or 1:032x}"

    def _sid(self) -> str:
        return f"{self.rng.getrandbits(64) or 1:016x}"

    def _res(self, version: str | None) -> dict:
        pod = self.rng.randrange(3)
        key = (version, pod)
        res = self.resources.get(key)
        if res is None:
            res = self.resources[key] = _resource(self.workflow, version, pod)
        return res

    def _lognorm(self, median: float, sigma: float) -> float:
        return median * math.exp(self.rng.gauss(0.0, sigma))

    # -- spans

    @staticmethod
    def _span(tid: str, sid: str, parent: str | None, name: str, kind: int, t0: int, t1: int,
              attrs: list, error: tuple[str, str] | None = None) -> dict:
        span: dict[str, Any] = {"traceId": tid, "spanId": sid}
        if parent:
            span["parentSpanId"] = parent
        span.update({"flags": 256, "name": name, "kind": kind, "startTimeUnixNano": str(t0),
                     "endTimeUnixNano": str(t1), "attributes": attrs})
        if error:
            etype, msg = error
            attrs.append(_s("error.type", etype))
            span["events"] = [{"timeUnixNano": str(t1), "name": "exception",
                               "attributes": [_s("exception.type", etype), _s("exception.message", msg)]}]
            span["status"] = {"message": msg, "code": 2}
        else:
            span["status"] = {}
        return span

    def _llm_latency(self, model: str, in_tok: int, out_tok: int, load: float) -> float:
        ttft, per_tok = _MODEL_SPEED[model]
        lat = self._lognorm(ttft + 0.05 * in_tok, 0.45) + out_tok * per_tok * math.exp(self.rng.gauss(0, 0.2))
        lat *= 1.0 + 0.25 * load
        if self.rng.random() < 0.03:  # provider-side queueing: the heavy tail
            lat *= 2.0 + 5.0 * self.rng.random()
        return lat

    def _llm_error(self, load: float) -> str | None:
        r = self.rng.random()
        p_rate = 0.006 * (0.5 + load)
        if r < p_rate:
            return "RateLimitError"
        if r < p_rate + 0.004:
            return "APITimeoutError"
        if r < p_rate + 0.006:
            return "InternalServerError"
        return None

    def _chat(self, tid: str, parent: str, t0: int, beh: _Behaviour, load: float, system: str,
              messages: list, in_tok: int, output: dict | None, extra: list,
              error: str | None = None) -> tuple[dict, int]:
        """One chat span. `output` = {text|tool_call, finish, tokens} when it succeeds."""
        model = beh.model
        attrs = [
            _s("gen_ai.operation.name", "chat"),
            _s("gen_ai.request.model", model),
            _s("gen_ai.provider.name", "openai"),
            _s("server.address", "api.openai.com"),
        ]
        if beh.temperature is not None:
            attrs.append(_d("gen_ai.request.temperature", beh.temperature))
        attrs.append(_i("gen_ai.request.max_tokens", beh.max_tokens))
        if beh.json_mode:
            attrs.append(_s("gen_ai.output.type", "json"))
        attrs.append(_s("gen_ai.system_instructions", _js([{"type": "text", "content": system}])))
        attrs.append(_s("gen_ai.input.messages", _js(messages)))
        if error:
            if error == "RateLimitError":
                dur = 30 + 220 * self.rng.random()
            elif error == "APITimeoutError":
                dur = 20000 + 60 * self.rng.random()
            else:
                dur = self._lognorm(900, 0.7)
            t1 = t0 + int(dur * 1e6)
            attrs.extend(extra)
            msg = _ERR_MESSAGES[error].format(model=model)
            return self._span(tid, self._sid(), parent, f"chat {model}", 3, t0, t1, attrs, (error, msg)), t1
        assert output is not None  # no error: the call answered
        out_tok = output["tokens"]
        dur = self._llm_latency(model, in_tok, out_tok, load)
        t1 = t0 + int(dur * 1e6)
        finish = output["finish"]
        if "tool_call" in output:
            parts = [output["tool_call"]]
        elif finish == "content_filter":
            parts = []
        else:
            parts = [{"type": "text", "content": output["text"]}]
        attrs += [
            _arr("gen_ai.response.finish_reasons", [finish]),
            _s("gen_ai.response.model", RESPONSE_MODELS[model]),
            _s("gen_ai.response.id", _resp_id(self.rng)),
            _i("gen_ai.usage.input_tokens", in_tok),
            _i("gen_ai.usage.output_tokens", out_tok),
            _s("gen_ai.output.messages", _js([{"role": "assistant", "parts": parts, "finish_reason": finish}])),
        ]
        attrs.extend(extra)
        return self._span(tid, self._sid(), parent, f"chat {model}", 3, t0, t1, attrs), t1

    def _gap(self) -> int:
        return int((1 + 9 * self.rng.random()) * 1e6)

    def _feedback(self, p_up: float) -> list:
        if self.rng.random() >= FEEDBACK_SHARE:
            return []
        return [_i("relops.feedback", 1 if self.rng.random() < p_up else 0)]

    def _trace_line(self, res: dict, app_spans: list, llm_spans: list) -> str:
        scopes = [{"scope": {"name": f"acme.{self.workflow.replace('-', '_')}", "version": _APP_SCOPE_VERSION},
                   "spans": app_spans}]
        if llm_spans:
            scopes.append({"scope": _GENAI_SCOPE, "spans": llm_spans, "schemaUrl": _GENAI_SCHEMA})
        return _js({"resourceSpans": [{"resource": res, "scopeSpans": scopes}]})

    # -- support-triage

    def _support_trace(self, t_ns: int, rel: _ReleaseDef, load: float) -> tuple[str, int]:
        rng, beh = self.rng, rel.behaviour
        lang = _PICK_LANG(rng)
        topic = (_PICK_TOPIC_DRIFT if self.drift else _PICK_TOPIC)(rng)
        slots = _slots(rng, self.day)
        pool = _TICKET[lang]
        target = self._lognorm(800.0, 0.55) * (_DRIFT_LENGTH if self.drift else 1.0)
        parts = [_choice(rng, pool["_greeting"]), _choice(rng, pool[topic]).format(**slots)]
        if self.drift:
            _fill_to(rng, parts, pool["_filler"], int(target / _DRIFT_LENGTH), slots)
            _fill_to(rng, parts, pool["_thread"], int(target), slots)
        else:
            _fill_to(rng, parts, pool["_filler"], int(target), slots)
        parts.append(_choice(rng, pool["_signoff"]).format(**slots))
        ticket = " ".join(p for p in parts if p)
        cpt = _CHARS_PER_TOKEN[lang]
        system = _SUPPORT_SYSTEM_BASE.format(
            product=_PRODUCT, cats=", ".join(_CATS_NEW if beh.knows_account_deletion else _CATS_OLD))
        if beh.knows_account_deletion:
            system += _DELETION_POLICY
        in_tok = len(system) // 4 + round(len(ticket) / cpt) + 8
        messages: list = [{"role": "user", "parts": [{"type": "text", "content": ticket}]}]

        # classification and reply
        if topic == _DRIFT_TOPIC and not beh.knows_account_deletion:
            category = "other" if rng.random() < 0.6 else "login"
            correct = False
        elif rng.random() < beh.accuracy:
            category, correct = topic, True
        else:
            category = _choice(rng, [c for c in (_CATS_NEW if beh.knows_account_deletion else _CATS_OLD) if c != topic])
            correct = False
        priority = _choice(rng, ["low", "normal", "normal", "high"] if topic != "bug" else ["normal", "high", "urgent"])
        rpool = _REPLY[lang]
        rparts = [_choice(rng, rpool["_generic"]).format(product=_PRODUCT)]
        topical = _REPLY["en"].get(category, _REPLY["en"]["other"]) if lang == "en" else rpool["_generic"]
        _fill_to(rng, rparts, topical + rpool["_generic"], int(self._lognorm(420.0, 0.55) * beh.output_scale), slots)
        reply = " ".join(rparts)
        body = _js({"category": category, "priority": priority, "language": lang, "reply": reply})
        if rng.random() < beh.fence_rate:
            body = "```json\n" + body + "\n```"

        tid, root_sid = self._tid(), self._sid()
        tags = [_s("relops.topic", topic), _s("relops.language", lang)]
        t = t_ns + int((2 + 8 * rng.random()) * 1e6)
        llm_spans: list = []
        app_spans: list = []
        status_err: tuple[str, str] | None = None
        p_up = 0.84 if correct else 0.45

        # tool path: chat -> tool_calls, execute_tool lookup_order, then the answering chat
        if topic in _ORDER_TOPICS and rng.random() < 0.35:
            err = self._llm_error(load)
            call_id = "call_" + _resp_id(rng, "")[:24]
            tool_call = {"type": "tool_call", "id": call_id, "name": "lookup_order",
                         "arguments": {"order_id": slots["order"]}}
            span, t = self._chat(tid, root_sid, t, beh, load, system, messages, in_tok,
                                 None if err else {"tool_call": tool_call, "finish": "tool_calls",
                                                   "tokens": 18 + rng.randrange(12)}, tags, err)
            llm_spans.append(span)
            if err == "RateLimitError" and rng.random() < 0.6:
                t += int((400 + 2000 * rng.random()) * 1e6)
                span, t = self._chat(tid, root_sid, t, beh, load, system, messages, in_tok,
                                     {"tool_call": tool_call, "finish": "tool_calls", "tokens": 18 + rng.randrange(12)},
                                     tags)
                llm_spans.append(span)
                err = None
            if err:
                status_err = (err, span["status"]["message"])
            else:
                t += self._gap()
                dur = self._lognorm(120.0, 0.6)
                t1 = t + int(dur * 1e6)
                tool_fail = rng.random() < 0.03
                result = ({"error": "order service unavailable"} if tool_fail else
                          {"order_id": slots["order"],
                           "status": _choice(rng, ["in_transit", "delivered", "processing", "refunded"]),
                           "carrier": _choice(rng, ["DHL", "UPS", "La Poste", "Correos"]), "amount": slots["amount"]})
                tattrs = [_s("gen_ai.operation.name", "execute_tool"), _s("gen_ai.tool.name", "lookup_order"),
                          _s("gen_ai.tool.type", "function"), _s("gen_ai.tool.call.id", call_id),
                          _s("gen_ai.tool.call.arguments", _js(tool_call["arguments"])),
                          _s("gen_ai.tool.call.result", _js(result))]
                app_spans.append(self._span(tid, self._sid(), root_sid, "execute_tool lookup_order", 1, t, t1, tattrs,
                                            ("OrderLookupError", "order service returned 503") if tool_fail else None))
                t = t1 + self._gap()
                messages = messages + [
                    {"role": "assistant", "parts": [tool_call]},
                    {"role": "tool", "parts": [{"type": "tool_call_response", "id": call_id, "response": result}]},
                ]
                in_tok += 60 + round(len(_js(result)) / 4)

        if status_err is None:
            err = self._llm_error(load)
            out = None
            if not err:
                r = rng.random()
                if r < 0.01:
                    out = {"text": _REFUSAL, "finish": "stop", "tokens": 10}
                    p_up = 0.2
                elif r < 0.012:
                    out = {"text": "", "finish": "content_filter", "tokens": 0}
                    p_up = 0.3
                else:
                    out_tok = round(len(body) / cpt) + 3
                    if out_tok > beh.max_tokens:
                        body = body[: int(beh.max_tokens * cpt)]
                        out = {"text": body, "finish": "length", "tokens": beh.max_tokens}
                        p_up = 0.3
                    else:
                        out = {"text": body, "finish": "stop", "tokens": out_tok}
            span, t = self._chat(tid, root_sid, t, beh, load, system, messages, in_tok, out, tags, err)
            llm_spans.append(span)
            if err == "RateLimitError" and rng.random() < 0.6:
                t += int((400 + 2000 * rng.random()) * 1e6)
                out_tok = min(round(len(body) / cpt) + 3, beh.max_tokens)
                finish = "length" if out_tok == beh.max_tokens else "stop"
                span, t = self._chat(tid, root_sid, t, beh, load, system, messages, in_tok,
                                     {"text": body[: int(out_tok * cpt)], "finish": finish, "tokens": out_tok}, tags)
                llm_spans.append(span)
                err = None
            if err:
                status_err = (err, span["status"]["message"])
        if status_err:
            p_up = 0.12
        t_end = t + int((3 + 30 * rng.random()) * 1e6)
        rattrs = [_s("gen_ai.operation.name", "invoke_agent"), _s("gen_ai.agent.name", self.workflow),
                  _s("relops.ticket.channel", _choice(rng, ["email", "email", "chat", "web"])), *tags,
                  *self._feedback(p_up)]
        root = self._span(tid, root_sid, None, f"invoke_agent {self.workflow}", 1, t_ns, t_end, rattrs, status_err)
        app_spans.insert(0, root)
        return self._trace_line(self._res(rel.version), app_spans, llm_spans), len(app_spans) + len(llm_spans)

    # -- doc-qa

    def _docqa_trace(self, t_ns: int, rel: _ReleaseDef, load: float) -> tuple[str, int]:
        rng, beh = self.rng, rel.behaviour
        lang = _PICK_LANG(rng)
        area = _PICK_AREA(rng)
        qpool = _QUESTIONS[lang]
        question = _choice(rng, qpool[area] if lang == "en" else qpool["_any"])
        pasted = rng.random() < 0.06
        if pasted:  # pasted logs/config: the long tail of inputs
            question += "\n\nHere is my config:\n" + "\n".join(
                f"  endpoint_{k}: {{url: https://hooks.example.com/{k}, retry.max_attempts: {rng.randrange(1, 12)}}}"
                for k in range(rng.randrange(8, 40)))
        tid, root_sid = self._tid(), self._sid()
        tags = [_s("relops.topic", area), _s("relops.language", lang)]
        t = t_ns + int((2 + 6 * rng.random()) * 1e6)

        # retrieval
        docs, chunks = [], []
        score = 0.86 + 0.08 * rng.random()
        areas = list(_AREAS)
        for k in range(beh.top_k):
            a = area if (k < 2 or rng.random() < 0.5) else _choice(rng, areas)
            cparts: list[str] = []
            _fill_to(rng, cparts, _AREAS[a], int(self._lognorm(300.0, 0.3)), None)
            page = f"docs/{a}/{rng.randrange(1, 9)}.md#{rng.randrange(1, 30)}"
            docs.append({"id": page, "score": round(score, 4)})
            chunks.append(f"[{k + 1}] ({page}) " + " ".join(cparts))
            score -= 0.01 + 0.04 * rng.random()
        r_dur = self._lognorm(60.0 * (1 + beh.top_k / 8), 0.5) * (1 + 0.2 * load)
        r_err = rng.random() < 0.002
        t1 = t + int(r_dur * 1e6)
        rattrs = [_s("gen_ai.operation.name", "retrieval"), _s("gen_ai.data_source.id", "acme-relay-docs"),
                  _i("gen_ai.request.top_k", beh.top_k), _s("gen_ai.retrieval.query.text", question[:200])]
        if not r_err:
            rattrs.append(_s("gen_ai.retrieval.documents", _js(docs)))
        app_spans = [self._span(tid, self._sid(), root_sid, "retrieval acme-relay-docs", 1, t, t1, rattrs,
                                ("VectorStoreTimeout", "vector store query exceeded 5000 ms") if r_err else None)]
        llm_spans: list = []
        t = t1 + self._gap()
        status_err = None
        p_up = 0.8
        if r_err:
            status_err = ("VectorStoreTimeout", "vector store query exceeded 5000 ms")
        else:
            system = _DOCQA_SYSTEM.format(product=_PRODUCT) + (_DOCQA_CITE if beh.citations else "")
            user = "Documentation excerpts:\n" + "\n\n".join(chunks) + "\n\nQuestion: " + question
            messages = [{"role": "user", "parts": [{"type": "text", "content": user}]}]
            cpt = _CHARS_PER_TOKEN[lang]
            in_tok = len(system) // 4 + round(len(user) / 4.0) + 8
            aparts = ["According to the documentation:"]
            src = _AREAS[area]
            target = int(self._lognorm(640.0, 0.5) * beh.output_scale)
            _fill_to(rng, aparts, src, target, None)
            if beh.citations:
                aparts[1:] = [f"{a} [{1 + int(rng.random() * beh.top_k)}]" for a in aparts[1:]]
            if beh.citations:
                aparts.append("Sources: " + ", ".join(str(d["id"]) for d in docs[:2]))
            answer = " ".join(aparts)
            ground = rng.betavariate(beh.groundedness * 14, (1 - beh.groundedness) * 14)
            err = self._llm_error(load)
            out: dict[str, Any] | None = None
            extra = list(tags)
            if not err:
                r = rng.random()
                p_config = beh.config_refusal if pasted else 0.0
                if r < 0.01:
                    out = {"text": _REFUSAL, "finish": "stop", "tokens": 10}
                elif r < 0.01 + p_config:
                    out = {"text": CONFIG_REFUSAL, "finish": "stop", "tokens": len(CONFIG_REFUSAL) // 4}
                elif r < 0.012 + p_config:
                    out = {"text": "", "finish": "content_filter", "tokens": 0}
                else:
                    out_tok = round(len(answer) / cpt)
                    if out_tok > beh.max_tokens:
                        out = {"text": answer[: int(beh.max_tokens * cpt)], "finish": "length",
                               "tokens": beh.max_tokens}
                        ground *= 0.85
                    else:
                        out = {"text": answer, "finish": "stop", "tokens": out_tok}
                if rng.random() < 0.95:  # the online evaluator sometimes misses a span
                    extra.append(_d("relops.score.groundedness", round(ground, 4)))
                answered = out["finish"] == "stop" and out["tokens"] > 10 and out["text"] != CONFIG_REFUSAL
                p_up = 0.3 + 0.65 * ground if answered else 0.25
            span, t = self._chat(tid, root_sid, t, beh, load, system, messages, in_tok, out, extra, err)
            llm_spans.append(span)
            if err == "RateLimitError" and rng.random() < 0.6:
                t += int((400 + 2000 * rng.random()) * 1e6)
                out_tok = min(round(len(answer) / cpt), beh.max_tokens)
                extra.append(_d("relops.score.groundedness", round(ground, 4)))
                span, t = self._chat(tid, root_sid, t, beh, load, system, messages, in_tok,
                                     {"text": answer[: int(out_tok * cpt)], "finish": "stop", "tokens": out_tok}, extra)
                llm_spans.append(span)
                p_up = 0.3 + 0.65 * ground
                err = None
            if err:
                status_err = (err, span["status"]["message"])
        if status_err:
            p_up = 0.12
        t_end = t + int((2 + 20 * rng.random()) * 1e6)
        root_attrs = [_s("gen_ai.operation.name", "chain"), _s("relops.chain", "answer_question"), *tags,
                      *self._feedback(p_up)]
        root = self._span(tid, root_sid, None, "chain answer_question", 1, t_ns, t_end, root_attrs, status_err)
        app_spans.insert(0, root)
        return self._trace_line(self._res(rel.version), app_spans, llm_spans), len(app_spans) + len(llm_spans)

    # -- legacy batch (no release)

    def _legacy_line(self, n: int) -> str:
        rng = self.rng
        spans = []
        t = self.day_ns + int((2 * 3600 + 60 * rng.random()) * 1e9)
        for _ in range(n):
            in_tok = int(self._lognorm(600.0, 0.4))
            out_tok = int(self._lognorm(120.0, 0.4))
            dur = self._llm_latency("gpt-4o-mini", in_tok, out_tok, 0.1)
            t1 = t + int(dur * 1e6)
            attrs = [_s("gen_ai.operation.name", "chat"), _s("gen_ai.system", "openai"),
                     _s("gen_ai.request.model", "gpt-4o-mini"), _s("server.address", "api.openai.com"),
                     _arr("gen_ai.response.finish_reasons", ["stop"]),
                     _s("gen_ai.response.model", RESPONSE_MODELS["gpt-4o-mini"]),
                     _s("gen_ai.response.id", _resp_id(rng)),
                     _i("gen_ai.usage.input_tokens", in_tok), _i("gen_ai.usage.output_tokens", out_tok)]
            spans.append(self._span(self._tid(), self._sid(), None, "chat gpt-4o-mini", 3, t, t1, attrs))
            t = t1 + int((200 + 3000 * rng.random()) * 1e6)
        res = self._res(None)
        return _js({"resourceSpans": [{"resource": res, "scopeSpans": [
            {"scope": _LEGACY_SCOPE, "spans": spans, "schemaUrl": _LEGACY_SCHEMA}]}]})

    # -- the day

    def generate(self, scale: float, malformed_kind: str | None, out) -> None:
        """Write the day's lines to the text file `out`, one at a time (memory stays flat).

        Fills self.lines_written, self.spans_by_tag / self.traces_by_tag (valid lines only)
        and self.bad = [(line number, kind)] for the malformed line, if any."""
        rng = self.rng
        weekday = self.day.weekday()
        growth = 1.0 + 0.01 * (self.day_index // 7)
        expected = _BASE_DAILY[self.workflow] * _WEEKDAY[self.workflow][weekday] * growth * scale
        n = max(0, round(expected * math.exp(rng.gauss(0.0, 0.07))))
        n_legacy = int(n * LEGACY_SHARE) + (1 if rng.random() < (n * LEGACY_SHARE) % 1 else 0)
        total = self.hour_cum[-1]
        times = sorted(
            (lambda h: h * 3600 + 3600 * rng.random())(bisect(self.hour_cum, rng.random() * total))
            for _ in range(n)
        )
        # Where the malformed line goes, decided up front: never the first line, because
        # format sniffing reads the head of the file.
        n_lines = n + (1 if n_legacy else 0)
        bad_kind, bad_pos = None, -1
        if malformed_kind and n_lines:
            bad_kind = malformed_kind if n_lines >= 2 else "not_json"
            bad_pos = 1 + int(rng.random() * (n_lines - 1)) if n_lines >= 2 else 1
        index = 0  # index among the trace lines, before the malformed line is inserted

        def put(line: str, tag: str, nspans: int, ntraces: int) -> None:
            nonlocal index
            if index == bad_pos and bad_kind == "not_json":
                self._write(out, self._log_line())
                self.bad.append((self.lines_written, "not_json"))
            if index == bad_pos and bad_kind == "truncated":
                self._write(out, line[: int(len(line) * (0.3 + 0.5 * rng.random()))])
                self.bad.append((self.lines_written, "truncated"))
            else:
                self._write(out, line)
                self.spans_by_tag[tag] += nspans
                self.traces_by_tag[tag] += ntraces
            index += 1

        make = self._support_trace if self.workflow == "support-triage" else self._docqa_trace
        self.router.new_day(rng)
        legacy_at = 2 * 3600
        legacy_done = n_legacy == 0
        for sec in times:
            if not legacy_done and sec >= legacy_at:
                put(self._legacy_line(n_legacy), UNKNOWN, n_legacy, n_legacy)
                legacy_done = True
            rel = self.router.pick(self.day_index * 86400 + sec)
            line, nspans = make(self.day_ns + int(sec * 1e9), rel, self.load_by_hour[int(sec // 3600)])
            put(line, release_tag(self.workflow, rel.version), nspans, 1)
        if not legacy_done:
            put(self._legacy_line(n_legacy), UNKNOWN, n_legacy, n_legacy)
        if index == bad_pos:  # a one-line file: the log line goes after it
            self._write(out, self._log_line())
            self.bad.append((self.lines_written, "not_json"))

    def _write(self, out, line: str) -> None:
        out.write(line)
        out.write("\n")
        self.lines_written += 1

    def _log_line(self) -> str:
        """A collector log line that ended up in the export file: not JSON."""
        rng = self.rng
        stamp = datetime.fromtimestamp(self.day_ns / 1e9 + 43200 + int(rng.random() * 3600), tz=UTC)
        return (f"{stamp.strftime('%Y-%m-%dT%H:%M:%S')}.{int(rng.random() * 1000):03d}Z\twarn\t"
                "fileexporter@v0.112.0/file_writer.go:88\tflush interrupted, retrying\t"
                '{"kind": "exporter", "data_type": "traces", "name": "file"}')


def generate_demo_traces(
    landing_dir: Path,
    *,
    seed: int = 7,
    scale: float = 1.0,
    start: date = DEFAULT_START,
    weeks: int = DEFAULT_WEEKS,
    days: Iterable[int] | None = None,
    workflows: Iterable[str] = WORKFLOWS,
) -> DemoTraceSummary:
    """Write the demo world's production traces under `landing_dir` and describe them.

    One OTLP/JSON-lines file per workflow per day: `<landing_dir>/<workflow>/<YYYY-MM-DD>.otlp.jsonl`.
    Deterministic given (seed, scale, start): the same arguments give the same bytes, and each
    day's file depends only on its own date, so `days` (offsets from `start`, default every day
    of the `weeks`-week period) can deliver the world piece by piece or re-deliver one day.
    `scale` multiplies the traffic (1.0 ≈ 48k traces, 127k spans, 335 MB; memory holds one day).
    See the module docstring for the world: releases, drift, errors, malformed lines.
    """
    import time

    t_start = time.perf_counter()
    landing_dir = Path(landing_dir)
    n_days = weeks * 7
    day_list = sorted(set(days)) if days is not None else list(range(n_days))
    day_list = [d for d in day_list if 0 <= d < n_days]
    workflows = tuple(workflows)
    summary = DemoTraceSummary(
        landing_dir=str(landing_dir), seed=seed, scale=scale, start=start,
        end=start + timedelta(days=(day_list[-1] if day_list else -1)),
        drift_start=start + timedelta(days=DRIFT_START_DAY),
        releases=[r for r in release_schedule(start) if r.workflow in workflows],
    )
    malformed_at = {(w, d): k for w, d, k in MALFORMED_LINES}
    for wf in workflows:
        (landing_dir / wf).mkdir(parents=True, exist_ok=True)
        by_rel = summary.spans_by_workflow_release.setdefault(wf, {})
        tr_rel = summary.traces_by_workflow_release.setdefault(wf, {})
        for d in day_list:
            day = start + timedelta(days=d)
            writer = _DayWriter(wf, d, day, seed, scale)
            rel_path = f"{wf}/{day.isoformat()}.otlp.jsonl"
            path = landing_dir / rel_path
            tmp = path.with_name(f".{path.name}.tmp")
            with open(tmp, "w", encoding="utf-8", newline="\n", buffering=1 << 20) as fh:
                writer.generate(scale, malformed_at.get((wf, d)), fh)
            os.replace(tmp, path)
            summary.files.append(rel_path)
            summary.bytes_written += path.stat().st_size
            summary.lines += writer.lines_written
            for tag, n in writer.spans_by_tag.items():
                if n:
                    by_rel[tag] = by_rel.get(tag, 0) + n
                    tr_rel[tag] = tr_rel.get(tag, 0) + writer.traces_by_tag[tag]
            summary.spans_without_release += writer.spans_by_tag[UNKNOWN]
            summary.traces_without_release += writer.traces_by_tag[UNKNOWN]
            summary.traces += sum(writer.traces_by_tag.values())
            file_spans = sum(writer.spans_by_tag.values())
            summary.spans += file_spans
            summary.spans_by_file[rel_path] = file_spans
            for line_no, kind in writer.bad:
                summary.malformed.append({"file": rel_path, "line": line_no, "kind": kind})
            summary.malformed_lines += len(writer.bad)
    summary.seconds = round(time.perf_counter() - t_start, 3)
    return summary


# --------------------------------------------------------------------------- bench traces

_BENCH_POOL = 4096
_BENCH_MODELS = ("gpt-4o-mini", "gpt-4.1-mini", "gpt-4.1-nano")  # fixed: bench lines stay as recorded
_BENCH_CHUNK = 16384
_BENCH_SPACING_NS = 50_000_000  # one trace every 50 ms on average


def _bench_pool(seed: int) -> tuple[list[str], list[str], list[int]]:
    """Pools of line heads (resource + scope) and span bodies (everything after the times).

    All ASCII (non-ASCII escaped as \\uXXXX, as json.dumps does by default) so that encoding a
    chunk to UTF-8 is a plain copy."""
    rng = random.Random(f"relops-bench:{seed}")
    heads = []
    for wf, versions in (("support-triage", ("1.3.0", "1.4.0")), ("doc-qa", ("2.1.0", "2.2.0"))):
        for v in versions:
            res = _jsa({"attributes": [_s("service.name", wf), _s("service.version", v),
                                      _s("relops.release", release_tag(wf, v)),
                                      _s("telemetry.sdk.language", "python")]})
            heads.append('{"resourceSpans":[{"resource":' + res + ',"scopeSpans":[{"scope":'
                         + _jsa(_GENAI_SCOPE) + ',"spans":[{"traceId":"')
    bodies, latencies = [], []
    models = list(_BENCH_MODELS)
    for _ in range(_BENCH_POOL):
        model = _choice(rng, models)
        lang = _PICK_LANG(rng)
        topic = _PICK_TOPIC(rng)
        slots = _slots(rng, DEFAULT_START)
        pool = _TICKET[lang]
        parts = [_choice(rng, pool[topic]).format(**slots)]
        _fill_to(rng, parts, pool["_filler"], 110 + int(rng.random() * 90), slots)
        user = " ".join(parts)
        rparts: list[str] = []
        _fill_to(rng, rparts, _REPLY[lang]["_generic"], 40 + int(rng.random() * 60), slots)
        reply = " ".join(rparts)
        in_tok = int(300 + len(user) / 4 + rng.random() * 400)
        out_tok = max(5, round(len(reply) / 4))
        r = rng.random()
        err = "RateLimitError" if r < 0.01 else ("APITimeoutError" if r < 0.015 else None)
        finish = "stop" if r < 0.93 else ("length" if r < 0.97 else ("tool_calls" if r < 0.998 else "content_filter"))
        attrs = [_s("gen_ai.operation.name", "chat"), _s("gen_ai.request.model", model),
                 _s("gen_ai.provider.name", "openai"), _i("gen_ai.request.max_tokens", 400),
                 _s("gen_ai.input.messages", _jsa([{"role": "user", "parts": [{"type": "text", "content": user}]}]))]
        if not err:
            attrs += [_arr("gen_ai.response.finish_reasons", [finish]),
                      _s("gen_ai.response.model", RESPONSE_MODELS[model]),
                      _i("gen_ai.usage.input_tokens", in_tok), _i("gen_ai.usage.output_tokens", out_tok),
                      _s("gen_ai.output.messages", _jsa([{"role": "assistant",
                                                          "parts": [{"type": "text", "content": reply}],
                                                          "finish_reason": finish}]))]
        attrs += [_s("relops.topic", topic), _s("relops.language", lang)]
        if rng.random() < FEEDBACK_SHARE:
            attrs.append(_i("relops.feedback", int(rng.random() < 0.8)))
        if err:
            attrs.append(_s("error.type", err))
            status = _jsa({"message": err, "code": 2})
        else:
            status = "{}"
        bodies.append(f'"name":"chat {model}","kind":3,"attributes":' + _jsa(attrs) + ',"status":' + status
                      + f'}}],"schemaUrl":"{_GENAI_SCHEMA}"}}]}}]}}\n')
        lat_ms = _MODEL_SPEED[model][0] * math.exp(rng.gauss(0, 0.5)) + out_tok * _MODEL_SPEED[model][1]
        if rng.random() < 0.03:
            lat_ms *= 2 + 5 * rng.random()
        latencies.append(int(lat_ms * 1e6))
    return heads, bodies, latencies


def write_bench_traces(path: Path, n_traces: int, *, seed: int = 1) -> int:
    """Write `n_traces` OTLP/JSON lines (one trace of one chat span each); return bytes written.

    Same shape as the demo world (GenAI latest conventions, ~300 bytes of message text,
    ~14 span attributes, ~1.1 kB a line) built from precomputed pools, so only ids and
    timestamps are formatted per line; streamed in chunks, so millions of lines need no
    more memory than one chunk. Deterministic given (n_traces, seed). Spans start at
    DEFAULT_START, one every 50 ms on average.
    """
    import numpy as np

    heads, bodies, latencies = _bench_pool(seed)
    lat = np.asarray(latencies, dtype=np.int64)
    gen = np.random.Generator(np.random.PCG64(seed))
    t0 = int(datetime(DEFAULT_START.year, DEFAULT_START.month, DEFAULT_START.day, tzinfo=UTC).timestamp())
    t0 *= 10**9
    written = 0
    path = Path(path)
    with open(path, "wb") as fh:
        done = 0
        while done < n_traces:
            m = min(_BENCH_CHUNK, n_traces - done)
            tids = gen.bytes(16 * m).hex()
            sids = gen.bytes(8 * m).hex()
            bi = gen.integers(0, len(bodies), m)
            starts = (t0 + np.arange(done, done + m, dtype=np.int64) * _BENCH_SPACING_NS
                      + gen.integers(0, _BENCH_SPACING_NS, m, dtype=np.int64))
            ends = starts + lat[bi]
            hi = gen.integers(0, len(heads), m).tolist()
            data = "".join([  # noqa: C416 (a list is faster than a generator in join)
                f'{heads[h]}{tids[32 * k:32 * k + 32]}","spanId":"{sids[16 * k:16 * k + 16]}","flags":256,'
                f'"startTimeUnixNano":"{s}","endTimeUnixNano":"{e}",{bodies[b]}'
                for k, (h, b, s, e) in enumerate(zip(hi, bi.tolist(), starts.tolist(), ends.tolist(), strict=False))
            ]).encode("utf-8")
            fh.write(data)
            written += len(data)
            done += m
    return written
