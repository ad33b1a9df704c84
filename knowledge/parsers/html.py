"""HTML (selectolax): the main text only. Scripts, styles and other non-content are dropped; navigation and
footers too when the page has no <main>/<article>; headings become markdown headings for the splitter."""

from __future__ import annotations

import re

from django.utils.translation import gettext_noop

from knowledge.parsers.base import ParsedDocument, ParseError
from knowledge.parsers.text import decode_text

NO_TEXT = gettext_noop("The HTML page contains no readable text.")
EMPTY = gettext_noop("The file is empty.")

_DROP_ALWAYS = ["script", "style", "noscript", "template", "svg", "math", "iframe", "object", "embed", "canvas",
                "head", "button", "select", "input", "textarea"]
_DROP_OUTSIDE_MAIN = ["nav", "footer", "aside", "form"]
_BLOCK = {
    "address", "article", "blockquote", "dd", "details", "dialog", "div", "dl", "dt", "fieldset", "figcaption",
    "figure", "header", "hr", "main", "ol", "p", "pre", "section", "summary", "table", "tbody", "thead",
    "tfoot", "ul", "caption", "body", "html",
}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)


def _decode(data: bytes) -> str:
    match = _META_CHARSET.search(data[:4096])
    if match and not data.startswith((b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf")):
        encoding = match.group(1).decode("ascii", "ignore").lower()
        if encoding in ("euc-kr", "ks_c_5601-1987", "ksc5601"):
            encoding = "cp949"
        try:
            return data.decode(encoding)
        except (LookupError, UnicodeDecodeError):
            pass
    return decode_text(data)


def _flat(text: str) -> str:
    return " ".join(text.split())


def _walk(root) -> str:
    """Depth-first, iterative (deeply nested markup must not hit the recursion limit)."""
    out: list[str] = []
    # Stack of (node, closing) pairs: closing=True emits the element's trailing separator.
    stack = [(root, False)]
    pre_depth = 0
    while stack:
        node, closing = stack.pop()
        tag = node.tag
        if closing:
            if tag == "pre":
                pre_depth -= 1
            if tag in _BLOCK or tag in ("li", "tr"):
                out.append("\n")
            elif tag in ("td", "th"):
                out.append(" | ")
            continue
        if tag == "-text":
            text = node.text_content or ""
            out.append(text if pre_depth else re.sub(r"\s+", " ", text))
            continue
        if tag in ("-comment", "!doctype") or tag is None:
            continue
        if tag in _HEADINGS:
            heading = _flat(node.text(deep=True, separator=" "))
            if heading:
                out.append(f"\n\n{'#' * _HEADINGS[tag]} {heading}\n\n")
            continue
        if tag == "br":
            out.append("\n")
            continue
        if tag == "li":
            out.append("\n- ")
        elif tag in _BLOCK or tag == "tr":
            out.append("\n")
        if tag == "pre":
            pre_depth += 1
        stack.append((node, True))
        children = []
        child = node.child
        while child is not None:
            children.append(child)
            child = child.next
        stack.extend((c, False) for c in reversed(children))
    return "".join(out)


def _tidy(text: str) -> str:
    lines = [line.strip(" \t|").strip() if "|" in line else line.strip() for line in text.split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def parse_html(data: bytes, *, filename: str = "") -> ParsedDocument:
    if not data:
        raise ParseError(EMPTY)
    from selectolax.lexbor import LexborHTMLParser

    markup = _decode(data)
    tree = LexborHTMLParser(markup)
    title_node = tree.css_first("title")
    title = _flat(title_node.text()) if title_node is not None else ""
    tree.strip_tags(_DROP_ALWAYS)
    root = tree.css_first("main") or tree.css_first("[role=main]")
    if root is None:
        articles = tree.css("article")
        root = max(articles, key=lambda n: len(n.text())) if articles else None
    if root is None:
        tree.strip_tags(_DROP_OUTSIDE_MAIN)
        root = tree.body or tree.root
    if root is None:
        raise ParseError(NO_TEXT)
    text = _tidy(_walk(root))
    if not text:
        raise ParseError(NO_TEXT)
    if not title:
        first = re.search(r"^#\s+(.+)$", text, re.M)
        title = first.group(1) if first else ""
    return ParsedDocument(text=text, kind="markdown", title=title[:300])
