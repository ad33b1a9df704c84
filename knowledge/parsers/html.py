"""HTML (selectolax): the main text only. Scripts, styles and other non-content are dropped; navigation and
footers too when the page has no <main>/<article>; headings become markdown headings for the splitter."""

from __future__ import annotations

import re

from django.utils.translation import gettext_noop

from knowledge.parsers.base import ParsedDocument, ParseError
from knowledge.parsers.tables import is_table_line, markdown_table, table_cell
from knowledge.parsers.text import Decoded, decode_text, repair_mojibake

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


def _decode(data: bytes) -> Decoded:
    """The charset the page declares when its bytes decode with it, else as any text file."""
    match = _META_CHARSET.search(data[:4096])
    if match and not data.startswith((b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf")):
        encoding = match.group(1).decode("ascii", "ignore").lower()
        if encoding in ("euc-kr", "ks_c_5601-1987", "ksc5601"):
            encoding = "cp949"
        try:
            return Decoded(*repair_mojibake(data.decode(encoding)))
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
    while stack:
        node, closing = stack.pop()
        tag = node.tag
        if closing:
            if tag in _BLOCK or tag in ("li", "tr"):
                out.append("\n")
            elif tag in ("td", "th"):
                out.append(" | ")
            continue
        if tag == "-text":
            text = node.text_content or ""
            out.append(re.sub(r"\s+", " ", text))
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
        if tag == "pre":
            out.append(_fenced(node))
            continue
        if tag == "table" and (table := _data_table(node)):
            out.append(f"\n\n{table}\n\n")
            continue
        if tag == "li":
            out.append("\n- ")
        elif tag in _BLOCK or tag == "tr":
            out.append("\n")
        stack.append((node, True))
        children = []
        child = node.child
        while child is not None:
            children.append(child)
            child = child.next
        stack.extend((c, False) for c in reversed(children))
    return "".join(out)


def _data_table(node) -> str:
    """A table of data as a markdown table (its caption above it); "" for a layout table (nested tables,
    headings or preformatted text inside), which is walked as text."""
    if len(node.css("table")) > 1 or node.css_first("h1, h2, h3, h4, h5, h6, pre") is not None:
        return ""
    rows = []
    for tr in node.css("tr"):
        cells = []
        for cell in tr.iter():
            if cell.tag in ("td", "th"):
                cells.append(table_cell(cell.text(deep=True, separator=" ")))
                cells += [""] * (_colspan(cell) - 1)  # so the columns still line up under the header
        if any(cells):
            rows.append(cells)
    if not rows:
        return ""
    caption = node.css_first("caption")
    caption = _flat(caption.text(deep=True, separator=" ")) if caption is not None else ""
    return f"{caption}\n\n{markdown_table(rows)}" if caption else markdown_table(rows)


def _colspan(cell) -> int:
    try:
        return min(max(int(cell.attributes.get("colspan") or 1), 1), 50)
    except ValueError:
        return 1


def _tidy_line(line: str) -> str:
    # Cells of layout tables, walked as text, leave " | " at the line's ends; a markdown table row keeps them.
    return line if "|" not in line or is_table_line(line) else line.strip(" \t|").strip()


def _fenced(node) -> str:
    """Preformatted text as a fenced code block, so the chunker keeps it whole and never reads its `#` lines as
    headings; the fence is longer than any backtick run inside, and a `language-x` class names the language."""
    code = node.text(deep=True, separator="").strip("\n")
    if not code.strip():
        return "\n"
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", code)), default=0))
    classes = " ".join(filter(None, [node.attributes.get("class") or ""] +
                              [(c.attributes.get("class") or "") for c in node.css("code")[:1]]))
    language = next((c.removeprefix("language-") for c in classes.split() if c.startswith("language-")), "")
    return f"\n\n{fence}{language}\n{code}\n{fence}\n\n"


def _tidy(text: str) -> str:
    lines, fence = [], ""
    for line in text.split("\n"):
        if fence:  # inside preformatted text: keep the indentation
            lines.append(line.rstrip())
            if line.strip() == fence:
                fence = ""
            continue
        line = _tidy_line(line.strip())
        if opening := re.fullmatch(r"(`{3,})[\w+-]*", line):
            fence = opening.group(1)
        lines.append(line)
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def parse_html(data: bytes, *, filename: str = "") -> ParsedDocument:
    if not data:
        raise ParseError(EMPTY)
    # Parsing libraries load only in the process that parses: every process imports knowledge.parsers (models).
    from selectolax.lexbor import LexborHTMLParser

    decoded = _decode(data)
    tree = LexborHTMLParser(decoded.text)
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
    return ParsedDocument(text=text, kind="markdown", title=title[:300], warnings=decoded.warnings())
