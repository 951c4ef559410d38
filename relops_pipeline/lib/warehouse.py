"""The DuckDB warehouse: opening it (with retries while another process holds the lock) and
its schema, created and upgraded by versioned migrations.

Migrations are append-only: never edit one that has shipped; add the next number. An older
warehouse opens and is upgraded in one transaction per migration, recorded in
`schema_migrations`.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb

from relops_pipeline.lib.schema import (
    EVENT_COLUMNS,
    SPAN_COLUMNS,
    SPAN_COLUMNS_ADDED,
    span_anomalies_sql,
)


def _cols(columns: list[tuple[str, str]]) -> str:
    return ",\n    ".join(f'"{n}" {t}' for n, t in columns)


# Each migration: (version, description, SQL). SPAN_COLUMNS is frozen into migration 1 as it was
# when it shipped; later column changes must be ALTERs in new migrations.
_SPANS_V1 = _cols([c for c in SPAN_COLUMNS if c[0] not in SPAN_COLUMNS_ADDED])
_EVENTS_V1 = _cols([*EVENT_COLUMNS, ("event_key", "VARCHAR"), ("ingest_batch_id", "VARCHAR"), ("source_file", "VARCHAR")])

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "traces: spans, GenAI events, ingest batches, rejects, daily signals",
        f"""
CREATE TABLE spans (
    {_SPANS_V1}
);
CREATE TABLE genai_events (
    {_EVENTS_V1}
);
CREATE TABLE ingest_batches (
    batch_id VARCHAR PRIMARY KEY,
    source_file VARCHAR NOT NULL,
    source_format VARCHAR NOT NULL,
    file_sha256 VARCHAR NOT NULL,
    file_bytes BIGINT,
    records_read BIGINT NOT NULL,
    accepted BIGINT NOT NULL,
    rejected BIGINT NOT NULL,
    duplicates BIGINT NOT NULL,
    unknown_release BIGINT NOT NULL,
    events_accepted BIGINT NOT NULL,
    min_start_time TIMESTAMP,
    max_start_time TIMESTAMP,
    dagster_run_id VARCHAR,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP NOT NULL
);
CREATE TABLE trace_rejects (
    ingest_batch_id VARCHAR NOT NULL,
    source_file VARCHAR NOT NULL,
    source_format VARCHAR,
    source_line BIGINT,
    raw VARCHAR,
    reason VARCHAR NOT NULL,
    rejected_at TIMESTAMP NOT NULL
);
CREATE TABLE daily_signals (
    day DATE NOT NULL,
    workflow VARCHAR NOT NULL,
    release VARCHAR NOT NULL,
    spans BIGINT NOT NULL,
    llm_calls BIGINT NOT NULL,
    traces BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    error_rate DOUBLE,
    latency_p50_ms DOUBLE,
    latency_p95_ms DOUBLE,
    latency_p99_ms DOUBLE,
    input_tokens BIGINT,
    output_tokens BIGINT,
    cost_usd DOUBLE,
    finish_reasons JSON,
    refusals BIGINT NOT NULL,
    refusal_rate DOUBLE,
    feedback_n BIGINT NOT NULL,
    feedback_mean DOUBLE,
    online_scores JSON,
    computed_at TIMESTAMP NOT NULL
);
""",
    ),
]

MIGRATIONS.append(
    (
        2,
        "releases, suite versions, eval runs with samples and scores",
        """
