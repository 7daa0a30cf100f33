"""A TCP proxy that adds lines to a real server's answers: server quirks reproduced in front of a real Dovecot."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class AddingProxy:
    """Forwards ``listen`` to ``upstream``; before each server line for which ``extra`` returns lines, sends those.

    Lines are matched whole (CRLF-terminated); the test's data holds no
    message line that could match, so literals pass through unchanged.
    """

    listen: tuple[str, int]
    upstream: tuple[str, int]
    extra: Callable[[bytes], list[bytes]]
    added: int = 0
    _server: socket.socket | None = field(default=None, repr=False)
    _open: set = field(default_factory=set, repr=False)

    def __enter__(self) -> "AddingProxy":
        self._server = socket.create_server(self.listen)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        for sock in [self._server, *self._open]:
            _close(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream, timeout=10)
            server.settimeout(None)
            self._open.update((client, server))
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        pending = b""
        try:
            while data := source.recv(65536):
                if not answers:
                    sink.sendall(data)
                    continue
                pending += data
                *lines, pending = pending.split(b"\r\n")
                out = bytearray()
                for line in lines:
                    added = self.extra(line)
                    self.added += len(added)
                    for extra in added:
                        out += extra + b"\r\n"
                    out += line + b"\r\n"
                sink.sendall(bytes(out))
        except OSError:
            pass
        for sock in (source, sink):
            _close(sock)


def _close(sock: socket.socket | None) -> None:
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
