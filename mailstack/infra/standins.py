"""Stand-ins for values only AWS or a provider makes: the same inputs give the same stand-in every time.

Offline runs (``mailstack preview``, ``mailstack plan --offline``, the tests)
need a host address and a DKIM key before AWS and pulumi-tls have made them.
Deriving them from the resource name keeps two previews of one commit
identical (same records, same bundle version), and every output that shows
one says it is a stand-in.
"""

from __future__ import annotations

import functools
import hashlib

STANDIN_HOST_IP = "203.0.113.25"  # RFC 5737 documentation range: never a real host


class _Stream:
    """Bytes from SHA-256 of a seed and a counter: a deterministic ``randfunc`` for key generation."""

    def __init__(self, seed: str):
        self.seed = seed.encode()
        self.counter = 0
        self.buffer = b""

    def __call__(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self.buffer += hashlib.sha256(self.seed + self.counter.to_bytes(8, "big")).digest()
            self.counter += 1
        out, self.buffer = self.buffer[:count], self.buffer[count:]
        return out


@functools.lru_cache(maxsize=None)
def standin_key_pair(name: str) -> dict:
    """An RSA-2048 key pair derived from ``name``, in pulumi-tls's PEM forms (never use it for real mail)."""
    from Crypto.PublicKey import RSA

    key = RSA.generate(2048, randfunc=_Stream(f"mailstack stand-in key {name}"))
    return {"privateKeyPem": key.export_key("PEM", pkcs=1).decode() + "\n",
            "publicKeyPem": key.public_key().export_key("PEM").decode() + "\n"}


def offline_host_address(verified_ip: str | None, evidence_file: str) -> tuple[str, str, bool]:
    """The host address an offline run uses: (address, where it comes from, whether it is a stand-in).

    The address the verification evidence recorded is the one the cutover
    gate compares, so a cutover previewed offline uses it; without one, the
    documentation stand-in.
    """
    if verified_ip:
        return verified_ip, f"the verified address recorded in {evidence_file}", False
    return STANDIN_HOST_IP, f"a stand-in: no verified address in {evidence_file} yet", True
