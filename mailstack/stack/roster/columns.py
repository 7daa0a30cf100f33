"""Roster columns: the fields a row may give, and the header names (English and Japanese) that mean each."""

from __future__ import annotations

import re
import unicodedata
from difflib import get_close_matches



FIELDS = ("address", "name", "quota", "protocol", "aliases", "password")
REQUIRED = ("address", "password")

SYNONYMS: dict[str, tuple[str, ...]] = {
    "address": ("address", "account", "email", "mail", "mailbox", "メールアドレス", "アカウント"),
    "name": ("name", "display_name", "表示名", "氏名"),
    "quota": ("quota", "容量"),
    "protocol": ("protocol", "プロトコル"),
    "aliases": ("aliases", "alias", "エイリアス"),
    "password": ("password", "パスワード"),
}


def _header_key(header: str) -> str:
    """Compare headers ignoring case, surrounding spaces and full-width forms."""
    key = unicodedata.normalize("NFKC", header).strip().lower()
    return re.sub(r"\s+", "_", key)


_FIELD_OF = {_header_key(name): field for field, names in SYNONYMS.items() for name in names}


def field_of_header(header: str) -> str | None:
    """The roster field a column header (or YAML key) stands for, None when unknown."""
    return _FIELD_OF.get(_header_key(header))


def unknown_column(header: str, noun: str = "column") -> str:
    close = get_close_matches(_header_key(header), list(_FIELD_OF), n=1, cutoff=0.75)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    known = "; ".join(f"{f} ({', '.join(SYNONYMS[f][1:])})" if len(SYNONYMS[f]) > 1 else f for f in FIELDS)
    return f"unknown {noun} '{header}'{hint}: known {noun}s are {known}"
