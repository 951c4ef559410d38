"""Scorers: turn one sample's output into scores (one `Score` per metric, each in [0, 1]).

`build_scorers(configs)` builds scorers from the workflow's `scorers:` list;
`score_sample(scorers, case, result)` scores one sample. Scorer configs:

- `{type: exact_match, ignore_case: false}` -> `exact_match`: output equals `expected.reference`
  after whitespace normalisation (runs of whitespace become one space, ends stripped).
- `{type: contains, ignore_case: false}` -> `contains`: every `expected.contains` string is in the
  output and no `expected.not_contains` string is. Score = fraction of those checks that hold;
  passed only when all hold.
- `{type: regex, ignore_case: false}` -> `regex`: `re.search(expected.regex, output)`.
- `{type: json, apply_to: expected, allow_fences: false, prefix: ""}` -> `json_valid` (cases with
  a json_schema or fields expectation; with `apply_to: all` every case, for workflows whose every
  output must be JSON), `json_schema`
  (output validates against `expected.json_schema`, via jsonschema, draft taken from `$schema`),
  `fields_match` (each `expected.fields` dotted path, e.g. `a.b.0`, equals the given value;
  score = fraction equal). Output must be strict JSON; a JSON document inside a Markdown code
  fence is invalid unless `allow_fences: true` (the detail says so either way). `prefix` is
  prepended to the three metric names.
- `{type: numeric, tolerance: 0.0, rel_tolerance: 0.0}` -> `numeric`: the first number in the
  output (a leading sign, decimals, exponent and `1,234` thousands groups are understood) against
  `expected.number`. Passed when `|got - want| <= max(tolerance, rel_tolerance * |want|)`; the
  case's `expected.tolerance` (absolute) overrides the config's. Score 1 or 0.
- `{type: similarity, threshold: 0.8}` -> `similarity`: rapidfuzz `token_set_ratio` / 100 between
  `expected.reference` and the output (lower-cased, punctuation stripped by rapidfuzz's
  `default_process`); passed when score >= threshold.
- `{type: python, callable: "pkg.mod:fn", name: metric, threshold: 0.5}` -> `<name>` (default:
  the function's name). `fn(case, output)` returns a float in [0, 1] (passed when >= threshold),
  a bool, a `Score`, or None (not applicable to this case).
- `{type: llm_judge, url, model, api_key_env, rubric, threshold: 0.5, timeout_s: 30,
  max_retries: 2, backoff_s: 0.5, headers: {}}` -> `llm_judge`: an OpenAI-compatible chat
  completion (`url` is the base, e.g. `http://host/v1`, or the full `/chat/completions` URL).
  Applies when the case has `expected.judge_rubric` (which wins) or the config has `rubric`.
  The judge is asked for JSON `{"score": 0..1, "reason": "..."}`; the answer is parsed from
  the whole text, a code fence, or the first JSON object in it; a score outside [0, 1] is
  clamped (the detail says so). Passed when score >= threshold.

Every config may set `name:` (except json, which takes `prefix:`). A scorer applies only when the
case has the expectation it needs; otherwise it returns nothing for that case.

Failures are scores, never exceptions, once a run is under way:
- An errored sample (or one without output) gets every applicable metric as score 0, passed
  False, detail "sample error: ...".
- A scorer that raises (e.g. a bug in a custom callable) gives score 0, passed False, detail
  "scorer error: ...".
- An unreachable judge, a judge HTTP error, or a judge answer without a usable score gives
  score 0, passed False, detail "judge error: ...". This fails closed on purpose: a release
  gate must not pass on judgments that never happened, and skipping would silently shrink the
  metric's sample count. The "judge error:" prefix lets reports count judge failures apart from
  low scores.
Configuration mistakes (unknown type or key, a callable that does not import, a missing API
key variable) raise ValueError from `build_scorers`, before any sample is scored.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

from relops_pipeline.lib.evals.model import Case, SampleResult, Score

__all__ = [
    "Scorer",
    "build_scorers",
    "score_sample",
    "load_callable",
    "parse_judge_answer",
    "SCORER_TYPES",
]


def _ws(text: str) -> str:
    return " ".join(text.split())


def _short(text: Any, limit: int = 200) -> str:
    s = str(text)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def load_callable(spec: str) -> Callable[..., Any]:
    """Import `package.module:attr` (attr may be dotted) and return the callable.

    Raises ValueError naming the spec when it is malformed, does not import, or is not callable.
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"callable {spec!r}: expected 'package.module:function'")
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is a config error
        raise ValueError(f"callable {spec!r}: cannot import module {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"callable {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"callable {spec!r}: {attr!r} is not callable")
    return obj


class Scorer:
    """Base class. Subclasses set `type`, `allowed_keys`, and implement `metrics` and `_score`."""

    type: str = ""
    allowed_keys: frozenset[str] = frozenset()

    def __init__(self, config: dict[str, Any]):
        unknown = set(config) - self.allowed_keys - {"type"}
        if unknown:
            raise ValueError(
                f"scorer {self.type}: unknown key(s) {sorted(unknown)}; allowed: {sorted(self.allowed_keys)}"
            )
        self.config = config
        self.name = str(config.get("name") or self.type)

    def metrics(self, case: Case) -> list[str]:
        """The metric names this scorer emits for `case` (empty when it does not apply)."""
        raise NotImplementedError

    def all_metric_names(self) -> list[str]:
        """Every metric name this scorer can emit (used to detect duplicate names)."""
        return [self.name]

    def score(self, case: Case, output: str) -> list[Score]:
        """Score an output; a scorer that raises yields failed scores saying so."""
        if not self.metrics(case):
            return []
        try:
            return self._score(case, output)
        except Exception as exc:  # noqa: BLE001 - a broken scorer must not abort the run
            detail = f"scorer error: {type(exc).__name__}: {_short(exc)}"
            return [Score(m, 0.0, False, detail) for m in self.metrics(case)]

    def _score(self, case: Case, output: str) -> list[Score]:
        raise NotImplementedError


def _flag(config: dict[str, Any], key: str, default: bool = False) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"scorer {config.get('type')}: {key} must be true or false, got {value!r}")
    return value


