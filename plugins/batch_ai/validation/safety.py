"""Is this text safe to show a customer? One answer for validation, the quality gate and intake.

A model's answer is pasted into web pages, e-mails and CRM fields that render HTML or
markdown, so "safe" means: nothing a renderer would turn into markup, a script or a request.
The check is made with maintained parsers, not a pattern of our own:

- **HTML**: the text, and the text with its character references decoded (a downstream
  page may decode them once more), must contain no element, comment or declaration. ammonia's
  HTML5 parser (``nh3``) decides: either it finds HTML, or cleaning the text with no tag
  allowed changes it (an unclosed ``<img src=x onerror=...`` at the end of a text is a tag to
  a browser, and cleaning removes it).
- **URLs**: no ``javascript:``, ``vbscript:`` or ``data:`` URL, after decoding character
  references and removing the whitespace and control characters browsers skip inside a scheme
  (``java<TAB>script:``, ``javascript&#58;``); no event-handler attribute (``onerror=``).
- **Markdown**: no image (it loads when rendered, and can carry data out in its URL) and no
  link or autolink to an outside URL, as ``markdown-it`` (a CommonMark parser) reads the text;
  hosts in ``allowed_hosts`` may be linked.

:func:`unsafe_content` walks every string at any depth (lists and nested objects too) and
says where and why; :func:`is_unsafe` answers for one string.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

#: Characters a browser or a lenient URL parser skips inside a scheme (the URL standard strips
#: tab and newline), and invisible format characters (zero-width space, soft hyphen...).
_SKIP = r"[\s\x00-\x1f\x7f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]*"


def _spaced(word: str) -> str:
    return _SKIP.join(re.escape(ch) for ch in word)


#: Schemes that run code or embed a document when a URL is followed or loaded; a scheme starts
#: where a word does, and may have skipped characters between its letters.
_SCRIPT_SCHEME = re.compile(
    r"(?<![a-z0-9+.\-])(?:" + "|".join(_spaced(f"{s}script:") for s in ("java", "vb", "live")) + ")"
    r"|(?<![a-z0-9+.\-])" + _spaced("data:") + r"(?:[a-z]+/[a-z0-9.+\-]+[;,]|,)"
)
#: An event-handler attribute of HTML or SVG (``onerror=``, ``onload =``): script, should the text
#: land inside a tag. The names are the HTML standard's event handlers, grouped by their stems.
_EVENT_ATTRIBUTE = re.compile(
    r"(?<![a-z0-9_\-])on(?:abort|afterprint|animation\w*|auxclick|before\w+|begin|blur|cancel|canplay\w*|change|click|"
    r"close|contextmenu|copy|cuechange|cut|dblclick|drag\w*|drop|durationchange|emptied|end|ended|error|focus\w*|"
    r"formdata|hashchange|input|invalid|key\w+|load\w*|message\w*|mouse\w+|offline|online|page\w+|paste|pause|"
    r"play\w*|pointer\w+|popstate|progress|ratechange|repeat|reset|resize|scroll\w*|search|seek\w+|select\w*|show|"
    r"slotchange|stalled|storage|submit|suspend|timeupdate|toggle|touch\w+|transition\w+|unload|volumechange|"
    r"waiting|wheel)\s*=",
    re.I,
)
#: How many rounds of character-reference decoding are undone (``&amp;lt;`` is two).
_DECODE_ROUNDS = 3


def _decoded(text: str) -> Iterator[str]:
    """The text and each distinct decoding of its character references, up to a few rounds."""
    yield text
    for _ in range(_DECODE_ROUNDS):
        if "&" not in text:
            return
        decoded = html.unescape(text)
        if decoded == text:
            return
        text = decoded
        yield text


def _normal(text: str) -> str:
    """Text as an HTML parser hands it back: CR/CRLF as LF, NUL as U+FFFD, character references decoded."""
    return html.unescape(text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "\ufffd"))


def _markup(text: str) -> str | None:
    if "<" not in text:
        return None
    import nh3

    if nh3.is_html(text):
        return "contains HTML"
    if _normal(nh3.clean(text, tags=set())) != _normal(text):
        return "contains an HTML tag"  # unclosed at the end of the text, or a tag nh3 cleans away
    return None


def _scheme(text: str) -> str | None:
    match = _SCRIPT_SCHEME.search((text if text.isascii() else unicodedata.normalize("NFKC", text)).lower())
    if match:
        scheme = re.sub(_SKIP, "", match.group(0)).split(":", 1)[0]
        return f"contains a {scheme}: URL"
    if _EVENT_ATTRIBUTE.search(text):
        return "contains an event-handler attribute"
    return None


@functools.cache
def _markdown():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark")


def _outside(url: str, allowed_hosts: frozenset[str]) -> bool:
    parts = urlsplit(url.strip())
    if not (parts.scheme or url.strip().startswith("//")):
        return False  # a relative link stays on the page's own site
    host = (parts.hostname or "").lower()
    return not host or host not in allowed_hosts


def _markdown_links(text: str, allowed_hosts: frozenset[str]) -> str | None:
    if "](" not in text and "]:" not in text:  # no inline link or image, no reference definition
        return None
    tokens = _markdown().parse(text)
    for token in _walk(tokens):
        if token.type == "image":
            return f"contains a markdown image ({str(token.attrGet('src'))[:60]})"
        if token.type == "link_open" and _outside(str(token.attrGet("href") or ""), allowed_hosts):
            return f"contains a markdown link to an outside URL ({str(token.attrGet('href'))[:60]})"
    return None


def _walk(tokens) -> Iterator[Any]:
    for token in tokens:
        yield token
        if token.children:
            yield from _walk(token.children)


#: A text with none of these cannot be unsafe: markup needs ``<``, a character reference ``&``, a
#: script URL a colon (or a character NFKC makes one), an event handler ``=``, a markdown link ``]``.
_SUSPECT = re.compile("[<&:=\\]\u2a74\ufe13\ufe55\uff1a]")


def is_unsafe(text: str, allowed_hosts: Iterable[str] = ()) -> str | None:
    """Why ``text`` is not safe to render, or ``None`` when it is."""
    if not _SUSPECT.search(text):
        return None
    hosts = frozenset(h.lower() for h in allowed_hosts)
    for variant in _decoded(text):
        why = _markup(variant) or _scheme(variant)
        if why:
            return why if variant is text else f"{why} once its character references are decoded"
    return _markdown_links(text, hosts)


def unsafe_content(
    value: Any, allowed_hosts: Iterable[str] = (), path: str = "", strings: list[str] | None = None
) -> list[tuple[str, str]]:
    """``(path, reason)`` for every string at any depth of ``value`` that is not safe to render.

    Keys of objects are checked too (a key is shown as a label). Paths read like
    ``action_items[2]`` or ``violations[0].evidence``; a bare string's path is ``<root>``.
    ``strings``: :func:`texts` of ``value``, when the caller has them already.
    """
    hosts = tuple(allowed_hosts)
    suspicious = [t for t in (texts(value) if strings is None else strings) if _SUSPECT.search(t)]
    if not any(is_unsafe(t, hosts) for t in suspicious):
        return []  # the common case: no string is unsafe; only otherwise are they found by path

    found: list[tuple[str, str]] = []
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, str):
            why = is_unsafe(node, hosts)
            if why:
                found.append((where or "<root>", why))
        elif isinstance(node, dict):
            for key, item in reversed(list(node.items())):
                child = f"{where}.{key}" if where else str(key)
                why = is_unsafe(str(key), hosts)
                if why:
                    found.append((child, f"the key: {why}"))
                stack.append((child, item))
        elif isinstance(node, list):
            stack.extend((f"{where}[{i}]", item) for i, item in reversed(list(enumerate(node))))
    return found


def texts(value: Any) -> list[str]:
    """Every string of ``value`` at any depth, object keys included."""
    if isinstance(value, str):
        return [value]
    out: list[str] = []
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, dict):
            out.extend(k for k in node if isinstance(k, str))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out
