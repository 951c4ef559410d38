"""Import Inspect AI logs as eval runs (`--format inspect`).

Inspect AI logs (`.json`, or `.eval` zip archives read with zipfile + json)
---------------------------------------------------------------------------
- `.eval` members: stored or deflate (zipfile), or zstd (method 93, what Inspect 0.3.2xx writes;
  read with `zstandard`, streaming). Every member is read in chunks and the archive's
  decompressed total is held to the eval import limit (`limits.MAX_EVAL_IMPORT_BYTES`); the CRC
  of each member is checked. Another compression method or an encrypted member is refused as
  bad input, naming the member and the method.
- Case id: the sample id (kept when it is a valid case id, else slug + hash). `epoch` (1-based)
  -> sample `epoch - 1`.
- Scores: one metric per scorer (the key of `sample.scores`); a dict value gives one metric per
  key, named `<scorer>.<key>`. Values: "C" = 1 (passed), "I" = 0, "P" = 0.5 (partial: not
  passed), "N" = 0 (no answer); "yes"/"true" = 1, "no"/"false" = 0; booleans 1/0; numbers and
  numeric strings as they are (passed when >= 0.5, clamped to [0, 1]). A value that cannot be
  mapped (None, lists, other strings) is left out and counted in the notes. Inspect's epoch
  reductions are not imported: relops computes its own statistics over samples.
- Output: `output.completion`, else the text of `output.choices[0].message.content`.
- Tokens: the model calls made outside scorers (model events), so a model-graded scorer's
  grader calls are not billed to the release; without events `output.usage`, then
  `model_usage`. Latency: `total_time` minus time spent inside scorers, else `output.time`
  (one generate call) — all seconds, converted to ms. Cost: `total_cost` of the usage if any.
- Error: `sample.error` (message). `sample.metadata.must_pass` (true in any epoch) -> must_pass.
- A log with no samples (e.g. written with `--no-log-samples`) is refused.
"""

from __future__ import annotations

import io
import json
import math
import struct
import zipfile
import zlib
from datetime import datetime
from pathlib import Path
from typing import Any

import zstandard

from relops_pipeline.lib.evals.imports.base import (
    PASS_THRESHOLD,
    Built,
    ImportFormatError,
    _Clamp,
    _int_or_none,
    _is_num,
    _load_json,
    _num_or_none,
    _safe_case_id,
    _short,
    _text_of,
)
from relops_pipeline.lib.evals.model import SampleResult, Score
from relops_pipeline.lib.limits import MAX_EVAL_IMPORT_BYTES, MiB

ZIP_ZSTD = 93  # APPNOTE 4.4.5: Zstandard (Python 3.11's zipfile cannot read it)
_ZIPFILE_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate",
                    zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}
_METHOD_NAMES = {**_ZIPFILE_METHODS, ZIP_ZSTD: "zstd", 9: "deflate64", 12: "bzip2", 98: "ppmd",
                 99: "AES-encrypted"}
_CHUNK = 1 * MiB
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")


class _Bounded(io.RawIOBase):
    """At most `n` bytes of `fh` from where it stands (one member's compressed data)."""

    def __init__(self, fh: Any, n: int):
        self._fh, self._left = fh, n

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._left <= 0:
            return 0
        data = self._fh.read(min(len(b), self._left))
        self._left -= len(data)
        b[: len(data)] = data
        return len(data)


