"""Request parsers that refuse the NUL character, in one place for every API view.

PostgreSQL text and jsonb cannot hold U+0000, so a NUL that reaches a write is a DataError (500), and DRF's
CharField check does not look inside DictField/JSONField values or object keys. These parsers answer 400 for a
NUL anywhere in the parsed data (keys included); uploaded file contents are left alone (binary is normal).
"""

from __future__ import annotations

from rest_framework import exceptions, parsers

NUL = "\x00"


def nul_path(data, path: str = "") -> str | None:
    """Where the first NUL is in parsed request data ("" for the top level), or None."""
    stack = [(path, data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if NUL in value:
                return where
        elif isinstance(value, dict) or hasattr(value, "lists"):
            items = value.lists() if hasattr(value, "lists") else value.items()
            for key, item in items:
                key_text = str(key)
                label = f"{where}.{key_text}" if where else key_text
                if NUL in key_text:
                    return label
                stack.append((label, item))
        elif isinstance(value, list | tuple):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
    return None


def refuse_nul(data):
    where = nul_path(data)
    if where is not None:
        shown = where.replace(NUL, "\\u0000") or "the body"
        raise exceptions.ParseError(f"Text may not contain the NUL character (\\u0000); found in {shown}.")
    return data


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        return refuse_nul(super().parse(stream, media_type, parser_context))


class FormParser(parsers.FormParser):
    def parse(self, stream, media_type=None, parser_context=None):
        return refuse_nul(super().parse(stream, media_type, parser_context))


class MultiPartParser(parsers.MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):
        result = super().parse(stream, media_type, parser_context)
        refuse_nul(result.data)
        refuse_nul({key: [f.name for f in files] for key, files in result.files.lists()})  # file names only
        return result
