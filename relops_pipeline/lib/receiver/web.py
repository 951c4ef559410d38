"""What `relops serve` shows a browser, read-only: the report files under `<home>/reports/`
(`GET /reports/<path>`, an index at `/reports/`) and the release pages (`/releases/`,
`/releases/<workflow>/<version>`, lib/release_page). The HTTP handling is in server.py; this
module answers a (path, key's workflow pin) with a `Page` and knows nothing of sockets.

Safety: a report path is decoded once and refused (404) when a segment is empty, `.`, `..`,
hidden (starts with a dot: temporary files of atomic writes) or holds a backslash or NUL; the
file is then resolved (symlinks followed) and must still be inside the reports folder. Every
answer carries `X-Content-Type-Options: nosniff`, no caching and a restrictive
Content-Security-Policy: no script, no connection, no form, no framing — except Evidently's
drift dashboards (`drift/<workflow>/*.html`), self-contained pages that need their own inline
scripts: those may run exactly the inline scripts the file held when it was served (their
sha256 hashes), so markup injected into the page (an `onerror=` attribute) still cannot.

Keys pinned to a workflow: a release page or a report whose path names a workflow
(`gates/W/`, `canary/W/`, `drift/W/`, `runbooks/W.md`, `readiness/W.md`) is shown only for that
workflow (403 otherwise); the reports of every workflow (memos, review sheets, proposals, the
Evidently workspace) need a global key. The indexes list what the key may open.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

from relops_pipeline.lib import release_page
from relops_pipeline.lib.home import Home

HTML = "text/html; charset=utf-8"
CONTENT_TYPES = {
    ".html": HTML, ".htm": HTML,
    # Markdown as plain text: every browser shows it in the tab (some download text/markdown),
    # readably since the reports escape only what would change the rendering, and never as markup.
    ".md": "text/plain; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".txt": "text/plain; charset=utf-8", ".log": "text/plain; charset=utf-8",
    ".json": "application/json", ".jsonl": "application/x-ndjson",
    ".xml": "application/xml",
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp",
    ".svg": "image/svg+xml",
    ".pdf": "application/pdf",
}
OCTET = "application/octet-stream"
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; font-src data:; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_SCRIPT = re.compile(rb"<script(?:\s[^>]*)?>(.*?)</script\s*>", re.S | re.I)
# Report folders whose next segment (or file stem) names a workflow.
_BY_WORKFLOW_DIR = ("gates", "canary", "drift")
_BY_WORKFLOW_FILE = ("runbooks", "readiness")
_NOT_WORKFLOWS = {"evidently-workspace"}


@dataclass
class Page:
    """An answer: status, body, content type and extra headers."""

    status: int
    body: bytes
    content_type: str = HTML
    headers: dict[str, str] = field(default_factory=dict)


def security_headers(csp: str = CSP) -> dict[str, str]:
    """The headers every answer of the read-only routes carries."""
    return {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


def content_type(path: Path) -> str:
    """The Content-Type of a report file by its suffix (octet-stream when unknown)."""
    return CONTENT_TYPES.get(path.suffix.lower(), OCTET)


def report_workflow(relative: tuple[str, ...]) -> str | None:
    """The workflow a report belongs to by its path under reports/ (None: every workflow's)."""
    if len(relative) >= 3 and relative[0] in _BY_WORKFLOW_DIR and relative[1] not in _NOT_WORKFLOWS:
        return relative[1]
    if len(relative) == 2 and relative[0] in _BY_WORKFLOW_FILE:
        return Path(relative[1]).stem
    return None


def _segments(raw: str) -> tuple[str, ...] | None:
    """The decoded, checked segments of a path under /reports/ (None: refused)."""
    if not raw:
        return ()
    parts = tuple(unquote(s, errors="strict") for s in raw.split("/"))
    for part in parts:
        if not part or part in (".", "..") or part.startswith(".") or "\\" in part or "\x00" in part or "/" in part:
            return None
    return parts


def resolve_report(reports_dir: Path, raw: str) -> tuple[Path, tuple[str, ...]] | None:
    """The file (or folder) a /reports/ path names, with its path segments; None when it is not
    inside the reports folder once every symlink is followed, or does not exist."""
    try:
        parts = _segments(raw)
    except UnicodeDecodeError:
        return None
    if parts is None:
        return None
    root = reports_dir.resolve()
    try:
        target = root.joinpath(*parts).resolve(strict=True)
        relative = target.relative_to(root)
    except (OSError, ValueError, RuntimeError):  # missing, outside (a symlink out), a loop
        return None
    return target, tuple(relative.parts)


def _allowed(pin: str | None, workflow: str | None) -> bool:
    return pin is None or workflow == pin


def _drift_csp(body: bytes) -> str:
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode()}'"
                      for m in _SCRIPT.finditer(body))
    scripts = hashes or "'none'"
    return CSP.replace("default-src 'none';", f"default-src 'none'; script-src {scripts} 'unsafe-eval';", 1)


def _forbidden(pin: str) -> Page:
    return Page(403, release_page.render_not_found(f"this API key is pinned to the workflow {pin}", "Forbidden"),
                headers=security_headers())


def _not_found(message: str) -> Page:
    return Page(404, release_page.render_not_found(message), headers=security_headers())


def _reports_index(home: Home, pin: str | None) -> Page:
    root = home.reports_dir.resolve()
    files = []
    if root.is_dir():
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).parts
            if (not path.is_file() or any(p.startswith(".") for p in rel) or "evidently-workspace" in rel
                    or not _allowed(pin, report_workflow(rel))):
                continue
            files.append("/".join(rel))
    items = "".join(f'<li><a href="{release_page.REPORTS_PATH}{quote(f)}">{release_page.esc(f)}</a></li>' for f in files)
    body = release_page.html_page("relops reports", "<h1>Reports</h1>" + (f"<ul>{items}</ul>" if items else
                                                                        '<p class="muted">No report yet.</p>'))
    return Page(200, body, headers=security_headers())


def report(home: Home, raw: str, pin: str | None) -> Page:
    """GET /reports/<raw>: the file, the index (raw empty) or 403 / 404."""
    if raw == "":
        return _reports_index(home, pin)
    found = resolve_report(home.reports_dir, raw)
    if found is None or not found[0].is_file():
        return _not_found("no such report")
    path, rel = found
    if not _allowed(pin, report_workflow(rel)):
        return _forbidden(pin or "")
    try:
        body = path.read_bytes()
    except OSError:
        return _not_found("no such report")
    ctype = content_type(path)
    csp = _drift_csp(body) if rel[0] == "drift" and ctype == HTML and report_workflow(rel) else CSP
    return Page(200, body, ctype, security_headers(csp))


def releases(home: Home, raw: str, pin: str | None) -> Page:
    """GET /releases/ (the index) or /releases/<workflow>/<version>; WarehouseBusy propagates."""
    parts = [unquote(p) for p in raw.split("/") if p] if raw else []
    if not parts:
        return Page(200, release_page.render_index(release_page.list_releases(home), only_workflow=pin),
                    headers=security_headers())
    if len(parts) != 2:
        return _not_found("a release page is /releases/<workflow>/<version>")
    workflow, version = parts
    if not _allowed(pin, workflow):
        return _forbidden(pin or "")
    story = release_page.read_story(home, workflow, version)
    if story is None:
        return _not_found(f"no release {workflow} {version}")
    return Page(200, release_page.render_release(home, story), headers=security_headers())
