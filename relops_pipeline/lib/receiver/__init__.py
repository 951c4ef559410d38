"""`relops serve`: a durable OTLP/HTTP receiver (pure logic, no Dagster).

- payload.py: OTLP/HTTP bodies (protobuf or JSON, gzip) decoded to OTLP JSON with hex ids,
  spans without ids rejected (partial success), the workflow pinned by a per-workflow key;
  the Export*ServiceResponse and error bodies.
- spool.py: the landing area's `received/<day>/` folder: every acknowledged request is one
  complete `*.otlp.json` file (temp file, fsync, rename, directory fsync), the un-ingested bytes
  (back-pressure) and the counters' state file.
- server.py: the HTTP server (routes, auth, limits, status codes).
"""
