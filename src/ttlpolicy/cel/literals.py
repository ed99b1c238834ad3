"""String and bytes literals as the CEL language definition spells them.

cel-python's own decoder drops raw newlines inside triple-quoted strings and leaves escapes it
does not know (``\\?``, ``\\```, upper-case ``\\X``) in the text, so a policy would compare
against a different string than the one its author wrote. The lexer's tokens are exact; this
module turns a ``STRING_LIT`` / ``MLSTRING_LIT`` / ``BYTES_LIT`` token into its value per
``doc/langdef.md`` ("String and Bytes Values"), and refuses what the definition does not allow.

    >>> decode_string('"tab\\\\there"')
    'tab\\there'
    >>> decode_string("'''two\\nlines'''")
    'two\\nlines'
    >>> decode_bytes('b"\\\\303\\\\277"')
    b'\\xc3\\xbf'
"""

from __future__ import annotations

__all__ = ["LiteralError", "decode_bytes", "decode_string"]

_SIMPLE = {"\\": "\\", "?": "?", '"': '"', "'": "'", "`": "`", "a": "\a", "b": "\b", "f": "\f",
           "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_HEX = frozenset("0123456789abcdefABCDEF")


class LiteralError(ValueError):
    """An escape the definition does not allow; ``offset`` is its 0-based position in the token."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


def decode_string(token: str) -> str:
    """The value of a string literal token (quotes, ``r`` prefix and escapes included)."""
    return "".join(chr(c) for c in _decode(token, as_bytes=False))


def decode_bytes(token: str) -> bytes:
    """The value of a bytes literal token: escapes are octets, other text is UTF-8."""
    return bytes(_decode(token, as_bytes=True))


def _decode(token: str, as_bytes: bool) -> list[int]:
    prefix_end = 0
    while token[prefix_end] in "rRbB":
        prefix_end += 1
    raw = "r" in token[:prefix_end].lower()
    quote = token[prefix_end:prefix_end + 3] if token[prefix_end:prefix_end + 3] in ('"""', "'''") \
        else token[prefix_end]
    start, end = prefix_end + len(quote), len(token) - len(quote)
    body = token[start:end]
    if raw:
        return _encode(body, as_bytes)
    out: list[int] = []
    i = 0
    while i < len(body):
        j = body.find("\\", i)
        if j < 0:
            out += _encode(body[i:], as_bytes)
            break
        out += _encode(body[i:j], as_bytes)
        value, i = _escape(body, j, as_bytes, start)
        out.append(value)
    return out


def _encode(text: str, as_bytes: bool) -> list[int]:
    return list(text.encode("utf-8")) if as_bytes else [ord(c) for c in text]


def _escape(body: str, at: int, as_bytes: bool, base: int) -> tuple[int, int]:
    """The code point (or octet) of the escape starting at ``body[at] == "\\\\"``, and where it ends."""
    if at + 1 >= len(body):
        raise LiteralError("a backslash at the end of a literal escapes nothing", base + at)
    c = body[at + 1]
    if c in _SIMPLE:
        return ord(_SIMPLE[c]), at + 2
    if c in "xX":
        return _hex(body, at, 2, base), at + 4
    if c in "uU":
        if as_bytes:
            raise LiteralError(f"\\{c} is not allowed in a bytes literal; use \\x or octal", base + at)
        width = 4 if c == "u" else 8
        value = _hex(body, at, width, base)
        if 0xD800 <= value <= 0xDFFF or value > 0x10FFFF:
            raise LiteralError(f"\\{c}{body[at + 2:at + 2 + width]} is not a Unicode scalar value", base + at)
        return value, at + 2 + width
    if c in "01234567":
        digits = body[at + 1:at + 4]
        if len(digits) == 3 and all(d in "01234567" for d in digits) and c in "0123":
            return int(digits, 8), at + 4
        raise LiteralError("an octal escape is three digits 000 to 377", base + at)
    raise LiteralError(f"unknown escape \\{c}", base + at)


def _hex(body: str, at: int, width: int, base: int) -> int:
    digits = body[at + 2:at + 2 + width]
    if len(digits) != width or not all(d in _HEX for d in digits):
        raise LiteralError(f"\\{body[at + 1]} takes exactly {width} hexadecimal digits", base + at)
    return int(digits, 16)
