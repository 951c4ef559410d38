"""TraceStore: spans in a Delta Lake table, appended by several writers at once, read by DuckDB.

Guarantees (tested in relops_pipeline_tests/test_tracestore.py, on the local FS and on S3):

- **Idempotent per source.** `append(table, source_id)` commits the rows of one source (a file's
  digest, say) with a Delta application transaction `(relops-source:<source_id>, 1)` in the same
  commit. A source already committed is skipped. Two writers committing the same source at the
  same time both see it absent, but Delta's conflict check fails the second commit (same app id);
  it reloads the table, sees the source committed and skips.
- **Exactly once per span.** A span's identity is (trace_id, span_id), as in the warehouse. A
  writer drops the spans of its source already committed on the days it touches (and repeats
  within the source, the first by source_line kept), so a re-delivered or overlapping file adds
  nothing. Two writers appending overlapping sources *at the same time* each check against a
  snapshot without the other's rows and both commit (blind appends never conflict, which is what
  lets writers scale): the table then holds both copies. The view `register()` creates keeps one
  row per identity (the most complete copy, then the earliest ingested_at, batch id, source_line), so every query
  through it counts each span exactly once; `compact()` removes the extra copies on disk.
- **Crash-safe.** A commit is one put-if-absent of the next `_delta_log/<version>.json` (local FS:
  atomic create; S3: conditional put, which delta-rs 1.x uses by default). A writer killed after
  writing data files and before its commit leaves files no version references: readers never see
  them, a retry of the same source commits normally, `vacuum()` deletes them.

A span's identity holds within its day partition, the unit writers check, views deduplicate and
`compact()` rewrites: a span whose copies start on different UTC days (a source that moved its
start) is stored and counted on both days, where the warehouse would count it once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import CommitProperties, DeltaTable, Transaction, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import AddAction, RemoveAction

from relops_pipeline.lib.tracestore.schema import PARTITION_COLUMN, SPANS, TableSpec, arrow_schema, json_columns

APP_ID_PREFIX = "relops-source:"
_SOURCE_COLUMN = "__relops_source"  # a row's source while several are appended at once
_MIGRATION_SOURCE = "__relops_migration_day"  # a warehouse row's day while it is moved to the store
_COMMIT_ATTEMPTS = 20
# Parquet row groups of 64k rows: a reader (DuckDB's Arrow scan, a day's computation) and the
# writer hold one row group at a time, and delta-rs' default (1M rows) made one row group of a
# 1M-span file, which the readers then materialised whole: 2.5 GB for trace_features at 1M spans.
ROW_GROUP_ROWS = 65_536
# Per day, whether its partition holds copies of a row (TraceStore._days_with_copies).
_COPIES_CACHE = "_relops_copies.json"
# Delta reader features that leave a data file's rows as they are (see TraceStore._link_raw).
_PLAIN_READER_FEATURES = frozenset({"timestampNtz", "v2Checkpoint", "vacuumProtocolCheck"})


def _writer_properties() -> WriterProperties:
    return WriterProperties(max_row_group_size=ROW_GROUP_ROWS)


def _drop_temp(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop the temp table or view `name`, if there is one."""
    kind = con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = ? AND table_catalog = 'temp'",
                       [name]).fetchall()
    if kind:
        con.execute(f"DROP {'VIEW' if kind[0][0] == 'VIEW' else 'TABLE'} temp.{name}")


def _parquet_scan(files: Sequence[str]) -> str:
    """SQL: the rows of a table's Parquet files (local paths), with their partition's `day`.

    The day is read from the folder each file is in (`day=YYYY-MM-DD/`), not by DuckDB's
    hive_partitioning, which takes every `key=value` folder of the path as a column: a home
    under `/data/status=ok/` would have overwritten every span's status. union_by_name: files
    written before a column was added read it as NULL."""
    listed = ", ".join("'" + f.removeprefix("file://").replace("'", "''") + "'" for f in files)
    return (f"SELECT * EXCLUDE (filename), CAST(regexp_extract(filename, '/{PARTITION_COLUMN}=([^/]+)/[^/]+$', 1) AS DATE) "
            f"AS {PARTITION_COLUMN} FROM read_parquet([{listed}], union_by_name = true, filename = true, "
            f"hive_partitioning = false)")


def _names_one_of(location: str, paths: set[str]) -> bool:
    """Whether a file's URI or path is one of the log's `paths` (relative to the table: the
    day's folder and the file's name)."""
    return "/".join(location.rsplit("/", 2)[-2:]) in paths


def default_uri(home: str | os.PathLike, table: str = "spans") -> str:
    """The embedded default: `<home>/tracestore/<table>/` (nothing to start)."""
    return str(Path(home) / "tracestore" / table)


# A commit's custom metadata keys: the batches that committed it; the day a compaction rewrote.
_BATCHES_KEY = "relops.batches"
_COMPACTION_KEY = "relops.compact"
_READ_KEY = "relops.read"  # the version of the table the committing writer read


def _read_at(version: int | None) -> dict[str, str]:
    return {} if version is None else {_READ_KEY: str(version)}


