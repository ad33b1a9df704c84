"""Plain text and markdown, with encoding detection (UTF-8/16/32, Korean CP949/EUC-KR, then a detector)."""

from __future__ import annotations

import codecs
import re
import unicodedata

from django.utils.translation import gettext_noop

from knowledge.parsers.base import ParsedDocument, ParseError

NOT_TEXT = gettext_noop("The file does not contain readable text (it looks like binary data).")
EMPTY = gettext_noop("The file is empty.")
NO_TEXT = gettext_noop("The file contains no text.")

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _is_hangul(ch: str) -> bool:
    return "\uac00" <= ch <= "\ud7a3" or "\u3131" <= ch <= "\u318e"


def _utf16_without_bom(data: bytes) -> str | None:
    """UTF-16 text without a BOM shows as NUL bytes in every other position (ASCII) or a skewed mix."""
    if len(data) < 4 or len(data) % 2:
        return None
    sample = data[:8192]
    even_nuls = sample[0::2].count(0)
    odd_nuls = sample[1::2].count(0)
    half = len(sample) / 2
    for nuls, encoding in ((odd_nuls, "utf-16-le"), (even_nuls, "utf-16-be")):
        if nuls >= 0.3 * half and nuls > 3 * ((even_nuls + odd_nuls) - nuls):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                return None
    return None


def _korean_legacy(data: bytes) -> str | None:
    """CP949 (a superset of EUC-KR) when the bytes decode strictly and read as Korean."""
    try:
        text = data.decode("cp949")
    except UnicodeDecodeError:
        return None
    non_ascii = [ch for ch in text if ord(ch) > 127]
    if non_ascii and sum(map(_is_hangul, non_ascii)) >= 0.6 * len(non_ascii):
        return text
    return None


_CONTROL_BYTES = bytes(b for b in range(32) if b not in b"\t\n\r\f\v\x1b")


def looks_binary(head: bytes) -> bool:
    """Upload-time sniff on the first bytes (which may end mid-character): control bytes outside UTF-16/32."""
    if any(head.startswith(bom) for bom, _enc in _BOMS):
        return False
    even = head[: len(head) - len(head) % 2]
    if even and _utf16_without_bom(even[: min(len(even), 8192)]) is not None:
        return False
    sample = head[:65536]
    controls = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    return b"\x00" in sample or controls > max(2, 0.01 * len(sample))


def decode_text(data: bytes) -> str:
    """Decode a text file's bytes, or raise ParseError when they are not text."""
    if not data:
        raise ParseError(EMPTY)
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return _checked(data.decode(encoding))
            except UnicodeDecodeError as exc:
                raise ParseError(NOT_TEXT) from exc
    try:
        return _checked(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    text = _utf16_without_bom(data)
    if text is not None:
        return _checked(text)
    if b"\x00" in data:
        raise ParseError(NOT_TEXT)
    text = _korean_legacy(data)
    if text is not None:
        return _checked(text)
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise ParseError(NOT_TEXT)
    return _checked(str(best))


def _checked(text: str) -> str:
    """Reject decodings that are mostly control characters (binary data that happened to decode)."""
    sample = text[:20000]
    if not sample:
        return text
    bad = sum(
        1 for ch in sample
        if (unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") and ch not in "\t\n\r\f\v") or ch == "\ufffd"
    )
    if bad > max(2, 0.01 * len(sample)):
        raise ParseError(NOT_TEXT)
    return text


def normalize_newlines(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return re.sub(r"[ \t]+\n", "\n", text)


def parse_text(data: bytes, *, filename: str = "") -> ParsedDocument:
    text = normalize_newlines(decode_text(data)).lstrip("\ufeff")
    if not text.strip():
        raise ParseError(NO_TEXT)
    return ParsedDocument(text=text, kind="text")


_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.S)
_H1 = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.M)


def parse_markdown(data: bytes, *, filename: str = "") -> ParsedDocument:
    text = normalize_newlines(decode_text(data)).lstrip("\ufeff")
    text = _FRONT_MATTER.sub("", text, count=1)
    if not text.strip():
        raise ParseError(NO_TEXT)
    first = _H1.search(text)
    return ParsedDocument(text=text, kind="markdown", title=first.group(1)[:300] if first else "")
