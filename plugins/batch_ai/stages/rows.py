"""One source row: read from bytes, checked, and either a record to queue or a dead letter.

Nothing a row holds may stop the night: every problem (bytes that are not UTF-8, JSON that does
not parse or nests too deep, a lone surrogate, a NUL, a number JSON cannot hold, a missing or
mistyped field, an id that is not an id, a row too big) makes that row a dead letter whose
reason names the file, the line and the field. Files are split into lines on ``\\n`` only, as
JSON Lines defines them (a raw CR or U+2028 inside a row does not cut it), a UTF-8 byte-order
mark at the start of a file is skipped and a CRLF line end is read as LF.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator
from typing import IO, Any

import orjson

from batch_ai.ledger.common import IntakeRow
from batch_ai.validation.safety import is_unsafe

BOM = b"\xef\xbb\xbf"
_LONG_NUMBER = re.compile(rb"\d{19}")
#: Deeper rows are dead letters: no export nests this deep, and deeper ones exhaust parsers.
MAX_DEPTH = 64
#: How much of a malformed line the dead letter keeps.
KEEP_CHARS = 2000
#: The longest source id (the ledger's column).
MAX_ID_CHARS = 200

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def content_hash(data: Any) -> str:
    return hashlib.sha256(canonical(data).encode()).hexdigest()


def canonical(data: Any) -> str:
    """The row as JSON with sorted keys: what its content hash and size limits are taken of."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False, allow_nan=False)


def lines(fh: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of a JSON Lines file, split on ``\\n`` only, without the line end,
    a CRLF's CR or a leading byte-order mark. Blank lines are skipped (numbers still count them)."""
    for number, raw in enumerate(fh, start=1):
        if number == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        raw = raw.removesuffix(b"\n").removesuffix(b"\r")
        if raw.strip():
            yield number, raw


class RowChecker:
    """Checks rows of one workload's source (its id field, declared fields and limits)."""

    def __init__(self, source):
        self.source = source
        self.declared = source.declared_fields()
        self.id_regex = None
        if source.id_pattern:
            self.id_regex = re.compile(source.id_pattern)

    def parse(self, number: int, raw: bytes | str, where: str | None = None) -> IntakeRow:
        """One line of the source as a row to queue, or as a dead letter saying why it cannot be sent."""
        where = where or f"row {number}"
        data = _fast_parse(raw)
        if data is not None:
            return self._check(number, where, data)
        if isinstance(raw, bytes):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                kept = raw.decode("utf-8", "backslashreplace")[:KEEP_CHARS]
                return _dead(
                    number,
                    where,
                    f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start} of the line",
                    kept,
                    raw,
                )
        else:
            text = raw
        try:
            data = json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            reason = (
                f"not valid JSON ({exc.msg} at char {exc.pos})"
                if isinstance(exc, json.JSONDecodeError)
                else f"not valid JSON ({'nested too deep' if isinstance(exc, RecursionError) else exc})"
            )
            return _dead(number, where, reason, text[:KEEP_CHARS], text)
        problem = _structure(data)
        if problem:
            return _dead(number, where, problem, text[:KEEP_CHARS], text)
        if not isinstance(data, dict):
            return _dead(number, where, f"a JSON {_json_type(data)}, not an object", data)
        return self._check(number, where, data)

    def _check(self, number: int, where: str, data: dict[str, Any]) -> IntakeRow:
        source_id, problem = self._source_id(data)
        if problem:
            return _dead(number, where, problem, data)
        who = f"{where} ({self.source.id_field} {source_id})"
        problem = self._field_problem(data) or self._id_pattern_problem(source_id)
        if problem:
            return _dead(number, who, problem, data)
        serialized = canonical(data)
        src = self.source
        if len(serialized) > src.max_text_chars:
            return _dead(
                number,
                who,
                f"the row is {len(serialized)} characters as JSON, over the limit of "
                f"{src.max_text_chars} (source.max_text_chars)",
                data,
            )
        size = len(serialized.encode())
        if size > src.max_input_bytes:
            return _dead(
                number,
                who,
                f"the row is {size} bytes as JSON, over the limit of {src.max_input_bytes} (source.max_input_bytes)",
                data,
            )
        return IntakeRow(number, source_id, data, hashlib.sha256(serialized.encode()).hexdigest())

    def _source_id(self, data: dict[str, Any]) -> tuple[str, str | None]:
        """The row's id, or what is wrong with it: present, a string or integer, plain text."""
        name = self.source.id_field
        raw_id = data.get(name)
        if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
            return "", f"no {name}"
        if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool):
            return "", f"{name} must be a string or integer, got {_json_type(raw_id)}"
        source_id = str(raw_id).strip()
        if len(source_id) > MAX_ID_CHARS:
            return "", f"{name} is longer than {MAX_ID_CHARS} characters"
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in source_id):
            return "", f"{name} holds a control character"
        unsafe = is_unsafe(source_id)
        if unsafe:  # an id is shown as the key of every published row
            return "", f"{name} {source_id[:60]!r} {unsafe}; an id must be plain text"
        return source_id, None

    def _field_problem(self, data: dict[str, Any]) -> str | None:
        """A declared field of another type, or a required field missing or empty."""
        for field, kind in self.declared.items():
            value = data.get(field)
            if value is not None and kind != "any" and not _is(value, kind):
                return f"field {field!r} must be {_article(kind)}, got {_json_type(value)}"
        for field in self.source.required_fields:
            value = data.get(field)
            if _empty(value):
                return f"required field {field!r} is missing or empty"
            if field not in self.source.fields and (
                not isinstance(value, (str, int, float)) or isinstance(value, bool)
            ):
                return f"required field {field!r} must be text or a number, got {_json_type(value)}"
        return None

    def _id_pattern_problem(self, source_id: str) -> str | None:
        if self.id_regex is not None and not self.id_regex.fullmatch(source_id):
            return f"{self.source.id_field} does not look like one (id_pattern {self.source.id_pattern})"
        return None

    def parse_lines(self, numbered: Iterable[tuple[int, bytes]], name: str, first_row: int) -> Iterator[IntakeRow]:
        for offset, (line_no, raw) in enumerate(numbered):
            yield self.parse(first_row + offset, raw, where=f"{name} line {line_no}")