CREATE TABLE releases (
    release_key VARCHAR PRIMARY KEY,
    workflow VARCHAR NOT NULL,
    version VARCHAR NOT NULL,
    manifest_known BOOLEAN NOT NULL,
    manifest JSON,
    manifest_hash VARCHAR,
    source_file VARCHAR,
    baseline_version VARCHAR,
    diff JSON,
    registered_by VARCHAR,
    registered_at TIMESTAMP NOT NULL
);
CREATE TABLE suite_versions (
    workflow VARCHAR NOT NULL,
    version VARCHAR NOT NULL,
    content_hash VARCHAR NOT NULL,
    cases_count INTEGER NOT NULL,
    must_pass_count INTEGER NOT NULL,
    changelog JSON,
    cases JSON NOT NULL,
    source_file VARCHAR,
    recorded_at TIMESTAMP NOT NULL,
    PRIMARY KEY (workflow, version)
);
CREATE TABLE eval_runs (
    eval_run_id VARCHAR PRIMARY KEY,
    release_key VARCHAR NOT NULL,
    workflow VARCHAR NOT NULL,
    version VARCHAR NOT NULL,
    suite_version VARCHAR NOT NULL,
    suite_hash VARCHAR,
    source VARCHAR NOT NULL,
    samples_per_case INTEGER,
    cases INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    error_rate DOUBLE,
    valid BOOLEAN NOT NULL,
    invalid_reason VARCHAR,
    notes JSON,
    dagster_run_id VARCHAR,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP NOT NULL
);
CREATE TABLE eval_samples (
    eval_run_id VARCHAR NOT NULL,
    case_id VARCHAR NOT NULL,
    sample INTEGER NOT NULL,
    must_pass BOOLEAN NOT NULL,
    output VARCHAR,
    error VARCHAR,
    latency_ms DOUBLE,
    input_tokens BIGINT,
    output_tokens BIGINT,
    cost_usd DOUBLE,
    attempts INTEGER
);
CREATE TABLE eval_scores (
    eval_run_id VARCHAR NOT NULL,
    case_id VARCHAR NOT NULL,
    sample INTEGER NOT NULL,
    metric VARCHAR NOT NULL,
    score DOUBLE NOT NULL,
    passed BOOLEAN NOT NULL,
    detail VARCHAR
);
""",
    )
)

MIGRATIONS.append(
    (
        3,
        "hash-chained event log; versioned gate thresholds",
        """
CREATE TABLE events (
    seq BIGINT PRIMARY KEY,
    event_id VARCHAR NOT NULL UNIQUE,
    ts TIMESTAMP NOT NULL,
    actor VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    workflow VARCHAR,
    release_key VARCHAR,
    reason VARCHAR NOT NULL,
    payload JSON,
    prev_hash VARCHAR NOT NULL,
    hash VARCHAR NOT NULL
);
CREATE TABLE threshold_versions (
    workflow VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    config JSON NOT NULL,
    config_hash VARCHAR NOT NULL,
    author VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    event_seq BIGINT,
    PRIMARY KEY (workflow, version)
);
""",
    )
)

MIGRATIONS.append(
    (
        4,
        "gate decisions and the thresholds version in force per release",
        """
CREATE TABLE release_thresholds (
    release_key VARCHAR NOT NULL,
    workflow VARCHAR NOT NULL,
    thresholds_version INTEGER NOT NULL,
    dagster_run_id VARCHAR,
    recorded_at TIMESTAMP NOT NULL
);
CREATE TABLE gate_decisions (
    gate_id VARCHAR PRIMARY KEY,
    release_key VARCHAR NOT NULL,
    workflow VARCHAR NOT NULL,
    version VARCHAR NOT NULL,
    decision VARCHAR NOT NULL,
    baseline_version VARCHAR,
    candidate_eval_run_id VARCHAR,
    baseline_eval_run_id VARCHAR,
    suite_version VARCHAR,
    thresholds_version INTEGER,
    reasons JSON,
    result JSON NOT NULL,
    report_md VARCHAR,
    report_html VARCHAR,
    report_json VARCHAR,
    event_seq BIGINT,
    dagster_run_id VARCHAR,
    decided_at TIMESTAMP NOT NULL
);
""",
    )
)

MIGRATIONS.append(
    (
        5,
        "drift: per-trace features, versioned reference profiles, drift results; the alert outbox",
        """
