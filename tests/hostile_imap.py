"""A hostile old IMAP server of the test suite's own: it injects, lies, floods, drips and names folders badly.

asyncio on a loopback address, in a thread of the test process. Each user
is one behaviour (:data:`MODES`): the sync or backup under test logs in as
that user and meets it; the user ``calm`` behaves. It understands only what
mailstack's client sends (LOGIN, CAPABILITY, LIST/LSUB, STATUS, EXAMINE/SELECT,
UID FETCH, LOGOUT), and answers in plaintext on port 143.
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage

from mailstack.local.loopback import LoopbackAddress

DATE = "14-Nov-2023 22:13:20 +0000"


def mail(n: int, *, extra: bytes = b"") -> bytes:
    """A small well-formed message, CRLF line ends; ``extra`` appended to its body."""
    message = EmailMessage()
    message["From"] = f"sender{n}@example.org"
    message["To"] = "someone@example.com"
    message["Subject"] = f"hostile test {n}"
    message["Date"] = "Tue, 14 Nov 2023 22:13:20 +0000"
    message["Message-ID"] = f"<hostile-{n}@example.org>"
    message.set_content(f"body {n}\n")
    return message.as_bytes().replace(b"\n", b"\r\n") + extra


@dataclass
class Mail:
    """One message as this server shows it; every field is the raw wire text it sends (which may be hostile)."""

    uid: int
    body: bytes
    flags: bytes = b"(\\Seen)"
    date: bytes = b'"' + DATE.encode() + b'"'
    size: bytes | None = None  # RFC822.SIZE as announced; None: the true size
    sent: bytes | None = None  # the BODY[] bytes actually sent; None: body


@dataclass
class Box:
    name: str
    mails: list[Mail] = field(default_factory=list)
    uidvalidity: int = 7
    examine_no: bytes | None = None  # EXAMINE answered NO with this text


class Behaviour:
    """A well-behaved mailbox; the modes below override one answer each."""

    def __init__(self, boxes: list[Box] = ()):
        self.boxes = {box.name: box for box in boxes}

    async def on_list(self, out: "Wire", tag: bytes, verb: bytes) -> None:
        for name in self.boxes:
            await out.send(b"* " + verb + b' (\\HasNoChildren) "/" ' + quoted(name) + b"\r\n")
        await out.send(tag + b" OK " + verb + b" done\r\n")

    async def on_fetch(self, out: "Wire", tag: bytes, box: Box, asked: list[int], items: bytes) -> None:
        for number, message in enumerate(box.mails, 1):
            if message.uid in asked:
                await out.send(b"* %d FETCH (UID %d " % (number, message.uid))
                await self.fetch_items(out, message, items)
                await out.send(b")\r\n")
        await out.send(tag + b" OK FETCH done\r\n")

    async def fetch_items(self, out: "Wire", message: Mail, items: bytes) -> None:
        if b"BODY.PEEK[HEADER]" in items:
            header = message.body.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
            await out.send(b"BODY[HEADER] {%d}\r\n" % len(header) + header)
            return
        await out.send(b"FLAGS " + message.flags)
        if b"RFC822.SIZE" in items:
            await out.send(b" RFC822.SIZE " + (message.size or str(len(message.body)).encode()))
        if b"INTERNALDATE" in items:
            await out.send(b" INTERNALDATE " + message.date)
        if b"BODY.PEEK[]" in items:
            await self.body(out, message)

    async def body(self, out: "Wire", message: Mail) -> None:
        sent = message.body if message.sent is None else message.sent
        await out.send(b" BODY[] {%d}\r\n" % len(sent) + sent)


class Inject(Behaviour):
    """Flags that are commands: a quoted flag with bare LFs, a flag sent as a literal, ``{5}``, an unknown ``\\`` flag."""

    COMMANDS = b'A\r\nX6 DELETE "Trash"\r\nX7 NOOP\r\n'
    FLAGS = [
        b'(\\Seen $Label1 "x)\nX1 DELETE \\"Important\\"\nX2 SELECT \\"Trash\\"\nX3 UID STORE 1:* +FLAGS.SILENT '
        b'(\\\\Deleted)\nX4 EXPUNGE\nX5 NOOP (y")',
        b"(\\Flagged {%d}\r\n%s $Ok)" % (len(COMMANDS), COMMANDS),
        b'(\\Answered {5} Project-X \\Bogus \\Recent "\x1b]0;pwned\x07")',
    ]

    def __init__(self):
        super().__init__([Box("INBOX", [Mail(n, mail(100 + n), flags) for n, flags in enumerate(self.FLAGS, 1)]),
                          Box("Evil", [Mail(1, mail(104))],
                              examine_no=b"[NONEXISTENT] \x1b]0;pwned\x07\x1b[2J\x1b[31mgone")])


class Lying(Behaviour):
    """Every message announced at 100 bytes (RFC822.SIZE), sent at 3 MB."""

    def __init__(self, count: int = 40, size: int = 3 * 1024 * 1024):
        padding = b"\r\n" + (b"x" * 998 + b"\r\n") * (size // 1000)
        super().__init__([Box("INBOX", [Mail(n, mail(200 + n, extra=padding), size=b"100") for n in range(1, count + 1)])])


class BigLiteral(Behaviour):
    """One message announced small and sent at 20 MiB, one announced at 30 MiB; two ordinary ones around them."""

    def __init__(self):
        big = mail(302, extra=b"\r\n" + (b"y" * 1022 + b"\r\n") * 20480)
        super().__init__([Box("INBOX", [Mail(1, mail(301)), Mail(2, big, size=b"1000"),
                                        Mail(3, mail(303)), Mail(4, mail(304), size=b"31457280")])])


class HugeLiteral(Behaviour):
    """A body announced as ``{4000000000}``, then zeros for as long as the client reads."""

    def __init__(self):
        super().__init__([Box("INBOX", [Mail(1, mail(401))])])

    async def body(self, out: "Wire", message: Mail) -> None:
        await out.send(b" BODY[] {4000000000}\r\n")
        while True:
            await out.send(bytes(1 << 20))


class Flood(Behaviour):
    """LIST answered by untagged ``* OK`` lines, without end."""

    async def on_list(self, out: "Wire", tag: bytes, verb: bytes) -> None:
        line = b"* OK flood " + b"z" * 40 + b"\r\n"
        while True:
            await out.send(line * 2000)


class FetchFlood(Behaviour):
    """A listing answered by FETCH responses for a UID nobody asked for, without end."""

    def __init__(self):
        super().__init__([Box("INBOX", [Mail(1, mail(501))])])

    async def on_fetch(self, out: "Wire", tag: bytes, box: Box, asked: list[int], items: bytes) -> None:
        line = b"* 1 FETCH (UID 999999 FLAGS (\\Seen))\r\n"
        while True:
            await out.send(line * 2000)


class Drip(Behaviour):
    """LIST answered by one ``* OK`` line a second, never completed."""

    async def on_list(self, out: "Wire", tag: bytes, verb: bytes) -> None:
        while True:
            await out.send(b"* OK still working\r\n")
            await asyncio.sleep(1)


class WrongFetch(Behaviour):
    """Bodies asked for UIDs 1-3: answered for 1, for 99 (not asked), for 1 again (other bytes) and 3; never 2."""

    def __init__(self):
        super().__init__([Box("INBOX", [Mail(1, mail(601)), Mail(2, mail(602)), Mail(3, mail(603))])])

    async def on_fetch(self, out: "Wire", tag: bytes, box: Box, asked: list[int], items: bytes) -> None:
        if b"BODY.PEEK[]" not in items:
            return await super().on_fetch(out, tag, box, asked, items)
        answers = [Mail(1, mail(601)), Mail(99, mail(699)), Mail(1, mail(611)), Mail(3, mail(603))]
        for number, message in enumerate(answers, 1):
            await out.send(b"* %d FETCH (UID %d " % (number, message.uid))
            await self.fetch_items(out, message, items)
            await out.send(b")\r\n")
        await out.send(tag + b" OK FETCH done\r\n")


class Malformed(Behaviour):
    """Dates that are not dates, a size that is not a number, LIST entries that are not folders."""

    def __init__(self):
        super().__init__([Box("INBOX", [
            Mail(1, mail(701), date=b'"31-Feb-2023 25:61:61 +9999"'),
            Mail(2, mail(702), date=b'"yesterday"'),
            Mail(3, mail(703), date=b"NIL", flags=b"(\\Seen NIL (nested) \\Answered)"),
            Mail(4, mail(704), date=b'"17-Jul-1996 02:44:25 -0700"', size=b"lots"),
            Mail(5, mail(705), flags=b"\\Seen", date=b'"0-Jan-0000 00:00:00 +0000"'),
        ])])

    async def on_list(self, out: "Wire", tag: bytes, verb: bytes) -> None:
        await out.send(b"* " + verb + b' (\\HasNoChildren) "/"\r\n')
        await out.send(b"* " + verb + b' "garbage"\r\n')
        await out.send(b"* " + verb + b" (\\HasNoChildren) NIL NIL\r\n")
        await out.send(b"* " + verb + b' (\\HasNoChildren) "//" "INBOX"\r\n')
        await out.send(tag + b" OK " + verb + b" done\r\n")


class Deep(Behaviour):
    """Lists nested a hundred thousand deep: in a message's flags, and in a LIST line's attributes."""

    DEPTH = 100_000

    def __init__(self):
        deep = b"(" * self.DEPTH + b")" * self.DEPTH
        super().__init__([Box("INBOX", [Mail(1, mail(1001)), Mail(2, mail(1002), flags=b"(\\Seen " + deep + b")"),
                                        Mail(3, mail(1003))])])

    async def on_list(self, out: "Wire", tag: bytes, verb: bytes) -> None:
        await out.send(b"* " + verb + b" (" + b"(" * self.DEPTH + b') "/" Deeper\r\n')
        await super().on_list(out, tag, verb)


class Names(Behaviour):
    """Folder names that would make paths leave a backup's directory, or fill a terminal with escapes."""

    NAMES = ["INBOX", "/", "..", "../../escape", "a/../../b", "x" * 300, "\x1b]0;pwned\x07\x1b[2Jtitle"]

    def __init__(self):
        super().__init__([Box(name, [Mail(1, mail(800 + n))]) for n, name in enumerate(self.NAMES)])


