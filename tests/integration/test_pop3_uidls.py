"""POP3 UIDLs kept: an old Dovecot serving POP3, the rendered new host (real Postfix + Dovecot), a poplib client."""

from __future__ import annotations

import poplib
import smtplib
import socket
import ssl

import pytest

from mailstack.imap.endpoint import Endpoint
from mailstack.local import host as local
from mailstack.local.imapserver import DovecotImap, User
from mailstack.stack.passwords import initial_password
from mailstack.stack.roster import load_roster
from mailstack.stack.settings import settings_from_values
from mailstack.sync.accounts import Account
from mailstack.sync.engine import SyncOptions, run_sync
from mailstack.sync.pop3uidl import carry_all
from tests.conftest import require_imap_servers, require_root_and_packages, stack_values
from tests.integration.test_sync import message

pytestmark = pytest.mark.integration

OLD, NEW = "127.0.12.1", "127.0.12.2"
HOST = "mail.example.com"
SEED = "uidl-seed-" + "x" * 38
T0 = 1_700_000_000
POP_USER, IMAP_USER = "hanako@example.com", "taro@example.com"


@pytest.fixture
def servers(tmp_path):
    """The old server (Courier-style names, POP3 on 110) and the new host as rendered; both stopped afterwards."""
    require_imap_servers()
    require_root_and_packages()
    roster_path = tmp_path / "roster.csv"
    roster_path.write_text("address,name,quota,protocol,aliases,password\n"
                           f"{POP_USER},Hanako,1G,pop,,generate\n{IMAP_USER},Taro,1G,imap,,generate\n")
    settings = settings_from_values(stack_values(str(roster_path)), source="t")
    roster = load_roster(roster_path, domains=settings.domains)
    old = DovecotImap(OLD, [User("hanako", "old-h"), User("taro", "old-t")], separator=".", prefix="INBOX.", pop3=True,
                      pop3_uidl_format="%f")  # file-name UIDLs, as qmail and Courier servers give
    with old, local.running(settings, roster, address=NEW, password_seed=SEED) as new:
        yield old, new


def fill_old(old: DovecotImap, user: str, count: int) -> None:
    """``count`` INBOX messages (some without Message-ID, one exact duplicate) and one in another folder."""
    old.create_folder(user, "Sent")
    for n in range(count):
        old.write_message(user, "INBOX", message(n, message_id=n % 3 != 0), internaldate=T0 + n * 60,
                          unique=f"{T0 + n}.m{n}")
    old.write_message(user, "INBOX", message(2), internaldate=T0 + 2 * 60, unique=f"{T0 + 2}.dup")
    old.write_message(user, "Sent", message(99), internaldate=T0, unique=f"{T0}.sent")
    old.resync(user)


def new_pop(new) -> poplib.POP3_SSL:
    """A POP3 client of the new host: its name checked against the test CA, dialled at its loopback address."""

    class Pop(poplib.POP3_SSL):
        def _create_socket(self, timeout):
            raw = socket.create_connection((NEW, self.port), timeout)
            return self.context.wrap_socket(raw, server_hostname=HOST)

    pop = Pop(HOST, 995, context=ssl.create_default_context(cafile=str(new.ca_cert)), timeout=30)
    pop.user(POP_USER)
    pop.pass_(initial_password(SEED, POP_USER))
    return pop


def old_pop() -> poplib.POP3:
    pop = poplib.POP3(OLD, 110, timeout=30)
    pop.user("hanako")
    pop.pass_("old-h")
    return pop


def listing(pop: poplib.POP3) -> list[tuple[int, str]]:
    """(number, UIDL) in the order the server lists them; the session is closed without deleting anything."""
    try:
        return [(int(n), u) for n, u in (line.decode().split() for line in pop.uidl()[1])]
    finally:
        pop.quit()


def contents(pop: poplib.POP3) -> dict[str, bytes]:
    try:
        return {u: b"\r\n".join(pop.retr(int(n))[1]) for n, u in (line.decode().split() for line in pop.uidl()[1])}
    finally:
        pop.quit()


def leave_on_server_download(pop: poplib.POP3, seen: set[str]) -> list[str]:
    """What a client set to "leave a copy on the server" downloads: every UIDL it has not seen yet."""
    try:
        fresh = [(n, u) for n, u in (line.decode().split() for line in pop.uidl()[1]) if u not in seen]
        for n, u in fresh:
            pop.retr(int(n))
            seen.add(u)
        return [u for _, u in fresh]
    finally:
        pop.quit()


def sync(new, tmp_path):
    accounts = [Account("hanako", "old-h", POP_USER, initial_password(SEED, POP_USER)),
                Account("taro", "old-t", IMAP_USER, initial_password(SEED, IMAP_USER))]
    source = Endpoint("imap", OLD, 143)
    target = Endpoint("imaps", HOST, 993, str(new.ca_cert), NEW)
    results = run_sync(accounts, source, target, SyncOptions(state_dir=tmp_path / "state"))
    assert all(r.in_sync for r in results), [r.errors for r in results]
    return accounts[:1], source, target


def test_a_pop_client_that_leaves_mail_on_the_server_downloads_nothing_again_after_switching(servers, tmp_path):
    old, new = servers
    fill_old(old, "hanako", 12)
    before = listing(old_pop())
    client_seen: set[str] = set()
    assert len(leave_on_server_download(old_pop(), client_seen)) == 13  # the client had everything

    pop_users, source, target = sync(new, tmp_path)
    # The bug: copied over IMAP only, the new host numbers the same messages with UIDLs of its own.
    assert {u for _, u in listing(new_pop(new))}.isdisjoint(u for _, u in before)

    (carried,) = carry_all(pop_users, source, target, Endpoint("pop3", OLD, 110), tmp_path / "state")
    assert (carried.carried, carried.listed, carried.unmatched, carried.error) == (13, 13, 0, None)
    assert listing(new_pop(new)) == before  # same UIDLs, same order
    assert contents(new_pop(new)) == contents(old_pop())  # and the same bytes for each
    assert leave_on_server_download(new_pop(new), client_seen) == []

    # Mail delivered to the new host afterwards gets a UIDL of its own, is listed last and downloaded once.
    with smtplib.SMTP(NEW, 25, timeout=30) as smtp:
        smtp.sendmail("someone@example.org", [POP_USER], message(500))
    fresh = _wait_for(lambda: leave_on_server_download(new_pop(new), client_seen))
    assert len(fresh) == 1 and listing(new_pop(new))[-1][1] == fresh[0]


def test_a_second_sync_keeps_the_uidls_of_earlier_mail_and_adds_the_new(servers, tmp_path):
    old, new = servers
    fill_old(old, "hanako", 5)
    pop_users, source, target = sync(new, tmp_path)
    carry_all(pop_users, source, target, Endpoint("pop3", OLD, 110), tmp_path / "state")
    assert listing(new_pop(new)) == listing(old_pop())
    for n in range(5, 8):  # mail that kept reaching the old server
        old.write_message("hanako", "INBOX", message(n), internaldate=T0 + n * 60, unique=f"{T0 + n}.late{n}")
    old.resync("hanako")
    sync(new, tmp_path)
    (again,) = carry_all(pop_users, source, target, Endpoint("pop3", OLD, 110), tmp_path / "state")
    assert (again.carried, again.listed) == (9, 9)
    assert listing(new_pop(new)) == listing(old_pop())


def _wait_for(probe, timeout: float = 20.0):
    import time

    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)