CREATE TABLE trace_features (
    day DATE NOT NULL,
    workflow VARCHAR NOT NULL,
    release VARCHAR NOT NULL,
    trace_id VARCHAR NOT NULL,
    start_time TIMESTAMP NOT NULL,
    spans BIGINT NOT NULL,
    llm_calls BIGINT NOT NULL,
    latency_ms DOUBLE,
    input_tokens BIGINT,
    output_tokens BIGINT,
    cost_usd DOUBLE,
    input_chars BIGINT,
    input_words BIGINT,
    output_chars BIGINT,
    output_words BIGINT,
    output_json_valid BOOLEAN,
    is_error BOOLEAN NOT NULL,
    is_refusal BOOLEAN NOT NULL,
    finish_reason VARCHAR,
    model VARCHAR,
    topic VARCHAR,
    intent VARCHAR,
    language VARCHAR,
    feedback DOUBLE,
    online_scores JSON,
    computed_at TIMESTAMP NOT NULL
);
CREATE TABLE drift_references (
    reference_id VARCHAR PRIMARY KEY,
    workflow VARCHAR NOT NULL,
    definition JSON NOT NULL,
    window_start DATE,
    window_end DATE,
    rows_total BIGINT NOT NULL,
    rows_sampled BIGINT NOT NULL,
    profile JSON,
    created_at TIMESTAMP NOT NULL,
    dagster_run_id VARCHAR
);
CREATE TABLE drift_reference_rows AS
    SELECT CAST(NULL AS VARCHAR) AS reference_id, * EXCLUDE (computed_at)
    FROM trace_features WHERE false;
CREATE TABLE drift_results (
    granularity VARCHAR NOT NULL,
    period_start DATE NOT NULL,
    period_end DATE NOT NULL,
    workflow VARCHAR NOT NULL,
    release VARCHAR NOT NULL,
    column_name VARCHAR NOT NULL,
    column_type VARCHAR NOT NULL,
    role VARCHAR NOT NULL,
    method VARCHAR,
    score DOUBLE,
    threshold DOUBLE,
    drifted BOOLEAN,
    status VARCHAR NOT NULL,
    ref_rows BIGINT NOT NULL,
    cur_rows BIGINT NOT NULL,
    reference_id VARCHAR,
    dagster_run_id VARCHAR,
    computed_at TIMESTAMP NOT NULL
);
CREATE TABLE drift_summaries (
    granularity VARCHAR NOT NULL,
    period_start DATE NOT NULL,
    period_end DATE NOT NULL,
    workflow VARCHAR NOT NULL,
    release VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    severity VARCHAR,
    columns_tested BIGINT NOT NULL,
    columns_drifted BIGINT NOT NULL,
    drifted_share DOUBLE,
    critical_drifted JSON,
    cur_rows BIGINT NOT NULL,
    ref_rows BIGINT NOT NULL,
    reference_id VARCHAR,
    report_path VARCHAR,
    dagster_run_id VARCHAR,
    computed_at TIMESTAMP NOT NULL
);
CREATE TABLE alert_outbox (
    alert_id VARCHAR PRIMARY KEY,
    dedup_key VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    severity VARCHAR NOT NULL,
    title VARCHAR NOT NULL,
    workflow VARCHAR,
    release VARCHAR,
    summary VARCHAR,
    evidence JSON,
    links JSON,
    runbook VARCHAR,
    dagster_run_id VARCHAR,
    status VARCHAR NOT NULL,
    suppressed_by VARCHAR,
    created_at TIMESTAMP NOT NULL
);
CREATE TABLE alert_deliveries (
    alert_id VARCHAR NOT NULL,
    sink VARCHAR NOT NULL,
    sink_type VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at TIMESTAMP,
    last_error VARCHAR,
    delivered_at TIMESTAMP,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (alert_id, sink)
);
""",
    )
)

MIGRATIONS.append(
    (
        6,
        "rollout and rollback: registry state, rollbacks, incidents, drills, canary analyses",
        """