def calm() -> Behaviour:
    return Behaviour([Box("INBOX", [Mail(n, mail(n), flags=b"(\\Seen $Forwarded)") for n in range(1, 4)]),
                      Box("Work", [Mail(n, mail(10 + n), flags=b"()") for n in range(1, 3)])])


MODES = {
    "calm": calm,
    "inject": Inject,
    "lying": Lying,
    "bigliteral": BigLiteral,
    "hugeliteral": HugeLiteral,
    "flood": Flood,
    "fetchflood": FetchFlood,
    "drip": Drip,
    "wrongfetch": WrongFetch,
    "malformed": Malformed,
    "names": Names,
    "deep": Deep,
}
PASSWORD = "hostile"


def quoted(name: str) -> bytes:
    return b'"' + name.encode().replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


class Wire:
    """The server's side of one connection."""

    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


_ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"|\{(\d+)\+?\}$|(\S+)')


async def _arguments(reader: asyncio.StreamReader, line: bytes) -> list[bytes]:
    """The words of a command line; quoted strings unquoted, literals read."""
    words = []
    while True:
        literal = None
        for match in _ARG.finditer(line):
            if match.group(1) is not None:
                words.append(re.sub(rb"\\(.)", rb"\1", match.group(1)))
            elif match.group(2) is not None:
                literal = int(match.group(2))
            else:
                words.append(match.group(3))
        if literal is None:
            return words
        words.append(await reader.readexactly(literal))
        line = (await reader.readuntil(b"\r\n"))[:-2]


