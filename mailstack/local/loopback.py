"""Loopback addresses that local servers bind to: added when missing, removed only if added here."""

from __future__ import annotations

import ipaddress
import subprocess


def is_present(address: str) -> bool:
    """True when the loopback interface carries ``address``."""
    shown = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True, check=True)
    return any(f" {address}/" in line for line in shown.stdout.splitlines())


class LoopbackAddress:
    """One 127.0.0.0/8 address on ``lo`` (Postfix refuses to bind an address no interface carries)."""

    def __init__(self, address: str):
        ip = ipaddress.IPv4Address(address)
        if not ip.is_loopback or address == "127.0.0.1":
            raise ValueError(f"{address} is not a loopback address of its own (use one in 127.0.0.0/8 other than 127.0.0.1)")
        self.address = address
        self.added = False

    def add(self) -> None:
        if not is_present(self.address):
            subprocess.run(["ip", "addr", "add", f"{self.address}/32", "dev", "lo"], check=True, capture_output=True)
            self.added = True

    def remove(self) -> None:
        """Remove the address if this object added it; safe to call twice."""
        if self.added:
            subprocess.run(["ip", "addr", "del", f"{self.address}/32", "dev", "lo"], check=False, capture_output=True)
            self.added = False
