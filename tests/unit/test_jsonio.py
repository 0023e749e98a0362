"""jsonio: orjson's speed without its changes to values."""

from __future__ import annotations

import json

import pytest

from batch_ai import jsonio

BIG = 123456789012345678901234567890


@pytest.mark.parametrize(
    "text",
    [
        f"{BIG}",
        f" [{BIG}]",
        f'{{"a": {BIG}}}',
        f'{{"a":[1,\n -{BIG}]}}',
        f'{{"a": 1.5, "b": {BIG}}}',
        "[" + " " * 300 + f"-{BIG}]",
    ],
)
def test_numbers_beyond_64_bits_keep_every_digit(text):
    assert jsonio.loads(text) == json.loads(text)
    assert jsonio.loads(text.encode()) == json.loads(text)


def test_digits_inside_strings_keep_the_fast_path_and_their_value(monkeypatch):
    text = b'{"id": "req_0000000000000000000000000001", "n": "12345678901234567890123"}'
    monkeypatch.setattr(jsonio.json, "loads", lambda *a, **k: pytest.fail("took the slow path"))
    assert jsonio.loads(text) == {"id": "req_0000000000000000000000000001", "n": "12345678901234567890123"}


def test_nan_is_refused_and_big_integers_are_written():
    with pytest.raises(ValueError):
        jsonio.loads(f"[NaN, {BIG}]")
    assert json.loads(jsonio.dumps({"n": BIG, 1: "x"})) == {"n": BIG, "1": "x"}


@pytest.mark.parametrize("text", [f'{{"note": "x-{BIG}", "n": 1}}', f'{{"a{BIG}": 1}}', f"[1.{BIG}]"])
def test_long_digit_runs_that_start_no_number_keep_the_fast_path(text, monkeypatch):
    expected = json.loads(text)
    monkeypatch.setattr(jsonio.json, "loads", lambda *a, **k: pytest.fail("took the slow path"))
    assert jsonio.loads(text) == expected
    assert jsonio.loads(text.encode()) == expected
