"""JSON on the hot paths: orjson, with the standard library where orjson would change a value.

orjson reads an integer beyond 64 bits as a float (silently losing digits) and refuses to write
one; JSON itself has no such limit and a source row may hold one. So a text with a number of 19
or more digits (a run of digits where a number can start: at the start, or after ``:``, ``,`` or
``[``) is read by :mod:`json`, and a value orjson cannot write is written by it. Digits inside
strings (ids such as ``req_000...1``) keep the fast path; one that looks like a number there only
costs the slow path, never a wrong value.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

JSONDecodeError = json.JSONDecodeError  # orjson's is a subclass of it
_LONG_NUMBER = re.compile(rb"(?:^|[:,\[])\s*-?\d{19}")
_LONG_NUMBER_TEXT = re.compile(r"(?:^|[:,\[])\s*-?\d{19}")


def loads(data: bytes | str) -> Any:
    """Parse JSON (as :func:`json.loads`, NaN and infinities refused)."""
    long_number = (_LONG_NUMBER if isinstance(data, bytes) else _LONG_NUMBER_TEXT).search(data)
    if long_number is None:
        return orjson.loads(data)
    return json.loads(data, parse_constant=_refuse)


def dumps(value: Any, default=None) -> bytes:
    """UTF-8 JSON, keys of any type written as strings."""
    try:
        return orjson.dumps(value, default=default, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # an integer beyond 64 bits
        return json.dumps(value, ensure_ascii=False, default=default, separators=(",", ":")).encode()


def dumps_text(value: Any) -> str:
    return dumps(value).decode()


def _refuse(name: str):
    raise ValueError(f"{name} is not a JSON number")
