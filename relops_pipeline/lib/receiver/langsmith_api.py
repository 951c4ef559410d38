"""The LangSmith ingestion API as the SDK speaks it: pure functions, no server.

A server routes each request here and spools what comes back as one JSON document
`{"post": [run, ...], "patch": [run, ...]}` (`spool_document`), which the `langsmith` reader
ingests (posts and patches of one run may arrive in different requests: the reader merges them
across files). What the SDK (langsmith-py 0.15) sends:

- `GET /info` -> `info_document()`: the SDK reads `version`, `batch_ingest_config`
  (`use_multipart_endpoint`, `size_limit`, `size_limit_bytes`, `scale_up_*`, `scale_down_*`)
  and `instance_flags` (`zstd_compression_enabled`, ...). With `use_multipart_endpoint` it
  sends `POST /runs/multipart`; otherwise `POST /runs/batch`.
- `POST /runs/multipart`: multipart/form-data, zstd-compressed (`Content-Encoding: zstd`)
  after the first request when `zstandard` is importable. Parts: `post.<run_id>` /
  `patch.<run_id>` (the run's JSON without its big fields), `post.<run_id>.inputs`,
  `.outputs`, `.events`, `.extra`, `.error`, `.serialized` (fields of that run), and
  `attachment.<run_id>.<name>` (files: recorded by name, type and size, content not kept).
- `POST /runs/batch`: JSON `{"post": [...], "patch": [...]}`.
- `POST /runs`: one run (a post). `PATCH /runs/{run_id}`: the update of one run.

Every function raises `LangSmithRequestError` (with the HTTP status a server should answer)
for a body it cannot read; nothing it can read is dropped.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from typing import Any

DEFAULT_MAX_DECODED_BYTES = 256 << 20
RUN_FIELDS = ("inputs", "outputs", "events", "extra", "error", "serialized")
# What the parsers return: {"post": [run, ...], "patch": [run, ...]} (+ "attachments" for multipart).
Runs = dict[str, list[dict[str, Any]]]
_RUN_PATH = re.compile(r"^/runs/([0-9A-Za-z-]+)/?$")


class LangSmithRequestError(ValueError):
    """A request body that cannot be read; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def info_document(version: str = "0.10.0", *, size_limit_bytes: int = 20 << 20, multipart: bool = True) -> dict[str, Any]:
    """The `GET /info` answer: what the SDK reads to decide how to send (see module docstring)."""
    return {
        "version": version,
        "license_expiration_time": None,
        "batch_ingest_config": {
            "use_multipart_endpoint": multipart,
            "scale_up_qsize_trigger": 1000,
            "scale_up_nthreads_limit": 16,
            "scale_down_nempty_trigger": 4,
            "size_limit": 100,
            "size_limit_bytes": size_limit_bytes,
        },
        "instance_flags": {"zstd_compression_enabled": True},
    }


