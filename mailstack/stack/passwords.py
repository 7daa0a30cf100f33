"""Initial passwords derived from one secret seed.

A mailbox whose roster password is ``generate[:N]`` gets the password
HMAC(seed, address, N): no Pulumi resource per mailbox, and rotating one
user's password is a version bump in the roster.

The host receives only a hash. Generated passwords carry about 110 bits of
entropy, so a salted SHA-512 (``{SSHA512}``, which Dovecot verifies natively)
is as strong against guessing as a slow crypt, and keeps 5,000 mailboxes
fast to render. The salt is derived too, so the same inputs give the same
bundle and a preview shows no change.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

# No 0/O, 1/l/I: the password is read off a settings sheet by a person.
_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
PASSWORD_LENGTH = 20


def _mac(seed: str, purpose: str, address: str, version: int) -> bytes:
    message = f"mailstack\0{purpose}\0{address.lower()}\0{version}".encode()
    return hmac.new(seed.encode(), message, hashlib.sha512).digest()


def initial_password(seed: str, address: str, version: int = 1) -> str:
    """The generated initial password of ``address`` at ``version``."""
    number = int.from_bytes(_mac(seed, "password", address, version), "big")
    chars = []
    for _ in range(PASSWORD_LENGTH):
        number, index = divmod(number, len(_ALPHABET))
        chars.append(_ALPHABET[index])
    return "".join(chars)


def ssha512(password: str, salt: bytes) -> str:
    """Dovecot's ``{SSHA512}``: base64(SHA512(password + salt) + salt)."""
    digest = hashlib.sha512(password.encode() + salt).digest()
    return "{SSHA512}" + base64.b64encode(digest + salt).decode()


def initial_password_hash(seed: str, address: str, version: int = 1) -> str:
    """The Dovecot hash of the generated initial password (deterministic)."""
    salt = _mac(seed, "salt", address, version)[:16]
    return ssha512(initial_password(seed, address, version), salt)
