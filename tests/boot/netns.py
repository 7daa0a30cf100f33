"""Two network namespaces joined by a veth pair: the host's, and the network around it.

The host (the container) gets 203.0.113.10; the fakes of AWS and ACME and the
test's own clients sit at 203.0.113.1 in the second namespace, so nothing
the test starts listens on this machine's own network, and the host sees its
clients from outside its ``mynetworks``, as on the internet.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from dataclasses import dataclass
from typing import Callable, TypeVar

HOST_ADDRESS = "203.0.113.10"
NETWORK_ADDRESS = "203.0.113.1"
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass(frozen=True)
class Network:
    """The pair of namespaces, by name (``ip netns`` names, under /run/netns)."""

    host: str
    outside: str

    @classmethod
    def create(cls, prefix: str) -> "Network":
        network = cls(f"{prefix}-host", f"{prefix}-net")
        _ip("netns", "add", network.host)
        try:
            _ip("netns", "add", network.outside)
            for name in (network.host, network.outside):
                _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", network.host, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
                "netns", network.outside)
            for name, address in ((network.host, HOST_ADDRESS), (network.outside, NETWORK_ADDRESS)):
                _ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
                _ip("-n", name, "link", "set", "eth0", "up")
        except BaseException:
            network.remove()
            raise
        return network

    def path(self, name: str) -> str:
        return f"/run/netns/{name}"

    def remove(self) -> None:
        """Delete both namespaces (the veth pair goes with them)."""
        for name in (self.host, self.outside):
            if os.path.exists(self.path(name)):
                subprocess.run(["ip", "netns", "del", name], capture_output=True)

    def call(self, function: Callable[..., T], *args, namespace: str | None = None) -> T:
        """Run ``function`` in a thread that lives in the outside namespace (or ``namespace``).

        Sockets belong to the namespace of the thread that creates them; the
        rest of the process stays in this machine's namespace.
        """
        result: dict = {}

        def run():
            try:
                fd = os.open(self.path(namespace or self.outside), os.O_RDONLY)
                try:
                    if _libc.setns(fd, _CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns failed")
                finally:
                    os.close(fd)
                result["value"] = function(*args)
            except BaseException as exc:  # handed back to the caller's thread
                result["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join()
        if "error" in result:
            raise result["error"]
        return result["value"]
