"""A TCP proxy that adds lines to a real server's answers: server quirks reproduced in front of a real Dovecot."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Callable

from tests.faultproxy import CuttingProxy, _close


@dataclass
class AddingProxy(CuttingProxy):
    """Forwards ``listen`` to ``upstream``; before each server line for which ``extra`` returns lines, sends those.

    Lines are matched whole (CRLF-terminated); the test's data holds no
    message line that could match, so literals pass through unchanged. It
    cuts nothing.
    """

    cuts: int = 0
    extra: Callable[[bytes], list[bytes]] = lambda line: []
    added: int = 0

    def _pump(self, source: socket.socket, sink: socket.socket, budget, pair) -> None:
        client, _ = pair
        if source is client:
            return super()._pump(source, sink, budget, pair)
        pending = b""
        try:
            while data := source.recv(65536):
                pending += data
                *lines, pending = pending.split(b"\r\n")
                out = bytearray()
                for line in lines:
                    for extra in self.extra(line):
                        self.added += 1
                        out += extra + b"\r\n"
                    out += line + b"\r\n"
                sink.sendall(bytes(out))
        except OSError:
            pass
        for sock in pair:
            _close(sock)
            self._open.discard(sock)
