"""Client settings: the values, the Apple profile, Autodiscover and autoconfig, the helpdesk CSV, `mailstack clients`."""

from __future__ import annotations

import csv
import io
import plistlib
import xml.etree.ElementTree as ET
from datetime import date

import pytest
from typer.testing import CliRunner

from mailstack.cli import app
from mailstack.clients.autodiscover import OUTLOOK_NS, RESPONSE_NS, autodiscover_xml
from mailstack.clients.helpdesk import helpdesk_csv
from mailstack.clients.mobileconfig import mobileconfig
from mailstack.clients.sheet import day_text, sheet_html, size_text
from mailstack.clients.values import (ASK_HELPDESK, GENERATED, UNCHANGED, mail_servers, mailbox_settings,
                                      switch_dates)
from mailstack.files import work_tree_of
from mailstack.host import files as hostfiles
from mailstack.stack.passwords import initial_password
from mailstack.stack.roster import load_roster
from mailstack.stack.settings import settings_from_values
from tests.conftest import PROJECT, stack_values, write_roster

SEED = "S" * 48
SWITCH = switch_dates(date(2027, 1, 15), 14)
runner = CliRunner()


@pytest.fixture
def stack(tmp_path):
    """Settings and a roster: user0 pop + generated, user1 imap + hash, user2 imap + generated."""
    roster_path = write_roster(tmp_path / "r.csv", 3)
    settings = settings_from_values(stack_values(roster_path), source="t")
    return settings, {m.address: m for m in load_roster(roster_path, domains=settings.domains)}


def test_incoming_server_follows_the_roster_protocol_and_outgoing_offers_465_then_587(stack):
    settings, boxes = stack
    pop = mailbox_settings(boxes["user0@example.com"], settings, SWITCH, password_seed=SEED)
    imap = mailbox_settings(boxes["user1@example.com"], settings, SWITCH, password_seed=SEED)
    assert (pop.incoming.kind, pop.incoming.port, pop.incoming.security_shown) == ("pop3", 995, "SSL/TLS")
    assert (imap.incoming.kind, imap.incoming.port, imap.incoming.security_shown) == ("imap", 993, "SSL/TLS")
    assert [(s.port, s.security_shown) for s in imap.outgoing] == [(465, "SSL/TLS"), (587, "STARTTLS")]
    assert imap.incoming.host == imap.outgoing[0].host == "mail.example.com"
    assert imap.user_name == "user1@example.com"
    assert (SWITCH.day, SWITCH.keep_old_until) == (date(2027, 1, 15), date(2027, 1, 29))


def test_only_a_generated_password_is_shown_and_only_with_the_seed(stack):
    settings, boxes = stack
    generated = mailbox_settings(boxes["user2@example.com"], settings, SWITCH, password_seed=SEED)
    assert generated.password_status == GENERATED
    assert generated.password == initial_password(SEED, "user2@example.com")
    unseeded = mailbox_settings(boxes["user2@example.com"], settings, SWITCH, password_seed=None)
    assert (unseeded.password_status, unseeded.password) == (ASK_HELPDESK, None)
    hashed = mailbox_settings(boxes["user1@example.com"], settings, SWITCH, password_seed=SEED)
    assert (hashed.password_status, hashed.password) == (UNCHANGED, None)
    assert generated.password not in repr(generated)


def test_the_sheet_gives_the_values_the_date_and_the_advice_in_both_languages(stack):
    settings, boxes = stack
    values = mailbox_settings(boxes["user0@example.com"], settings, SWITCH, password_seed=SEED, helpdesk="内線 1234")
    ja = sheet_html(values, "ja", date(2026, 12, 1))
    en = sheet_html(values, "en", date(2026, 12, 1))
    for html in (ja, en):
        assert values.password in html and "mail.example.com" in html and "mail.example.net" in html
        assert ">995<" in html and ">465<" in html and ">587<" in html and "STARTTLS" in html
    assert "2027年1月15日（金）" in ja and "2027年1月29日（金）" in ja and "POP3" in ja
    assert "サーバーにメッセージのコピーを置く" in ja and "内線 1234" in ja
    assert "Friday 15 January 2027" in en and "Friday 29 January 2027" in en
    assert "Leave a copy of messages on the server" in en and "keep both" in en


