#!/usr/bin/env python
"""Refresh the Korean catalog: collect messages, fold in translations handed over as JSON, compile.

    scripts/env-run python scripts/translations.py [config/locale/ko-*.json ...]

Each JSON file maps an English msgid to its Korean text. Entries already translated in the .po are kept
unless the JSON gives a new text. Prints what is still untranslated.
"""

import json
import subprocess
import sys
from pathlib import Path

import polib

ROOT = Path(__file__).resolve().parent.parent
PO = ROOT / "config" / "locale" / "ko" / "LC_MESSAGES" / "django.po"


def main(paths: list[str]) -> int:
    manage = [sys.executable, str(ROOT / "manage.py")]
    ignore = ["--ignore=.venv", "--ignore=var", "--ignore=bench", "--ignore=tests"]
    subprocess.run([*manage, "makemessages", "-l", "ko", "--no-obsolete", *ignore], check=True, cwd=ROOT)
    glossary: dict[str, str] = {}
    for path in paths or sorted(str(p) for p in (ROOT / "config" / "locale").glob("ko-*.json")):
        glossary.update(json.loads(Path(path).read_text(encoding="utf-8")))
    catalog = polib.pofile(str(PO))
    for entry in catalog:
        text = glossary.get(entry.msgid) or glossary.get(entry.msgid_plural or "")
        if text:
            if entry.msgid_plural:
                entry.msgstr_plural = {0: text}  # Korean has one plural form
            else:
                entry.msgstr = text
            if "fuzzy" in entry.flags:
                entry.flags.remove("fuzzy")
    catalog.save()
    subprocess.run([*manage, "compilemessages", "-l", "ko", "--ignore=.venv"], check=True, cwd=ROOT)
    missing = [
        e.msgid for e in catalog
        if e.msgid and not (e.msgstr_plural.get(0) if e.msgid_plural else e.msgstr)
    ]
    for msgid in missing:
        print(f"untranslated: {msgid!r}")
    print(f"{len(catalog) - len(missing)} of {len(catalog)} messages translated")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
