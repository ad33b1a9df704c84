"""Plain text and markdown: bytes to text whatever their encoding or damage, and binary data told apart.

Decoding tries, in order: a BOM; strict UTF-8; UTF-16 without a BOM; Korean CP949/EUC-KR; then line by line, for
UTF-8 files with CP949 or cp1252 lines or damaged bytes in them; then a detector (charset_normalizer) for other
legacy encodings. Binary data is refused by what it looks like: NUL and other control bytes, or bytes that no encoding
reads. Damaged text is read: its undecodable bytes become U+FFFD marks, like the marks a file may already hold,
and knowledge.parsers.parse drops them all and reports their number on the document.

Mojibake (UTF-8 that was once read as cp1252/latin-1 and saved again: "ê²€ìƒ‰" for "검색") is repaired with ftfy,
only on lines where a cheap scan finds its signature (a UTF-8 lead byte's character followed by a continuation
byte's), so clean text costs one regular-expression pass.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

from django.utils.translation import gettext_noop

from knowledge.parsers.base import REPAIRED, ParsedDocument, ParseError

NOT_TEXT = gettext_noop("The file does not contain readable text (it looks like binary data).")
MOSTLY_DAMAGED = gettext_noop("Most of the file's characters could not be decoded; the file is damaged.")
EMPTY = gettext_noop("The file is empty.")
NO_TEXT = gettext_noop("The file contains no text.")

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# C0 control bytes that text does not contain (tab, newlines, form feed and ESC of terminal colours it does).
_CONTROL_BYTES = bytes(b for b in range(32) if b not in b"\t\n\r\f\v\x1b") + b"\x7f"
# Bytes that are not UTF-8, kept by the "surrogateescape" error handler as U+DC80..U+DCFF.
_ESCAPED = re.compile("[\udc80-\udcff]")
_ESCAPED_RUN = re.compile("[\udc80-\udcff]+")
_REPLACEMENT = "\ufffd"


@dataclass
class Decoded:
    text: str
    repaired_lines: int = 0  # lines whose mojibake was repaired

    def warnings(self) -> list[dict]:
        return [{"code": REPAIRED, "count": self.repaired_lines}] if self.repaired_lines else []


def _is_hangul(ch: str) -> bool:
    return "\uac00" <= ch <= "\ud7a3" or "\u3131" <= ch <= "\u318e"


def _in_ks_x_1001(ch: str) -> bool:
    """One of the 8,000-odd characters EUC-KR has a two-byte code for (the others take an 8-byte make-up)."""
    try:
        return len(ch.encode("euc-kr")) == 2
    except UnicodeEncodeError:
        return False


def _reads_as_korean(text: str) -> bool:
    """Korean as CP949/EUC-KR writers produce it: mostly Hangul, most of it from the common KS X 1001 set.
    Bytes of another kind (UTF-8, damaged) that happen to decode give rare syllables and hanja instead."""
    non_ascii = [ch for ch in text[:100_000] if ord(ch) > 127]
    if not non_ascii:
        return False
    return (sum(map(_is_hangul, non_ascii)) >= 0.6 * len(non_ascii)
            and sum(map(_in_ks_x_1001, non_ascii)) >= 0.75 * len(non_ascii))


def _korean_legacy(data: bytes) -> str | None:
    """CP949 (a superset of EUC-KR) when the bytes decode strictly and read as Korean."""
    try:
        text = data.decode("cp949")
    except UnicodeDecodeError:
        return None
    return text if _reads_as_korean(text) else None


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


def _binary_bytes(data: bytes) -> bool:
    """NUL bytes beyond a stray one or two, or other control bytes in more than 1 % of the bytes."""
    controls = len(data) - len(data.translate(None, _CONTROL_BYTES))
    return data.count(0) > 2 or controls > max(2, 0.01 * len(data))


def looks_binary(head: bytes) -> bool:
    """Upload-time sniff on the first bytes (which may end mid-character): control bytes outside UTF-16/32."""
    if any(head.startswith(bom) for bom, _enc in _BOMS):
        return False
    even = head[: len(head) - len(head) % 2]
    if even and _utf16_without_bom(even[: min(len(even), 8192)]) is not None:
        return False
    return _binary_bytes(head[:65536])


_PUNCTUATION_1252 = str.maketrans(dict.fromkeys("‘’‚“”„–—…•€«»°±§¶©®™·¡¿×÷", " "))
# Two or more accented letters with no ASCII letter on either side: not a Western word ("ÿþ", "Ã©").
_LETTERS_OUTSIDE_WORDS = re.compile(r"(?<![A-Za-z])[^\x00-\x7f]{2,}(?![A-Za-z])")


def _western_legacy(raw: bytes) -> str | None:
    """A cp1252 line (Western European Windows text): few non-ASCII characters, each common punctuation or an
    accented letter inside a word. Damaged UTF-8 does not look like that (its stray bytes give symbols and
    letter pairs on their own, and Korean lines are mostly non-ASCII)."""
    try:
        text = raw.decode("cp1252")
    except UnicodeDecodeError:
        return None
    letters = text.translate(_PUNCTUATION_1252)
    non_ascii = [ch for ch in letters if ord(ch) > 127]
    if (len(non_ascii) <= 0.3 * len(text) and all(ch.isalpha() for ch in non_ascii)
            and not _LETTERS_OUTSIDE_WORDS.search(letters)):
        return text
    return None


def _count_escaped(text: str) -> int:
    return len(text) - len(_ESCAPED.sub("", text))


def _non_ascii(text: str) -> int:
    return len(text) - len(text.encode("ascii", "ignore"))


def _mixed_utf8(data: bytes) -> str | None:
    """Line by line: UTF-8 lines as they are; a line that is not UTF-8 as CP949 when it reads as Korean, as
    cp1252 when it holds no UTF-8 at all and reads as Western text, else as damaged UTF-8 with a U+FFFD for
    each undecodable byte run. None when the bytes are mostly not UTF-8 (more undecodable bytes than
    well-formed non-ASCII characters): a legacy encoding, or binary data."""
    text = data.decode("utf-8", "surrogateescape")
    well_formed = _non_ascii(text) - _count_escaped(text)
    undecodable = 0
    lines = text.split("\n")
    for i, line in enumerate(lines):
        escaped = _count_escaped(line)
        if not escaped:
            continue
        raw = line.encode("utf-8", "surrogateescape")
        legacy = _korean_legacy(raw)
        if legacy is None and _non_ascii(line) == escaped:
            legacy = _western_legacy(raw)
        if legacy is not None:
            lines[i] = legacy
            well_formed += _non_ascii(legacy)
            continue
        undecodable += escaped
        lines[i] = _ESCAPED_RUN.sub(_REPLACEMENT, line)  # one mark for each damaged spot, not for each byte
    if undecodable > well_formed:
        return None
    return "\n".join(lines)


def _detected(data: bytes) -> str | None:
    """Another legacy encoding, as charset_normalizer detects it."""
    from charset_normalizer import from_bytes  # loaded where a file is parsed, not in every process (models)

    results = from_bytes(data)
    best = results.best()
    if best is None:
        return None
    # A tie between Western encodings goes to cp1252, by far the most common of them (what HTML's "latin-1" is).
    for match in results:
        tied = (match.chaos, match.coherence) == (best.chaos, best.coherence)
        if tied and "cp1252" in match.could_be_from_charset:
            try:
                return data.decode("cp1252")
            except UnicodeDecodeError:
                break
    return str(best)


def decode_text(data: bytes) -> Decoded:
    """Decode a text file's bytes, or raise ParseError when they are not text."""
    if not data:
        raise ParseError(EMPTY)
    bom_encoding = next((encoding for bom, encoding in _BOMS if data.startswith(bom)), None)
    if bom_encoding == "utf-8-sig":
        data = data[len(codecs.BOM_UTF8):]  # then read as any UTF-8, damaged or not
    elif bom_encoding is not None:
        return _checked(data.decode(bom_encoding, "replace"))
    else:
        text = _utf16_without_bom(data)
        if text is not None:
            return _checked(text)
    if _binary_bytes(data):
        raise ParseError(NOT_TEXT)
    try:
        return _checked(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    for decode in (_korean_legacy, _mixed_utf8, _detected):
        text = decode(data)
        if text is not None:
            return _checked(text)
    raise ParseError(NOT_TEXT)


def _checked(text: str) -> Decoded:
    """Mojibake repaired; binary data that happened to decode (control, private-use or unassigned characters)
    and text that is mostly undecodable refused."""
    text, repaired = repair_mojibake(text)
    sample = text[:65536]
    counts = Counter(sample)  # each distinct character looked at once
    bad = sum(n for ch, n in counts.items()
              if unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") and ch not in "\t\n\r\f\v\x1b")
    if bad > max(2, 0.01 * len(sample)):
        raise ParseError(NOT_TEXT)
    visible = len(sample) - sum(n for ch, n in counts.items() if ch.isspace())
    if counts[_REPLACEMENT] > max(2, 0.5 * visible):
        raise ParseError(MOSTLY_DAMAGED)
    return Decoded(text, repaired)


def _latin(first: int, last: int) -> str:
    return re.escape(bytes(range(first, last + 1)).decode("latin-1"))


# A UTF-8 sequence read as cp1252 or latin-1: the character of a lead byte followed by those of as many
# continuation bytes as that lead announces ("Ã©" for "é", "ì•ˆ" for "안").
_CONTINUATION = "[" + re.escape("".join(sorted({bytes([b]).decode(codec, "ignore") for b in range(0x80, 0xC0)
                                                for codec in ("cp1252", "latin-1")} - {""}))) + "]"
_LATIN1_HIGH = re.compile("[\u00c2-\u00f4]")  # a cheap first look: no lead character, no mojibake
_MOJIBAKE = re.compile(f"[{_latin(0xC2, 0xDF)}]{_CONTINUATION}|[{_latin(0xE0, 0xEF)}]{_CONTINUATION}{{2}}"
                       f"|[{_latin(0xF0, 0xF4)}]{_CONTINUATION}{{3}}")


def repair_mojibake(text: str) -> tuple[str, int]:
    """(text, lines repaired). ftfy decides, line by line, whether a line is UTF-8 read in the wrong encoding and
    undoes it only when the result is clearly better; its other fixes (quotes, HTML entities...) stay off."""
    if text.isascii() or not _LATIN1_HIGH.search(text) or not _MOJIBAKE.search(text):
        return text, 0
    from ftfy import TextFixerConfig, fix_encoding  # ~0.1 s: loaded where a file is parsed, not everywhere

    config = TextFixerConfig(unescape_html=False, explain=False)
    lines = text.split("\n")
    repaired = 0
    for i, line in enumerate(lines):
        if _MOJIBAKE.search(line):
            fixed = fix_encoding(line, config)
            if fixed != line:
                lines[i] = fixed
                repaired += 1
    return "\n".join(lines), repaired


def normalize_newlines(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return re.sub(r"[ \t]+\n", "\n", text)


def parse_text(data: bytes, *, filename: str = "") -> ParsedDocument:
    decoded = decode_text(data)
    text = normalize_newlines(decoded.text).lstrip("\ufeff")
    if not text.strip():
        raise ParseError(NO_TEXT)
    return ParsedDocument(text=text, kind="text", warnings=decoded.warnings())


_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.S)
_H1 = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.M)


def parse_markdown(data: bytes, *, filename: str = "") -> ParsedDocument:
    decoded = decode_text(data)
    text = normalize_newlines(decoded.text).lstrip("\ufeff")
    text = _FRONT_MATTER.sub("", text, count=1)
    if not text.strip():
        raise ParseError(NO_TEXT)
    first = _H1.search(text)
    return ParsedDocument(text=text, kind="markdown", title=first.group(1)[:300] if first else "",
                          warnings=decoded.warnings())
