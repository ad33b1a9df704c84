"""File formats the knowledge base accepts, an upload-time sniff, and one `parse` entry point.

The format comes from the file name's extension (what the user chose), checked against the first bytes at
upload so an obviously wrong file is refused at once; the parser then does the full job in the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from knowledge.parsers.base import ParsedDocument, ParseError, Row, describe_warning
from knowledge.parsers.docx import parse_docx
from knowledge.parsers.html import parse_html
from knowledge.parsers.pdf import parse_pdf
from knowledge.parsers.tabular import parse_csv
from knowledge.parsers.text import looks_binary, parse_markdown, parse_text

__all__ = ["FORMATS", "Format", "ParseError", "ParsedDocument", "Row", "UnsupportedFile", "describe_warning",
           "format_for", "parse", "sniff"]

NO_TEXT = gettext_noop("The file contains no text.")


class UnsupportedFile(ValueError):
    """Refused at upload; the message is translated and safe to show."""


@dataclass(frozen=True)
class Format:
    key: str
    content_type: str
    label: str


FORMATS: dict[str, Format] = {
    ".txt": Format("text", "text/plain", "Text"),
    ".text": Format("text", "text/plain", "Text"),
    ".md": Format("markdown", "text/markdown", "Markdown"),
    ".markdown": Format("markdown", "text/markdown", "Markdown"),
    ".pdf": Format("pdf", "application/pdf", "PDF"),
    ".csv": Format("csv", "text/csv", "CSV"),
    ".docx": Format("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "Word"),
    ".html": Format("html", "text/html", "HTML"),
    ".htm": Format("html", "text/html", "HTML"),
}
EXTENSIONS = sorted(FORMATS)


def supported_extensions_text() -> str:
    return ", ".join(EXTENSIONS)


def format_for(filename: str) -> Format:
    ext = PurePath(filename or "").suffix.lower()
    fmt = FORMATS.get(ext)
    if fmt is None:
        if ext in (".doc", ".hwp", ".hwpx", ".ppt", ".pptx", ".xls", ".xlsx", ".rtf", ".odt"):
            raise UnsupportedFile(
                _("%(ext)s files are not supported. Save the file as PDF, DOCX or text and upload that. "
                  "Supported: %(list)s.") % {"ext": ext, "list": supported_extensions_text()}
            )
        raise UnsupportedFile(
            _("Unsupported file type %(ext)s. Supported: %(list)s.")
            % {"ext": ext or _("(no extension)"), "list": supported_extensions_text()}
        )
    return fmt


def sniff(fmt: Format, head: bytes) -> None:
    """Cheap checks on the first bytes (up to 64 KB) of an upload."""
    if not head:
        raise UnsupportedFile(_("The file is empty."))
    if fmt.key == "pdf" and b"%PDF" not in head[:1024]:
        raise UnsupportedFile(_("This file is not a PDF (it has a .pdf name but different contents)."))
    if fmt.key == "docx" and not head.startswith(b"PK\x03\x04"):
        raise UnsupportedFile(_("This file is not a Word .docx document. Old .doc files are not supported."))
    if fmt.key in ("text", "markdown", "csv", "html") and looks_binary(head):
        raise UnsupportedFile(_("This file does not contain readable text (it looks like binary data)."))


def parse(fmt: Format | str, data: bytes, *, filename: str = "", progress=None) -> ParsedDocument:
    """The file's text, with no U+FFFD mark left in it (their count is one of the warnings)."""
    parsed = _parse(fmt.key if isinstance(fmt, Format) else fmt, data, filename=filename, progress=progress)
    parsed.drop_replacement_marks()
    if not parsed.text.strip():
        raise ParseError(NO_TEXT)
    return parsed


def _parse(key: str, data: bytes, *, filename: str, progress) -> ParsedDocument:
    if key == "text":
        return parse_text(data, filename=filename)
    if key == "markdown":
        return parse_markdown(data, filename=filename)
    if key == "pdf":
        return parse_pdf(data, filename=filename, progress=progress)
    if key == "csv":
        return parse_csv(data, filename=filename)
    if key == "docx":
        return parse_docx(data, filename=filename)
    if key == "html":
        return parse_html(data, filename=filename)
    raise ParseError("Unsupported file type.")
