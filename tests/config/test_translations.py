"""Every page has a Japanese text: the catalogue is complete and the compiled file matches it."""

from __future__ import annotations

import polib

from tests.services import ROOT

LOCALE = ROOT / "config" / "locale" / "ja" / "LC_MESSAGES"


def test_every_message_has_a_japanese_translation():
    po = polib.pofile(str(LOCALE / "django.po"))
    untranslated = [e.msgid for e in po if not e.obsolete and not e.translated()]
    assert untranslated == []


def _key(entry: polib.POEntry | polib.MOEntry) -> tuple[str | None, str]:
    return (entry.msgctxt or None, entry.msgid)


def test_compiled_catalogue_matches_the_source():
    po = {_key(e): e.msgstr for e in polib.pofile(str(LOCALE / "django.po")) if e.translated()}
    mo = {_key(e): e.msgstr for e in polib.mofile(str(LOCALE / "django.mo")) if e.msgid}
    assert mo == po, "run: manage.py compilemessages"


def test_placeholders_survive_translation():
    import re

    for entry in polib.pofile(str(LOCALE / "django.po")):
        if entry.translated():
            names = sorted(re.findall(r"%\((\w+)\)s", entry.msgid))
            # A plural entry's text is in its forms (Japanese has one), not in msgstr.
            for text in entry.msgstr_plural.values() if entry.msgid_plural else [entry.msgstr]:
                assert sorted(re.findall(r"%\((\w+)\)s", text)) == names, entry.msgid