class _MemberReader:
    """Reads the members of one .eval archive, streaming, under one decompressed-size budget."""

    def __init__(self, path: Path, z: zipfile.ZipFile, budget: int | None = None):
        self.budget = MAX_EVAL_IMPORT_BYTES if budget is None else budget
        self.path, self.z, self.left = path, z, self.budget

    def _chunks(self, info: zipfile.ZipInfo) -> Any:
        method = info.compress_type
        if info.flag_bits & 0x1:
            raise ImportFormatError(self.path, f"{info.filename} inside the archive is encrypted: cannot read it")
        if method in _ZIPFILE_METHODS:
            with self.z.open(info) as fh:  # zipfile checks the CRC at the end
                while chunk := fh.read(_CHUNK):
                    yield chunk
            return
        if method != ZIP_ZSTD:
            name = _METHOD_NAMES.get(method, "unknown")
            raise ImportFormatError(
                self.path, f"{info.filename} inside the archive uses compression method {method} ({name}), "
                           f"which relops cannot read; supported: stored, deflate, bzip2, lzma, zstd (93)")
        with self.path.open("rb") as raw:
            raw.seek(info.header_offset)
            head = raw.read(_LOCAL_HEADER.size)
            if len(head) != _LOCAL_HEADER.size or head[:4] != b"PK\x03\x04":
                raise ImportFormatError(self.path, f"{info.filename}: bad local file header in the archive")
            fields = _LOCAL_HEADER.unpack(head)
            raw.seek(fields[10] + fields[11], io.SEEK_CUR)  # file name, extra field
            src = io.BufferedReader(_Bounded(raw, info.compress_size), _CHUNK)
            crc = 0
            reader = zstandard.ZstdDecompressor().stream_reader(src, read_size=_CHUNK, read_across_frames=True)
            with reader:
                while chunk := reader.read(_CHUNK):
                    crc = zlib.crc32(chunk, crc)
                    yield chunk
            if crc != info.CRC:
                raise ImportFormatError(self.path, f"{info.filename} inside the archive fails its CRC check "
                                                   "(truncated or corrupt)")

    def read_bytes(self, name: str) -> bytes:
        try:
            info = self.z.getinfo(name)
        except KeyError:
            raise ImportFormatError(self.path, f"{name} is not in the archive") from None
        buf = bytearray()
        try:
            for chunk in self._chunks(info):
                self.left -= len(chunk)
                if self.left < 0:
                    raise ImportFormatError(
                        self.path, f"the .eval archive decompresses to more than the limit of "
                                   f"{self.budget / MiB:.0f} MiB (at {name}): split the log, or import the "
                                   "part that matters")
                buf += chunk
        except (zlib.error, zstandard.ZstdError, zipfile.BadZipFile, EOFError, OSError) as exc:
            raise ImportFormatError(self.path, f"{name} inside the archive cannot be decompressed: "
                                               f"{type(exc).__name__}: {exc}") from None
        return bytes(buf)


def looks_like(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("eval"), dict) and (
        "samples" in doc or "results" in doc or "status" in doc)


def _inspect_load(path: Path) -> tuple[dict[str, Any], list[Any], list[str]]:
    notes: list[str] = []
    with path.open("rb") as fh:
        is_zip = fh.read(4) == b"PK\x03\x04"
    if not is_zip:
        doc = _load_json(path, "Inspect log")
        if not isinstance(doc, dict) or not isinstance(doc.get("eval"), dict):
            raise ImportFormatError(path, "not an Inspect log: no 'eval' object")
        samples = doc.get("samples")
        return doc, samples if isinstance(samples, list) else [], notes
    try:
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ImportFormatError(path, f"not a readable .eval (zip) archive: {exc}") from None
    with z:
        names = z.namelist()
        members = _MemberReader(path, z)

        def read(name: str) -> Any:
            data = members.read_bytes(name)
            try:
                return json.loads(data)
            except ValueError as exc:
                raise ImportFormatError(path, f"{name} inside the archive is not readable JSON: {exc}") from None

        if "header.json" in names:
            header = read("header.json")
        elif "_journal/start.json" in names:
            header = read("_journal/start.json")
            notes.append("no header.json in the .eval archive (run unfinished?): read _journal/start.json")
        else:
            raise ImportFormatError(path, "not an Inspect .eval log: no header.json or _journal/start.json")
        if not isinstance(header, dict) or not isinstance(header.get("eval"), dict):
            raise ImportFormatError(path, "not an Inspect .eval log: the header has no 'eval' object")
        sample_files = sorted(n for n in names if n.startswith("samples/") and n.endswith(".json"))
        samples = [read(n) for n in sample_files]
    return header, samples, notes


def _inspect_value(v: Any) -> tuple[float, bool] | None:
    if isinstance(v, bool):
        return (1.0 if v else 0.0), v
    if _is_num(v):
        return float(v), v >= PASS_THRESHOLD
    if isinstance(v, str):
        s = v.strip()
        letter = {"C": (1.0, True), "I": (0.0, False), "P": (0.5, False), "N": (0.0, False)}
        if s in letter:
            return letter[s]
        if s.lower() in ("yes", "true"):
            return 1.0, True
        if s.lower() in ("no", "false"):
            return 0.0, False
        try:
            f = float(s)
        except ValueError:
            return None
        if math.isfinite(f):
            return f, f >= PASS_THRESHOLD
    return None


def _parse_ts(s: Any) -> datetime | None:
    if not isinstance(s, str):
        return None
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None


def _inspect_events(sample: dict[str, Any]) -> list[dict[str, Any]]:
    ev = sample.get("events")
    if not isinstance(ev, list):
        tr = sample.get("transcript")
        ev = tr.get("events") if isinstance(tr, dict) else None
    return [e for e in ev or [] if isinstance(e, dict)]