def _number(config: dict[str, Any], key: str, default: float, *, lo: float | None = None,
            hi: float | None = None) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"scorer {config.get('type')}: {key} must be a number, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"scorer {config.get('type')}: {key} must be in [{lo}, {hi}], got {value!r}")
    return float(value)


class ExactMatch(Scorer):
    type = "exact_match"
    allowed_keys = frozenset({"name", "ignore_case"})

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        self.ignore_case = _flag(config, "ignore_case")

    def metrics(self, case: Case) -> list[str]:
        return [self.name] if isinstance(case.expected.get("reference"), str) else []

    def _score(self, case: Case, output: str) -> list[Score]:
        want, got = _ws(case.expected["reference"]), _ws(output)
        if self.ignore_case:
            want, got = want.casefold(), got.casefold()
        ok = want == got
        return [Score(self.name, 1.0 if ok else 0.0, ok, None if ok else f"expected {_short(want, 120)!r}")]


class Contains(Scorer):
    type = "contains"
    allowed_keys = frozenset({"name", "ignore_case"})

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        self.ignore_case = _flag(config, "ignore_case")

    def metrics(self, case: Case) -> list[str]:
        e = case.expected
        return [self.name] if (e.get("contains") or e.get("not_contains")) else []

    def _score(self, case: Case, output: str) -> list[Score]:
        want = [str(s) for s in case.expected.get("contains") or []]
        banned = [str(s) for s in case.expected.get("not_contains") or []]
        hay = output.casefold() if self.ignore_case else output

        def has(s: str) -> bool:
            return (s.casefold() if self.ignore_case else s) in hay

        missing = [s for s in want if not has(s)]
        found = [s for s in banned if has(s)]
        total = len(want) + len(banned)
        bad = len(missing) + len(found)
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if found:
            parts.append(f"forbidden present {found}")
        return [Score(self.name, (total - bad) / total, bad == 0, "; ".join(parts) or None)]


