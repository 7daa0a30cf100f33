"""Mail addresses in the roster: syntax, normalised domains, and the stack's domains."""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable

from mailstack.stack.domains import normalise_domain


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
def parse_address(text: str, *, what: str = "address", example_domain: str = "example.com") -> str:
    """Validate and normalise an addr-spec ``local@domain``: lower-case, A-label domain.

    Raises ValueError with a message naming ``what`` (``address`` or
    ``alias``) and the value; an address without ``@`` gets a suggestion
    using ``example_domain``.
    """
    shown = str(text).strip()
    # NFKC maps full-width characters (＠, ｔａｒｏ) that Japanese input methods produce.
    address = unicodedata.normalize("NFKC", shown).lower()
    if not address:
        raise ValueError(f"{what} is empty")
    if "@" not in address:
        local = address if _LOCAL.fullmatch(address) else "user"
        raise ValueError(f"{what} '{shown}' has no @domain: write the full address, e.g. {local}@{example_domain}")
    local, _, domain = address.rpartition("@")
    if "@" in local:
        raise ValueError(f"{what} '{shown}' has more than one @")
    if not local:
        raise ValueError(f"{what} '{shown}' has nothing before the @")
    if not domain:
        raise ValueError(f"{what} '{shown}' has nothing after the @")
    if not local.isascii():
        raise ValueError(f"{what} '{shown}': the part before @ must be ASCII letters, digits or .!#$%&'*+/=?^_`{{|}}~-")
    if not _LOCAL.fullmatch(local):
        bad = next((c for c in local if not re.fullmatch(_ATOM, c) and c != "."), None)
        reason = (f"the part before @ has the character {bad!r}, which an address cannot have" if bad
                  else "the part before @ must not start or end with a dot or have two dots in a row")
        raise ValueError(f"{what} '{shown}': {reason}")
    if len(local) > 64:
        raise ValueError(f"{what} '{shown}': the part before @ is longer than 64 characters")
    try:
        domain = normalise_domain(domain)
    except ValueError as exc:
        raise ValueError(f"{what} '{shown}': the domain {exc}") from None
    address = f"{local}@{domain}"
    if len(address) > 254:
        raise ValueError(f"{what} '{shown}' is longer than 254 characters")
    return address


def domain_shown(domain: str) -> str:
    """An A-label domain with its Unicode form, for messages: ``xn--r8jz45g.jp (例え.jp)``."""
    try:
        unicode = domain.encode("ascii").decode("idna")
    except UnicodeError:
        return domain
    return domain if unicode == domain else f"{domain} ({unicode})"


def allowed_domains(domains: Iterable[str] | None) -> tuple[str, ...] | None:
    if domains is None:
        return None
    allowed = []
    for domain in domains:
        try:
            allowed.append(normalise_domain(domain.rstrip(".")))
        except ValueError:
            allowed.append(domain.strip().lower())  # already validated by the settings
    return tuple(dict.fromkeys(allowed))