def _inspect_solver_usage(events: list[dict[str, Any]]) -> tuple[dict[str, float] | None, float]:
    """Token usage of model calls outside scorers, and seconds spent inside scorers."""
    # keyed by span id; looked up with the raw ids of events
    parent: dict[Any, str | None] = {}
    kind: dict[Any, str | None] = {}
    begin: dict[str, datetime | None] = {}
    scorer_s = 0.0
    step_depth = 0
    step_begin: list[datetime | None] = []
    usage: dict[str, float] | None = None

    def in_scorer(span: Any) -> bool:
        seen = set()
        while isinstance(span, str) and span not in seen:
            seen.add(span)
            if kind.get(span) == "scorer":
                return True
            span = parent.get(span)
        return False

    for e in events:
        et = e.get("event")
        if et == "span_begin" and isinstance(e.get("id"), str):
            parent[e["id"]] = e.get("parent_id")
            kind[e["id"]] = e.get("type")
            begin[e["id"]] = _parse_ts(e.get("timestamp"))
        elif et == "span_end" and kind.get(e.get("id")) == "scorer" and not in_scorer(parent.get(e.get("id"))):
            t0, t1 = begin.get(e["id"]), _parse_ts(e.get("timestamp"))
            if t0 and t1:
                scorer_s += (t1 - t0).total_seconds()
        elif et == "step" and e.get("type") == "scorer":
            if e.get("action") == "begin":
                step_depth += 1
                step_begin.append(_parse_ts(e.get("timestamp")))
            elif e.get("action") == "end" and step_depth:
                step_depth -= 1
                t0, t1 = step_begin.pop(), _parse_ts(e.get("timestamp"))
                if t0 and t1 and not step_depth:
                    scorer_s += (t1 - t0).total_seconds()
        elif et == "model":
            if step_depth or in_scorer(e.get("span_id")):
                continue
            u = (e.get("output") or {}).get("usage") if isinstance(e.get("output"), dict) else None
            if isinstance(u, dict):
                usage = usage or {}
                for key in ("input_tokens", "output_tokens", "total_cost"):
                    if _is_num(u.get(key)):
                        usage[key] = usage.get(key, 0) + u[key]
    return usage, scorer_s