def test_a_sheet_without_the_seed_sends_the_employee_to_the_helpdesk(stack):
    settings, boxes = stack
    values = mailbox_settings(boxes["user2@example.com"], settings, SWITCH, password_seed=None)
    html = sheet_html(values, "ja", date(2026, 12, 1))
    assert "ヘルプデスク（postmaster@example.com）" in html and 'class="password"' not in html


def test_names_from_the_roster_are_escaped_in_the_sheet(stack):
    settings, boxes = stack
    values = mailbox_settings(boxes["user1@example.com"], settings, SWITCH, password_seed=None)
    values = values.__class__(**{**vars(values), "name": "<script>x</script>"})
    assert "<script>x" not in sheet_html(values, "en", date(2026, 12, 1))


def test_dates_and_sizes_read_as_people_write_them():
    assert day_text(date(2027, 1, 15), "ja") == "2027年1月15日（金）"
    assert day_text(date(2027, 1, 15), "en") == "Friday 15 January 2027"
    assert (size_text("2G", "ja"), size_text("500M", "en"), size_text("unlimited", "ja")) == ("2 GB", "500 MB", "無制限")


def test_the_apple_profile_is_a_plist_with_the_account_and_no_password_unless_asked(stack):
    settings, boxes = stack
    pop = mailbox_settings(boxes["user0@example.com"], settings, SWITCH, password_seed=SEED)
    profile = plistlib.loads(mobileconfig(pop))
    assert profile["PayloadType"] == "Configuration" and profile["PayloadVersion"] == 1
    (mail,) = profile["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed"
    assert mail["EmailAccountType"] == "EmailTypePOP" and mail["EmailAddress"] == "user0@example.com"
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"]) == ("mail.example.com", 995)
    assert (mail["OutgoingMailServerHostName"], mail["OutgoingMailServerPortNumber"]) == ("mail.example.com", 465)
    assert mail["IncomingMailServerUseSSL"] is True and mail["OutgoingMailServerUseSSL"] is True
    assert mail["IncomingMailServerUsername"] == mail["OutgoingMailServerUsername"] == "user0@example.com"
    assert mail["OutgoingPasswordSameAsIncomingPassword"] is True
    assert "IncomingPassword" not in mail and pop.password.encode() not in mobileconfig(pop)
    with_password = plistlib.loads(mobileconfig(pop, with_password=True))["PayloadContent"][0]
    assert with_password["IncomingPassword"] == pop.password


def test_a_profile_made_again_replaces_the_installed_one(stack):
    settings, boxes = stack
    one = mailbox_settings(boxes["user1@example.com"], settings, SWITCH, password_seed=None)
    other = mailbox_settings(boxes["user2@example.com"], settings, SWITCH, password_seed=None)
    first, again = plistlib.loads(mobileconfig(one)), plistlib.loads(mobileconfig(one))
    assert first["PayloadUUID"] == again["PayloadUUID"] and first["PayloadContent"][0]["EmailAccountType"] == "EmailTypeIMAP"
    assert first["PayloadUUID"] != plistlib.loads(mobileconfig(other))["PayloadUUID"]


def autodiscover_protocols(text: str) -> dict[str, dict[str, str]]:
    root = ET.fromstring(text)
    assert root.tag == f"{{{RESPONSE_NS}}}Autodiscover"
    account = root.find(f"{{{OUTLOOK_NS}}}Response/{{{OUTLOOK_NS}}}Account")
    assert account.findtext(f"{{{OUTLOOK_NS}}}Action") == "settings"
    return {p.findtext(f"{{{OUTLOOK_NS}}}Type"): {child.tag.split("}")[1]: child.text for child in p}
            for p in account.findall(f"{{{OUTLOOK_NS}}}Protocol")}


def autoconfig_servers(text: str) -> list[tuple[str, str, int, str]]:
    provider = ET.fromstring(text).find("emailProvider")
    return [(s.tag, s.get("type"), int(s.findtext("port")), s.findtext("socketType"))
            for s in provider if s.tag in ("incomingServer", "outgoingServer")]


def test_autodiscover_names_imap_pop3_and_smtp_with_tls_and_plain_password_auth():
    protocols = autodiscover_protocols(autodiscover_xml(mail_servers("mail.example.com")))
    assert list(protocols) == ["IMAP", "POP3", "SMTP"]
    assert [protocols[t]["Port"] for t in protocols] == ["993", "995", "465"]
    for protocol in protocols.values():
        assert protocol["Server"] == "mail.example.com" and protocol["SSL"] == "on"
        assert protocol["SPA"] == "off" and protocol["AuthRequired"] == "on" and "LoginName" not in protocol
    assert protocols["SMTP"]["UsePOPAuth"] == "on" and protocols["SMTP"]["Encryption"] == "SSL"


def test_the_host_serves_autoconfig_and_autodiscover_with_the_same_servers(stack):
    settings, boxes = stack
    roster = load_roster(settings.roster, domains=settings.domains)
    files = hostfiles.render_host_files(settings, roster, password_seed=SEED, mail_volume_id="vol-0123456789abcdef0")
    servers = mail_servers(settings.host.name)
    autoconfig = autoconfig_servers(files["/var/www/mailstack/mail/config-v1.1.xml"].content)
    assert autoconfig == [("incomingServer", "imap", 993, "SSL"), ("incomingServer", "pop3", 995, "SSL"),
                          ("outgoingServer", "smtp", 465, "SSL"), ("outgoingServer", "smtp", 587, "STARTTLS")]
    assert files["/var/www/mailstack/autodiscover/autodiscover.xml"].content == autodiscover_xml(servers)


def test_the_helpdesk_csv_has_every_mailbox_and_passwords_only_when_asked(stack):
    settings, boxes = stack
    values = [mailbox_settings(m, settings, SWITCH, password_seed=SEED) for m in boxes.values()]
    rows = list(csv.DictReader(io.StringIO(helpdesk_csv(values))))
    assert [r["address"] for r in rows] == list(boxes)
    assert rows[0]["incoming_port"] == "995" and rows[1]["incoming_port"] == "993"
    assert rows[1]["outgoing_port_alternative"] == "587" and rows[0]["switch_date"] == "2027-01-15"
    assert all(v.password is None or v.password not in helpdesk_csv(values) for v in values)
    shown = list(csv.DictReader(io.StringIO(helpdesk_csv(values, with_passwords=True))))
    assert shown[0]["password"] == values[0].password and shown[1]["password"] == "unchanged"


def test_work_tree_of_finds_the_repository_above_a_path_not_yet_made(tmp_path):
    assert work_tree_of(PROJECT / "not" / "made" / "yet") == PROJECT
    assert work_tree_of(tmp_path / "out") is None


# ------------------------------------------------------------------ the command


def invoke(*args: str, env: dict | None = None):
    return runner.invoke(app, ["clients", "-s", "dev", *args], env=env)


@pytest.fixture(autouse=True)
def in_project(monkeypatch):
    monkeypatch.chdir(PROJECT)
    monkeypatch.delenv("MAILSTACK_PASSWORD_SEED", raising=False)


def test_clients_writes_sheets_profiles_and_the_csv_all_0600(tmp_path):
    out = tmp_path / "settings"
    result = invoke("--out", str(out), "--switch-date", "2027-01-15", "--no-pdf",
                    env={"MAILSTACK_PASSWORD_SEED": SEED})
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert "helpdesk.csv" in names and "hanako.sato@example.com.ja.html" in names
    assert "hanako.sato@example.com.en.html" in names and "ops@example.com.mobileconfig" in names
    assert len(names) == 4 * 3 + 1
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in out.iterdir()) and out.stat().st_mode & 0o777 == 0o700
    sheet = (out / "hanako.sato@example.com.ja.html").read_text()
    assert initial_password(SEED, "hanako.sato@example.com") in sheet and ">995<" in sheet
    assert initial_password(SEED, "hanako.sato@example.com") not in (out / "helpdesk.csv").read_text(encoding="utf-8-sig")
    assert "old accounts kept until 2027-01-29" in result.output


