"""`relops serve`: a durable OTLP/HTTP receiver and a read-only view of the reports (pure logic,
no Dagster).

- payload.py: OTLP/HTTP bodies (protobuf or JSON, gzip) converted to one OTLP JSON line with
  hex ids (protobuf written straight to JSON text, as MessageToDict would have it), spans
  without ids rejected (partial success), the workflow pinned by a per-workflow key; the
  Export*ServiceResponse and error bodies.
- spool.py: the landing area's `received/<day>/` folder: every acknowledged request is a
  complete line of a `*.otlp.json` file (group commit: the requests waiting share one temp file,
  fsync, rename, directory fsync), the un-ingested bytes (back-pressure) and the counters' state
  file.
- server.py: the HTTP server (routes, auth, limits, status codes) and the conversion worker
  processes.
- web.py: the read-only routes a browser opens: report files under `<home>/reports/` and the
  release pages (lib/release_page), safe paths, content types, security headers, workflow pins.
"""
