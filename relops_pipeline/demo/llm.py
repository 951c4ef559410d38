"""A simulated LLM for the demo world: the callable behind the demo workflows' python runner.

`respond(manifest, case, sample, seed)` returns what a chat-completions call would have given
for one case of an eval suite: the output text, latency, tokens and cost. It runs in a few tens
of microseconds and never sleeps: latency is reported, not spent. Outputs are a pure function
of the manifest's behaviour-relevant content (model, prompts, parameters, tools, retrieval: not
version, notes or code revision), the case, the sample index and the seed.

How an output is decided
------------------------
Behaviour follows the manifest's features, never its version name, so editing a manifest has a
plausible effect:

- model: a profile per model (longest-prefix match, so dated snapshots work) with a base skill,
  speed (time to first token, prefill and per-token time), verbosity and price per token
  (prices as in demo/traces.py PRICES_PER_MTOK). Unknown models get a middling profile.
- parameters.temperature (OpenAI default 1.0): sharpens or flattens each case's pass
  probability, so at 0.2 most cases give the same verdict in every sample and at 0.7 more cases
  are flaky; parameters.max_tokens truncates the output (a cut JSON document is invalid);
  parameters.response_format {type: json_object|json_schema} is JSON mode (no Markdown fences or
  preambles around the JSON).
- prompts.system: the categories it lists (a category it does not name cannot be answered),
  whether it asks for JSON, policy clauses (another customer's data, account takeover -> security
  team, refund limit, passwords/card numbers, instructions inside the input, outages,
  compliance), brevity words, "only the documentation excerpts", "does not cover", "cite".
- tools: lookup_order lets the model check order tickets (one more round trip, better answers).
- retrieval.top_k / chunk_tokens: which doc-qa answers are in the context, and input tokens.

Per case there is a latent difficulty (from its easy/medium/hard tag plus a hash of its id) and
a per (model, case) interaction, so different models fail different cases. Cases that are
must_pass or carry a policy tag (privacy, credentials, prompt-injection, account-takeover,
refund-policy, vulnerability, outage, compliance) are handled almost perfectly (~99.99 % per
sample) when the system prompt has the matching clause, and poorly when it does not. Each
sample draws its verdicts from a random stream seeded by (behaviour, case id, sample, seed).

Tasks, by the case's input: `vars.ticket` (or expected.fields.category) -> support triage, a
JSON object {category, priority, language, reply} whose reply is built from the case's gold
reply (expected.reference) so that the contains phrases appear when the answer is right;
`vars.question` (or expected.reference) -> documentation Q&A, the reference answer (optionally
with [n] citations and a source list), an abstention ("The documentation does not cover this
question.") or a wrong answer (a changed number or key, a partial or a vague answer);
anything else -> the reference or a vague answer.

The demo releases (relops_pipeline/example/releases) and what the demo suites measure (5 samples with the
seeds of store.plan_requests; relops_pipeline_tests/test_demo_llm.py checks the story), scored
with json + contains (triage) or similarity 0.8 + contains (doc-qa); a case-sample passes when
every metric passes:

support-triage (105 cases, 11 must-pass)
  v1.2.0  gpt-4o-mini, temperature 0.7, no JSON mode: pass 0.81; 2-5 % of outputs fenced or
          after a preamble (json_valid fails, must-pass cases included); 50 flaky cases.
  v1.3.0  JSON mode + temperature 0.2: pass 0.93, json_valid 1.0, ~20 flaky cases: clearly better.
  v1.4.0  gpt-4.1-mini: pass 0.93 (not worse), mean latency ~+30 %, cost per sample ~2.8x.
  v1.5.0  account-deletion category + max_tokens 256: the long replies (5 must-pass cases:
          both account takeovers, GDPR access, vulnerability report, outage; and 8 others) are
          cut at 256 tokens -> invalid JSON in every sample; pass 0.83.
  v1.5.1  max_tokens 400 again: pass 0.93, no must-pass failure.
doc-qa (85 cases, 10 must-pass)
  v2.0.0  gpt-4o-mini, top_k 4: pass 0.79; answers ranked below the top 4 excerpts are abstentions.
  v2.1.0  top_k 8: pass 0.89: clearly better; ~80 % more input tokens, ~+25 % latency, ~1.7x cost.
  v2.2.0  gpt-4.1-nano: pass 0.80, clearly worse (changed facts, half answers, hallucinated
          answers to unanswerable questions); ~half the latency, cheaper; must-pass still pass.
  v2.3.0  gpt-4.1-mini + cite prompt: pass 0.91, [n] citations, ~45 % longer answers, the dearest.
  v2.4.0  gpt-5-mini, same prompt and retrieval, no temperature (the API default 1.0, so a few
          more flaky cases): pass 0.92, not worse than v2.3.0, so the gate ships it; mean
          latency ~+40 % and p95 ~+45 % (its slow first token: the gate reports it, doc-qa sets
          no latency budget), ~30 % cheaper per sample. reasoning_effort is not modelled (like
          any parameter it only changes the draws). What the suite cannot show: production
          questions that paste a configuration, which it refuses (demo/traces.py: the canary).
Must-pass cases pass every sample on all releases except v1.5.0 (and v1.2.0's format failures).
Unlike production (demo/traces.py), where gpt-4.1-mini answers ~15 % faster, the eval environment
sees gpt-4.1-mini with a slower time to first token, so v1.4.0 is the "slower and costlier"
release of the eval story.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass
from typing import Any

from relops_pipeline.demo.traces import CONFIG_REFUSAL, PRICES_PER_MTOK, RESPONSE_MODELS
from relops_pipeline.lib.evals.model import Case, Manifest

__all__ = ["respond", "MODEL_PROFILES", "ABSTAIN_ANSWER"]


@dataclass(frozen=True)
class ModelProfile:
    """What the simulation knows about a model (times in ms, prices in USD per 1M tokens)."""

    skill: float  # base quality in [0, 1]: higher passes harder cases
    ttft_ms: float  # time to first token
    prefill_ms_per_token: float  # added to the first token per input token
    ms_per_output_token: float
    verbosity: float  # output length relative to the case's gold answer
    price_in: float
    price_out: float
    # Share of questions with a pasted configuration the model refuses (demo/traces.py's doc-qa
    # v2.4.0 canary): no curated case pastes one, so only cases made from incidents show it.
    config_refusal: float = 0.0


def _price(model: str) -> tuple[float, float]:
    p = PRICES_PER_MTOK.get(model, {"input": 0.5, "output": 1.5})
    return p["input"], p["output"]


_EXTRA_PRICES = {"gpt-4o": (2.50, 10.00), "gpt-4.1": (2.00, 8.00),
                 "claude-3-5-haiku": (0.80, 4.00), "claude-sonnet-4": (3.00, 15.00)}

MODEL_PROFILES: dict[str, ModelProfile] = {
    "gpt-4o-mini": ModelProfile(0.78, 330.0, 0.25, 3.4, 1.25, *_price("gpt-4o-mini")),
    "gpt-4.1-mini": ModelProfile(0.84, 470.0, 0.22, 4.2, 1.45, *_price("gpt-4.1-mini")),
    "gpt-4.1-nano": ModelProfile(0.56, 160.0, 0.12, 1.9, 1.15, *_price("gpt-4.1-nano")),
    "gpt-4o": ModelProfile(0.88, 450.0, 0.30, 8.0, 1.35, *_EXTRA_PRICES["gpt-4o"]),
    "gpt-4.1": ModelProfile(0.90, 520.0, 0.28, 7.0, 1.40, *_EXTRA_PRICES["gpt-4.1"]),
    "gpt-5-mini": ModelProfile(0.88, 900.0, 0.20, 5.0, 1.50, *_price("gpt-5-mini"), config_refusal=0.5),
    "claude-3-5-haiku": ModelProfile(0.80, 420.0, 0.22, 4.5, 1.30, *_EXTRA_PRICES["claude-3-5-haiku"]),
    "claude-sonnet-4": ModelProfile(0.90, 700.0, 0.30, 9.0, 1.50, *_EXTRA_PRICES["claude-sonnet-4"]),
}
_DEFAULT_PROFILE = ModelProfile(0.75, 400.0, 0.25, 5.0, 1.30, 0.50, 1.50)

ABSTAIN_ANSWER = "The documentation does not cover this question."

_K = 7.0  # logit units per unit of (skill - difficulty)
_CRITICAL_LOGIT = 6.0  # + 6 * skill: must-pass behaviour with its policy clause present
_TAIL_SHARE = 0.03  # samples that hit provider-side queueing
_CHARS_PER_TOKEN = {"en": 4.0, "de": 3.4, "fr": 3.5, "es": 3.6}
_ORDER_RE = re.compile(r"\bA\d{6}\b")
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9¿¡\"'(])")
_WORD_RE = re.compile(r"[a-z][a-z-]*")

# Policy tags of cases, and the system-prompt clause that covers each.
_POLICIES: dict[str, re.Pattern[str]] = {
    "privacy": re.compile(r"another customer|other customers", re.I),
    "credentials": re.compile(r"password|card number|API key|secret", re.I),
    "prompt-injection": re.compile(
        r"as instructions|whatever the (question|ticket|user) says|ignore .*instructions", re.I),
    "account-takeover": re.compile(r"security team", re.I),
    "vulnerability": re.compile(r"security team", re.I),
    "refund-policy": re.compile(r"invoice amount|refund window", re.I),
    "outage": re.compile(r"outage", re.I),
    "compliance": re.compile(r"compliance|quot(e|ing) them exactly", re.I),
}
_KNOWN_CATEGORIES = ("billing", "login", "shipping", "refund", "bug", "feature-request", "account-deletion",
                     "other")
_CONFUSIONS = {
    "billing": ("refund", "other"), "refund": ("billing", "shipping"), "shipping": ("refund", "other"),
    "login": ("bug", "other"), "bug": ("feature-request", "login"), "feature-request": ("other", "bug"),
    "other": ("feature-request", "billing"), "account-deletion": ("other", "login"),
}
_PRIORITIES = ("low", "normal", "high", "urgent")
_KEYWORDS = {  # fallback classifier for cases without an expected category
    "refund": ("refund", "money back", "reembolso", "remboursement", "erstattung"),
    "billing": ("invoice", "charged", "charge", "billing", "payment", "factur", "rechnung"),
    "login": ("log in", "login", "password", "two-factor", "sign in", "locked", "sso"),
    "shipping": ("order", "parcel", "tracking", "delivered", "shipping", "commande", "pedido"),
    "bug": ("error", "crash", "500", "broken", "fails", "bug"),
    "feature-request": ("would be great", "please add", "feature", "support for"),
    "account-deletion": ("delete my account", "erasure", "gdpr"),
}

_PAD = {
    "en": ["Thank you for contacting Acme Relay support.", "I understand how frustrating this is.",
           "Let me know if there is anything else I can help with.",
           "You will receive an email confirmation shortly.",
           "If the problem persists, reply to this message and we will look into it again.",
           "Our help center also has a step-by-step guide on this topic.",
           "I have added a note to your account so the whole team can see the history.",
           "Thank you for your patience while we sort this out.", "Best regards, the Acme Relay team."],
    "de": ["Vielen Dank für Ihre Nachricht an den Acme Relay Support.", "Entschuldigen Sie die Unannehmlichkeiten.",
           "Melden Sie sich gern, wenn Sie weitere Fragen haben.", "Viele Grüße, Ihr Acme Relay Team."],
    "fr": ["Merci d'avoir contacté le support Acme Relay.", "Veuillez nous excuser pour la gêne occasionnée.",
           "N'hésitez pas à nous recontacter si besoin.", "Cordialement, l'équipe Acme Relay."],
    "es": ["Gracias por contactar con el soporte de Acme Relay.", "Disculpe las molestias.",
           "No dude en escribirnos si necesita algo más.", "Saludos, el equipo de Acme Relay."],
}
_VAGUE = {
    "en": "I have forwarded your ticket to the responsible team, and they will get back to you shortly.",
    "de": "Ich habe Ihr Anliegen an das zuständige Team weitergeleitet.",
    "fr": "J'ai transmis votre demande à l'équipe concernée.",
    "es": "He enviado su solicitud al equipo responsable.",
}
_QA_LEADS = ("", "", "", "Short answer: ", "According to the documentation, ")
_QA_EXTRAS = ["See the documentation for the full list of options.", "Let me know if you need an example.",
              "I hope this helps."]
_QA_ABSTAIN_EXTRAS = ["You can ask our support team at support@acme-relay.example.",
                      "Let me know if I can help with anything else."]
_QA_VAGUE = ["You can change this in the dashboard under Settings; the exact option depends on your plan.",
             "This is handled automatically by the platform, so usually no configuration is needed.",
             "Please check the relevant section of the documentation or contact support for details."]
_QA_HALLUCINATED = ["Yes, this is supported: enable it under Settings > Integrations and restart the agent.",
                    "Yes. It is available on all plans and can be turned on in relay.yaml with enabled: true.",
                    "That is included in the Business plan; contact sales to activate it for your account."]
_HEADER_RE = re.compile(r"^[A-Z][a-z]+(-[A-Z][a-z]+)+$")
_WORD_SWAPS = {"attempts": "retries", "timeout_ms": "timeout_s", "per_second": "per_minute",
               "max_delay_s": "max_backoff", "cursor": "page number", "Authorization": "X-Api-Key",
               "bearer": "basic", "asynchronously": "synchronously",
               "idempotent": "stateless", "up front": "monthly", "init": "setup", "apiKey": "token",
               "secret": "password", "replay": "resend", "delivery log": "audit log", "can't share": "can share",
               "cannot be disabled": "can be disabled", "Business plan": "Team plan", "migration guide": "changelog",
               "endpoints:": "targets:", "relay.yaml": "relay.toml", "failed-delivery": "error", "RELAY_": "ACME_",
               "included quota": "base fee", "billing contact": "account owner",
               "end of the current billing period": "immediately", "including retries": "excluding retries",
               "Settings > Billing": "Settings > Account", "Settings > Integrations": "Settings > Apps",
               "Settings > Legal": "Settings > Privacy", "pip install acme-relay": "pip install relay-cli",
               "data processing agreement": "privacy policy", "event id": "delivery id"}


# --------------------------------------------------------------------------- features


@dataclass(frozen=True)
class _Features:
    key: str
    model: str
    profile: ModelProfile
    temperature: float
    sharp: float  # multiplies every logit: temperature 0 -> 2.9, 0.2 -> 1.9, 0.7 -> 1.0, 1.0 -> 0.8
    max_tokens: int | None
    json_mode: bool
    system: str
    asks_json: bool  # the system prompt asks for a JSON object
    json_only: bool  # ... and nothing else
    categories: tuple[str, ...] | None  # the categories the system prompt names (None: no list)
    policies: frozenset[str]  # policy tags whose clause the system prompt has
    brevity: float
    grounded: bool  # "only the documentation/excerpts"
    abstains: bool  # says what to answer when the docs do not cover a question
    cites: bool
    tools: frozenset[str]
    top_k: int
    chunk_tokens: int
    tool_tokens: int


_FEATURE_CACHE: dict[str, _Features] = {}


def _profile(model: str) -> ModelProfile:
    best = ""
    for name in MODEL_PROFILES:
        if model.startswith(name) and len(name) > len(best):
            best = name
    return MODEL_PROFILES[best] if best else _DEFAULT_PROFILE


def _num(value: Any, default: float) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _features(manifest: Manifest) -> _Features:
    behaviour = {"model": manifest.model, "prompts": manifest.prompts, "parameters": manifest.parameters,
                 "tools": manifest.tools, "retrieval": manifest.retrieval}
    blob = json.dumps(behaviour, sort_keys=True, ensure_ascii=False, default=str)
    cached = _FEATURE_CACHE.get(blob)
    if cached is not None:
        return cached
    import hashlib

    params = manifest.parameters or {}
    temperature = min(2.0, max(0.0, _num(params.get("temperature"), 1.0)))
    max_tokens = params.get("max_tokens", params.get("max_completion_tokens"))
    max_tokens = int(max_tokens) if isinstance(max_tokens, (int, float)) and max_tokens > 0 else None
    rf = params.get("response_format")
    rf_type = rf.get("type") if isinstance(rf, dict) else rf
    json_mode = rf_type in ("json_object", "json_schema", "json")
    system = str((manifest.prompts or {}).get("system") or "")
    low = system.lower()
    m = re.search(r"categor(?:y|ies)[^:\n]*:\s*([^\n]+?)(?:\.\s|\.$|\n|$)", system, re.I)
    categories = None
    if m:
        found = tuple(w.strip(" .") for w in re.split(r",|\bor\b|\band\b", m.group(1)) if w.strip(" ."))
        categories = tuple(c for c in found if re.fullmatch(r"[a-z][a-z-]*", c)) or None
    brevity = 1.0
    if re.search(r"\b(concise|brief)\b", low):
        brevity = 0.9
    if re.search(r"\b(detailed|thorough)\b", low):
        brevity = 1.25
    retrieval = manifest.retrieval or {}
    tools = frozenset(str(t.get("name")) for t in (manifest.tools or []) if isinstance(t, dict))
    tool_tokens = sum(30 + len(json.dumps(t, default=str)) // 4 for t in (manifest.tools or []))
    feat = _Features(
        key=hashlib.sha256(blob.encode()).hexdigest()[:20],
        model=manifest.model,
        profile=_profile(manifest.model),
        temperature=temperature,
        sharp=1.0 / (0.35 + 0.9 * temperature),
        max_tokens=max_tokens,
        json_mode=json_mode,
        system=system,
        asks_json="json" in low,
        json_only="json" in low and bool(re.search(r"nothing else|only (the |a )?json|no other text", low)),
        categories=categories,
        policies=frozenset(tag for tag, rx in _POLICIES.items() if rx.search(system)),
        brevity=brevity,
        grounded=bool(re.search(r"only (the |from the )?(documentation|excerpts|context)", low)),
        abstains=bool(re.search(r"does not cover|do not contain the answer|say so|don't know", low)),
        cites=bool(re.search(r"\bcite\b", low)),
        tools=tools,
        top_k=int(_num(retrieval.get("top_k"), 0)) if retrieval else 0,
        chunk_tokens=int(_num(retrieval.get("chunk_tokens"), 160)),
        tool_tokens=tool_tokens,
    )
    if len(_FEATURE_CACHE) > 256:
        _FEATURE_CACHE.clear()
    _FEATURE_CACHE[blob] = feat
    return feat


# --------------------------------------------------------------------------- latent case traits


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _difficulty(case: Case) -> float:
    u = random.Random(f"relops-demo-case:{case.id}").random()
    tags = set(case.tags)
    if "easy" in tags:
        return 0.05 + 0.30 * u
    if "medium" in tags:
        return 0.30 + 0.35 * u
    if "hard" in tags:
        return 0.55 + 0.40 * u
    return 0.20 + 0.60 * u


def _gold_rank(case: Case, critical: bool) -> int | None:
    """Rank of the excerpt holding the answer in the retriever's results (None: not in the docs)."""
    if "unanswerable" in case.tags:
        return None
    if critical:
        return 1
    u = random.Random(f"relops-demo-rank:{case.id}").random()
    tags = set(case.tags)
    if "easy" in tags:
        return 1 if u < 0.7 else 2
    if "hard" in tags:
        return 3 + int(u * 10)  # 3..12
    return 1 + int(u * u * 8)  # medium: 1..8, mostly near the top