def decode_body(body: bytes, content_encoding: str | None = None, *, max_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> bytes:
    """The body without its Content-Encoding (zstd, gzip, deflate, identity); at most max_bytes
    once decoded (413 past it)."""
    encodings = [e.strip().lower() for e in (content_encoding or "").split(",") if e.strip()]
    for enc in reversed(encodings):
        if enc == "identity":
            continue
        try:
            if enc == "zstd":
                import zstandard

                body = zstandard.ZstdDecompressor().decompressobj().decompress(body) if body else b""
            elif enc in ("gzip", "x-gzip"):
                body = gzip.decompress(body)
            elif enc == "deflate":
                body = zlib.decompress(body)
            else:
                raise LangSmithRequestError(f"unsupported Content-Encoding {enc!r}", status=415)
        except LangSmithRequestError:
            raise
        except Exception as exc:
            raise LangSmithRequestError(f"body is not valid {enc}: {exc}") from None
        if len(body) > max_bytes:
            raise LangSmithRequestError(f"decoded body larger than {max_bytes} bytes", status=413)
    return body


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LangSmithRequestError(f"{what} is not JSON: {exc}") from None


def _boundary(content_type: str) -> bytes:
    m = re.search(r'boundary="?([^";]+)"?', content_type or "")
    if not content_type.lower().startswith("multipart/") or not m:
        raise LangSmithRequestError(f"not a multipart body with a boundary: {content_type!r}", status=415)
    return m.group(1).encode()


def _part_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.decode("latin-1").split("\r\n"):
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return headers


def _parts(body: bytes, boundary: bytes) -> list[tuple[dict[str, str], bytes]]:
    delimiter = b"--" + boundary
    out = []
    chunks = body.split(delimiter)
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # closing delimiter
        if chunk.startswith(b"\r\n"):
            chunk = chunk[2:]
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise LangSmithRequestError("multipart part without a header/body separator")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        out.append((_part_headers(head), content))
    if len(chunks) < 2:
        raise LangSmithRequestError("multipart body without its boundary")
    return out


def _part_name(headers: dict[str, str]) -> str:
    m = re.search(r'name="([^"]*)"', headers.get("content-disposition", ""))
    if not m:
        raise LangSmithRequestError("multipart part without a name")
    return m.group(1)


def parse_multipart(
    body: bytes,
    content_type: str,
    content_encoding: str | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> Runs:
    """A `POST /runs/multipart` body -> `{"post": [...], "patch": [...], "attachments": [...]}`.

    Each run is its `post.<id>` / `patch.<id>` JSON with its field parts (`.inputs`, `.outputs`,
    `.events`, `.extra`, `.error`, `.serialized`) put back as keys; runs keep the order of their
    first part. Attachments are listed as `{run_id, name, content_type, bytes}`.
    """
    data = decode_body(body, content_encoding, max_bytes=max_bytes)
    runs: dict[tuple[str, str], dict[str, Any]] = {}
    attachments: list[dict[str, Any]] = []
    for headers, content in _parts(data, _boundary(content_type)):
        name = _part_name(headers)
        kind, _, rest = name.partition(".")
        if kind == "attachment":
            run_id, _, att = rest.partition(".")
            attachments.append({"run_id": run_id, "name": att, "content_type": headers.get("content-type"), "bytes": len(content)})
            continue
        if kind not in ("post", "patch") or not rest:
            raise LangSmithRequestError(f"unknown multipart part {name!r}")
        run_id, field = rest, None
        for f in RUN_FIELDS:
            if rest.endswith("." + f):
                run_id, field = rest[: -len(f) - 1], f
                break
        run = runs.setdefault((kind, run_id), {})
        value = _json(content, f"part {name!r}")
        if field is None:
            if not isinstance(value, dict):
                raise LangSmithRequestError(f"part {name!r} is not a JSON object")
            run.update({k: v for k, v in value.items() if k not in run})
            run.setdefault("id", run_id)
        else:
            run[field] = value
    out: dict[str, list[dict[str, Any]]] = {"post": [], "patch": []}
    for (kind, run_id), run in runs.items():
        run.setdefault("id", run_id)
        out[kind].append(run)
    if attachments:
        out["attachments"] = attachments
    return out


def _batch_of(doc: Any) -> Runs:
    if not isinstance(doc, dict):
        raise LangSmithRequestError("batch body is not a JSON object")
    out: dict[str, list[dict[str, Any]]] = {"post": [], "patch": []}
    for kind in ("post", "patch"):
        runs = doc.get(kind) or []
        if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
            raise LangSmithRequestError(f"batch '{kind}' is not a list of run objects")
        out[kind] = list(runs)
    return out


def parse_batch(body: bytes, content_encoding: str | None = None, *, max_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> Runs:
    """A `POST /runs/batch` body -> `{"post": [...], "patch": [...]}`."""
    return _batch_of(_json(decode_body(body, content_encoding, max_bytes=max_bytes), "batch body"))


def parse_create_run(body: bytes, content_encoding: str | None = None, *, max_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> Runs:
    """A `POST /runs` body (one run) -> `{"post": [run], "patch": []}`."""
    run = _json(decode_body(body, content_encoding, max_bytes=max_bytes), "run body")
    if not isinstance(run, dict):
        raise LangSmithRequestError("run body is not a JSON object")
    return {"post": [run], "patch": []}


def parse_update_run(
    run_id: str, body: bytes, content_encoding: str | None = None, *, max_bytes: int = DEFAULT_MAX_DECODED_BYTES
) -> Runs:
    """A `PATCH /runs/{run_id}` body -> `{"post": [], "patch": [run]}` (the id from the path)."""
    run = _json(decode_body(body, content_encoding, max_bytes=max_bytes), "run update body")
    if not isinstance(run, dict):
        raise LangSmithRequestError("run update body is not a JSON object")
    return {"post": [], "patch": [{**run, "id": run.get("id") or run_id}]}


def parse_request(
    method: str, path: str, headers: dict[str, str], body: bytes, *, max_bytes: int = DEFAULT_MAX_DECODED_BYTES
) -> Runs | None:
    """Route one request: its runs as `{"post", "patch"[, "attachments"]}`, or None for a
    request that carries no runs (`GET /info`: answer `info_document()`). A path prefix before
    `/runs` or `/info` (e.g. `/api/v1`) is allowed. Header names are matched case-insensitively.
    Raises LangSmithRequestError (status 404 for an unknown route)."""
    h = {k.lower(): v for k, v in headers.items()}
    enc = h.get("content-encoding")
    route = path.split("?", 1)[0].rstrip("/") or "/"
    i = route.find("/runs")
    route = route[i:] if i >= 0 else route
    method = method.upper()
    if method == "GET" and route.endswith("/info"):
        return None
    if method == "POST" and route == "/runs/multipart":
        return parse_multipart(body, h.get("content-type", ""), enc, max_bytes=max_bytes)
    if method == "POST" and route == "/runs/batch":
        return parse_batch(body, enc, max_bytes=max_bytes)
    if method == "POST" and route == "/runs":
        return parse_create_run(body, enc, max_bytes=max_bytes)
    m = _RUN_PATH.match(route)
    if method == "PATCH" and m:
        return parse_update_run(m.group(1), body, enc, max_bytes=max_bytes)
    raise LangSmithRequestError(f"no LangSmith route {method} {path}", status=404)


def spool_document(runs: Runs) -> bytes:
    """The JSON document a server spools for the `langsmith` reader: `post` first (the reader's
    sniffer looks for it), then `patch`, then `attachments` when any (metadata only)."""
    doc: dict[str, Any] = {"post": runs.get("post") or [], "patch": runs.get("patch") or []}
    if runs.get("attachments"):
        doc["attachments"] = runs["attachments"]
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str).encode()


__all__ = [
    "LangSmithRequestError",
    "Runs",
    "decode_body",
    "info_document",
    "parse_batch",
    "parse_create_run",
    "parse_multipart",
    "parse_request",
    "parse_update_run",
    "spool_document",
]
