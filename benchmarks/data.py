"""Synthetic data for the benchmark: a day of ticket rows, and OpenAI batch output files for them.

Rows are realistic in size (a subject, a body of a few sentences, the export's other fields:
about 700 bytes a line), all valid, with unique ids, so every stage handles every record. Output
lines are what the OpenAI Batch API writes (about 700 bytes too), each a valid answer to its
record under the ticket_summary schema.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable
from pathlib import Path

BODIES = [
    "I was charged twice for the monthly plan on my last invoice. Please refund the second charge.",
    "Since the last update the app crashes on startup with an error about a missing file.",
    "The tracking says the package was delivered on Monday, but there was no delivery at all.",
    "I reset my password but the login page still says the password is wrong. I tried three times.",
    "Thanks for solving my issue so quickly. One suggestion: a dark mode would be a great feature.",
]
FOLLOW_UPS = [
    "Agent: Thanks for reaching out. I have escalated this to the team.",
    "Customer: Any update? This is still not solved.",
    "Agent: I have issued a credit to your account for the trouble.",
]
CATEGORIES = ["billing", "technical", "shipping", "account", "feedback"]


def ticket_id(n: int) -> str:
    return f"T-{1_000_000 + n}"


def write_source(path: Path, n: int, seed: int = 5) -> Path:
    """``n`` ticket rows as one day's export (JSON Lines)."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for i in range(n):
            body = " ".join([rng.choice(BODIES), *rng.sample(FOLLOW_UPS, k=2), rng.choice(BODIES)])
            row = {
                "ticket_id": ticket_id(i),
                "subject": f"Ticket {i}: {body[:40]}",
                "body": body,
                "customer_id": f"C-{rng.randint(1000, 9999)}",
                "channel": rng.choice(["email", "chat", "web"]),
                "language_hint": "en",
                "closed_at": "2026-11-25T10:00:00Z",
            }
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def answer(source_id: str, n: int) -> dict:
    return {
        "ticket_id": source_id,
        "summary": "The customer reports a problem with the account and asks for a quick fix and a refund. "
        "The agent escalated it and issued a credit.",
        "category": CATEGORIES[n % len(CATEGORIES)],
        "sentiment": "negative",
        "language": "en",
        "action_items": ["Refund the second charge", "Send a confirmation by email"],
    }


def output_line(custom_id: str, source_id: str, n: int) -> str:
    """One line of an OpenAI batch output file: a chat completion answering one record."""
    content = json.dumps(answer(source_id, n))
    body = {
        "id": f"chatcmpl-{n:024d}",
        "object": "chat.completion",
        "created": 1764064800,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 180, "completion_tokens": 60, "total_tokens": 240},
        "system_fingerprint": "fp_bench",
    }
    response = {"status_code": 200, "request_id": f"req_{n:028d}", "body": body}
    return json.dumps({"id": f"batch_req_{n:024d}", "custom_id": custom_id, "response": response, "error": None})


_CUSTOM_ID = re.compile(r'"custom_id": "r\d+-a(\d+)"')


def renumber(line: str, n: int) -> str:
    """An output line with its custom id ``r{id}-a{k}`` rewritten as ``r{n}-a{k}``."""
    return _CUSTOM_ID.sub(lambda m: f'"custom_id": "r{n}-a{m.group(1)}"', line, count=1)


def write_output(path: Path, records: Iterable[tuple[str, str]]) -> int:
    """An output file answering ``(custom_id, source_id)`` pairs, in order; returns the line count."""
    count = 0
    with open(path, "w", encoding="utf-8") as out:
        for count, (custom_id, source_id) in enumerate(records, start=1):
            out.write(output_line(custom_id, source_id, count) + "\n")
    return count
