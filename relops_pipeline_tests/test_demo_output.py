"""The demo's terminal output fits in 100 columns (issue 18): long lines wrap under a hanging
indent, paths are never cut, and the closing summary is one row per part with where to look
under it (it was a table ~200 columns wide)."""

from __future__ import annotations

from relops_pipeline.cli.text import wrap_prose
from relops_pipeline.demo.story import WIDTH, demo_summary_table, fit
from relops_pipeline.lib.warehouse import open_warehouse


def test_fit_wraps_long_lines_under_a_hanging_indent_and_keeps_every_word():
    long = "  doc-qa--v2.5.0 BLOCK: " + " ".join(f"must-pass case case-{i:03d} failed 3/3 samples;" for i in range(40))
    path = "/srv/" + "a" * 120 + "/report.html"
    lines = fit(["short", long, f"    see {path}", "two\nlines"])
    assert lines[0] == "short" and lines[-2:] == ["two", "lines"]
    wrapped = fit([long])
    assert lines[1 : 1 + len(wrapped)] == wrapped
    assert all(len(line) <= WIDTH for line in wrapped) and len(wrapped) > 5
    assert wrapped[0].startswith("  doc-qa--v2.5.0 BLOCK:") and all(line.startswith("      ") for line in wrapped[1:])
    assert " ".join(line.strip() for line in wrapped) == long.strip()  # nothing lost
    assert any(line.strip() == path for line in lines)  # a path longer than the width is never cut


def test_the_demo_summary_fits_in_100_columns(home):
    with open_warehouse(home.warehouse_path):
        pass  # an empty, migrated warehouse: every figure reads as zero or none
    lines = demo_summary_table(home)
    assert lines[0] == "what happened, and where to look:"
    too_long = [line for line in lines if len(line) > WIDTH and "/" not in line.split()[-1]]
    assert not too_long, too_long
    assert any(line.strip().startswith("-> relops status") for line in lines)
    assert any(line.lstrip().startswith("gates") for line in lines)


def test_terminal_prose_wraps_but_table_rows_and_paths_stay_whole():
    prose = "  - " + "a reason that goes on " * 20
    row = "| doc-qa | " + " | ".join(["0.123456"] * 20) + " |"
    columns = "  doc-qa--v2.4.0   " + "x" * 60 + "   " + "y" * 60
    report = "report: /srv/" + "p" * 110 + ".html"
    lines = wrap_prose("\n".join([prose, row, columns, report])).splitlines()
    assert lines[-3:] == [row, columns, report]
    assert len(lines) > 4 and all(len(line) <= 100 for line in lines[:-3])
    assert all(line.startswith("      ") for line in lines[1:-3])
