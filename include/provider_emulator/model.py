"""The emulator's "model": answers that follow the request's JSON Schema, made from the input.

Deterministic per key (the custom id of a batch line, or the request text for a real-time
call), so a test can predict exactly what every record gets. It is not clever, only honest:
the summary really is taken from the ticket, the echoed id really is the one in the prompt,
and enum values are picked by keywords found in the text.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import random
import re
from typing import Any

_KEY_VALUE = re.compile(r"^\s*([A-Za-z][A-Za-z _-]{0,30}):\s*(.+?)\s*$")
_TAG = re.compile(r"<[^>]*>")
_SENTENCE = re.compile(r"(?<=[.!?。！？])\s+")

# Keywords that point to an enum value, for the enum values the bundled workloads use.
LEXICON: dict[str, tuple[str, ...]] = {
    "billing": ("invoice", "charge", "charged", "refund", "payment", "price", "bill", "rechnung", "factura", "facture"),
    "technical": ("error", "crash", "bug", "broken", "not working", "fehler", "erreur", "timeout", "app"),
    "account": ("password", "login", "log in", "account", "2fa", "email address", "konto", "compte", "cuenta"),
    "shipping": (
        "delivery",
        "package",
        "parcel",
        "shipped",
        "tracking",
        "courier",
        "lieferung",
        "livraison",
        "envío",
        "shipping",
    ),
    "feedback": ("suggest", "feature", "would be nice", "love", "feedback", "idea"),
    "negative": ("angry", "terrible", "worst", "still", "unacceptable", "disappointed", "refund", "never", "broken"),
    "positive": ("thank", "thanks", "great", "love", "resolved", "perfect", "danke", "merci", "gracias"),
    # document tagging
    "contract": ("agreement", "terminate", "liability", "renew", "party", "parties", "clause"),
    "help_article": ("getting started", "how to", "step", "click", "settings"),
    "invoice": ("invoice", "vat", "amount due", "due date", "total"),
    "pricing": ("price", "pricing", "fee"),
    "termination": ("terminate", "termination", "notice period"),
    "liability": ("liability", "liable", "indemn"),
    "data_protection": ("personal data", "gdpr", "data protection", "privacy"),
    "payment_terms": ("payment", "due date", "net 30"),
    "renewal": ("renew", "renewal"),
    "onboarding": ("getting started", "onboarding", "first steps"),
    "troubleshooting": ("error", "troubleshoot", "not working", "fails"),
    "account_management": ("password", "account", "login", "user"),
    "refund": ("refund",),
    "tax": ("vat", "tax"),
    # compliance review
    "misleading_promise": ("guaranteed return", "guaranteed returns", "risk-free", "garantiert"),
    "credential_sharing": ("password is", "passwort ist", "mot de passe est"),
    "record_avoidance": ("off the record",),
    "evidence_destruction": ("delete the emails", "delete the e-mails", "shred"),
    "personal_data": ("@", "iban", "+44", "+49"),
    # lead scoring
    "hot": ("budget approved", "demo", "pricing", "urgent", "asap", "decision maker", "contract"),
    "warm": ("interested", "webinar", "trial", "follow up", "next quarter"),
    "cold": ("not interested", "student", "unsubscribe", "no budget"),
}

# What a compliance check would redact: e-mail addresses, phone numbers, IBANs.
PII = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"  # an e-mail address
    r"|\+\d{1,3}(?:[ -]?\d{2,4}){2,4}"  # a phone number
    r"|\b[A-Z]{2}\d{2}(?: ?[0-9A-Z]{4}){3,7}(?: ?[0-9A-Z]{1,3})?"  # an IBAN
)

_STOPWORDS = {
    "en": ("the", "and", "is", "my", "to", "you", "not", "with", "have"),
    "de": ("der", "die", "und", "ist", "nicht", "mein", "ich", "mit", "das"),
    "fr": ("le", "la", "et", "est", "pas", "mon", "je", "avec", "les"),
    "es": ("el", "la", "y", "es", "no", "mi", "con", "los", "que"),
    "pt": ("o", "a", "e", "não", "meu", "com", "os", "que", "é"),
    "it": ("il", "la", "e", "non", "mio", "con", "che", "è", "per"),
    "nl": ("de", "het", "en", "is", "niet", "mijn", "ik", "met", "een"),
}


def estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def rng_for(key: str, salt: str = "") -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(f"{salt}:{key}".encode()).digest()[:8], "big"))


def detect_language(text: str) -> str:
    words = re.findall(r"\w+", text.lower())
    if not words:
        return "en"
    scores = {lang: sum(words.count(w) for w in stop) for lang, stop in _STOPWORDS.items()}
    if re.search(r"[\u3040-\u30ff]", text):
        return "ja"
    best = max(scores, key=lambda lang: (scores[lang], lang == "en"))
    return best if scores[best] else "en"


class Reading:
    """What the model takes from the user's message."""

    def __init__(self, user_text: str, error_rate: float = 0.0):
        self.error_rate = error_rate
        self.fields: dict[str, str] = {}
        for line in user_text.splitlines():
            m = _KEY_VALUE.match(line)
            if m and "<" not in m.group(1):
                self.fields.setdefault(_norm(m.group(1)), m.group(2))
        block = re.search(r"<input>(.*)</input>", user_text, re.S)
        body = block.group(1) if block else user_text
        # the input exactly as the source had it, for spans that point into it
        self.raw = body[1:-1] if body.startswith("\n") and body.endswith("\n") else body
        lines = []
        for line in html.unescape(_TAG.sub(" ", body)).splitlines():
            m = _KEY_VALUE.match(line)
            line = (m.group(2) if m else line).strip()
            if line:
                lines.append(line if line[-1] in ".!?。！？" else line + ".")
        self.text = re.sub(r"\s+", " ", " ".join(lines)).strip()
        self.sentences = [s for s in _SENTENCE.split(self.text) if s]
        self.language = detect_language(self.text)

    def excerpt(self, limit: int) -> str:
        out = ""
        for sentence in self.sentences[:3]:
            candidate = f"{out} {sentence}".strip()
            if len(candidate) > limit:
                break
            out = candidate
        return out or self.text[: max(0, limit - 1)].rstrip() or "No text."


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def answer(schema: dict[str, Any], user_text: str, key: str, error_rate: float = 0.0) -> dict[str, Any]:
    """An object that validates against ``schema``, derived from ``user_text``; ``error_rate``
    is the share of enum picks that go to a wrong value (a weaker model, for evaluations)."""
    reading = Reading(user_text, error_rate)
    value = _value(schema, "", reading, rng_for(key), schema)
    return value if isinstance(value, dict) else {"value": value}


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part]
        return node
    for combo in ("anyOf", "oneOf", "allOf"):
        if combo in schema:
            options = [o for o in schema[combo] if o.get("type") != "null"]
            return _resolve(options[0] if options else schema[combo][0], root)
    return schema


