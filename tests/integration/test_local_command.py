"""`mailstack local up/down`: the rendered host started and removed from the command line."""

from __future__ import annotations

import imaplib
import json
import os
import shutil
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailstack.cli import app
from mailstack.local import host as local
from tests.conftest import PROJECT, require_root_and_packages

pytestmark = pytest.mark.integration

ADDRESS = "127.0.3.9"
MAILSTACK = [sys.executable, "-m", "mailstack.cli"]


def mailstack(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*MAILSTACK, *args], cwd=PROJECT, capture_output=True, text=True, timeout=120, **kwargs)


def lo_addresses() -> str:
    return subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def state_file(tmp_path_factory):
    require_root_and_packages()
    state = tmp_path_factory.mktemp("local") / "state.json"
    result = mailstack("local", "up", "-s", "dev", "--address", ADDRESS, "--state", str(state))
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        yield state
    finally:
        if state.exists():
            mailstack("local", "down", "--state", str(state))


def test_local_up_writes_the_state_file_readable_by_its_owner_only(state_file):
    document = json.loads(state_file.read_text())
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert document["address"] == ADDRESS and document["domain"] == "example.com"
    assert document["ports"] == {"smtp": 25, "submission": 587, "submissions": 465, "imaps": 993, "pop3s": 995}
    assert Path(document["ca_cert"]).is_file()


def test_local_up_state_mailbox_logs_in_over_imaps(state_file):
    document = json.loads(state_file.read_text())
    tls = ssl.create_default_context(cafile=document["ca_cert"])
    with imaplib.IMAP4_SSL(ADDRESS, document["ports"]["imaps"], ssl_context=tls, timeout=10) as imap:
        typ, _ = imap.login(document["mailbox"]["address"], document["mailbox"]["password"])
    assert typ == "OK"


def test_local_down_stops_the_daemons_and_removes_the_address_and_files(state_file):
    root = json.loads(state_file.read_text())["root"]
    result = mailstack("local", "down", "--state", str(state_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f" {ADDRESS}/" not in lo_addresses()
    assert subprocess.run(["pgrep", "-f", root], capture_output=True).returncode == 1
    assert not Path(root).exists() and not state_file.exists()


def test_local_up_as_a_normal_user_fails_in_one_line(tmp_path):
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or not setpriv:
        pytest.skip("needs root and setpriv to run as another user")
    tmp_path.chmod(0o777)
    result = subprocess.run(
        [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *MAILSTACK,
         "local", "up", "-s", "dev", "--address", "127.0.3.10", "--state", str(tmp_path / "s.json")],
        cwd=PROJECT, capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "must be started as root" in result.stderr
    assert " 127.0.3.10/" not in lo_addresses()


def test_local_up_names_a_missing_debian_package_and_its_apt_command(monkeypatch, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the root check comes first")
    monkeypatch.chdir(PROJECT)
    monkeypatch.setattr(local, "REQUIRED_PROGRAMS", (*local.REQUIRED_PROGRAMS, ("/nonexistent/nsd", "nsd")))
    result = CliRunner().invoke(app, ["local", "up", "-s", "dev", "--address", "127.0.3.10",
                                      "--state", str(tmp_path / "s.json")])
    assert result.exit_code == 1
    assert "missing Debian package nsd: run apt-get install -y nsd" in result.output
    assert not (tmp_path / "s.json").exists()


def test_missing_packages_lists_only_the_absent_ones():
    present = {program for program, _ in local.REQUIRED_PROGRAMS} - {"/usr/lib/dovecot/lmtp"}
    assert local.missing_packages(exists=present.__contains__) == ["dovecot-lmtpd"]
