"""IMAP's modified UTF-7 for mailbox names (RFC 3501 section 5.1.3)."""

from __future__ import annotations

import base64


def encode(name: str) -> str:
    """Unicode mailbox name -> modified UTF-7 as sent on the wire."""
    if name.isascii() and name.isprintable() and "&" not in name:  # most names: sent as they are
        return name
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def decode(name: str) -> str:
    """Modified UTF-7 -> Unicode; text that is not valid modified UTF-7 is returned as it is."""
    if "&" not in name:
        return name
    out: list[str] = []
    i = 0
    while i < len(name):
        char = name[i]
        if char != "&":
            out.append(char)
            i += 1
            continue
        end = name.find("-", i)
        if end < 0:
            return name
        chunk = name[i + 1:end]
        if not chunk:
            out.append("&")
        else:
            b64 = chunk.replace(",", "/")
            try:
                out.append(base64.b64decode(b64 + "=" * (-len(b64) % 4)).decode("utf-16-be"))
            except ValueError:
                return name
        i = end + 1
    return "".join(out)