def _object_value(schema: dict[str, Any], reading: Reading, rng: random.Random, root: dict[str, Any]) -> dict:
    props = schema.get("properties", {})
    wanted = (
        props
        if schema.get("additionalProperties") is False
        else {k: v for k, v in props.items() if k in schema.get("required", props)}
    )
    out = {k: _value(v, k, reading, rng, root) for k, v in wanted.items()}
    for k, v in wanted.items():  # a flag says whether anything was found
        if "flag" in k and _resolve(v, root).get("type") == "boolean":
            out[k] = any(isinstance(x, list) and x for x in out.values())
    return out


def _array_value(schema: dict[str, Any], name: str, reading: Reading, rng: random.Random, root: dict[str, Any]) -> list:
    items = schema.get("items", {"type": "string"})
    found = _found_items(_resolve(items, root), schema, reading, rng, root)
    if found is not None:
        return found
    count = min(schema.get("maxItems", 3), max(schema.get("minItems", 0), rng.randint(0, 2)))
    if _resolve(items, root).get("type") == "string" and "enum" not in items:
        limit = min(items.get("maxLength", 120), 120)
        return [f"Follow up: {s}"[:limit] for s in reading.sentences[:count]]
    return [_value(items, name, reading, rng, root) for _ in range(count)]


def _value(schema: dict[str, Any], name: str, reading: Reading, rng: random.Random, root: dict[str, Any]) -> Any:
    schema = _resolve(schema, root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if "enum" in schema:
        return _choose(schema["enum"], reading, rng)
    if "const" in schema:
        return schema["const"]
    if kind == "object" or "properties" in schema:
        return _object_value(schema, reading, rng, root)
    if kind == "array":
        return _array_value(schema, name, reading, rng, root)
    if kind == "integer":
        return rng.randint(int(schema.get("minimum", 0)), int(schema.get("maximum", 100)))
    if kind == "number":
        return round(rng.uniform(float(schema.get("minimum", 0)), float(schema.get("maximum", 1))), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _string(schema, name, reading)


def _string(schema: dict[str, Any], name: str, reading: Reading) -> str:
    norm = _norm(name)
    if norm in reading.fields:
        return reading.fields[norm]
    if norm == "language" or schema.get("pattern") == "^[a-z]{2}$":
        return reading.language
    limit = min(int(schema.get("maxLength", 300)), 300)
    return reading.excerpt(limit)


def _scores(options: list[Any], reading: Reading) -> list[int]:
    text = reading.text.lower()
    return [sum(text.count(w) for w in LEXICON.get(str(o), (str(o).lower().replace("_", " "),))) for o in options]


def _choose(options: list[Any], reading: Reading, rng: random.Random) -> Any:
    scores = _scores(options, reading)
    best = max(scores)
    if best > 0:
        pick = options[scores.index(best)]
    else:
        neutral = [o for o in options if str(o) in ("neutral", "other", "none", "unknown")]
        pick = neutral[0] if neutral else rng.choice(options)
    if len(options) > 1 and reading.error_rate and rng.random() < reading.error_rate:
        pick = rng.choice([o for o in options if o != pick])
    return pick


def _found_items(
    items: dict[str, Any], schema: dict[str, Any], reading: Reading, rng: random.Random, root
) -> list | None:
    """Arrays whose items name what was found in the text: enum values (tags), objects with an
    enum (one per kind found), spans (``start``/``end`` offsets into the input as given)."""
    limit = schema.get("maxItems", 5)
    props = items.get("properties", {})
    if {"start", "end"} <= set(props):
        spans = []
        for m in PII.finditer(reading.raw):
            span = {k: _value(v, k, reading, rng, root) for k, v in props.items()}
            span.update(start=m.start(), end=m.end())
            if "text" in props:
                span["text"] = m.group(0)
            spans.append(span)
        return spans[:limit]
    options = items.get("enum") or next((p["enum"] for p in props.values() if "enum" in p), None)
    if not options:
        return None
    scores = _scores(options, reading)
    hits = [o for score, o in sorted(zip(scores, options), key=lambda x: -x[0]) if score > 0][:limit]
    if not hits and schema.get("minItems", 0) > 0:
        hits = [_choose(options, reading, rng)]
    if "enum" in items:
        return hits
    name = next(k for k, p in props.items() if "enum" in p)
    return [{**{k: _value(v, k, reading, rng, root) for k, v in props.items() if k != name}, name: hit} for hit in hits]


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def embedding(text: str, dimensions: int) -> list[float]:
    """A unit vector of ``dimensions`` numbers, fixed by the text (the same text, the same vector;
    a text that shares its opening with another lies near it)."""
    rng = rng_for(text, "embedding")
    near = rng_for(text[:40], "embedding-topic")  # texts with the same opening share a direction
    values = [0.6 * near.gauss(0.0, 1.0) + 0.4 * rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]
