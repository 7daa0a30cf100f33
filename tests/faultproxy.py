"""A TCP proxy that cuts connections at random points: real dropped sessions for the sync's reliability tests."""

from __future__ import annotations

import random
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class CuttingProxy:
    """Forwards ``listen`` to ``upstream``; cuts up to ``cuts`` connections, each after a random byte count.

    A cut closes both sides at once, in the middle of whatever was in flight
    (a command, a literal, a response), as a failing network would.
    """

    listen: tuple[str, int]
    upstream: tuple[str, int]
    cuts: int
    seed: int = 0
    min_bytes: int = 200
    max_bytes: int = 400_000
    made: int = 0
    _server: socket.socket | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _open: set = field(default_factory=set, repr=False)

    def __post_init__(self):
        self._random = random.Random(self.seed)

    def __enter__(self) -> "CuttingProxy":
        self._server = socket.create_server(self.listen)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        _close(self._server)  # shutdown wakes the thread blocked in accept(); close alone would not
        for sock in list(self._open):
            _close(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                budget = None
                if self.made < self.cuts:
                    self.made += 1
                    budget = [self._random.randint(self.min_bytes, self.max_bytes)]
            self._open.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink, budget, (client, server)), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, budget: list[int] | None, pair) -> None:
        """Copy bytes one way; both directions share the budget of their connection."""
        try:
            while data := source.recv(65536):
                if budget is not None:
                    with self._lock:
                        allowed = budget[0]
                        budget[0] -= len(data)
                    if allowed < len(data):
                        sink.sendall(data[:max(allowed, 0)])
                        break
                sink.sendall(data)
        except OSError:
            pass
        for sock in pair:
            _close(sock)
            self._open.discard(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
