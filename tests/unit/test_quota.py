"""Quota sizes: what operators may write, and the exact size Dovecot gets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstack.stack.quota import MAX_QUOTA, format_quota, parse_quota

K, M, G, T = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("2G", 2 * G),
        ("2GB", 2 * G),
        ("2 GiB", 2 * G),
        ("2g", 2 * G),
        ("2gib", 2 * G),
        ("500M", 500 * M),
        ("500MB", 500 * M),
        ("1.5G", 1610612736),
        ("1024K", 1024 * K),
        ("100B", 100),
        ("  3T ", 3 * T),
        ("16T", 16 * T),
        ("２Ｇ", 2 * G),  # full-width, as Japanese input methods type it
    ],
)
def test_parse_quota_reads_binary_sizes(text, size):
    assert parse_quota(text) == size


@pytest.mark.parametrize("text", ["unlimited", "Unlimited", " UNLIMITED "])
def test_parse_quota_unlimited_is_none(text):
    assert parse_quota(text) is None


def test_parse_quota_refuses_bare_number():
    with pytest.raises(ValueError) as caught:
        parse_quota("500")
    assert str(caught.value) == "quota '500' has no unit: write 500M or 500G"


def test_parse_quota_refuses_unknown_unit():
    with pytest.raises(ValueError) as caught:
        parse_quota("2X")
    assert str(caught.value) == "quota '2X': unknown unit 'X' (use K, M, G or T, e.g. 2G)"


@pytest.mark.parametrize("text", ["0G", "0", "-1G", "-5M"])
def test_parse_quota_refuses_zero_and_negative(text):
    with pytest.raises(ValueError, match="must be more than zero"):
        parse_quota(text)


@pytest.mark.parametrize("text", ["lots", "G", "1,5G", "2 G B", "1e3G", "2G5"])
def test_parse_quota_refuses_nonsense(text):
    with pytest.raises(ValueError, match=r"is not a size: write a number and a unit, e.g. 2G"):
        parse_quota(text)


def test_parse_quota_refuses_more_than_16t():
    with pytest.raises(ValueError, match=r"quota '17T' is more than the largest allowed, 16T"):
        parse_quota("17T")


def test_parse_quota_refuses_fraction_of_a_byte():
    with pytest.raises(ValueError, match=r"quota '0.1K' is not a whole number of bytes"):
        parse_quota("0.1K")


def test_parse_quota_refuses_empty_text():
    with pytest.raises(ValueError, match="quota is empty"):
        parse_quota("  ")


@pytest.mark.parametrize(
    ("size", "text"),
    [(2 * G, "2G"), (500 * M, "500M"), (1610612736, "1536M"), (100, "100B"), (3 * T, "3T"), (3072, "3K"), (1536, "1536B")],
)
def test_format_quota_uses_largest_exact_unit(size, text):
    assert format_quota(size) == text


@pytest.mark.parametrize("size", [0, -1, True, 1.5])
def test_format_quota_refuses_non_positive_or_non_integer(size):
    with pytest.raises(ValueError, match="positive whole number of bytes"):
        format_quota(size)


@given(st.integers(min_value=1, max_value=MAX_QUOTA))
def test_format_then_parse_round_trips(size):
    text = format_quota(size)
    assert parse_quota(text) == size
    assert format_quota(parse_quota(text)) == text


@given(
    st.integers(min_value=1, max_value=16),
    st.sampled_from(["T", "TB", "TiB", "t", "G", "GB", "GiB", "g", "M", "MB", "MiB", "K", "KB", "KiB", "k"]),
    st.sampled_from(["", " "]),
)
def test_parse_accepts_every_unit_spelling(number, unit, space):
    multiplier = {"T": T, "G": G, "M": M, "K": K}[unit[0].upper()]
    assert parse_quota(f"{number}{space}{unit}") == number * multiplier
