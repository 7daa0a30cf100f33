"""A tiny SMTP server that keeps what it receives: where a local host's outgoing mail goes.

A local run has no DNS and no internet, so its Postfix relays outgoing mail
to this sink (the harness sets ``relayhost``), and tests read the messages
exactly as they left the host. A sink can also stand for a relay that
refuses mail (:attr:`SmtpSink.refuse_with`), so a test sees what the host
does with a refusal.
"""

from __future__ import annotations

import contextlib
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from mailstack.local.loopback import LoopbackAddress


@dataclass(frozen=True)
class Received:
    """One message as delivered to the sink."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes


class _Session(socketserver.StreamRequestHandler):
    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        sink: SmtpSink = self.server.sink  # type: ignore[attr-defined]
        mail_from, recipients = "", []
        self.reply("220 sink ESMTP")
        for raw in self.rfile:
            command = raw.decode("ascii", "replace").strip()
            verb = command[:4].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250 sink")
            elif verb == "MAIL":
                mail_from, recipients = command.split(":", 1)[1].split()[0].strip("<>"), []
                self.reply("250 ok")
            elif verb == "RCPT":
                if sink.refuse_with:
                    self.reply(sink.refuse_with)
                    continue
                recipients.append(command.split(":", 1)[1].split()[0].strip("<>"))
                self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 end with .")
                lines = []
                for line in self.rfile:
                    if line in (b".\r\n", b".\n"):
                        break
                    lines.append(line[1:] if line.startswith(b".") else line)
                sink.received(Received(mail_from, tuple(recipients), b"".join(lines)))
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:  # RSET, NOOP and anything else
                self.reply("250 ok")


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class SmtpSink:
    """An SMTP server on ``address:port`` keeping every message; use as a context manager.

    ``refuse_with``: when set (e.g. ``"554 5.7.1 Message rejected"``), every
    recipient is refused with that reply, as a relay that will not take the mail.
    """

    def __init__(self, address: str, port: int = 25, *, refuse_with: str | None = None):
        self.address, self.port = address, port
        self.refuse_with = refuse_with
        self.messages: list[Received] = []
        self._arrived = threading.Condition()
        self._server: _Server | None = None

    def received(self, message: Received) -> None:
        with self._arrived:
            self.messages.append(message)
            self._arrived.notify_all()

    def wait_for(self, predicate, timeout: float = 20.0) -> Received:
        """The first message for which ``predicate`` is true, waiting up to ``timeout`` seconds."""
        with self._arrived:
            found = self._arrived.wait_for(lambda: next((m for m in self.messages if predicate(m)), None), timeout)
        if found is None:
            raise TimeoutError(f"no matching message reached the sink on {self.address}:{self.port} in {timeout:.0f} s")
        return found

    def start(self) -> "SmtpSink":
        self._server = _Server((self.address, self.port), _Session)
        self._server.sink = self  # type: ignore[attr-defined]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "SmtpSink":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def sink_on_loopback(address: str, port: int = 25) -> Iterator[SmtpSink]:
    """A running sink on its own loopback address, added for it and removed after it (even on failure)."""
    loopback = LoopbackAddress(address)
    loopback.add()
    try:
        with SmtpSink(address, port) as sink:
            yield sink
    finally:
        loopback.remove()