CREATE TABLE registry_state (
    workflow VARCHAR PRIMARY KEY,
    seq BIGINT NOT NULL,
    live VARCHAR,
    canary VARCHAR,
    canary_percent DOUBLE,
    shadow VARCHAR,
    stage VARCHAR,
    last_known_good VARCHAR,
    updated_by VARCHAR NOT NULL,
    reason VARCHAR,
    event_seq BIGINT,
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE rollbacks (
    rollback_id VARCHAR PRIMARY KEY,
    workflow VARCHAR NOT NULL,
    from_release VARCHAR,
    to_release VARCHAR,
    trigger VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    automatic BOOLEAN NOT NULL,
    performed BOOLEAN NOT NULL,
    check_evaluated_at TIMESTAMP,
    flipped_at TIMESTAMP,
    time_to_rollback_s DOUBLE,
    alert_id VARCHAR,
    incident_id VARCHAR,
    actor VARCHAR NOT NULL,
    event_seq BIGINT,
    dagster_run_id VARCHAR,
    recorded_at TIMESTAMP NOT NULL
);
CREATE TABLE incidents (
    incident_id VARCHAR PRIMARY KEY,
    workflow VARCHAR NOT NULL,
    release VARCHAR,
    title VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    opened_by VARCHAR NOT NULL,
    opened_at TIMESTAMP NOT NULL,
    closed_by VARCHAR,
    closed_at TIMESTAMP,
    resolution VARCHAR,
    links JSON
);
CREATE TABLE drills (
    drill_id VARCHAR PRIMARY KEY,
    workflow VARCHAR NOT NULL,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP NOT NULL,
    passed BOOLEAN NOT NULL,
    duration_ms DOUBLE,
    detail JSON,
    dagster_run_id VARCHAR
);
CREATE TABLE canary_analyses (
    analysis_id VARCHAR PRIMARY KEY,
    release_key VARCHAR NOT NULL,
    workflow VARCHAR NOT NULL,
    canary VARCHAR NOT NULL,
    baseline VARCHAR NOT NULL,
    window_start TIMESTAMP NOT NULL,
    window_end TIMESTAMP NOT NULL,
    verdict VARCHAR NOT NULL,
    score DOUBLE,
    consecutive_failures INTEGER NOT NULL,
    result JSON NOT NULL,
    report_md VARCHAR,
    report_html VARCHAR,
    dagster_run_id VARCHAR,
    computed_at TIMESTAMP NOT NULL
);
""",
    )
)

MIGRATIONS.append(
    (
        7,
        "the cadence: stability memos, review samples and labels, proposals, alert rules, readiness",
        """
ALTER TABLE incidents ADD COLUMN started_at TIMESTAMP;
UPDATE incidents SET started_at = opened_at;
CREATE TABLE stability_memos (
    memo_id VARCHAR PRIMARY KEY,
    week DATE NOT NULL,
    generated_at TIMESTAMP NOT NULL,
    ops_from TIMESTAMP NOT NULL,
    ops_to TIMESTAMP NOT NULL,
    memo JSON NOT NULL,
    report_md VARCHAR,
    md_path VARCHAR,
    html_path VARCHAR,
    dagster_run_id VARCHAR
);
CREATE TABLE review_samples (
    sample_id VARCHAR PRIMARY KEY,
    week DATE NOT NULL,
    workflow VARCHAR NOT NULL,
    release VARCHAR NOT NULL,
    trace_id VARCHAR NOT NULL,
    stratum VARCHAR NOT NULL,
    topic VARCHAR,
    sheet VARCHAR,
    selected_at TIMESTAMP NOT NULL
);
CREATE TABLE trace_labels (
    label_id VARCHAR PRIMARY KEY,
    sample_id VARCHAR,
    trace_id VARCHAR NOT NULL,
    workflow VARCHAR NOT NULL,
    release VARCHAR,
    name VARCHAR NOT NULL,
    value DOUBLE,
    label VARCHAR,
    is_failure BOOLEAN NOT NULL,
    failure_type VARCHAR,
    note VARCHAR,
    reviewer VARCHAR NOT NULL,
    source_file VARCHAR,
    incident_id VARCHAR,
    imported_at TIMESTAMP NOT NULL
);
CREATE TABLE proposals (
    proposal_id VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL,
    workflow VARCHAR NOT NULL,
    period VARCHAR NOT NULL,
    title VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    base_version VARCHAR,
    payload JSON NOT NULL,
    evidence JSON,
    content_hash VARCHAR NOT NULL,
    report_md VARCHAR,
    report_path VARCHAR,
    dagster_run_id VARCHAR,
    created_at TIMESTAMP NOT NULL,
    decided_by VARCHAR,
    decided_at TIMESTAMP,
    decision_reason VARCHAR,
    result_version VARCHAR,
    event_seq BIGINT
);
CREATE TABLE alert_rule_versions (
    workflow VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    config JSON NOT NULL,
    config_hash VARCHAR NOT NULL,
    author VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    event_seq BIGINT,
    PRIMARY KEY (workflow, version)
);
CREATE TABLE rule_firings (
    workflow VARCHAR NOT NULL,
    rule VARCHAR NOT NULL,
    day DATE NOT NULL,
    rules_version INTEGER NOT NULL,
    value DOUBLE,
    threshold DOUBLE,
    traces BIGINT,
    alert_id VARCHAR,
    dagster_run_id VARCHAR,
    fired_at TIMESTAMP NOT NULL,
    PRIMARY KEY (workflow, rule, day, rules_version)
);
CREATE TABLE readiness_reviews (
    review_id VARCHAR PRIMARY KEY,
    workflow VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    result JSON NOT NULL,
    report_md VARCHAR,
    report_path VARCHAR,
    dagster_run_id VARCHAR,
    reviewed_at TIMESTAMP NOT NULL
);
""",
    )
)

MIGRATIONS.append(
    (
        8,
        "keyed events: each event's HMAC under the audit key held outside the warehouse",
        """
ALTER TABLE events ADD COLUMN key_id VARCHAR;
ALTER TABLE events ADD COLUMN mac VARCHAR;
""",
    )
)

MIGRATIONS.append(
    (
        9,
        "spans.anomalies: a span that ends before it starts is kept with latency NULL and flagged",
        f"""
ALTER TABLE spans ADD COLUMN anomalies VARCHAR[];
UPDATE spans SET anomalies = {span_anomalies_sql("start_time", "end_time", "latency_ms")}, latency_ms = NULL
WHERE end_time < start_time OR latency_ms < 0;
""",
    )
)

MIGRATIONS.append(
    (
        10,
        "spans.input_messages / output_messages: the messages with their roles, one shape for every source",
        """
ALTER TABLE spans ADD COLUMN input_messages JSON;
ALTER TABLE spans ADD COLUMN output_messages JSON;
""",
    )
)

MIGRATIONS.append(
    (
        11,
        "langsmith_pending: LangSmith run updates (patches) whose run (post) has not arrived yet",
        """
CREATE TABLE langsmith_pending (
    run_id VARCHAR NOT NULL,
    trace_id VARCHAR,
    payload JSON NOT NULL,
    source_file VARCHAR NOT NULL,
    source_line BIGINT,
    ingest_batch_id VARCHAR,
    received_at TIMESTAMP NOT NULL
);
""",
    )
)

MIGRATIONS.append(
    (
        12,
        "span_updates: spans completed after they were ingested (a LangSmith run's end arriving in a later file)",
        """
CREATE TABLE span_updates (
    ingest_batch_id VARCHAR NOT NULL,
    trace_id VARCHAR NOT NULL,
    span_id VARCHAR NOT NULL,
    start_time TIMESTAMP,
    source_file VARCHAR,
    source_line BIGINT,
    reason VARCHAR NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
""",
    )
)

LATEST_VERSION = MIGRATIONS[-1][0]

LOCK_MARKERS = ("Could not set lock", "Conflicting lock", "lock on file")


def is_lock_error(exc: BaseException) -> bool:
    return any(m in str(exc) for m in LOCK_MARKERS)


def connect(
    path: Path | str,
    *,
    read_only: bool = False,
    timeout_s: float = 120.0,
    on_wait: Callable[[float], None] | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse file, waiting while another process holds its lock.

    DuckDB lets one process hold a read-write connection; any other process fails to open the
    file (even read-only) until it is released, so we retry with jittered backoff.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    waited = 0.0
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if not is_lock_error(exc) or time.monotonic() >= deadline:
                raise
            if on_wait is not None:
                on_wait(waited)
            pause = delay * (0.5 + random.random())
            time.sleep(pause)
            waited += pause
            delay = min(delay * 2, 1.0)


# What a step must have grown the process by for a full garbage collection to be worth its cost:
# it walks every object the process holds (~0.15-0.3 s once Dagster, Great Expectations and
# Evidently are loaded), at every step of every follow-up run, for nothing after a small step.
COLLECT_GROWTH_MB = 64.0
_rss_after_collect: list[float] = []  # the lowest RSS since the last full collection (MB)


def _rss_mb() -> float | None:
    import psutil

    try:
        return psutil.Process().memory_info().rss / 2**20
    except (psutil.Error, OSError):
        return None


def release_memory() -> None:
    """Hand memory freed by the last computation back to the operating system: collect the
    reference cycles it left (pandas frames and Great Expectations' objects among them) when
    the process's RSS is COLLECT_GROWTH_MB or more above its lowest point since the last
    collection (less cannot hold much to reclaim), and ask glibc to trim its heaps. Called when a run's step closes its
    warehouse connection, so that one step's peak does not stack on what the step before it
    left behind."""
    _trim()  # first: memory freed without a collection does not count as growth
    rss = _rss_mb()
    if rss is None or not _rss_after_collect or rss - _rss_after_collect[-1] >= COLLECT_GROWTH_MB:
        gc.collect()
        _trim()
        after = _rss_mb()
        _rss_after_collect[:] = [] if after is None else [after]
    elif rss < _rss_after_collect[-1]:
        _rss_after_collect[-1] = rss  # the allowance is growth from the lowest point since


def _trim() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def fetch_one(cursor: duckdb.DuckDBPyConnection) -> tuple[Any, ...]:
    """The row of a statement that always returns exactly one (an aggregate without GROUP BY,
    txid_current()). DuckDB types fetchone() as Optional for the general case."""
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError("the statement returned no row")
    return row


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER PRIMARY KEY, description VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
    )
    rows = con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchall()
    return int(rows[0][0])


def migrate(con: duckdb.DuckDBPyConnection, migrations=None) -> list[int]:
    """Apply every migration newer than the warehouse's version; return those applied."""
    migrations = MIGRATIONS if migrations is None else migrations
    have = current_version(con)
    applied = []
    for version, description, sql in migrations:
        if version <= have:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(sql)
            con.execute("INSERT INTO schema_migrations VALUES (?, ?, now()::TIMESTAMP)", [version, description])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied


@contextlib.contextmanager
def open_warehouse(path: Path | str, *, read_only: bool = False, timeout_s: float = 120.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to an up-to-date warehouse (created and migrated when needed)."""
    path = Path(path)
    if read_only and not path.exists():
        raise FileNotFoundError(f"no warehouse at {path}: ingest traces first (relops ingest PATH)")
    path.parent.mkdir(parents=True, exist_ok=True)
    con = connect(path, read_only=read_only, timeout_s=timeout_s)
    try:
        if not read_only:
            migrate(con)
        yield con
    finally:
        con.close()
