"""PDF text layer, page by page (pypdf). No OCR: a scanned PDF fails with a message saying so."""

from __future__ import annotations

import io
import logging
import re

from django.utils.translation import gettext_noop

from knowledge.parsers.base import ParsedDocument, ParseError

log = logging.getLogger(__name__)

DAMAGED = gettext_noop("The PDF is damaged and could not be read.")
ENCRYPTED = gettext_noop("The PDF is password-protected. Remove the password and upload it again.")
NO_TEXT = gettext_noop("The PDF has no extractable text; OCR not supported.")
EMPTY = gettext_noop("The file is empty.")


def _clean(page_text: str) -> str:
    text = page_text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"-\n(?=[a-z])", "", text)  # words hyphenated across lines
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def parse_pdf(data: bytes, *, filename: str = "", progress=None) -> ParsedDocument:
    """`progress(pages_done)` is called now and then so a long parse keeps the worker's lease alive."""
    if not data:
        raise ParseError(EMPTY)
    if b"%PDF" not in data[:1024]:
        raise ParseError(DAMAGED)
    # Parsing libraries load only in the process that parses: every process imports knowledge.parsers (models).
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import FileNotDecryptedError, PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise ParseError(ENCRYPTED)
        pages = reader.pages
        page_count = len(pages)
    except ParseError:
        raise
    except FileNotDecryptedError as exc:
        raise ParseError(ENCRYPTED) from exc
    except (PyPdfError, Exception) as exc:  # pypdf raises many kinds of errors on damaged files
        log.info("unreadable PDF %s: %r", filename, exc)
        raise ParseError(DAMAGED) from exc
    if page_count == 0:
        raise ParseError(DAMAGED)

    parts: list[str] = []
    page_starts: list[int] = []
    offset = 0
    unreadable = 0
    for number, page in enumerate(pages, start=1):
        try:
            text = _clean(page.extract_text() or "")
        except FileNotDecryptedError as exc:
            raise ParseError(ENCRYPTED) from exc
        except Exception as exc:  # one bad page should not lose the others
            log.info("PDF %s page %s unreadable: %r", filename, number, exc)
            unreadable += 1
            text = ""
        if number > 1:
            offset += 2  # the "\n\n" joining pages
            page_starts.append(offset)
        parts.append(text)
        offset += len(text)
        if progress is not None and number % 20 == 0:
            progress(number)
    if unreadable == page_count:
        raise ParseError(DAMAGED)
    text = "\n\n".join(parts)
    if not text.strip():
        raise ParseError(NO_TEXT)
    title = ""
    try:
        title = str((reader.metadata or {}).get("/Title") or "").strip()[:300]
    except Exception:
        title = ""
    return ParsedDocument(text=text, kind="text", title=title, page_count=page_count, page_starts=page_starts)