def test_only_writes_the_named_mailboxes_in_one_language(tmp_path):
    result = invoke("--out", str(tmp_path / "o"), "--switch-date", "2027-01-15", "--no-pdf", "--lang", "en",
                    "--only", "ops@example.com")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "helpdesk.csv", "ops@example.com.en.html", "ops@example.com.mobileconfig"]
    assert "wrote the settings of 1 mailboxes" in result.output


def test_an_output_directory_inside_the_work_tree_is_refused_and_nothing_is_written():
    target = PROJECT / "client-settings-test"
    result = invoke("--out", str(target), "--switch-date", "2027-01-15", "--no-pdf")
    assert result.exit_code == 1 and "is inside the git work tree" in result.output
    assert not target.exists()


def test_bad_options_are_each_named_and_nothing_is_written(tmp_path):
    result = invoke("--out", str(tmp_path / "o"), "--switch-date", "15/01/2027", "--no-pdf", "--lang", "fr",
                    "--only", "nobody@example.com", env={"MAILSTACK_PASSWORD_SEED": "z" * 47})
    assert result.exit_code == 1
    for expected in ("--lang: 'fr' is not ja, en or both", "--switch-date: '15/01/2027' is not a date",
                     "--only: 'nobody@example.com' is not a mailbox", "MAILSTACK_PASSWORD_SEED: "):
        assert expected in result.output
    assert "z" * 47 not in result.output  # a wrong seed is still a secret: never echoed
    assert not (tmp_path / "o").exists()