def parse(path: Path) -> Built:
    header, raw_samples, notes = _inspect_load(path)
    ev = header["eval"]
    problems: list[str] = []
    if not raw_samples:
        raise ImportFormatError(path, f"the Inspect log has no samples (status {header.get('status')!r}; "
                                      f"logs written with --no-log-samples cannot be imported)")
    seen: dict[tuple[str, int], int] = {}
    rows = []
    for i, s in enumerate(raw_samples):
        where = f"sample #{i + 1}"
        if not isinstance(s, dict):
            problems.append(f"{where}: expected an object")
            continue
        sid = s.get("id")
        if sid is None or (isinstance(sid, str) and not sid) or not isinstance(sid, (str, int)) or isinstance(sid, bool):
            problems.append(f"{where}: missing or invalid id {sid!r}")
            continue
        epoch = s.get("epoch", 1)
        if _int_or_none(epoch) is None or epoch < 1:
            problems.append(f"{where} (id {sid!r}): invalid epoch {epoch!r}")
            continue
        cid = _safe_case_id(sid)
        key = (cid, int(epoch) - 1)
        if key in seen:
            problems.append(f"{where}: id {sid!r} epoch {epoch} appears twice")
            continue
        seen[key] = i
        rows.append((key, s))
    if problems:
        raise ImportFormatError(path, "malformed Inspect samples", problems)

    def sort_key(item):
        (cid, k), s = item
        sid = s["id"]
        return (0, sid, "", k) if isinstance(sid, int) else (1, 0, str(sid), k)

    rows.sort(key=sort_key)
    model = ev.get("model") if isinstance(ev.get("model"), str) else None
    clamp = _Clamp()
    unmapped = 0
    samples: list[SampleResult] = []
    scores: dict[tuple[str, int], list[Score]] = {}
    must_pass: dict[str, bool] = {}
    case_ids: list[str] = []
    all_metrics: list[str] = []
    latency_sources: dict[str, int] = {}
    for (cid, k), s in rows:
        if cid not in must_pass:
            case_ids.append(cid)
        mp = s["metadata"].get("must_pass") if isinstance(s.get("metadata"), dict) else None
        must_pass[cid] = must_pass.get(cid, False) or mp is True
        out = got if isinstance(got := s.get("output"), dict) else {}
        text = out.get("completion") if isinstance(out.get("completion"), str) and out.get("completion") else None
        if text is None:
            choices = out.get("choices")
            if isinstance(choices, list) and choices and isinstance(choices[0], dict):
                msg = choices[0].get("message")
                text = _text_of(msg.get("content")) if isinstance(msg, dict) else None
        err = s.get("error")
        if isinstance(err, dict):
            err = err.get("message") or json.dumps(err, default=str)
        error = str(err) if err else None

        usage, scorer_s = _inspect_solver_usage(_inspect_events(s))
        if usage is None and isinstance(out.get("usage"), dict):
            usage = out["usage"]
        if usage is None and isinstance(s.get("model_usage"), dict):
            mu = s["model_usage"]
            usage = mu.get(model) if isinstance(mu.get(model), dict) else None
        usage = usage or {}
        if _is_num(s.get("total_time")):
            latency, src = max(0.0, float(s["total_time"]) - scorer_s) * 1000.0, "total_time"
        elif _is_num(out.get("time")):
            latency, src = float(out["time"]) * 1000.0, "output.time"
        else:
            latency, src = None, "none"
        latency_sources[src] = latency_sources.get(src, 0) + 1

        samples.append(SampleResult(
            case_id=cid, sample=k, output=text, error=error, latency_ms=latency,
            input_tokens=_int_or_none(usage.get("input_tokens")),
            output_tokens=_int_or_none(usage.get("output_tokens")),
            cost_usd=_num_or_none(usage.get("total_cost")),
            raw={"format": "inspect", "id": s.get("id"), "epoch": s.get("epoch"), "uuid": s.get("uuid"),
                 "input": s.get("input"), "target": s.get("target"), "latency_source": src},
        ))
        sc: list[Score] = []
        raw_scores = s.get("scores")
        if not isinstance(raw_scores, dict) and isinstance(s.get("score"), dict):  # logs before scores{}
            raw_scores = {"score": s["score"]}
        for scorer, obj in (raw_scores or {}).items():
            obj = obj if isinstance(obj, dict) else {"value": obj}
            value = obj.get("value")
            expl = obj.get("explanation")
            items = value.items() if isinstance(value, dict) else [(None, value)]
            for sub, v in items:
                metric = str(scorer) if sub is None else f"{scorer}.{sub}"
                mapped = _inspect_value(v)
                if mapped is None:
                    unmapped += 1
                    continue
                val, passed = mapped
                detail = f"inspect value {v!r}" + (f": {_short(expl, 160)}" if isinstance(expl, str) and expl else "")
                sc.append(Score(metric, clamp(val), passed, detail))
                if metric not in all_metrics:
                    all_metrics.append(metric)
        scores[(cid, k)] = sc

    epochs = sorted({k + 1 for (_, k), _ in rows})
    ds = got if isinstance(got := ev.get("dataset"), dict) else {}
    meta = [f"Inspect log (version {header.get('version')}, status {header.get('status')})",
            f"task {ev.get('task')}" + (f" v{ev.get('task_version')}" if ev.get("task_version") is not None else ""),
            f"model {model}"]
    rev = ev.get("revision")
    if isinstance(rev, dict) and rev.get("commit"):
        meta.append(f"revision {rev['commit']}")
    if ev.get("run_id"):
        meta.append(f"run {ev['run_id']}")
    notes.append(", ".join(meta))
    notes.append(f"{len(case_ids)} sample ids x epochs {epochs}; latency from "
                 + ", ".join(f"{v} {k}" for k, v in sorted(latency_sources.items())))
    if header.get("status") not in ("success", None):
        notes.append(f"the log's status is {header.get('status')!r}: imported the samples it holds")
    if isinstance(ds.get("sample_ids"), list) and len(ds["sample_ids"]) > len(case_ids):
        notes.append(f"{len(ds['sample_ids']) - len(case_ids)} of the run's {len(ds['sample_ids'])} dataset "
                     f"sample(s) have no sample in the log")
    if unmapped:
        notes.append(f"{unmapped} score value(s) could not be mapped to [0, 1] and were left out")
    if clamp.count:
        notes.append(f"{clamp.count} score value(s) outside [0, 1] clamped")
    expected = {cid: list(all_metrics) for cid in case_ids}
    inputs = {cid: {"input": s.get("input"), "target": s.get("target")} for (cid, _), s in rows}
    return Built(samples, scores, must_pass, case_ids, expected, notes, inputs)