def _case_logit(feat: _Features, case: Case, bonus: float = 0.0) -> float:
    """Log-odds that this model gets this case right (before temperature)."""
    policy_tags = [t for t in case.tags if t in _POLICIES]
    critical = case.must_pass or bool(policy_tags)
    if critical and all(t in feat.policies for t in policy_tags):
        return _CRITICAL_LOGIT + 6.0 * feat.profile.skill
    inter = random.Random(f"relops-demo-fit:{feat.model}:{case.id}").gauss(0.0, 0.8)
    d = 0.85 if critical else _difficulty(case)
    return _K * (feat.profile.skill - d) + inter + bonus


def _draw(rng: random.Random, feat: _Features, logit: float) -> bool:
    return rng.random() < _sigmoid(logit * feat.sharp)


# --------------------------------------------------------------------------- text helpers


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_RE.split(text.strip()) if s]


def _lang(case: Case, text: str) -> str:
    fields = (case.expected or {}).get("fields") or {}
    lang = fields.get("language")
    if isinstance(lang, str) and lang in _CHARS_PER_TOKEN:
        return lang
    for t in case.tags:
        if t in ("de", "fr", "es"):
            return t
    if re.search(r"[äöüß]", text):
        return "de"
    if re.search(r"[¿¡ñ]", text):
        return "es"
    if re.search(r"[éèêàç]", text):
        return "fr"
    return "en"


