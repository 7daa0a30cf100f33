"""Mailbox quota sizes: read what operators write, emit what Dovecot reads.

Units are binary, as in Dovecot (1G = 1024^3 bytes). A bare number is
refused: spreadsheets lose units easily, and Dovecot itself reads a bare
``storage=`` limit as kilobytes, so guessing either way would be wrong for
somebody.
"""

from __future__ import annotations

import functools

import re
import unicodedata
from fractions import Fraction

# Largest first: format_quota picks the largest unit that divides exactly.
_UNITS = (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024))
_MULTIPLIERS = {"B": 1, **dict(_UNITS)}

MAX_QUOTA = 16 * 1024**4
"""The largest quota accepted (16T): anything above is surely a typo."""

_SIZE = re.compile(r"([+-]?)(\d+(?:\.\d+)?|\.\d+)\s*([^\s\d.]*)", re.ASCII)
_EXAMPLES = "write a number and a unit, e.g. 2G or 500M, or unlimited"


@functools.lru_cache(maxsize=4096)  # pure, and rosters repeat the same few values
def parse_quota(text: str) -> int | None:
    """Bytes of a quota such as ``2G``, ``2 GiB``, ``500MB`` or ``1.5G``.

    Returns None for ``unlimited``. Units B, K, M, G, T are binary and
    case-insensitive, optionally followed by ``B`` or ``iB``. A decimal
    point is allowed when the result is a whole number of bytes. Raises
    ValueError with a message naming the quota and what to write instead
    for a bare number, an unknown unit, zero, a negative size, a size above
    16T, or anything that is not a size.
    """
    shown = str(text).strip()
    # NFKC turns full-width digits and letters (common in Japanese input) into ASCII.
    normal = unicodedata.normalize("NFKC", shown).strip()
    if not normal:
        raise ValueError(f"quota is empty: {_EXAMPLES}")
    if normal.lower() == "unlimited":
        return None
    match = _SIZE.fullmatch(normal)
    if not match:
        raise ValueError(f"quota '{shown}' is not a size: {_EXAMPLES}")
    sign, number, unit = match.groups()
    # Checked before the unit: someone writing 0 may mean "no limit", whatever the unit.
    if sign == "-" or Fraction(number) == 0:
        raise ValueError(f"quota '{shown}' must be more than zero (write unlimited for no limit)")
    if not unit:
        raise ValueError(f"quota '{shown}' has no unit: write {number}M or {number}G")
    multiplier = _multiplier(unit)
    if multiplier is None:
        raise ValueError(f"quota '{shown}': unknown unit '{unit}' (use K, M, G or T, e.g. 2G)")
    size = Fraction(number) * multiplier
    if size.denominator != 1:
        raise ValueError(f"quota '{shown}' is not a whole number of bytes: use a smaller unit")
    if size > MAX_QUOTA:
        raise ValueError(f"quota '{shown}' is more than the largest allowed, 16T")
    return int(size)


def _multiplier(unit: str) -> int | None:
    """Bytes per ``unit`` (``G``, ``GB``, ``GiB``, ``b``...), None when unknown."""
    unit = unit.upper()
    if unit in _MULTIPLIERS:
        return _MULTIPLIERS[unit]
    if len(unit) == 2 and unit[1] == "B" and unit[0] in _MULTIPLIERS and unit[0] != "B":
        return _MULTIPLIERS[unit[0]]
    if len(unit) == 3 and unit[1:] == "IB" and unit[0] in _MULTIPLIERS and unit[0] != "B":
        return _MULTIPLIERS[unit[0]]
    return None


def format_quota(size: int) -> str:
    """Dovecot's exact quota-rule size for ``size`` bytes: ``2G``, ``1536M``, ``100B``.

    Uses the largest of T, G, M, K that divides ``size`` exactly, else bytes
    with an explicit ``B``: Dovecot reads a bare number in a quota rule as
    kilobytes, so a unit is always written.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"a quota must be a positive whole number of bytes, not {size!r}")
    for suffix, multiplier in _UNITS:
        if size % multiplier == 0:
            return f"{size // multiplier}{suffix}"
    return f"{size}B"
