"""Password cells: Dovecot crypt hashes checked for damage, ``generate[:N]``, and plain text refused."""

from __future__ import annotations

import re
import unicodedata

from mailstack.stack.roster.model import GeneratePassword, Password, PasswordHash


SUPPORTED_SCHEMES = ("SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "ARGON2ID", "ARGON2I")

# Scheme names Dovecot knows. Only these are ever repeated back in a message:
# anything else inside {...} may be part of a password.
_DOVECOT_SCHEMES = frozenset(
    "ARGON2I ARGON2ID BLF-CRYPT CLEAR CLEARTEXT CRAM-MD5 CRYPT DES-CRYPT DIGEST-MD5 HMAC-MD5 "
    "LANMAN LDAP-MD5 MD5 MD5-CRYPT NTLM OTP PBKDF2 PLAIN PLAIN-MD4 PLAIN-MD5 PLAIN-TRUNC RPA "
    "SCRAM-SHA-1 SCRAM-SHA-256 SHA SHA1 SHA256 SHA256-CRYPT SHA512 SHA512-CRYPT SKEY SMD5 "
    "SSHA SSHA256 SSHA512".split()
)
_PLAIN_SCHEMES = frozenset({"PLAIN", "CLEAR", "CLEARTEXT", "PLAIN-TRUNC"})

# Crypt prefixes (as in /etc/shadow) of the supported schemes, longest first.
_CRYPT_IDS = (
    ("$argon2id$", "ARGON2ID"),
    ("$argon2i$", "ARGON2I"),
    ("$6$", "SHA512-CRYPT"),
    ("$5$", "SHA256-CRYPT"),
    ("$2y$", "BLF-CRYPT"),
    ("$2b$", "BLF-CRYPT"),
    ("$2a$", "BLF-CRYPT"),
)
# Recognisable crypt formats that are not supported (yescrypt is what current
# Debian writes to /etc/shadow; Dovecot cannot be relied on to verify it).
_OTHER_CRYPT_IDS = (
    ("$argon2d$", "Argon2d"),
    ("$1$", "MD5-CRYPT"),
    ("$y$", "yescrypt"),
    ("$gy$", "gost-yescrypt"),
    ("$7$", "scrypt"),
)

_HOW_TO_FIX = (
    "hash it with `doveadm pw -s SHA512-CRYPT`, write generate for a generated initial password, "
    "or convert the whole spreadsheet with `mailstack roster hash SRC DEST`"
)
_PLAINTEXT = f"password is in plain text, and the roster must never hold one: {_HOW_TO_FIX}"


class PlaintextPassword(ValueError):
    """A password cell holds a plain-text password (the exception never holds it)."""


def parse_password(text: str) -> Password:
    """Read a roster password cell: a supported crypt hash, or ``generate[:N]``.

    A crypt string without its ``{SCHEME}`` prefix (as pasted from
    /etc/shadow) gets the right prefix; ``{CRYPT}`` becomes the specific
    scheme. Raises ValueError for a plain-text password, an unsupported
    scheme or a malformed hash. No message contains any part of ``text``.
    """
    text = str(text).strip()
    if not text:
        raise ValueError("password is empty: write a password hash or generate")
    generate = re.fullmatch(r"generate(?:\s*:\s*(.*))?", unicodedata.normalize("NFKC", text), re.I | re.S)
    if generate:
        return _generate(generate.group(1))
    prefixed = re.fullmatch(r"\{([^{}]*)\}(.*)", text, re.S)
    if not prefixed:
        return _crypt_hash(None, text)
    scheme = prefixed.group(1).strip().upper()
    value = prefixed.group(2)
    if scheme.split(".")[0] in _PLAIN_SCHEMES:
        raise PlaintextPassword(f"password is a {{{scheme.split('.')[0]}}} plain-text password, "
                                 f"and the roster must never hold one: {_HOW_TO_FIX}")
    if scheme in SUPPORTED_SCHEMES or scheme == "CRYPT":
        return _crypt_hash(scheme, value)
    shown = f"the unsupported hash scheme {{{scheme}}}" if scheme in _DOVECOT_SCHEMES else "an unknown hash scheme"
    raise ValueError(_unsupported(shown))


def _unsupported(what: str, verb: str = "uses") -> str:
    return (
        f"password {verb} {what}: supported are {', '.join(SUPPORTED_SCHEMES)}; "
        f"hash the password again with `doveadm pw -s SHA512-CRYPT`, or write generate"
    )


def _generate(version: str | None) -> GeneratePassword:
    if version is None:
        return GeneratePassword()
    version = version.strip()
    if not version.isascii() or not version.isdigit() or int(version) < 1:
        raise ValueError("password generate:N needs a whole number N of 1 or more, e.g. generate:2")
    return GeneratePassword(int(version))


def _crypt_hash(scheme: str | None, value: str) -> PasswordHash:
    """Check a crypt string; ``scheme`` is the {SCHEME} given, None when there was none."""
    found = next((name for ident, name in _CRYPT_IDS if value.startswith(ident)), None)
    if found is None:
        other = next((name for ident, name in _OTHER_CRYPT_IDS if value.startswith(ident)), None)
        if other:
            raise ValueError(_unsupported(f"an unsupported {other} hash", verb="is"))
        if scheme is None:
            raise PlaintextPassword(_PLAINTEXT)
        if scheme == "CRYPT":
            raise ValueError(_unsupported("{CRYPT} with an unsupported hash type"))
        raise ValueError(f"password has the {{{scheme}}} prefix but no {scheme} hash after it: "
                         f"it looks damaged; copy the whole hash")
    if scheme not in (None, "CRYPT", found):
        raise ValueError(f"password has the {{{scheme}}} prefix but holds a {found} hash: "
                         f"write {{{found}}} or leave the prefix out")
    problem = _HASH_CHECKS[found](value, found)
    if problem:
        raise ValueError(f"password: the {found} hash {problem}")
    return PasswordHash(found, value)


_CRYPT64 = re.compile(r"[./0-9A-Za-z]*")
_PHC64 = re.compile(r"[A-Za-z0-9+/]*")
_TRUNCATED = "looks truncated: copy the whole hash"
_DAMAGED = "looks damaged: copy the whole hash again"


def _length(part: str, expected: int, what: str = "hash part") -> str | None:
    if len(part) < expected:
        return f"{_TRUNCATED} (its {what} has {len(part)} characters, not {expected})"
    if len(part) > expected:
        return f"{_DAMAGED} (its {what} has {len(part)} characters, not {expected})"
    return None


def _check_sha_crypt(value: str, scheme: str) -> str | None:
    """``$6$[rounds=N$]salt$hash`` (SHA512-CRYPT, 86 chars) or ``$5$`` (SHA256-CRYPT, 43)."""
    expected = 86 if scheme == "SHA512-CRYPT" else 43
    parts = value[3:].split("$")
    if parts[0].startswith("rounds="):
        if not re.fullmatch(r"rounds=[0-9]{1,9}", parts.pop(0)):
            return f"{_DAMAGED} (its rounds= is not a number)"
    if len(parts) < 2:
        return f"{_TRUNCATED} (it ends after the salt)"
    if len(parts) > 2:
        return f"{_DAMAGED} (it has too many $-separated parts)"
    salt, digest = parts
    if not 1 <= len(salt) <= 16 or not _CRYPT64.fullmatch(salt):
        return f"{_DAMAGED} (its salt is not 1 to 16 of the characters ./0-9A-Za-z)"
    if not _CRYPT64.fullmatch(digest):
        return f"{_DAMAGED} (its hash part has characters other than ./0-9A-Za-z)"
    return _length(digest, expected)


def _check_blf_crypt(value: str, scheme: str) -> str | None:
    """``$2y$NN$`` + 22 characters of salt and 31 of hash."""
    match = re.fullmatch(r"\$2[aby]\$([0-9]{2})\$(.*)", value, re.S)
    if not match:
        return f"{_DAMAGED} (it does not start like $2y$10$)"
    if not 4 <= int(match.group(1)) <= 31:
        return f"{_DAMAGED} (its cost {match.group(1)} is not 04 to 31)"
    if not _CRYPT64.fullmatch(match.group(2)):
        return f"{_DAMAGED} (it has characters other than ./0-9A-Za-z after the cost)"
    return _length(match.group(2), 53, "salt-and-hash part")


def _check_argon2(value: str, scheme: str) -> str | None:
    """The PHC string ``$argon2id$v=19$m=M,t=T,p=P$salt$hash`` (base64 without padding)."""
    parts = value.split("$")[2:]
    if parts and re.fullmatch(r"v=[0-9]+", parts[0]):
        parts.pop(0)
    if not parts or not re.fullmatch(r"m=[0-9]+,t=[0-9]+,p=[0-9]+", parts[0]):
        return f"{_DAMAGED} (it has no m=...,t=...,p=... parameters)"
    if len(parts) < 3:
        return f"{_TRUNCATED} (it ends before the hash part)"
    if len(parts) > 3:
        return f"{_DAMAGED} (it has too many $-separated parts)"
    salt, digest = parts[1:]
    if not digest:
        return f"{_TRUNCATED} (it ends before the hash part)"
    if not salt or not _PHC64.fullmatch(salt) or not _PHC64.fullmatch(digest):
        return f"{_DAMAGED} (its salt or hash is not base64)"
    # 8-byte salts and 16-byte hashes are the smallest libsodium (Dovecot's argon2) makes.
    if len(salt) < 11:
        return f"{_TRUNCATED} (its salt has {len(salt)} characters, at least 11 expected)"
    if len(digest) < 22:
        return f"{_TRUNCATED} (its hash part has {len(digest)} characters, at least 22 expected)"
    return None


_HASH_CHECKS = {
    "SHA512-CRYPT": _check_sha_crypt,
    "SHA256-CRYPT": _check_sha_crypt,
    "BLF-CRYPT": _check_blf_crypt,
    "ARGON2ID": _check_argon2,
    "ARGON2I": _check_argon2,
}


def plaintext_of(text: str) -> str | None:
    """The password in a plain-text cell, without a {PLAIN} or {CLEARTEXT} prefix.

    None for an encoded plain-text form such as {PLAIN-TRUNC} or {PLAIN.b64},
    which would be hashed wrongly as it stands.
    """
    prefixed = re.fullmatch(r"\s*\{([^{}]*)\}(.*)", text, re.S)
    if not prefixed:
        return text
    if prefixed.group(1).strip().upper() in ("PLAIN", "CLEAR", "CLEARTEXT"):
        return prefixed.group(2)
    return None


def plaintext_problem(password: str) -> str | None:
    """Why a plain-text password cannot be hashed as it is, None when it can."""
    if not password:
        return "password is empty: write the password, a password hash or generate"
    if password != password.strip():
        return ("password has spaces at the start or end, which are most likely a mistake: remove them, "
                "or hash it yourself with `doveadm pw -s SHA512-CRYPT` if they are meant")
    if any(unicodedata.category(c).startswith("C") for c in password):
        return "password has a control character such as a line break or tab: fix the cell"
    return None
