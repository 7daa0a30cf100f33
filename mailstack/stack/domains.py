"""DNS names as mailstack stores them: lower case, IDNA labels as A-labels."""

from __future__ import annotations

import functools

import re
import unicodedata

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


@functools.lru_cache(maxsize=4096)  # pure, and rosters repeat the same few values
def normalise_domain(text: str, *, example: str = "example.co.jp") -> str:
    """A domain lower-cased with IDNA labels as A-labels; ValueError (the reason) if invalid.

    Full-width characters (typed in Japanese input modes) become ASCII, and a
    trailing dot is dropped.
    """
    name = unicodedata.normalize("NFKC", text).strip().rstrip(".").lower()
    try:
        ascii_name = name.encode("idna").decode("ascii")
        ascii_name.encode("ascii").decode("idna")  # an xn-- label must be valid punycode
    except UnicodeError:
        raise ValueError("is not a valid domain name") from None
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise ValueError(f"has no dot: write the whole name, e.g. {example}")
    if len(ascii_name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError("is not a valid domain name (letters, digits and hyphens between dots)")
    if labels[-1].isdigit():
        raise ValueError("is an IP address, not a domain name")
    return ascii_name