def _uids(text: bytes, box: Box) -> list[int]:
    highest = max((m.uid for m in box.mails), default=0)
    uids: list[int] = []
    for piece in text.split(b","):
        low, _, high = piece.partition(b":")
        first = highest if low == b"*" else int(low)
        last = first if not high else (highest if high == b"*" else int(high))
        uids.extend(range(min(first, last), max(first, last) + 1))
    return uids


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    out = Wire(writer)
    behaviour: Behaviour | None = None
    selected: Box | None = None
    try:
        await out.send(b"* OK [CAPABILITY IMAP4rev1 LITERAL+] hostile test server ready\r\n")
        while line := await reader.readuntil(b"\r\n"):
            words = await _arguments(reader, line[:-2])
            if len(words) < 2:
                continue
            tag, command, args = words[0], words[1].upper(), words[2:]
            if command == b"CAPABILITY":
                await out.send(b"* CAPABILITY IMAP4rev1 LITERAL+\r\n" + tag + b" OK done\r\n")
            elif command == b"LOGIN":
                user = args[0].decode()
                if user in MODES and args[1] == PASSWORD.encode():
                    behaviour = MODES[user]()
                    await out.send(tag + b" OK logged in\r\n")
                else:
                    await out.send(tag + b" NO [AUTHENTICATIONFAILED] no\r\n")
            elif command == b"LOGOUT":
                await out.send(b"* BYE bye\r\n" + tag + b" OK bye\r\n")
                return
            elif command in (b"LIST", b"LSUB") and args[1] == b"":
                await out.send(b'* ' + command + b' (\\Noselect) "/" ""\r\n' + tag + b" OK done\r\n")
            elif command in (b"LIST", b"LSUB"):
                await behaviour.on_list(out, tag, command)
            elif command == b"STATUS":
                box = behaviour.boxes.get(args[0].decode())
                if box is None:
                    await out.send(tag + b" NO [NONEXISTENT] no such folder\r\n")
                    continue
                uidnext = max((m.uid for m in box.mails), default=0) + 1
                await out.send(b"* STATUS " + quoted(box.name) + b" (UIDVALIDITY %d UIDNEXT %d MESSAGES %d)\r\n"
                               % (box.uidvalidity, uidnext, len(box.mails)) + tag + b" OK done\r\n")
            elif command in (b"EXAMINE", b"SELECT"):
                selected = behaviour.boxes.get(args[0].decode())
                if selected is None or selected.examine_no is not None:
                    said = selected.examine_no if selected is not None else b"[NONEXISTENT] no such folder"
                    await out.send(tag + b" NO " + said + b"\r\n")
                    continue
                uidnext = max((m.uid for m in selected.mails), default=0) + 1
                await out.send(b"* %d EXISTS\r\n* OK [UIDVALIDITY %d] ok\r\n* OK [UIDNEXT %d] ok\r\n"
                               % (len(selected.mails), selected.uidvalidity, uidnext) + tag + b" OK done\r\n")
            elif command == b"UID" and args and args[0].upper() == b"FETCH":
                items = b" ".join(args[2:]).upper()
                await behaviour.on_fetch(out, tag, selected, _uids(args[1], selected), items)
            else:
                await out.send(tag + b" BAD not understood here\r\n")
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
        pass
    finally:
        writer.close()


class HostileImap:
    """The hostile server on ``address``:143, in a thread with its own event loop."""

    def __init__(self, address: str, port: int = 143):
        self.address, self.port = address, port
        self._loopback = LoopbackAddress(address)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server = None

    def url(self) -> str:
        return f"imap://{self.address}:{self.port}"

    def __enter__(self) -> "HostileImap":
        self._loopback.add()
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(serve, self.address, self.port, reuse_address=True), self._loop)
        self._server = started.result(10)
        return self

    def __exit__(self, *exc) -> None:
        async def stop() -> None:
            self._server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loopback.remove()