def _dead(number: int, where: str, reason: str, kept: Any, original: Any = None) -> IntakeRow:
    """A dead letter, keyed by its content: a malformed row has no trustworthy id of its own."""
    basis = original if original is not None else kept
    digest = hashlib.sha256(
        basis if isinstance(basis, bytes) else canonical(basis).encode(errors="surrogatepass")
    ).hexdigest()
    return IntakeRow(number, f"!malformed-{digest[:24]}", {"row": number, "raw": kept}, digest, f"{where}: {reason}")


def _fast_parse(raw: bytes | str) -> dict[str, Any] | None:
    """The row parsed by orjson when it is plainly sound, else ``None`` (the careful path then
    parses it again and says what is wrong). orjson refuses invalid UTF-8, lone surrogates,
    NaN, infinities and raw control characters; a NUL can then only be a ``\\u0000`` escape,
    and a row with at most :data:`MAX_DEPTH` brackets cannot nest deeper."""
    text = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    if _LONG_NUMBER.search(text):
        return None  # orjson would read a number beyond 64 bits as a float
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    if b"\\u0000" in text or text.count(b"{") + text.count(b"[") > MAX_DEPTH:
        return None if _structure(data) else data
    return data


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _structure(data: Any) -> str | None:
    """What makes the parsed row impossible to store or send (depth, encoding, numbers), or ``None``."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels (at {path or 'the top'})"
        if isinstance(node, str):
            problem = _bad_text(node)
            if problem:
                return f"{path or 'the row'} {problem}"
        elif isinstance(node, float) and not math.isfinite(node):
            return f"{path or 'the row'} holds {node}, which JSON cannot hold"
        elif isinstance(node, dict):
            for key, value in node.items():
                problem = _bad_text(key)
                if problem:
                    return f"a key of {path or 'the row'} {problem}"
                stack.append((value, f"{path}.{key}" if path else f"field {key!r}", depth + 1))
        elif isinstance(node, list):
            stack.extend((value, f"{path}[{i}]", depth + 1) for i, value in enumerate(node))
    return None


def _bad_text(text: str) -> str | None:
    if "\x00" in text:
        return f"holds a NUL character (U+0000) at character {text.index(chr(0))}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"holds a lone surrogate (U+{ord(text[exc.start]):04X}) at character {exc.start}, which is not Unicode text"
        )
    return None


def _is(value: Any, kind: str) -> bool:
    if isinstance(value, bool) and kind != "boolean":
        return False
    return isinstance(value, _TYPES[kind])


def _empty(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, str) and not value.strip())
        or (isinstance(value, (list, dict)) and not value)
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {str: "string", int: "integer", float: "number", list: "list", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _article(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind
