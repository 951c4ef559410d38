"""Text that reads naturally (issue 18, item 3): markdown escaping only where a character would
change the rendering, code spans unescaped, and terminal output as plain text - while whatever
came from a model or a user still cannot become markup, a link or a terminal control."""

from __future__ import annotations

import re

import pytest

from relops_pipeline.lib.markdown import code_span, escape_md, fenced_block, plain_text


@pytest.mark.parametrize("text", ["week of 2026-08-03", "ticket-summary", "model gpt-a -> gpt-b", "v2.4.0 (canary)",
                                  "snake_case_name", "C:\\Users\\ana", "50% of 1.5 s", "incident #12"])
def test_ordinary_text_is_left_as_written(text):
    assert escape_md(text) == text


@pytest.mark.parametrize(("text", "escaped"), [
    ("- not a list", "\\- not a list"), ("# not a heading", "\\# not a heading"), ("1. not a list", "1\\. not a list"),
    ("> not a quote", "\\> not a quote"), ("*bold* and _em_", "\\*bold\\* and \\_em\\_"), ("a | b", "a \\| b"),
    ("~~gone~~", "\\~\\~gone\\~\\~"), ("`code`", "\\`code\\`"), ("ends with \\", "ends with \\\\"),
    ("&copy; & co", "&amp;copy; & co"), ("line\nbreak", "line break"),
])
def test_syntax_that_would_render_is_escaped(text, escaped):
    assert escape_md(text) == escaped


def test_markup_and_links_from_a_model_cannot_form():
    hostile = "<script>alert(1)</script> [x](javascript:alert(1)) <img src=x onerror=alert(1)> <!-- c -->"
    out = escape_md(hostile)
    assert "<" not in out
    assert re.search(r"(?<!\\)\]\(", out) is None and re.search(r"(?<!\\)\[", out) is None


def test_code_span_keeps_a_path_copyable():
    path = "home/registry/ticket-summary_v2.json"
    assert code_span(path) == f"`{path}`"
    assert code_span("a`b") == "``a`b``" and code_span("`x") == "`` `x ``"
    assert code_span("two\nlines") == "`two lines`"


def test_plain_text_for_the_terminal():
    md = "\n".join([
        f"## **BLOCK** — gate for {escape_md('ticket-summary <b>')}", "",
        f"- owner {escape_md('ana_lopez *x*')}, see [the report](<https://relops.example/r/1>)",
        *fenced_block('print("<b>")\n\x1b[31mred'),
        f"Pointer file: {code_span('home/registry/ticket-summary.json')}",
    ])
    text = plain_text(md)
    assert text.splitlines() == [
        "BLOCK — gate for ticket-summary <b>", "",
        "- owner ana_lopez *x*, see the report (https://relops.example/r/1)",
        '    print("<b>")', "    [31mred",
        "Pointer file: `home/registry/ticket-summary.json`",
    ]
    assert "\x1b" not in text


def test_log_sink_alerts_go_to_the_homes_log_not_the_progress_output(tmp_path, capsys):
    import logging

    from relops_pipeline.cli import _log_alerts_to_the_home
    from relops_pipeline.lib.alerts.sinks import DEFAULT_LOGGER

    _log_alerts_to_the_home(str(tmp_path / "home"))
    logger = logging.getLogger(DEFAULT_LOGGER)
    try:
        logger.error("[ERROR] doc-qa: v2.4.0 rolled back automatically after a failed canary check")
        assert capsys.readouterr().err == ""
        log = (tmp_path / "home" / "logs" / "alerts.log").read_text()
        assert log == "ERROR [ERROR] doc-qa: v2.4.0 rolled back automatically after a failed canary check\n"
    finally:
        for h in list(logger.handlers):
            logger.removeHandler(h)
