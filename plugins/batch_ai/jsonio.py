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
from typing import Any

import orjson

JSONDecodeError = json.JSONDecodeError  # orjson's is a subclass of it
#: Every digit read as ``0``: a run of 19 digits is then found by ``bytes.find`` (C speed; a regex
#: that tried every position of a 700-byte line cost more than the parse itself).
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_RUN = b"0" * 19
_NUMBER_START = frozenset(b":,[")
_SPACE = frozenset(b" \t\r\n")


def _has_long_number(data: bytes | str) -> bool:
    """Whether a run of 19 or more digits starts a number: at the start, or after ``:``, ``,`` or
    ``[`` and optional whitespace and minus (a run inside a string, such as an id, does not)."""
    if isinstance(data, str):
        data = data.encode(errors="surrogatepass")
    zeros = data.translate(_DIGITS_AS_ZERO)
    i = zeros.find(_RUN)
    while i >= 0:
        j = i
        if j and data[j - 1] == 0x2D:  # -
            j -= 1
        while j and data[j - 1] in _SPACE:
            j -= 1
        if j == 0 or data[j - 1] in _NUMBER_START:
            return True
        end = i + len(_RUN)
        while end < len(zeros) and zeros[end] == 0x30:  # past the rest of this run
            end += 1
        i = zeros.find(_RUN, end)
    return False


def loads(data: bytes | str) -> Any:
    """Parse JSON (as :func:`json.loads`, NaN and infinities refused)."""
    if not _has_long_number(data):
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
