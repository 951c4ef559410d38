"""Inspect AI 0.3.285 (the current release) writes `.eval` logs whose zip members are zstd
(compress_type 93), which Python 3.11's zipfile cannot read: issue 16. The fixture is a real log
written by inspect-ai 0.3.285 with its mock model (fixtures/inspect_ai_zstd/PROVENANCE.md); its
truth file was read back with Inspect's own `read_eval_log`."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from relops_pipeline.cli import EXIT_BAD_INPUT
from relops_pipeline.lib.evals.imports import ImportFormatError, detect_format, import_results
from relops_pipeline.lib.evals.imports import inspect_ai as inspect_importer
from relops_pipeline_tests.conftest import FIXTURES
from relops_pipeline_tests.conftest import run_cli as cli

CLIENT = "inspect-ai 0.3.285"
HERE = FIXTURES / "inspect_ai_zstd"
LOG = HERE / "relops-zstd-demo.eval"
TRUTH = json.loads((HERE / "truth.json").read_text(encoding="utf-8"))
OLD_EVAL_LOGS = sorted((FIXTURES / "inspect_ai").glob("*.eval"))


def _imported():
    return import_results(LOG, None, workflow="support-triage", version="v0.9.0")


def test_fixture_is_what_inspect_0_3_285_writes_zstd_members():
    assert f"{TRUTH['client']} {TRUTH['client_version']}" == CLIENT
    with zipfile.ZipFile(LOG) as z:
        methods = {i.filename: i.compress_type for i in z.infolist()}
        with pytest.raises(NotImplementedError):  # the reason for the fix: zipfile cannot
            z.read("header.json")
    assert methods == TRUTH["zip_compress_types"]
    assert set(methods.values()) == {inspect_importer.ZIP_ZSTD}


def test_inspect_0_3_285_zstd_log_every_truth_field():
    assert detect_format(LOG) == "inspect"
    data = _imported()
    assert data.source == "import:inspect"
    truth = TRUTH["samples"]
    by_id = {s.case_id: s for s in data.samples}
    assert sorted(by_id) == sorted(truth) and len(data.samples) == len(truth) == 4
    assert any(f"model {TRUTH['model']}" in n for n in data.notes), (CLIENT, "model", data.notes)
    for sid, t in truth.items():
        s = by_id[sid]
        where = f"{CLIENT} sample {sid}"
        assert s.sample == t["epoch"] - 1, (where, "epoch")
        assert s.raw["input"] == t["input"], (where, "input")
        assert s.raw["target"] == t["target"], (where, "target")
        assert s.output == t["output"], (where, "output")
        assert s.input_tokens == t["input_tokens"], (where, "input_tokens")
        assert s.output_tokens == t["output_tokens"], (where, "output_tokens")
        assert s.error == t["error"], (where, "error")
        # latency: total_time minus the time inside the scorer
        assert s.latency_ms is not None and 0 < s.latency_ms <= t["total_time"] * 1000 + 1e-6, (where, "latency")
        scores = {sc.metric: sc for sc in data.scores[(sid, s.sample)]}
        assert sorted(scores) == sorted(t["scores"]), (where, "score names")
        for name, ts in t["scores"].items():
            expected = {"C": 1.0, "I": 0.0}[ts["value"]]
            assert scores[name].score == expected, (where, name, "value")
            assert scores[name].passed is (ts["value"] == "C"), (where, name, "passed")
            assert ts["explanation"] in scores[name].detail, (where, name, "explanation")
        assert all(sc.passed for sc in scores.values()) is t["passed"], (where, "passed")
    assert "shipping — Zustellung prüfen." in {s.output for s in data.samples}  # real Unicode
    assert [sid for sid, t in truth.items() if not t["passed"]] == ["refund-004"]


def test_zstd_archive_held_to_the_eval_import_limit(monkeypatch):
    monkeypatch.setattr(inspect_importer, "MAX_EVAL_IMPORT_BYTES", 1000)
    with pytest.raises(ImportFormatError, match="decompresses to more than the limit"):
        _imported()


def test_corrupt_zstd_member_is_bad_input(tmp_path):
    raw = bytearray(LOG.read_bytes())
    with zipfile.ZipFile(LOG) as z:
        info = z.getinfo("header.json")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 8, start + info.compress_size - 8):
        raw[i] ^= 0x5A
    bad = tmp_path / "corrupt.eval"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ImportFormatError, match="header.json inside the archive"):
        import_results(bad, "inspect", workflow="support-triage", version="v0.9.0")


@pytest.mark.parametrize("path", OLD_EVAL_LOGS, ids=lambda p: p.name)
def test_older_deflate_eval_logs_still_import(path):
    with zipfile.ZipFile(path) as z:
        assert {i.compress_type for i in z.infolist()} <= {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
    data = import_results(path, "inspect", workflow="support-triage", version="v0.9.0")
    assert data.samples


def _unknown_method_zip(tmp_path: Path, method: int = 77) -> Path:
    """A .eval whose members claim a compression method nobody defines (77)."""
    p = tmp_path / "unknown-method.eval"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as z:
        z.writestr("header.json", json.dumps({"version": 2, "status": "success", "eval": {"task": "t"}}))
        z.writestr("samples/1_epoch_1.json", json.dumps({"id": 1, "epoch": 1}))
    raw = bytearray(p.read_bytes())
    for sig, off in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        i = raw.find(sig)
        while i != -1:
            raw[i + off:i + off + 2] = method.to_bytes(2, "little")
            i = raw.find(sig, i + 4)
    p.write_bytes(bytes(raw))
    return p


def test_unknown_compression_method_is_a_clear_bad_input_error(tmp_path):
    with pytest.raises(ImportFormatError, match=r"compression method 77 \(unknown\)") as exc:
        import_results(_unknown_method_zip(tmp_path), None, workflow="support-triage", version="v0.9.0")
    assert "header.json" in str(exc.value) and "zstd" in str(exc.value)


WORKFLOW_YAML = """\
name: support-triage
owner: ana
runner: {type: python, callable: 'relops_pipeline_tests.support:fake_llm', timeout_s: 10}
scorers: [{type: json}]
"""
SUITE_YAML = """\
workflow: support-triage
version: v1
changelog: ["v1: one case"]
cases:
  - {id: billing-001, input: {vars: {ticket: "about billing"}}, expected: {fields: {category: billing}}}
"""


@pytest.fixture
def home(make_cli_home):
    return make_cli_home(WORKFLOW_YAML, SUITE_YAML)


def test_cli_eval_import_of_inspect_0_3_285_zstd_log_exits_0(home, capsys):
    code, out, err = cli(capsys, home, "eval", "import", str(LOG), "--workflow", "support-triage",
                         "--version", "v0.9.0", "--json")
    assert code == 0, (CLIENT, err)
    ev = json.loads(out)
    assert (ev["cases"], ev["samples"]) == (4, 4)
    assert ev["source"] == "import:inspect"


def test_cli_eval_import_unknown_compression_exits_bad_input(home, capsys, tmp_path):
    code, out, err = cli(capsys, home, "eval", "import", str(_unknown_method_zip(tmp_path)), "--workflow",
                         "support-triage", "--version", "v0.9.0")
    assert code == EXIT_BAD_INPUT == 3, (out, err)
    assert "compression method 77" in err and "unknown-method.eval" in err, (out, err)