# Delta operations that add no rows (delta-rs' names): no batch committed them.
_ADDS_NO_ROWS = frozenset({"VACUUM START", "VACUUM END", "OPTIMIZE", "SET TBLPROPERTIES"})


@dataclass(frozen=True)
class AppendResult:
    """What one `append` did. `rows` = appended + duplicates (the whole source when skipped)."""

    source_id: str
    rows: int
    appended: int
    duplicates: int
    skipped: bool  # the source was already committed: nothing written
    version: int | None  # the table version that committed it (None when skipped)
    by_day: dict[str, int] = field(default_factory=dict)  # rows appended per day partition


@dataclass(frozen=True)
class MigrationResult:
    """Spans of the warehouse and of the store after `migrate_from_warehouse` (checked equal)."""

    warehouse_spans: int
    appended: int
    already_in_store: int
    store_spans: int


class TraceStore:
    """A Delta table at `uri`: a local path or `s3://bucket/prefix` (with `storage_options` such
    as AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_ALLOW_HTTP). `spec` says which table:
    spans (the default), GENAI_EVENTS or TRACE_REJECTS (lib/tracestore/schema.py); "span" below
    means a row of that table and "identity" its key."""

    def __init__(self, uri: str | os.PathLike, storage_options: dict[str, str] | None = None,
                 spec: TableSpec = SPANS):
        self.uri = str(uri)
        self.storage_options = dict(storage_options or {})
        self.spec = spec
        self.schema = arrow_schema(spec)

    @property
    def is_local(self) -> bool:
        return "://" not in self.uri or self.uri.startswith("file://")

    # --- the table ---------------------------------------------------------------------------
    def table(self) -> DeltaTable:
        """The table at its latest version, created (empty, partitioned by day) if absent."""
        for _ in range(_COMMIT_ATTEMPTS):
            try:
                return DeltaTable(self.uri, storage_options=self.storage_options or None)
            except TableNotFoundError:
                pass
            if self.is_local:
                Path(self.uri.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
            try:
                # Two first writers may race to create version 0: one wins, the other reloads.
                return DeltaTable.create(
                    self.uri, self.schema, partition_by=[PARTITION_COLUMN], mode="ignore",
                    storage_options=self.storage_options or None,
                )
            except (CommitFailedError, OSError):
                time.sleep(0.05)
        raise RuntimeError(f"trace store {self.uri}: could not open or create the table")

    def exists(self) -> bool:
        return DeltaTable.is_deltatable(self.uri, storage_options=self.storage_options or None)

    def version(self) -> int:
        """The table's latest version (-1: no table yet; nothing is created)."""
        try:
            return DeltaTable(self.uri, storage_options=self.storage_options or None).version()
        except TableNotFoundError:
            return -1

    def batches_committed_after(self, version: int) -> set[str] | None:
        """The batches that committed after `version`: `append_from`'s source column values
        (e.g. ingest batch ids) and the batches `append_many` names. None when a commit after it
        does not say (written by an older relops): any batch may have. A compaction adds no row."""
        commits = self.commits_after(version)
        return None if commits is None else {b for batches in commits for b in batches}

    def commits_after(self, version: int) -> list[frozenset[str]] | None:
        """The batches each commit after `version` names (`batches_committed_after`), one set per
        commit: the batches of one ingestion, which commits them together. None as there. A
        commit that adds no rows (a compaction, `vacuum()`'s, a property's) names none."""
        dt = self.table()
        newer = dt.version() - version
        if newer <= 0:
            return []
        found: list[frozenset[str]] = []
        for entry in dt.history(newer):
            if int(entry["version"]) <= version or _COMPACTION_KEY in entry or entry.get("operation") in _ADDS_NO_ROWS:
                continue
            named = entry.get(_BATCHES_KEY)
            if named is None:
                return None
            found.append(frozenset(b for b in str(named).split(",") if b))
        return found

    def versions_read_after(self, version: int) -> dict[int, int | None]:
        """For each commit after `version` that adds rows: the version of the table its writer
        read (`read_version` of `append_many` / `append_from`; None when it does not say)."""
        dt = self.table()
        newer = dt.version() - version
        if newer <= 0:
            return {}
        return {int(e["version"]): (int(e[_READ_KEY]) if e.get(_READ_KEY) is not None else None)
                for e in dt.history(newer)
                if int(e["version"]) > version and _COMPACTION_KEY not in e and e.get("operation") not in _ADDS_NO_ROWS}

    def committed(self, source_id: str, dt: DeltaTable | None = None) -> bool:
        """Whether the source's rows are in the table (its application transaction is)."""
        return (dt or self.table()).transaction_version(APP_ID_PREFIX + source_id) is not None

    # --- writing -----------------------------------------------------------------------------
    def conform(self, spans: pa.Table | pa.RecordBatchReader) -> pa.Table:
        """The spans in the store's schema: columns cast and in order, missing ones NULL, JSON as
        text, `day` from the spec's time column; repeats of an identity dropped (the first by source_line)."""
        con = duckdb.connect()
        try:
            con.register("incoming", spans)
            have = {r[0] for r in con.execute("SELECT column_name FROM (DESCRIBE incoming)").fetchall()}
            key = ", ".join(self.spec.key)
            table = con.sql(
                f"SELECT {self._conformed_columns(have)} FROM incoming "
                f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {'source_line NULLS LAST' if 'source_line' in have else key}) = 1"
            ).to_arrow_table()
        finally:
            con.close()
        return table.cast(self.schema)

    def _writes_parquet_itself(self, dt: DeltaTable) -> bool:
        """Whether DuckDB may read and write the table's Parquet files directly (a local table
        using no reader feature that changes what a file's rows mean); else delta-rs does."""
        return self.is_local and set(dt.protocol().reader_features or ()) <= _PLAIN_READER_FEATURES

    def _commit_from_duckdb(self, con: duckdb.DuckDBPyConnection, dt: DeltaTable, relation: str,
                            commit: CommitProperties) -> None:
        """Append the rows of `relation` on `con` (the table's columns and `day`) in one commit:
        DuckDB writes one Parquet file per day into the day's partition folder, and delta-rs
        commits them (with `commit`'s application transactions). DuckDB's writer runs within the
        connection's memory_limit: delta-rs' own writer, fed the same rows as an Arrow stream,
        held about 1 GB more at 1M spans. Raises CommitFailedError as write_deltalake does (a
        conflicting commit), after deleting the files it wrote (no version references them)."""
        root = Path(self.uri.removeprefix("file://"))
        names = ", ".join(f'"{n}"' for n in self.schema.names if n != PARTITION_COLUMN)
        days = [r[0] for r in con.execute(f"SELECT DISTINCT {PARTITION_COLUMN} FROM {relation} ORDER BY 1").fetchall()]
        actions: list[AddAction | RemoveAction] = []
        written: list[Path] = []
        try:
            for day in days:
                folder = f"{PARTITION_COLUMN}={day.isoformat()}"
                (root / folder).mkdir(parents=True, exist_ok=True)
                name = f"{folder}/part-00000-{uuid.uuid4()}-c000.zstd.parquet"
                written.append(root / name)
                target = str(written[-1]).replace("'", "''")
                # One file per day (a Parquet writer per file, row groups of ROW_GROUP_ROWS):
                # DuckDB's PARTITION_BY writer held every day's buffers at once and ran 4x slower.
                stats = con.execute(
                    f"COPY (SELECT {names} FROM {relation} WHERE {PARTITION_COLUMN} = ?) TO '{target}' "
                    f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_ROWS}, RETURN_STATS)", [day]).fetchall()
                for _file, rows, size, *_ in stats:
                    actions.append(AddAction(name, int(size), {PARTITION_COLUMN: day.isoformat()},
                                             int(time.time() * 1000), True, json.dumps({"numRecords": int(rows)})))
            if actions:
                dt.create_write_transaction(actions, mode="append", schema=self.schema,
                                            partition_by=[PARTITION_COLUMN], commit_properties=commit)
        except BaseException:
            for leftover in written:
                leftover.unlink(missing_ok=True)
            raise

    def _conformed_columns(self, have: set[str]) -> str:
        """The SELECT list giving the store's columns from a relation with the columns `have`."""
        cols = []
        for name, duck_type in self.spec.columns:
            stored = "VARCHAR" if duck_type == "JSON" else duck_type
            cols.append(f'CAST("{name}" AS {stored}) AS "{name}"' if name in have else f'CAST(NULL AS {stored}) AS "{name}"')
        return ", ".join(cols) + f", {self.spec.day_sql()} AS {PARTITION_COLUMN}"

    def append_from(self, con: duckdb.DuckDBPyConnection, table: str, batches: Sequence[tuple[str, str]], *,
                    check_existing: bool = True, unique: bool = False, batch_rows: int = 65_536,
                    source_column: str = "ingest_batch_id", read_version: int | None = None) -> list[AppendResult]:
        """`append_many` for rows already in DuckDB: the rows of `table` on `con` (the warehouse
        table's shape) of each ingest batch, appended as the source named beside it, in one
        commit. Conformed, deduplicated and anti-joined in DuckDB (which spills to disk past its
        memory limit) and streamed to the writer batch by batch: a file of millions of spans is
        never held whole in Python. `unique`: the caller guarantees one row per identity within
        a batch (the loader's spans and events), which saves a window over every row. Results
        in the order given. `source_column`: the column of `table` whose value names a row's batch.
        `read_version`: the version of this table the writer read the rows against, recorded in
        the commit (`versions_read_after`)."""
        if not batches:
            return []
        have = {r[0] for r in con.execute(f"SELECT column_name FROM (DESCRIBE {table})").fetchall()}
        key = ", ".join(self.spec.key)
        con.execute("CREATE OR REPLACE TEMP TABLE store_sources (batch VARCHAR, pos INTEGER)")
        con.executemany("INSERT INTO store_sources VALUES (?, ?)", [[b, i] for i, (b, _) in enumerate(batches)])
        unset = " OR ".join(f'"{c}" IS NULL' for c in self.spec.required)
        bad = con.execute(f"SELECT count(*) FROM {table} SEMI JOIN store_sources s ON s.batch = {source_column} "
                          f"WHERE {unset}").fetchall()[0][0]
        if bad:
            raise ValueError(f"{bad} row(s) of {self.spec.name} without {', '.join(self.spec.required)}")
        order = "source_line NULLS LAST" if "source_line" in have else key
        once = "" if unique else f"QUALIFY row_number() OVER (PARTITION BY s.pos, {key} ORDER BY {order}) = 1"
        # A view: the rows are read where they are, once to count and once to write (or to
        # anti-join), never copied whole.
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW store_incoming AS SELECT {self._conformed_columns(have)}, s.pos AS {_SOURCE_COLUMN} "
            f"FROM {table} JOIN store_sources s ON s.batch = {source_column} {once}")
        rows = dict(con.execute(f"SELECT {_SOURCE_COLUMN}, count(*) FROM store_incoming GROUP BY 1").fetchall())
        try:
            for _ in range(_COMMIT_ATTEMPTS):
                dt = self.table()
                pending: dict[str, int] = {}
                for i, (_batch, source_id) in enumerate(batches):
                    if source_id not in pending and dt.transaction_version(APP_ID_PREFIX + source_id) is None:
                        pending[source_id] = i
                if not pending:
                    break
                con.execute("CREATE OR REPLACE TEMP TABLE store_pending (pos INTEGER)")
                con.executemany("INSERT INTO store_pending VALUES (?)", [[i] for i in pending.values()])
                anti = ""
                if check_existing and dt.get_add_actions(flatten=True).num_rows:
                    days = [r[0].isoformat() for r in con.execute(
                        f"SELECT DISTINCT {PARTITION_COLUMN} FROM store_incoming SEMI JOIN store_pending p "
                        f"ON p.pos = {_SOURCE_COLUMN}").fetchall()]
                    self._link_raw(con, dt, "store_existing", days)
                    on = " AND ".join(f"e.{k} IS NOT DISTINCT FROM i.{k}" for k in self.spec.key)
                    anti = (f"ANTI JOIN (SELECT {key}, {PARTITION_COLUMN} FROM store_existing) e "
                            f"ON {on} AND e.{PARTITION_COLUMN} = i.{PARTITION_COLUMN}")
                # With nothing to anti-join against (a new day), what is written is read straight
                # from the source rows; else the new rows are kept aside to be counted exactly.
                _drop_temp(con, "store_new")
                chosen = f"SELECT i.* FROM store_incoming i {anti} SEMI JOIN store_pending p ON p.pos = i.{_SOURCE_COLUMN}"
                if anti:
                    con.execute(f"CREATE OR REPLACE TEMP TABLE store_new AS {chosen}")
                    _drop_temp(con, "store_existing")
                else:
                    con.execute(f"CREATE OR REPLACE TEMP VIEW store_new AS {chosen}")
                commit = CommitProperties(
                    app_transactions=[Transaction(APP_ID_PREFIX + sid, 1) for sid in pending],
                    custom_metadata={"relops.source_id": ",".join(pending),
                                     _BATCHES_KEY: ",".join(sorted({batches[i][0] for i in pending.values()})),
                                     **_read_at(read_version)},
                )
                try:
                    if self._writes_parquet_itself(dt):
                        self._commit_from_duckdb(con, dt, "store_new", commit)
                    else:
                        stream = con.sql(f"SELECT {', '.join(self.schema.names)} FROM store_new").to_arrow_reader(batch_rows)
                        write_deltalake(
                            dt, stream.cast(self.schema), mode="append",
                            partition_by=[PARTITION_COLUMN], storage_options=self.storage_options or None,
                            writer_properties=_writer_properties(), commit_properties=commit,
                        )
                except CommitFailedError:
                    continue  # a source committed concurrently (or a compaction): look again
                version = self._version_of(APP_ID_PREFIX + next(iter(pending)))
                per_source: dict[int, dict[str, int]] = {}
                for i, day, n in con.execute(f"SELECT {_SOURCE_COLUMN}, {PARTITION_COLUMN}, count(*) FROM store_new "
                                             "GROUP BY ALL").fetchall():
                    per_source.setdefault(i, {})[day.isoformat()] = int(n)
                results = []
                for i, (_batch, source_id) in enumerate(batches):
                    n = int(rows.get(i, 0))
                    if pending.get(source_id) == i:
                        by_day = per_source.get(i, {})
                        appended = sum(by_day.values())
                        results.append(AppendResult(source_id, n, appended, n - appended, False, version, by_day))
                    else:
                        results.append(AppendResult(source_id, n, 0, n, True, None))
                return results
            else:
                raise RuntimeError(f"trace store {self.uri}: {', '.join(s for _, s in batches)} not committed after "
                                   f"{_COMMIT_ATTEMPTS} attempts")
            return [AppendResult(source_id, int(rows.get(i, 0)), 0, int(rows.get(i, 0)), True, None)
                    for i, (_batch, source_id) in enumerate(batches)]
        finally:
            for name in ("store_new", "store_incoming", "store_pending", "store_sources"):
                _drop_temp(con, name)

    def append(self, spans: pa.Table | pa.RecordBatchReader, source_id: str, *,
               check_existing: bool = True) -> AppendResult:
        """Append the spans of one source, idempotently and once per span identity (see the
        module docstring). Spans without trace id, span id or start time are the loader's rejects
        and must not reach here: they raise ValueError.

        `check_existing=False` skips the anti-join against the identities already on the touched
        days (its cost grows with the day's partition): the source stays idempotent and the view
        still counts each span once, but a re-delivered span is stored again until `compact()`."""
        return self.append_many([(spans, source_id)], check_existing=check_existing)[0]

    def append_many(self, sources: Sequence[tuple[pa.Table | pa.RecordBatchReader, str]], *,
                    check_existing: bool = True, batches: Iterable[str] = (),
                    read_version: int | None = None) -> list[AppendResult]:
        """Append several sources in one commit (one table version carrying one application
        transaction per source), each with the guarantees of `append`: a source already
        committed, or named twice, adds nothing. A commit costs ~0.1 s whatever it holds, so an
        ingestion of many small files commits them together. Results in the order given.
        `batches`: the ingest batches of the ingestion committing (named in the commit: not
        the rows' own, which a correction keeps from the copy it corrects). `read_version`: as in
        `append_from`."""
        tables: list[tuple[pa.Table, str]] = []
        for rows, source_id in sources:
            table = self.conform(rows)
            missing = None
            for name in self.spec.required:
                null = pc.is_null(table[name])
                missing = null if missing is None else pc.or_kleene(missing, null)
            bad = pc.sum(missing).as_py() if missing is not None else 0
            if bad:
                raise ValueError(f"{source_id}: {bad} row(s) of {self.spec.name} without {', '.join(self.spec.required)}")
            tables.append((table, source_id))
        for _ in range(_COMMIT_ATTEMPTS):
            dt = self.table()
            pending: dict[str, int] = {}  # source id -> its position in `tables` (the first one)
            for i, (_table, source_id) in enumerate(tables):
                if source_id not in pending and dt.transaction_version(APP_ID_PREFIX + source_id) is None:
                    pending[source_id] = i
            if not pending:
                break
            # One anti-join for all: the rows tagged with their position, split again after.
            tagged = pa.concat_tables(
                [tables[i][0].append_column(_SOURCE_COLUMN, pa.array([i] * tables[i][0].num_rows, pa.int32()))
                 for i in pending.values()])
            new = self._not_in(dt, tagged) if check_existing else tagged
            try:
                write_deltalake(
                    dt, new.drop_columns([_SOURCE_COLUMN]).cast(self.schema), mode="append",
                    partition_by=[PARTITION_COLUMN], storage_options=self.storage_options or None,
                    writer_properties=_writer_properties(),
                    commit_properties=CommitProperties(
                        app_transactions=[Transaction(APP_ID_PREFIX + sid, 1) for sid in pending],
                        custom_metadata={"relops.source_id": ",".join(pending), "relops.spans": str(new.num_rows),
                                         _BATCHES_KEY: ",".join(sorted(batches)), **_read_at(read_version)},
                    ),
                )
            except CommitFailedError:
                continue  # a source committed concurrently (or a compaction): look again
            version = self._version_of(APP_ID_PREFIX + next(iter(pending)))
            per_source: dict[int, dict[str, int]] = {}
            if new.num_rows:
                counts = new.group_by([_SOURCE_COLUMN, PARTITION_COLUMN]).aggregate([([], "count_all")])
                for i, day, n in zip(*(counts[c].to_pylist() for c in (_SOURCE_COLUMN, PARTITION_COLUMN, "count_all")),
                                     strict=True):
                    per_source.setdefault(i, {})[day.isoformat()] = n
            results = []
            for i, (table, source_id) in enumerate(tables):
                if pending.get(source_id) == i:
                    by_day = per_source.get(i, {})
                    appended = sum(by_day.values())
                    results.append(AppendResult(source_id, table.num_rows, appended, table.num_rows - appended, False,
                                                version, by_day))
                else:
                    results.append(AppendResult(source_id, table.num_rows, 0, table.num_rows, True, None))
            return results
        else:
            raise RuntimeError(f"trace store {self.uri}: {', '.join(s for _, s in tables)} not committed after "
                               f"{_COMMIT_ATTEMPTS} attempts")
        return [AppendResult(source_id, table.num_rows, 0, table.num_rows, True, None) for table, source_id in tables]

    def _version_of(self, app_id: str) -> int | None:
        dt = self.table()
        for entry in dt.history(50):
            if app_id.removeprefix(APP_ID_PREFIX) in str(entry.get("relops.source_id", "")).split(","):
                return int(entry["version"])
        return None

    def _not_in(self, dt: DeltaTable, table: pa.Table) -> pa.Table:
        """Rows of `table` whose identity the snapshot `dt` does not hold on the same days."""
        if table.num_rows == 0 or not dt.get_add_actions(flatten=True).num_rows:
            return table
        days = sorted({d.isoformat() for d in table[PARTITION_COLUMN].to_pylist()})
        con = duckdb.connect()
        try:
            self._link_raw(con, dt, "existing", days)
            con.register("incoming", table)
            on = " AND ".join(f"e.{k} IS NOT DISTINCT FROM i.{k}" for k in self.spec.key)
            kept = con.sql(
                f"SELECT i.* FROM incoming i ANTI JOIN (SELECT {', '.join(self.spec.key)}, {PARTITION_COLUMN} FROM existing) e "
                f"ON {on} AND e.{PARTITION_COLUMN} = i.{PARTITION_COLUMN}"
            ).to_arrow_table()
            return kept.cast(table.schema)
        finally:
            con.close()

    # --- reading -----------------------------------------------------------------------------
    def register(self, con: duckdb.DuckDBPyConnection, view_name: str | None = None,
                 days: Iterable[date | str] | None = None) -> None:
        """Create the temp view `view_name` (default `<table>_store`, e.g. spans_store) on `con`:
        the table's columns (as the warehouse has them, JSON typed), one row per identity; with
        `days`, only those partitions are read. The view reads the table version current now
        (call again to see later commits)."""
        view_name = view_name or f"{self.spec.name}_store"
        dt = self.table()
        wanted = None if days is None else sorted({d if isinstance(d, str) else d.isoformat() for d in days})
        raw = self.raw_view(view_name).strip('"')
        present = self._link_raw(con, dt, raw, wanted)
        cols = self._typed_columns(present)
        key = ", ".join(self.spec.key)
        # Copies of a row are rare (overlapping writers at the same moment, completions), and
        # deduplicating means a window over every row each time the view is read: only the
        # views whose days hold copies do it. Without it, DuckDB streams the Parquet files with
        # the query's filters and columns pushed down.
        copies = bool(present) and self._days_with_copies(con, dt, raw, wanted)
        once = (f" QUALIFY row_number() OVER (PARTITION BY {PARTITION_COLUMN}, {key} ORDER BY {self.spec.keep_order}) = 1"
                if copies else "")
        con.execute(f'CREATE OR REPLACE TEMP VIEW "{view_name}" AS SELECT {cols} FROM "{raw}"{once}')

    def register_added_after(self, con: duckdb.DuckDBPyConnection, view_name: str, version: int,
                             not_by: Iterable[int] = (), days: Iterable[date | str] | None = None) -> bool:
        """Create the temp view `view_name` on `con`: every copy of the rows in the live files
        that the commits after `version`, other than the versions `not_by`, added (only `days`'
        partitions when given): what other writers committed since a writer read the table at
        `version`, `not_by` being its own commits. Columns as `register()` gives them, copies
        not deduplicated. False (and an empty view) when there are none. A compaction since
        counts as a commit that added its files."""
        dt = self.table()
        added = self._paths_at(dt) - self._paths_at(self._at(version))
        for own in set(not_by):
            if own > version:
                added -= self._paths_at(self._at(own)) - self._paths_at(self._at(own - 1))
        wanted = None if days is None else sorted({d if isinstance(d, str) else d.isoformat() for d in days})
        raw = self.raw_view(view_name).strip('"')
        present = self._link_raw(con, dt, raw, wanted, only=added) if added else self._link_raw(con, dt, raw, [])
        con.execute(f'CREATE OR REPLACE TEMP VIEW "{view_name}" AS SELECT {self._typed_columns(present)} FROM "{raw}"')
        return bool(present)

    def _at(self, version: int) -> DeltaTable | None:
        """The table as of `version` (None: before it was created)."""
        if version < 0:
            return None
        return DeltaTable(self.uri, version=version, storage_options=self.storage_options or None)

    @staticmethod
    def _paths_at(dt: DeltaTable | None) -> set[str]:
        """The live files of a table version, as the log names them (relative to the table)."""
        return set() if dt is None else set(pa.table(dt.get_add_actions(flatten=True))["path"].to_pylist())

    def _typed_columns(self, present: set[str]) -> str:
        """SQL: the spec's columns from a raw relation holding `present` (JSON typed; NULL when absent)."""
        json_cols = set(json_columns(self.spec))
        return ", ".join(f'CAST(NULL AS {t}) AS "{n}"' if n not in present
                         else f'CAST("{n}" AS JSON) AS "{n}"' if n in json_cols else f'"{n}"' for n, t in self.spec.columns)

    def raw_view(self, view_name: str | None = None) -> str:
        """The quoted name of what the view `register()` created reads: every copy of each row."""
        return f'"{view_name or self.spec.name + "_store"}__delta"'

    def unregister(self, con: duckdb.DuckDBPyConnection, view_name: str | None = None) -> None:
        """Drop the view `register()` created (and what it reads)."""
        view_name = view_name or f"{self.spec.name}_store"
        _drop_temp(con, view_name)
        _drop_temp(con, f"{view_name}__delta")

    def _link_raw(self, con: duckdb.DuckDBPyConnection, dt: DeltaTable, raw: str, days: list[str] | None,
                  only: set[str] | None = None) -> set[str]:
        """Make `raw` on `con` read the table's current files (only `days`' partitions when
        given; only the files `only` names, as the log does, when given) and return the columns
        they hold (empty: nothing to read).

        A local table is read by DuckDB's own Parquet reader: it runs within the connection's
        memory_limit, in parallel, with filters and columns pushed into the row groups (1M spans
        through trace_features: 11 s and 0.66 GB against 16 s and 1.8 GB through an Arrow
        dataset, whose scan DuckDB's limit does not bound). delta-rs resolves the snapshot (which
        files are live), so this holds while the table uses no reader feature that changes what
        a file's rows mean (deletion vectors, column mapping); then, and for object stores
        (DuckDB's httpfs extension is not installable offline), the Arrow dataset reads it."""
        pruning = None if days is None else [(PARTITION_COLUMN, "in", days)]
        _drop_temp(con, raw)
        if days == []:
            con.register(raw, self.schema.empty_table())
            return set()
        features = set(dt.protocol().reader_features or ())
        if self.is_local and features <= _PLAIN_READER_FEATURES:
            files = dt.file_uris(file_pruning_predicate=pruning)
            if only is not None:
                files = [f for f in files if _names_one_of(f, only)]
            if not files:
                con.register(raw, self.schema.empty_table())
                return set()
            con.execute(f'CREATE OR REPLACE TEMP VIEW "{raw}" AS {_parquet_scan(files)}')
        else:
            dataset = dt.to_pyarrow_dataset(file_pruning_predicate=pruning)
            if only is not None:
                fragments = [f for f in dataset.get_fragments() if _names_one_of(f.path, only)]
                if not fragments:
                    con.register(raw, self.schema.empty_table())
                    return set()
                dataset = pads.FileSystemDataset(fragments, dataset.schema, dataset.format, dataset.filesystem)
            con.register(raw, dataset)
        return {r[0] for r in con.execute(f'DESCRIBE "{raw}"').fetchall()}

    def _days_with_copies(self, con: duckdb.DuckDBPyConnection, dt: DeltaTable, raw: str, days: list[str] | None) -> list[str]:
        """The days (among `days`, default all) whose partition holds an identity more than once.

        Found by a scan of the key columns, about 0.2 s per million spans. For a local table the
        answer is kept per day in `<table>/_relops_copies.json` (Delta ignores paths starting
        with "_"), with a digest of the day's live files: a connection rescans only the days
        whose files changed since, so opening a store of many days after an ingestion costs what
        the ingestion touched, not the whole history. A store that cannot be written keeps
        working, uncached."""
        files: dict[str, list[str]] = {}
        for action in pa.table(dt.get_add_actions(flatten=True)).select(["path", f"partition.{PARTITION_COLUMN}"]).to_pylist():
            files.setdefault(str(action[f"partition.{PARTITION_COLUMN}"]), []).append(action["path"])
        wanted = sorted(files if days is None else set(days) & set(files))
        if not self.is_local:
            return sorted(d for d, n in self._count_copies(con, f'SELECT * FROM "{raw}"', wanted).items() if n)
        digests = {d: hashlib.sha256("\n".join(sorted(files[d])).encode()).hexdigest() for d in wanted}
        cache_file = Path(self.uri.removeprefix("file://")) / _COPIES_CACHE
        try:
            cache = json.loads(cache_file.read_text())
            cache = cache if isinstance(cache, dict) else {}
        except (OSError, ValueError):
            cache = {}
        stale = [d for d in wanted if not isinstance(cache.get(d), dict) or cache[d].get("files") != digests[d]]
        if stale:
            found = self._count_copies(con, _parquet_scan([f"{cache_file.parent}/{p}" for d in stale for p in files[d]]), stale)
            cache.update({d: {"files": digests[d], "copies": int(found.get(d, 0))} for d in stale})
            # Written whole and renamed over: concurrent readers never see half a file, and two
            # connections updating it at once write the same answers for the same files.
            tmp = cache_file.with_name(f".{_COPIES_CACHE}.{os.getpid()}.{uuid.uuid4().hex}")
            try:
                tmp.write_text(json.dumps(cache, sort_keys=True))
                os.replace(tmp, cache_file)
            except OSError:
                tmp.unlink(missing_ok=True)
        return [d for d in wanted if cache[d]["copies"]]

    def _count_copies(self, con: duckdb.DuckDBPyConnection, rows: str, days: list[str]) -> dict[str, int]:
        """Per day of `days` in the relation `rows` (a view's name or a query): its rows less its
        distinct identities."""
        key = ", ".join(self.spec.key)
        return dict(con.execute(
            f'SELECT CAST({PARTITION_COLUMN} AS VARCHAR), count(*) - count(DISTINCT ({key})) FROM ({rows}) '
            f"WHERE {PARTITION_COLUMN} IN (SELECT unnest(?::DATE[])) GROUP BY 1", [days]).fetchall())

    def days(self) -> list[date]:
        """The days that have partitions."""
        return sorted({date.fromisoformat(p[PARTITION_COLUMN]) for p in self.table().partitions()})

    # --- migration and upkeep ----------------------------------------------------------------
    def migrate_from_warehouse(self, con: duckdb.DuckDBPyConnection, table: str | None = None) -> MigrationResult:
        """Copy the warehouse's table (the spec's, e.g. `spans`) into the store, one commit per
        day (source id `warehouse:<day>:<count>-<digest of the day's identities>`, so a migration
        interrupted and run again resumes, and a later move of other rows of the same day, after
        the home went back to its warehouse for a while, is a source of its own), then check
        that every warehouse identity is in the store; raises RuntimeError if any is missing.
        The warehouse rows are left in place (dropping them is the caller's step)."""
        table = table or self.spec.name
        day_of = self.spec.day_sql()
        day_rows = con.execute(f"SELECT {day_of} AS d, count(*), bit_xor(hash({', '.join(self.spec.key)})) "
                               f"FROM {table} GROUP BY d ORDER BY d").fetchall()
        total = sum(n for _, n, _ in day_rows)
        appended = already = 0
        try:
            for day, n, digest in day_rows:
                # Streamed from the warehouse by DuckDB (its memory limit holds), the day's rows
                # named as one source by the extra column.
                con.execute(
                    f"CREATE OR REPLACE TEMP VIEW tracestore_migrating AS SELECT *, '{day.isoformat()}' AS {_MIGRATION_SOURCE} "
                    f"FROM {table} WHERE {day_of} = DATE '{day.isoformat()}'")
                result = self.append_from(con, "tracestore_migrating", [(day.isoformat(), f"warehouse:{day}:{n}-{digest:x}")],
                                          source_column=_MIGRATION_SOURCE)[0]
                appended += result.appended
                already += result.duplicates
        finally:
            _drop_temp(con, "tracestore_migrating")
        self.register(con, "tracestore_migration_check")
        try:
            # IS NOT DISTINCT FROM: a reject's source_line may be NULL (a whole file refused).
            on = " AND ".join(f"s.{k} IS NOT DISTINCT FROM w.{k}" for k in self.spec.key)
            missing = con.execute(f"SELECT count(*) FROM {table} w ANTI JOIN tracestore_migration_check s ON {on}").fetchall()[0]
            stored = con.execute("SELECT count(*) FROM tracestore_migration_check").fetchall()[0]
        finally:
            self.unregister(con, "tracestore_migration_check")
        if missing[0]:
            raise RuntimeError(f"migration to {self.uri}: {missing[0]} of {total} warehouse {table} rows not in the store")
        return MigrationResult(total, appended, already, int(stored[0]))

    def compact(self, days: Sequence[date | str] | None = None) -> int:
        """Rewrite each day's partition that holds extra copies of a span with one row per span
        identity (the copy the view keeps), in fewer files; a day without copies is left alone.
        Appends committed meanwhile keep their files (the rewrite removes only the files it read);
        a commit that conflicts (another compaction of the day) is retried on a fresh snapshot.
        Returns the number of extra copies removed."""
        removed = 0
        wanted = [d if isinstance(d, str) else d.isoformat() for d in (days if days is not None else self.days())]
        for day in wanted:
            for _ in range(_COMMIT_ATTEMPTS):
                dt = self.table()
                dataset = dt.to_pyarrow_dataset(file_pruning_predicate=[(PARTITION_COLUMN, "=", day)])
                con = duckdb.connect()
                try:
                    con.register("part", dataset)
                    before, after = con.execute(
                        f"SELECT count(*), count(DISTINCT ({', '.join(self.spec.key)})) FROM part").fetchall()[0]
                    if before == after:
                        break  # nothing to remove: leave the day's files as they are
                    # Streamed to the writer batch by batch (the day is not held as one table).
                    kept = con.sql(
                        f"SELECT {', '.join(self.schema.names)} FROM part "
                        f"QUALIFY row_number() OVER (PARTITION BY {', '.join(self.spec.key)} ORDER BY {self.spec.keep_order}) = 1"
                    ).to_arrow_reader(65_536).cast(self.schema)
                    write_deltalake(
                        dt, kept, mode="overwrite", predicate=f"{PARTITION_COLUMN} = '{day}'",
                        partition_by=[PARTITION_COLUMN], storage_options=self.storage_options or None,
                        writer_properties=_writer_properties(),
                        commit_properties=CommitProperties(custom_metadata={_COMPACTION_KEY: day}),
                    )
                except CommitFailedError:
                    continue
                finally:
                    con.close()
                removed += before - after
                break
            else:
                raise RuntimeError(f"trace store {self.uri}: compaction of {day} kept conflicting")
        return removed

    def vacuum(self, retention_hours: int = 168) -> list[str]:
        """Delete data files older than `retention_hours` that no version references: a crashed
        writer's orphans, a compaction's replaced files (full vacuum: files the log never named
        too). The age is the file's, so a running writer's new files are safe with any retention
        longer than a commit takes; 0 is safe only when no reader or writer runs."""
        return self.table().vacuum(retention_hours=retention_hours, enforce_retention_duration=False, dry_run=False, full=True)
