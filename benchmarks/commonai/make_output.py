"""Write a synthetic OpenAI Batch API output file (standard library only, any Python 3).

    python benchmarks/commonai/make_output.py OUT.jsonl 100000

Each line is what OpenAI writes to a finished batch's output file for one successful
``/v1/chat/completions`` request, about 700 bytes: ``custom_id`` ``r{n}-a1`` for n in 0..N-1, and a
``chat.completion`` body whose ``choices[0].message.content`` is a JSON string valid against
include/schemas/ticket_summary/v1.json. The content is deterministic (same N, same bytes), so the
project's benchmark and measure.py can time the same file. Import it by path and call
``write_output(path, n)``; nothing runs on import.
"""

from __future__ import annotations

import json
import sys

_CATEGORIES = ("billing", "technical", "account", "shipping", "feedback", "other")
_SENTIMENTS = ("positive", "neutral", "negative")
_LANGUAGES = ("en", "de", "fr", "es", "it", "nl", "pt", "sv")
_SUMMARIES = (
    "Customer was charged twice for the March invoice. Agent confirmed the duplicate and a refund "
    "was issued. Customer accepted the resolution and closed the conversation politely.",
    "The mobile app crashes when exporting reports to PDF on older devices. Agent collected logs "
    "and filed a defect with the mobile team. A workaround via the web export was shared.",
    "Password reset links kept expiring before the customer could use them. Agent sent a fresh "
    "link and explained the fifteen minute validity window. Access was restored.",
    "A parcel has been stuck at the regional depot for a week. Agent opened a trace with the "
    "carrier and promised an update within two business days. Customer remains frustrated.",
)
_ACTIONS = (
    "Refund the charge",
    "Escalate to mobile",
    "Send a reset link",
    "Trace the parcel",
    "Follow up in 48h",
)
_TARGET_BYTES = 700  # per line, newline included


def _line(n: int) -> str:
    """Result line for record n, exactly _TARGET_BYTES long with its newline."""
    k = n * 2654435761 % 4294967296  # cheap deterministic scramble, so fields do not move in lockstep
    answer = {
        "ticket_id": f"T-{n:07d}",
        "summary": "",
        "category": _CATEGORIES[(k >> 3) % len(_CATEGORIES)],
        "sentiment": _SENTIMENTS[(k >> 7) % len(_SENTIMENTS)],
        "language": _LANGUAGES[(k >> 9) % len(_LANGUAGES)],
        "action_items": [_ACTIONS[(k >> (12 + 3 * i)) % len(_ACTIONS)] for i in range((k >> 20) % 2)],
    }
    prompt_tokens = 380 + n % 211
    completion_tokens = 60 + n % 47
    message = {"role": "assistant", "content": "", "refusal": None}
    record = {
        "id": f"batch_req_{n:016x}",
        "custom_id": f"r{n}-a1",
        "response": {
            "status_code": 200,
            "request_id": f"{n * 7919:032x}",
            "body": {
                "id": f"chatcmpl-{n:016x}",
                "object": "chat.completion",
                "created": 1764028800 + n // 50,
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
        },
        "error": None,
    }
    # The model's answer is compact JSON, as structured-output answers come back. Size the summary
    # (plain ASCII, so one byte per character inside the escaped string) to land on the target.
    message["content"] = json.dumps(answer, separators=(",", ":"))
    room = _TARGET_BYTES - 1 - len(json.dumps(record))
    text = _SUMMARIES[k % len(_SUMMARIES)]
    answer["summary"] = (text + " " + text)[: max(room, 12) - 1] + "."
    message["content"] = json.dumps(answer, separators=(",", ":"))
    return json.dumps(record)


def write_output(path: str, n: int) -> None:
    """Write n result lines (custom ids r0-a1 .. r{n-1}-a1) to path."""
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for i in range(n):
            fh.write(_line(i) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} OUT.jsonl N")
    write_output(sys.argv[1], int(sys.argv[2]))
