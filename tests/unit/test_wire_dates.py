"""Dates a server sends come back in one form, whatever their spelling; the form sent back reads as itself."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from mailstack.imap.wire import date_time, format_internaldate, internaldate, parse_internaldate

moments = st.builds(
    lambda when, minutes: when.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30)).map(
        lambda d: d.replace(microsecond=0)),
    st.integers(-(24 * 60 - 1), 24 * 60 - 1),
)


@given(moments)
def test_a_date_sent_back_reads_as_the_same_moment_and_the_same_text(moment):
    text = format_internaldate(moment)
    assert parse_internaldate(text) == moment and parse_internaldate(text).utcoffset() == moment.utcoffset()
    assert internaldate(text) == text


def test_spellings_of_one_date_come_back_in_one_form():
    for spelling in ("7-jul-1996 02:44:25 -0000", " 07-JUL-1996 02:44:25 +0000 ", "06-Jul-1996 23:44:25 -0300"):
        assert internaldate(spelling) in ("07-Jul-1996 02:44:25 +0000", "06-Jul-1996 23:44:25 -0300")
    assert internaldate("7-jul-1996 02:44:25 -0000") == "07-Jul-1996 02:44:25 +0000"
    assert internaldate("07-Jul-1996 02:44:25 +0075") == "07-Jul-1996 02:44:25 +0115"
    assert internaldate("07-Jul-1996 02:44:25 -0060") == "07-Jul-1996 02:44:25 -0100"
    assert internaldate("07-Jul-1996 02:44:25 +0000") == "07-Jul-1996 02:44:25 +0000"
    assert date_time(" 7-jul-1996 02:44:25 -0000") == b'"07-Jul-1996 02:44:25 +0000"'


def edges(*values: int):
    """Values at the edges of a field, and any in between."""
    return st.one_of(st.sampled_from(values), st.integers(min(values), max(values)))


@settings(max_examples=2000)
@given(st.tuples(edges(0, 1, 28, 29, 30, 31, 32), st.sampled_from(["Jan", "Feb", "feb", "Apr", "Jun", "Sep", "Nov",
                                                                   "Dec", "Foo"]),
                 st.sampled_from([1, 2, 1900, 1996, 2000, 2023, 2024, 2100, 9998, 9999]), edges(0, 23, 24, 25),
                 edges(0, 59, 60, 61), edges(0, 59, 60, 61), st.sampled_from("+-"), edges(0, 23, 24, 25),
                 edges(0, 30, 59, 60)))
def test_a_date_taken_as_written_is_exactly_the_one_its_moment_gives(parts):
    """internaldate's shortcut (no moment made for a date written as sent) agrees with making the moment."""
    day, month, year, hour, minute, second, sign, zone_hours, zone_minutes = parts
    text = f"{day:02d}-{month}-{year:04d} {hour:02d}:{minute:02d}:{second:02d} {sign}{zone_hours:02d}{zone_minutes:02d}"
    moment = parse_internaldate(text)
    assert internaldate(text) == ("" if moment is None else format_internaldate(moment))