class Regex(Scorer):
    type = "regex"
    allowed_keys = frozenset({"name", "ignore_case"})

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        self.flags = re.IGNORECASE if _flag(config, "ignore_case") else 0

    def metrics(self, case: Case) -> list[str]:
        return [self.name] if isinstance(case.expected.get("regex"), str) else []

    def _score(self, case: Case, output: str) -> list[Score]:
        pattern = case.expected["regex"]
        try:
            ok = re.search(pattern, output, self.flags) is not None
        except re.error as exc:
            return [Score(self.name, 0.0, False, f"invalid regex {pattern!r}: {exc}")]
        return [Score(self.name, 1.0 if ok else 0.0, ok, None if ok else f"no match for {pattern!r}")]


_FENCE_RE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n(.*?)\n?```", re.DOTALL)


def _unfence(text: str) -> str | None:
    m = _FENCE_RE.search(text)
    return m.group(1) if m else None


def _get_path(doc: Any, path: str) -> tuple[bool, Any]:
    cur = doc
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and re.fullmatch(r"-?\d+", part) and -len(cur) <= int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return False, None
    return True, cur


def _equal(a: Any, b: Any) -> bool:
    # True == 1 in Python; a field expected to be true must not be matched by 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


class JsonScorer(Scorer):
    type = "json"
    allowed_keys = frozenset({"prefix", "apply_to", "allow_fences"})

    def __init__(self, config: dict[str, Any]):
        if "name" in config:
            raise ValueError("scorer json: emits json_valid, json_schema and fields_match; "
                             "use prefix: instead of name:")
        super().__init__(config)
        prefix = str(config.get("prefix") or "")
        self.m_valid, self.m_schema, self.m_fields = (f"{prefix}json_valid", f"{prefix}json_schema",
                                                      f"{prefix}fields_match")
        self.apply_to = config.get("apply_to", "expected")
        if self.apply_to not in ("all", "expected"):
            raise ValueError(f"scorer json: apply_to must be 'all' or 'expected', got {self.apply_to!r}")
        self.allow_fences = _flag(config, "allow_fences")

    def all_metric_names(self) -> list[str]:
        return [self.m_valid, self.m_schema, self.m_fields]

    def metrics(self, case: Case) -> list[str]:
        has_schema = isinstance(case.expected.get("json_schema"), dict)
        has_fields = isinstance(case.expected.get("fields"), dict) and bool(case.expected["fields"])
        out = []
        if self.apply_to == "all" or has_schema or has_fields:
            out.append(self.m_valid)
        if has_schema:
            out.append(self.m_schema)
        if has_fields:
            out.append(self.m_fields)
        return out

    def _parse(self, output: str) -> tuple[bool, Any, str | None]:
        try:
            return True, json.loads(output), None
        except ValueError as exc:
            inner = _unfence(output)
            if inner is not None:
                try:
                    doc = json.loads(inner)
                except ValueError:
                    pass
                else:
                    if self.allow_fences:
                        return True, doc, "JSON read from inside a code fence"
                    return False, None, "output is JSON inside a code fence (allow_fences is false)"
            return False, None, f"output is not valid JSON: {exc}"

    def _score(self, case: Case, output: str) -> list[Score]:
        names = self.metrics(case)
        ok, doc, why = self._parse(output)
        scores: list[Score] = []
        if self.m_valid in names:
            scores.append(Score(self.m_valid, 1.0 if ok else 0.0, ok, why))
        if self.m_schema in names:
            scores.append(self._schema(case.expected["json_schema"], doc) if ok
                          else Score(self.m_schema, 0.0, False, why))
        if self.m_fields in names:
            scores.append(self._fields(case.expected["fields"], doc) if ok
                          else Score(self.m_fields, 0.0, False, why))
        return scores

    def _schema(self, schema: dict[str, Any], doc: Any) -> Score:
        import jsonschema

        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            return Score(self.m_schema, 0.0, False, f"invalid json_schema in the case: {_short(exc.message)}")
        error = jsonschema.exceptions.best_match(cls(schema).iter_errors(doc))
        if error is None:
            return Score(self.m_schema, 1.0, True, None)
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return Score(self.m_schema, 0.0, False, f"at {where}: {_short(error.message)}")

    def _fields(self, fields: dict[str, Any], doc: Any) -> Score:
        wrong = []
        for path, want in fields.items():
            present, got = _get_path(doc, str(path))
            if not present:
                wrong.append(f"{path}: missing")
            elif not _equal(got, want):
                wrong.append(f"{path}: {_short(json.dumps(got, ensure_ascii=False), 60)} != "
                             f"{_short(json.dumps(want, ensure_ascii=False), 60)}")
        n = len(fields)
        return Score(self.m_fields, (n - len(wrong)) / n, not wrong, "; ".join(wrong) or None)


_NUMBER_RE = re.compile(
    r"[-+]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"
)


def first_number(text: str) -> float | None:
    """The first number in a text (sign, decimals, exponent, `1,234` groups), or None."""
    m = _NUMBER_RE.search(text)
    return float(m.group(0).replace(",", "")) if m else None


class Numeric(Scorer):
    type = "numeric"
    allowed_keys = frozenset({"name", "tolerance", "rel_tolerance"})

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        self.tolerance = _number(config, "tolerance", 0.0, lo=0.0)
        self.rel_tolerance = _number(config, "rel_tolerance", 0.0, lo=0.0)

    def metrics(self, case: Case) -> list[str]:
        v = case.expected.get("number")
        return [self.name] if isinstance(v, (int, float)) and not isinstance(v, bool) else []

    def _score(self, case: Case, output: str) -> list[Score]:
        want = float(case.expected["number"])
        tol = float(case.expected.get("tolerance", self.tolerance))
        rel = self.rel_tolerance
        got = first_number(output)
        if got is None:
            return [Score(self.name, 0.0, False, "no number in the output")]
        allowed = max(tol, rel * abs(want))
        ok = abs(got - want) <= allowed
        return [Score(self.name, 1.0 if ok else 0.0, ok,
                      None if ok else f"got {got:g}, expected {want:g} ± {allowed:g}")]


class Similarity(Scorer):
    type = "similarity"
    allowed_keys = frozenset({"name", "threshold"})

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        self.threshold = _number(config, "threshold", 0.8, lo=0.0, hi=1.0)

    def metrics(self, case: Case) -> list[str]:
        return [self.name] if isinstance(case.expected.get("reference"), str) else []

    def _score(self, case: Case, output: str) -> list[Score]:
        from rapidfuzz import fuzz, utils

        s = fuzz.token_set_ratio(case.expected["reference"], output, processor=utils.default_process) / 100.0
        s = min(1.0, max(0.0, s))
        return [Score(self.name, s, s >= self.threshold, f"token_set_ratio {s:.3f}")]


class PythonScorer(Scorer):
    type = "python"
    allowed_keys = frozenset({"name", "callable", "threshold"})

    def __init__(self, config: dict[str, Any]):
        if not config.get("callable"):
            raise ValueError("scorer python: 'callable' is required (package.module:function)")
        self.fn = load_callable(config["callable"])
        config = dict(config)
        config.setdefault("name", getattr(self.fn, "__name__", None) or "python")
        super().__init__(config)
        self.threshold = _number(config, "threshold", 0.5, lo=0.0, hi=1.0)

    def metrics(self, case: Case) -> list[str]:
        return [self.name]

    def score(self, case: Case, output: str) -> list[Score]:
        try:
            value = self.fn(case, output)
        except Exception as exc:  # noqa: BLE001 - user code; record and go on
            return [Score(self.name, 0.0, False, f"scorer error: {type(exc).__name__}: {_short(exc)}")]
        return self._coerce(value)

    def _coerce(self, value: Any) -> list[Score]:
        if value is None:
            return []
        if isinstance(value, Score):
            if not (0.0 <= value.score <= 1.0):
                return [Score(value.metric, 0.0, False, f"scorer error: returned score {value.score!r} "
                                                        f"outside [0, 1]")]
            return [value]
        if isinstance(value, bool):
            return [Score(self.name, 1.0 if value else 0.0, value, None)]
        if isinstance(value, (int, float)) and not math.isnan(value):
            if not (0.0 <= value <= 1.0):
                return [Score(self.name, 0.0, False, f"scorer error: returned {value!r} outside [0, 1]")]
            return [Score(self.name, float(value), value >= self.threshold, None)]
        return [Score(self.name, 0.0, False,
                      f"scorer error: returned {type(value).__name__}, expected float, bool or Score")]


JUDGE_SYSTEM_PROMPT = (
    "You are a strict evaluator of an AI assistant's answer. Grade the answer against the rubric. "
    'Reply with only a JSON object: {"score": <number from 0 to 1>, "reason": "<one or two sentences>"}.'
)


def _judge_input_text(case: Case) -> str:
    inp = case.input or {}
    msgs = inp.get("messages")
    if isinstance(msgs, list):
        return "\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" if isinstance(m, dict) else str(m)
                         for m in msgs)
    if "vars" in inp:
        return json.dumps(inp["vars"], ensure_ascii=False, indent=1, default=str)
    return json.dumps(inp, ensure_ascii=False, default=str)


def _json_candidates(text: str) -> Iterable[Any]:
    stripped = text.strip()
    yield stripped
    for m in _FENCE_RE.finditer(text):
        yield m.group(1).strip()
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except ValueError:
            continue
        yield obj


def parse_judge_answer(text: str) -> tuple[float, str, str | None]:
    """Find `{"score": x, "reason": ...}` in a judge's answer.

    Tries the whole text, then Markdown code fences, then every `{` that starts a JSON object.
    Returns (score clamped to [0, 1], reason, note) where note mentions a clamp; raises
    ValueError when no object with a numeric score is found.
    """
    for cand in _json_candidates(text):
        if isinstance(cand, str):
            try:
                cand = json.loads(cand)
            except ValueError:
                continue
        if not isinstance(cand, dict) or "score" not in cand:
            continue
        raw = cand["score"]
        if isinstance(raw, bool):
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            continue
        if math.isnan(value):
            continue
        reason = cand.get("reason")
        reason = "" if reason is None else str(reason)
        clamped = min(1.0, max(0.0, value))
        note = f"judge score {raw!r} clamped to {clamped:g}" if clamped != value else None
        return clamped, reason, note
    raise ValueError(f"no JSON object with a numeric 'score' in the judge answer: {_short(text, 160)!r}")


class LlmJudge(Scorer):
    type = "llm_judge"
    allowed_keys = frozenset({"name", "url", "model", "api_key_env", "rubric", "threshold", "timeout_s",
                              "max_retries", "backoff_s", "headers", "temperature"})

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        for key in ("url", "model"):
            if not isinstance(config.get(key), str) or not config[key]:
                raise ValueError(f"scorer llm_judge: '{key}' is required")
        url = config["url"].rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model = config["model"]
        self.rubric = config.get("rubric")
        self.threshold = _number(config, "threshold", 0.5, lo=0.0, hi=1.0)
        self.timeout_s = _number(config, "timeout_s", 30.0, lo=0.001)
        self.max_retries = int(_number(config, "max_retries", 2, lo=0))
        self.backoff_s = _number(config, "backoff_s", 0.5, lo=0.0)
        self.temperature = _number(config, "temperature", 0.0, lo=0.0)
        self.headers = {str(k): str(v) for k, v in (config.get("headers") or {}).items()}
        env = config.get("api_key_env")
        if env:
            api_key = os.environ.get(env)
            if not api_key:
                raise ValueError(f"scorer llm_judge: environment variable {env} (api_key_env) is not set")
            self.headers["Authorization"] = f"Bearer {api_key}"
        self._client: httpx.Client | None = None  # created on the first request

    def metrics(self, case: Case) -> list[str]:
        return [self.name] if self._rubric(case) else []

    def _rubric(self, case: Case) -> str | None:
        r = case.expected.get("judge_rubric") or self.rubric
        return str(r) if r else None

    def messages(self, case: Case, output: str) -> list[dict[str, str]]:
        """The chat messages sent to the judge for one output."""
        user = (f"Rubric:\n{self._rubric(case)}\n\n"
                f"Input given to the assistant:\n{_judge_input_text(case)}\n\n"
                f"Assistant's answer:\n{output}\n\n"
                'Return only JSON: {"score": <0..1>, "reason": "..."}')
        return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}]

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout_s, headers=self.headers)
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * (2 ** (attempt - 1)) * (1 + random.random() * 0.25))
            try:
                resp = self._client.post(self.url, json=body)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {_short(exc, 120)}"
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                last = f"HTTP {resp.status_code}"
                continue
            if resp.status_code >= 400:
                raise _JudgeError(f"HTTP {resp.status_code}: {_short(resp.text, 160)}")
            try:
                return resp.json()
            except ValueError as exc:
                raise _JudgeError(f"response is not JSON: {_short(resp.text, 160)!r}") from exc
        raise _JudgeError(f"unreachable after {self.max_retries + 1} attempt(s) ({last}) at {self.url}")

    def _score(self, case: Case, output: str) -> list[Score]:
        body = {"model": self.model, "messages": self.messages(case, output), "temperature": self.temperature}
        try:
            data = self._post(body)
            try:
                text = data["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError) as exc:
                raise _JudgeError(f"no choices[0].message.content in the response: "
                                  f"{_short(json.dumps(data), 160)}") from exc
            if not isinstance(text, str):
                raise _JudgeError("choices[0].message.content is not text")
            try:
                value, reason, note = parse_judge_answer(text)
            except ValueError as exc:
                raise _JudgeError(str(exc)) from exc
        except _JudgeError as exc:
            return [Score(self.name, 0.0, False, f"judge error: {exc}")]
        detail = reason if not note else f"{reason} ({note})"
        return [Score(self.name, value, value >= self.threshold, detail or None)]

    def close(self) -> None:
        """Close the HTTP client (optional; it is also dropped with the scorer)."""
        if self._client is not None:
            self._client.close()
            self._client = None


class _JudgeError(Exception):
    pass


SCORER_TYPES: dict[str, type[Scorer]] = {
    cls.type: cls for cls in (ExactMatch, Contains, Regex, JsonScorer, Numeric, Similarity, PythonScorer, LlmJudge)
}


def build_scorers(configs: list[dict[str, Any]]) -> list[Scorer]:
    """Build scorers from config dicts (see the module docstring).

    Raises ValueError naming the position and problem for an unknown type, an unknown key, a bad
    value, a callable that cannot be imported, or two scorers emitting the same metric name.
    """
    if not isinstance(configs, list):
        raise ValueError(f"scorers: expected a list of scorer configs, got {type(configs).__name__}")
    scorers: list[Scorer] = []
    seen: dict[str, int] = {}
    for i, cfg in enumerate(configs):
        if not isinstance(cfg, dict) or "type" not in cfg:
            raise ValueError(f"scorers[{i}]: expected a mapping with a 'type', got {cfg!r}")
        cls = SCORER_TYPES.get(cfg["type"])
        if cls is None:
            raise ValueError(f"scorers[{i}]: unknown type {cfg['type']!r}; known: {sorted(SCORER_TYPES)}")
        try:
            scorer = cls(dict(cfg))
        except ValueError as exc:
            raise ValueError(f"scorers[{i}]: {exc}") from exc
        for metric in scorer.all_metric_names():
            if metric in seen:
                raise ValueError(f"scorers[{i}]: metric name {metric!r} is already produced by scorers"
                                 f"[{seen[metric]}]; set a different name:")
            seen[metric] = i
        scorers.append(scorer)
    return scorers


def score_sample(scorers: list[Scorer], case: Case, result: SampleResult) -> list[Score]:
    """All scores for one sample, in scorer order.

    An errored sample, or one with no output, gets each applicable metric as 0 / failed with
    detail "sample error: <reason>".
    """
    if result.error is not None or result.output is None:
        reason = result.error if result.error is not None else "no output"
        detail = f"sample error: {_short(reason, 300)}"
        return [Score(m, 0.0, False, detail) for s in scorers for m in s.metrics(case)]
    out: list[Score] = []
    for s in scorers:
        out.extend(s.score(case, result.output))
    return out