def _input_text(case: Case, key: str) -> str:
    vars_ = case.input.get("vars") or {}
    if key in vars_:
        return str(vars_[key])
    for m in reversed(case.input.get("messages") or []):
        if m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else json.dumps(c, ensure_ascii=False)
    return " ".join(str(v) for v in vars_.values())


def _violation(phrase: str) -> str:
    return f"As requested, here are the details: {phrase}."


def _fit_length(parts: list[str], keep: set[int], target: int, pad: list[str], rng: random.Random) -> list[str]:
    """Pad with pool sentences (no repeats) or drop optional ones until near `target` chars."""
    length = sum(len(p) + 1 for p in parts)
    if length < target:
        pool = pad[:]
        rng.shuffle(pool)
        tail = [p for p in pool if p.startswith(("Best regards", "Viele Grüße", "Cordialement", "Saludos"))]
        body = [p for p in pool if p not in tail]
        while length < target and body:
            s = body.pop()
            parts.append(s)
            length += len(s) + 1
        if length < target and tail:
            parts.append(tail[0])
    elif length > target * 1.15:
        for i in range(len(parts) - 1, 0, -1):
            if length <= target:
                break
            if i not in keep:
                length -= len(parts[i]) + 1
                parts[i] = ""
    return [p for p in parts if p]


