"""Versioned reference profiles: the window each workflow's traffic is compared with.

A reference definition (lib.drift.config.ReferenceSpec) is resolved against `trace_features`
to concrete dates. Its reference_id is a hash of that resolution (workflow, kind, dates,
release, sample size, seed, FEATURES_VERSION), so an unchanged definition is reused and a
changed one (or a changed feature computation) makes a new version. A new version is stored
once: a row in `drift_references` (exact row count, per-column non-null counts, online score
names) and a bounded uniform sample of its rows in `drift_reference_rows`. Later runs read
only that sample and scan only their current window.

The sample: the `sample_rows` rows with the smallest hash(trace_id, seed), a bottom-k sample
that is uniform, needs one pass, and gives the same rows on every run (unlike DuckDB's
reservoir sampling, which is repeatable only single-threaded).

A window is complete once the workflow has traces on a later day than the window's last; a
reference resolved before that (its last days still arriving) is provisional: its row count
goes into the hash, so it becomes a new version as traces arrive. Once a complete version of
a definition is stored it is frozen: later runs reuse it without touching trace_features, so
it survives the retention of old traces, and traces ingested late into its window do not
change it (change the definition to rebuild it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from relops_pipeline.lib.drift.config import COLUMNS, SCORE_PREFIX, DriftConfig, ReferenceSpec
from relops_pipeline.lib.timeutil import utc_naive

# Bump when features.py changes what a column means: references then get new versions.
FEATURES_VERSION = 1
SAMPLE_SEED = 20260928

# trace_features columns copied into drift_reference_rows (all but computed_at).
ROW_COLUMNS = (
    "day", "workflow", "release", "trace_id", "start_time", "spans", "llm_calls", "latency_ms",
    "input_tokens", "output_tokens", "cost_usd", "input_chars", "input_words", "output_chars",
    "output_words", "output_json_valid", "is_error", "is_refusal", "finish_reason", "model",
    "topic", "intent", "language", "feedback", "online_scores",
)


@dataclass
class Reference:
    """A stored reference profile."""

    reference_id: str
    workflow: str
    definition: dict[str, Any]
    window_start: dt.date | None
    window_end: dt.date | None  # exclusive
    rows_total: int
    rows_sampled: int
    profile: dict[str, Any] = field(default_factory=dict)
    created: bool = False  # built by this call (False: an existing version was reused)

    @property
    def complete(self) -> bool:
        return bool(self.definition.get("complete"))

    def available_columns(self) -> list[str]:
        """Catalogue columns with data in the reference, then its online score columns."""
        non_null = self.profile.get("non_null", {})
        cols = [c for c in COLUMNS if non_null.get(c, 0) > 0]
        return cols + [SCORE_PREFIX + s for s in sorted(self.profile.get("online_scores", {}))]


def _one(rows: list):
    # fetchall, not fetchone: DuckDB 2.0 keeps a partly fetched result open on the connection
    # and then refuses e.g. register() until it is consumed.
    return rows[0] if rows else None


def strip_release(workflow: str, release: str) -> str:
    """'support-triage@v1.3.0' and 'support-triage--v1.3.0' name release v1.3.0 (as ingestion
    stores it)."""
    for sep in ("@", "--"):
        if release.startswith(workflow + sep):
            return release[len(workflow) + len(sep):]
    return release


def resolve_reference(con, workflow: str, spec: ReferenceSpec) -> dict[str, Any] | None:
    """The definition resolved to concrete dates from `trace_features`, or None when the
    window has no traffic yet. Keys: kind, spec, start, end (exclusive), release, complete."""
    release = None
    if spec.kind == "pinned":
        assert spec.start is not None and spec.end is not None  # a pinned spec has both (config.py)
        start, end = spec.start, spec.end + dt.timedelta(days=1)
    elif spec.kind == "release":
        assert spec.release is not None and spec.days is not None  # a release spec has both (config.py)
        release = strip_release(workflow, spec.release)
        first = _one(con.execute(
            "SELECT min(day) FROM trace_features WHERE workflow = ? AND release = ?", [workflow, release]
        ).fetchall())[0]
        if first is None:
            return None
        start, end = first, first + dt.timedelta(days=spec.days)
    else:
        days = [r[0] for r in con.execute(
            "SELECT DISTINCT day FROM trace_features WHERE workflow = ? ORDER BY day LIMIT ?", [workflow, spec.days]
        ).fetchall()]
        if not days:
            return None
        # Fewer days than asked leaves the window open: nothing later exists, so it stays
        # provisional until more traffic arrives.
        start, end = days[0], days[-1] + dt.timedelta(days=1)
    rel_sql = " AND release = $release" if release else ""
    rows, later = _one(con.execute(
        "SELECT count(*) FILTER (WHERE day >= $start AND day < $end" + rel_sql + "), "
        "count(*) FILTER (WHERE day >= $end) FROM trace_features WHERE workflow = $workflow",
        {"start": start, "end": end, "workflow": workflow, **({"release": release} if release else {})},
    ).fetchall())
    if rows == 0:
        return None
    return {
        "kind": spec.kind,
        "spec": spec.as_dict(),
        "start": start.isoformat(),
        "end": end.isoformat(),
        "release": release,
        "complete": later > 0,
        "rows_when_resolved": None if later > 0 else int(rows),
    }


def spec_key(spec: ReferenceSpec, sample_rows: int) -> str:
    """Canonical text of what defines a reference before it meets the data."""
    return json.dumps(
        {**spec.as_dict(), "sample_rows": sample_rows, "seed": SAMPLE_SEED, "features_version": FEATURES_VERSION},
        sort_keys=True,
    )


def reference_id_for(workflow: str, resolved: dict[str, Any], sample_rows: int) -> str:
    """The version id of a resolved definition."""
    key = {
        "workflow": workflow,
        "kind": resolved["kind"],
        "start": resolved["start"],
        "end": resolved["end"],
        "release": resolved["release"],
        "rows": resolved["rows_when_resolved"],
        "sample_rows": sample_rows,
        "seed": SAMPLE_SEED,
        "features_version": FEATURES_VERSION,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return f"ref-{digest}"


def bottom_k_threshold(rows: int, k: int) -> int:
    """A 64-bit hash bound below which about 1.25 k of `rows` uniformly hashed rows fall (the
    bottom-k by hash is then among them with overwhelming probability: 5 % slack is about
    10 standard deviations at k = 50 000, and the callers check and fall back)."""
    share = min(1.0, 1.25 * k / max(rows, 1) + 64 / max(rows, 1))
    return min(2**64 - 1, int(share * 2**64))


def _window_filter(release: str | None) -> str:
    return "workflow = $workflow AND day >= $start AND day < $end" + (" AND release = $release" if release else "")


def load_reference(con, reference_id: str) -> Reference | None:
    """A stored reference by id, or None."""
    row = _one(con.execute(
        "SELECT reference_id, workflow, definition, window_start, window_end, rows_total, rows_sampled, profile "
        "FROM drift_references WHERE reference_id = ?",
        [reference_id],
    ).fetchall())
    if row is None:
        return None
    return Reference(
        reference_id=row[0], workflow=row[1], definition=json.loads(row[2]), window_start=row[3],
        window_end=row[4], rows_total=int(row[5]), rows_sampled=int(row[6]),
        profile=json.loads(row[7]) if row[7] else {},
    )


def _profile_sql() -> str:
    counts = ", ".join(f'count("{c}")' for c in COLUMNS)
    return f"SELECT count(*), {counts} FROM trace_features WHERE {{where}}"


def ensure_reference(
    con,
    workflow: str,
    cfg: DriftConfig,
    *,
    run_id: str | None = None,
    now: dt.datetime | None = None,
) -> Reference | None:
    """The workflow's current reference version: reused when stored, else built and stored
    (profile and bounded sample, in one transaction). None when the reference window has no
    traffic yet. `con` must not be inside a transaction already."""
    key = spec_key(cfg.reference, cfg.sample_rows)
    frozen = _one(con.execute(
        "SELECT reference_id FROM drift_references WHERE workflow = ? AND definition->>'spec_key' = ? "
        "AND CAST(definition->>'complete' AS BOOLEAN) ORDER BY created_at DESC LIMIT 1",
        [workflow, key],
    ).fetchall())
    if frozen is not None:
        return load_reference(con, frozen[0])
    resolved = resolve_reference(con, workflow, cfg.reference)
    if resolved is None:
        return None
    resolved["spec_key"] = key
    rid = reference_id_for(workflow, resolved, cfg.sample_rows)
    existing = load_reference(con, rid)
    if existing is not None:
        return existing
    params = {
        "workflow": workflow,
        "start": dt.date.fromisoformat(resolved["start"]),
        "end": dt.date.fromisoformat(resolved["end"]),
    }
    if resolved["release"]:
        params["release"] = resolved["release"]
    where = _window_filter(resolved["release"])
    now = now or utc_naive()
    cols = ", ".join(ROW_COLUMNS)
    con.execute("BEGIN TRANSACTION")
    try:
        counts = _one(con.execute(_profile_sql().format(where=where), params).fetchall())
        scores = con.execute(
            f"SELECT e.key, count(*) FROM trace_features, json_each(online_scores) AS e "
            f"WHERE {where} AND online_scores IS NOT NULL AND e.type IN ('UBIGINT', 'BIGINT', 'DOUBLE') "
            "GROUP BY e.key ORDER BY e.key",
            params,
        ).fetchall()
        insert = (
            f"INSERT INTO drift_reference_rows (reference_id, {cols}) "
            f"SELECT $rid, {cols} FROM trace_features WHERE {where} {{bound}}"
            f"ORDER BY hash(trace_id, $seed), trace_id LIMIT $k"
        )
        p = {**params, "rid": rid, "seed": SAMPLE_SEED, "k": cfg.sample_rows}
        total = int(counts[0])
        if total > cfg.sample_rows:
            # Filter by a hash bound during the scan (see compute.sample_frame), then check.
            con.execute(insert.format(bound="AND hash(trace_id, $seed) < CAST($thr AS UBIGINT) "),
                        {**p, "thr": bottom_k_threshold(total, cfg.sample_rows)})
        sampled = _one(con.execute("SELECT count(*) FROM drift_reference_rows WHERE reference_id = ?", [rid]).fetchall())[0]
        if sampled < min(total, cfg.sample_rows):
            con.execute("DELETE FROM drift_reference_rows WHERE reference_id = ?", [rid])
            con.execute(insert.format(bound=""), p)
            sampled = _one(con.execute("SELECT count(*) FROM drift_reference_rows WHERE reference_id = ?", [rid]).fetchall())[0]
        profile = {
            "non_null": {c: int(n) for c, n in zip(COLUMNS, counts[1:], strict=False)},
            "online_scores": {k: int(n) for k, n in scores},
        }
        con.execute(
            "INSERT INTO drift_references VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [rid, workflow, json.dumps(resolved), params["start"], params["end"], int(counts[0]), int(sampled),
             json.dumps(profile), now, run_id],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    ref = load_reference(con, rid)
    assert ref is not None  # committed just above
    ref.created = True
    return ref
