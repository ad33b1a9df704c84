"""A file of test questions: JSONL or CSV parsed into questions with their expected documents."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

from django.utils.translation import gettext as _

from accounts.errors import AppError

MAX_UPLOAD_QUESTIONS = 2000


class UploadError(AppError):
    """A question or a question file refused; `field` names the input at fault."""

    def __init__(self, message: str, *, field: str = "file"):
        super().__init__(message, fields={field: [message]})


@dataclass
class ParsedQuestion:
    text: str
    refs: list[str]


def parse_questions(data: bytes, filename: str = "") -> list[ParsedQuestion]:
    """JSONL ({"question": str, "expected": [str|int, ...]} per line; "query"/"documents" also accepted) or
    CSV (columns question, expected; several expected documents separated by "|" or ";")."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UploadError(_("The file is not UTF-8 text.")) from exc
    rows: list[ParsedQuestion] = []
    is_jsonl = filename.lower().endswith((".jsonl", ".json")) or text.lstrip().startswith("{")
    if is_jsonl:
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UploadError(_("Line %(n)s is not valid JSON.") % {"n": lineno}) from exc
            if not isinstance(obj, dict):
                raise UploadError(_("Line %(n)s is not a JSON object.") % {"n": lineno})
            question = str(obj.get("question") or obj.get("query") or obj.get("text") or "").strip()
            refs = obj.get("expected", obj.get("documents", obj.get("expected_documents", [])))
            if isinstance(refs, str | int):
                refs = [refs]
            if not question:
                raise UploadError(_("Line %(n)s has no question.") % {"n": lineno})
            rows.append(ParsedQuestion(question, [str(r).strip() for r in refs or [] if str(r).strip()]))
    else:
        reader = csv.DictReader(io.StringIO(text))
        header = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
        qcol = header.get("question") or header.get("query")
        ecol = header.get("expected") or header.get("documents") or header.get("expected_documents")
        if not qcol:
            raise UploadError(_("The CSV needs a 'question' column (and an 'expected' column)."))
        for lineno, row in enumerate(reader, 2):
            question = (row.get(qcol) or "").strip()
            if not question:
                raise UploadError(_("Row %(n)s has no question.") % {"n": lineno})
            raw = (row.get(ecol) or "") if ecol else ""
            refs = [r.strip() for r in raw.replace(";", "|").split("|") if r.strip()]
            rows.append(ParsedQuestion(question, refs))
    if not rows:
        raise UploadError(_("The file has no questions."))
    if len(rows) > MAX_UPLOAD_QUESTIONS:
        raise UploadError(_("At most %(n)s questions per file.") % {"n": MAX_UPLOAD_QUESTIONS})
    return rows