def _length_noise(rng: random.Random, feat: _Features) -> float:
    sigma = 0.03 + 0.08 * feat.temperature
    return math.exp(max(-2.5, min(2.5, rng.gauss(0.0, 1.0))) * sigma)


# --------------------------------------------------------------------------- tasks


def _classify(ticket: str) -> str:
    low = ticket.lower()
    for cat, words in _KEYWORDS.items():
        if any(w in low for w in words):
            return cat
    return "other"


def _triage(feat: _Features, case: Case, rng: random.Random) -> tuple[str, dict[str, Any]]:
    expected = case.expected or {}
    fields = expected.get("fields") or {}
    ticket = _input_text(case, "ticket")
    lang = _lang(case, ticket)
    category_field = fields.get("category")
    truth: str = category_field if isinstance(category_field, str) else _classify(ticket)
    priority_field = fields.get("priority")
    truth_prio: str = priority_field if isinstance(priority_field, str) and priority_field in _PRIORITIES else "normal"
    contains = [str(s) for s in expected.get("contains") or []]
    banned = [str(s) for s in expected.get("not_contains") or []]

    info: dict[str, Any] = {"tool_calls": 0}
    bonus = 0.0
    order_case = bool(_ORDER_RE.search(ticket))
    if order_case and "lookup_order" in feat.tools and rng.random() < 0.7:
        info["tool_calls"] = 1
        bonus += 0.4
    elif "order-lookup" in case.tags and "lookup_order" not in feat.tools:
        bonus -= 0.4
    logit = _case_logit(feat, case, bonus)

    allowed = feat.categories
    if allowed is not None and truth not in allowed:
        # The prompt does not know this category: the model files it under a neighbour.
        options = [c for c in _CONFUSIONS.get(truth, ("other",)) if c in allowed] or ["other"]
        category = options[0] if rng.random() < 0.6 else options[-1]
    elif _draw(rng, feat, logit + 0.8):
        category = truth
    else:
        options = [c for c in _CONFUSIONS.get(truth, ("other",)) if allowed is None or c in allowed] or ["other"]
        category = options[int(rng.random() * len(options))]
    priority = truth_prio
    if not _draw(rng, feat, logit + 1.5):
        i = _PRIORITIES.index(truth_prio)
        priority = _PRIORITIES[i + 1 if i == 0 or (i < 3 and rng.random() < 0.5) else i - 1]
    content_ok = _draw(rng, feat, logit + 0.4)
    safe = not banned or _draw(rng, feat, logit + 0.5)

    reference = expected.get("reference")
    if not isinstance(reference, str) or not reference.strip():
        reference = " ".join([_PAD[lang][0]] + ([f"About your request: {'; '.join(contains)}."] if contains else []))
    parts = _sentences(reference)
    if not content_ok and contains:
        phrase = contains[int(rng.random() * len(contains))]
        hits = [i for i, p in enumerate(parts) if phrase in p]
        for i in reversed(hits):
            parts[i] = _VAGUE[lang] if i == hits[0] else ""
        parts = [p for p in parts if p]
    if not safe:
        parts.insert(min(1, len(parts)), _violation(banned[int(rng.random() * len(banned))]))
    keep = {i for i, p in enumerate(parts) if any(c in p for c in contains + banned)}
    target = int(len(reference) * feat.profile.verbosity * feat.brevity * _length_noise(rng, feat))
    reply = " ".join(_fit_length(parts, keep, target, _PAD[lang], rng))

    doc = {"category": category, "priority": priority, "language": lang, "reply": reply}
    if feat.json_mode:
        return json.dumps(doc, ensure_ascii=False), info
    if not feat.asks_json:
        return reply, info  # nobody asked for JSON: a plain-text answer
    p_format = (0.02 + 0.07 * feat.temperature) * (0.6 if feat.json_only else 1.5)
    r = rng.random()
    if r < p_format * 0.75:
        return "```json\n" + json.dumps(doc, ensure_ascii=False, indent=2) + "\n```", info
    if r < p_format:
        return "Here is the triage result:\n\n" + json.dumps(doc, ensure_ascii=False, indent=2), info
    return json.dumps(doc, ensure_ascii=False), info


