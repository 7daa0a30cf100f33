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
import re

# No 0/O, 1/l/I: the password is read off a settings sheet by a person.
_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
PASSWORD_LENGTH = 20

SEED_LENGTH = 48
"""The stack's seed: a Pulumi RandomPassword of 48 letters and digits, exported as the secret output ``password_seed``."""

SEED_ENV = "MAILSTACK_PASSWORD_SEED"


def seed_problem(seed: str) -> str | None:
    """Why ``seed`` cannot be the stack's password seed, or None (guards against "[secret]" and truncated copies)."""
    if re.fullmatch(rf"[A-Za-z0-9]{{{SEED_LENGTH}}}", seed):
        return None
    return (f"{SEED_ENV} must be the stack's seed ({SEED_LENGTH} letters and digits; got {len(seed)} characters): "
            f"{SEED_ENV}=$(pulumi stack output password_seed --show-secrets -s ENV)")


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