def test_without_a_switch_date_or_evidence_the_command_asks_for_one(tmp_path):
    result = invoke("--out", str(tmp_path / "o"), "--no-pdf")
    assert result.exit_code == 1 and "give the day the MX moves, --switch-date YYYY-MM-DD" in result.output


def test_the_stacks_password_seed_is_an_output_that_preview_shows_only_as_secret():
    import json

    result = runner.invoke(app, ["preview", "-s", "dev", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["outputs"]["password_seed"] == "[secret]"


def test_the_switch_date_defaults_to_the_day_the_new_mx_was_first_served(tmp_path, monkeypatch):
    from tests.unit.test_cli import example_project

    project = example_project(tmp_path)
    (project / "stacks" / "evidence").mkdir()
    (project / "stacks" / "evidence" / "dev.json").write_text('{"new_mx_first_seen_at": "2027-02-03T23:30:00+00:00"}')
    monkeypatch.chdir(project)
    result = invoke("--out", str(tmp_path / "o"), "--no-pdf", "--only", "ops@example.com")
    assert result.exit_code == 0, result.output
    assert "switch 2027-02-03, old accounts kept until 2027-02-17" in result.output
    assert "Wednesday 3 February 2027" in (tmp_path / "o" / "ops@example.com.en.html").read_text()


def test_without_chromium_the_command_says_what_to_install_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no chromium on this PATH
    result = invoke("--out", str(tmp_path / "o"), "--switch-date", "2027-01-15")
    assert result.exit_code == 1 and "apt-get install chromium" in result.output and "--no-pdf" in result.output
    assert not (tmp_path / "o").exists()