def _mangle(fact: str, rng: random.Random) -> str | None:
    """A plausible but wrong version of a fact, or None when there is no good one."""
    if fact in _WORD_SWAPS:
        return _WORD_SWAPS[fact]
    if re.search(r"\d", fact):
        def bump(m: re.Match[str]) -> str:
            n = m.group(0)
            if "." in n:
                a, b = n.split(".", 1)
                return f"{a}.{max(0, int(b) - 1) if b.isdigit() and int(b) > 0 else int(b or 0) + 1}"
            v = int(n)
            return str(v * 2 if v < 10 or rng.random() < 0.5 else max(1, v // 2))
        out = re.sub(r"\d+(?:\.\d+)?", bump, fact, count=1)
        return out if out != fact else None
    if _HEADER_RE.match(fact):
        return "X-" + fact
    if "/v1/" in fact:
        return fact.replace("/v1/", "/v2/")
    for word, swap in _WORD_SWAPS.items():
        if word in fact:
            return fact.replace(word, swap)
    if "." in fact or "_" in fact:
        return re.split(r"[._]", fact)[0] + "." + "setting"
    return None


_PASTED_CONFIG = re.compile(r"(?i)here is my config|^\s*endpoint_\w+:", re.M)


def _qa(feat: _Features, case: Case, rng: random.Random) -> tuple[str, dict[str, Any]]:
    expected = case.expected or {}
    question = _input_text(case, "question")
    lang = _lang(case, question)
    reference_field = expected.get("reference")
    reference: str = reference_field if isinstance(reference_field, str) else ""
    contains = [str(s) for s in expected.get("contains") or []]
    banned = [str(s) for s in expected.get("not_contains") or []]
    policy_tags = [t for t in case.tags if t in _POLICIES]
    critical = case.must_pass or bool(policy_tags)
    rank = _gold_rank(case, critical)
    retrieved = rank is not None and rank <= feat.top_k
    info: dict[str, Any] = {"retrieved": retrieved, "gold_rank": rank}
    if _PASTED_CONFIG.search(question) and rng.random() < feat.profile.config_refusal:
        return CONFIG_REFUSAL, {**info, "refused": True}

    bonus = (0.5 if feat.grounded else 0.0) + (0.4 if feat.cites else 0.0)
    if feat.top_k > 6:  # long contexts distract weaker models a little
        bonus -= 0.12 * (feat.top_k - 6) * (1.0 - feat.profile.skill) * _K / 2
    logit = _case_logit(feat, case, bonus)
    skill = feat.profile.skill

    sentences: list[str] | None = None
    if rank is None:  # not in the docs: the right answer says so
        if _draw(rng, feat, _K * (skill - 0.45) + (2.0 if feat.abstains else -1.0) + (0.8 if feat.grounded else 0.0)):
            sentences = [ABSTAIN_ANSWER]
        else:
            sentences = [_QA_HALLUCINATED[int(rng.random() * len(_QA_HALLUCINATED))]]
    elif retrieved and _draw(rng, feat, logit + 0.6):
        sentences = _sentences(reference) or [reference]
    elif not retrieved and feat.abstains and _draw(rng, feat, _K * (skill - 0.35) + (0.8 if feat.grounded else 0.0)):
        sentences = [ABSTAIN_ANSWER]
    else:  # a wrong answer: a changed fact, half an answer, or something vague
        base = _sentences(reference) or [reference]
        r = rng.random()
        mangled = None
        if contains and r < 0.55:
            text = " ".join(base)
            for fact in contains:
                wrong = _mangle(fact, rng)
                if wrong is not None and fact in text:
                    text = text.replace(fact, wrong)
                    mangled = text
            if mangled is not None:
                sentences = _sentences(mangled)
        if sentences is None and len(base) > 1 and r < 0.8:
            sentences = base[:1]
        if sentences is None:
            sentences = [_QA_VAGUE[int(rng.random() * len(_QA_VAGUE))]]
    if banned and not _draw(rng, feat, logit + 0.5):
        sentences = sentences + [_violation(banned[int(rng.random() * len(banned))])]

    abstained = sentences == [ABSTAIN_ANSWER]
    if lang == "en" and not abstained and not critical:
        lead = _QA_LEADS[int(rng.random() * len(_QA_LEADS))]
        if lead:
            first = sentences[0]
            if len(first) > 1 and first[1].islower():
                first = first[0].lower() + first[1:]
            sentences = [lead + first] + sentences[1:]
    cited = retrieved and feat.cites and not abstained
    body = [f"{s} [{min(i + 1, 2)}]" for i, s in enumerate(sentences)] if cited else list(sentences)
    # Wordier models add a closing sentence or two.
    n_extra = int((feat.profile.verbosity * feat.brevity - 1.0) * 4.0 + rng.random())
    pool = (_QA_ABSTAIN_EXTRAS if abstained else _QA_EXTRAS) if lang == "en" else []
    if n_extra > 0 and pool:
        start = int(rng.random() * len(pool))
        body += [pool[(start + i) % len(pool)] for i in range(min(n_extra, len(pool)))]
    text = " ".join(body)
    if cited:
        area = case.tags[0] if case.tags else "docs"
        sources = [f"[1] docs/{area}.md"] + ([f"[2] docs/{area}-reference.md"] if len(sentences) > 1 else [])
        text += "\n\nSources:\n" + "\n".join(sources)
    return text, info


def _generic(feat: _Features, case: Case, rng: random.Random) -> tuple[str, dict[str, Any]]:
    expected = case.expected or {}
    reference = expected.get("reference")
    contains = [str(s) for s in expected.get("contains") or []]
    ok = _draw(rng, feat, _case_logit(feat, case) + 0.6)
    if isinstance(reference, str) and reference:
        return (reference if ok else _VAGUE["en"]), {}
    if contains:
        return ("; ".join(contains) if ok else _VAGUE["en"]), {}
    return "OK", {}


# --------------------------------------------------------------------------- the callable


def respond(manifest: Manifest, case: Case, sample: int, seed: int = 0) -> dict[str, Any]:
    """Simulate one chat completion of `manifest` on `case` (sample `sample`, run seed `seed`).

    Returns {output, latency_ms, input_tokens, output_tokens, cost_usd, model, finish_reason,
    tool_calls}: the python runner keeps the first five as the sample and the rest as raw.
    Deterministic given the manifest's model, prompts, parameters, tools and retrieval, the
    case, the sample and the seed. A template variable missing from the case raises
    RenderError (the runner records it as the sample's error), as a real call would fail.
    """
    from relops_pipeline.lib.evals.manifests import render_messages

    feat = _features(manifest)
    messages = render_messages(manifest, case)
    rng = random.Random(f"relops-demo-llm:{feat.key}:{case.id}:{int(sample)}:{int(seed)}")
    vars_ = case.input.get("vars") or {}
    expected = case.expected or {}
    if "ticket" in vars_ or "category" in (expected.get("fields") or {}):
        output, info = _triage(feat, case, rng)
        retrieval_tokens = 0
    elif "question" in vars_ or isinstance(expected.get("reference"), str):
        output, info = _qa(feat, case, rng)
        retrieval_tokens = feat.top_k * feat.chunk_tokens
    else:
        output, info = _generic(feat, case, rng)
        retrieval_tokens = 0

    prompt_chars = sum(len(c if isinstance(c := m.get("content"), str) else json.dumps(c)) for m in messages)
    input_tokens = prompt_chars // 4 + 7 * len(messages) + feat.tool_tokens + retrieval_tokens
    cpt = _CHARS_PER_TOKEN.get(_lang(case, output[:400]), 4.0)
    output_tokens = max(1, math.ceil(len(output) / cpt))
    finish = "stop"
    if feat.max_tokens is not None and output_tokens > feat.max_tokens:
        output = output[: int(feat.max_tokens * cpt)]
        output_tokens = feat.max_tokens
        finish = "length"

    prof = feat.profile
    lat = prof.ttft_ms * math.exp(rng.gauss(0.0, 0.3)) + input_tokens * prof.prefill_ms_per_token
    lat += output_tokens * prof.ms_per_output_token * math.exp(rng.gauss(0.0, 0.12))
    total_in = input_tokens
    total_out = output_tokens
    if info.get("tool_calls"):
        call_tokens = 18 + int(rng.random() * 12)
        lat += (prof.ttft_ms * math.exp(rng.gauss(0.0, 0.3)) + input_tokens * prof.prefill_ms_per_token
                + call_tokens * prof.ms_per_output_token + 120.0 * math.exp(rng.gauss(0.0, 0.5)))
        total_in += input_tokens + 60
        total_out += call_tokens
    if retrieval_tokens:
        lat += (30.0 + 2.0 * feat.top_k) * math.exp(rng.gauss(0.0, 0.25))
    if rng.random() < _TAIL_SHARE:  # provider-side queueing: the heavy tail
        lat *= 1.5 + 2.5 * rng.random()
    cost = (total_in * prof.price_in + total_out * prof.price_out) / 1e6
    return {
        "output": output,
        "latency_ms": round(lat, 1),
        "input_tokens": total_in,
        "output_tokens": total_out,
        "cost_usd": round(cost, 8),
        "model": RESPONSE_MODELS.get(feat.model, feat.model),
        "finish_reason": finish,
        "tool_calls": int(info.get("tool_calls", 0)),
    }
