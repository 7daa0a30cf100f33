"""The printable settings sheet of one mailbox: HTML from templates/clients/, in Japanese or English."""

from __future__ import annotations

from datetime import date

import jinja2

from mailstack.clients.values import MailboxSettings
from mailstack.host.files import TEMPLATES
from mailstack.stack.quota import parse_quota

LANGUAGES = ("ja", "en")

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    undefined=jinja2.StrictUndefined,
    autoescape=True,  # names and addresses come from the roster
    trim_blocks=True,
    lstrip_blocks=True,
)

_WEEKDAYS = {"ja": "月火水木金土日", "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")}
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")


def day_text(day: date, lang: str) -> str:
    """A date as a reader of ``lang`` writes it, with the weekday: 2027年1月15日（金）, Friday 15 January 2027."""
    weekday = _WEEKDAYS[lang][day.weekday()]
    if lang == "ja":
        return f"{day.year}年{day.month}月{day.day}日（{weekday}）"
    return f"{weekday} {day.day} {_MONTHS[day.month - 1]} {day.year}"


def size_text(quota: str, lang: str) -> str:
    """A roster quota (``2G``, ``500M``, ``unlimited``) as people read sizes: 2 GB, 500 MB, 無制限."""
    if quota == "unlimited":
        return "無制限" if lang == "ja" else "unlimited"
    size = parse_quota(quota)
    for unit, factor in (("TB", 1024 ** 4), ("GB", 1024 ** 3), ("MB", 1024 ** 2)):
        if size >= factor:
            return f"{size / factor:.3g} {unit}"
    return f"{size} B"


def sheet_html(values: MailboxSettings, lang: str, today: date) -> str:
    """The sheet of one mailbox as a standalone HTML page (A4, one page)."""
    if lang not in LANGUAGES:
        raise ValueError(f"no sheet in {lang!r}: the languages are {', '.join(LANGUAGES)}")
    template = _env.get_template(f"clients/sheet.{lang}.html.j2")
    return template.render(m=values, lang=lang, today=today, day=lambda d: day_text(d, lang),
                           size=size_text)
