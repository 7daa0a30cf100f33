"""The rendered host file tree, checked as data (no daemon): DKIM, relay, placement, web, user data.

Pure and fast; test_mail_host.py runs the same files on the real daemons.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from mailstack.host import files as hostfiles, records
from mailstack.host.files import Placement
from mailstack.problems import InputError
from mailstack.stack.roster import load_roster
from mailstack.stack.settings import settings_from_values
from tests.conftest import require_tool, stack_values, write_roster

VOLUME = "vol-0123456789abcdef0"


@pytest.fixture(scope="module")
def dkim_key() -> str:
    openssl = require_tool("openssl")
    return subprocess.run([openssl, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
                          capture_output=True, text=True, check=True).stdout


def render(tmp_path, placement=hostfiles.PRODUCTION, dkim_private_key=None, **overrides):
    settings = settings_from_values(stack_values(tmp_path / "r.csv", **overrides), source="t")
    roster = load_roster(write_roster(tmp_path / "r.csv", 3), domains=settings.domains)
    return hostfiles.render_host_files(settings, roster, password_seed="s" * 48, mail_volume_id=VOLUME,
                                       dkim_private_key=dkim_private_key, placement=placement)


def test_no_dkim_files_are_rendered_without_a_dkim_key(tmp_path):
    files = render(tmp_path)
    assert not [path for path in files if "dkim" in path]
    postfix = files["/etc/postfix/main.cf"].content + files["/etc/postfix/master.cf"].content
    # The From check milter runs with or without DKIM; OpenDKIM's milter is not referenced.
    assert f":{hostfiles.DKIM_PORT}" not in postfix and "non_smtpd_milters" not in postfix


def test_dkim_key_is_readable_by_opendkim_only(tmp_path, dkim_key):
    key = render(tmp_path, dkim_private_key=dkim_key)[f"/etc/opendkim/keys/{hostfiles.DKIM_SELECTOR}.private"]
    assert (key.content, key.mode, key.owner) == (dkim_key, "0600", "opendkim:opendkim")


def test_dkim_txt_record_publishes_the_public_key_of_the_private_key(dkim_key):
    public = subprocess.run(["openssl", "pkey", "-pubout"], input=dkim_key, capture_output=True, text=True, check=True)
    body = "".join(line for line in public.stdout.splitlines() if "-----" not in line)
    assert records.dkim_value(public.stdout) == f"v=DKIM1; k=rsa; p={body}"


def test_relay_sends_through_the_smarthost_with_the_sasl_password_file(tmp_path):
    relay = {"host": "email-smtp.eu-west-1.amazonaws.com", "port": 587, "username": "AKIAEXAMPLE"}
    main_cf = render(tmp_path, relay=relay)["/etc/postfix/main.cf"].content
    assert "relayhost = [email-smtp.eu-west-1.amazonaws.com]:587" in main_cf
    assert "smtp_sasl_password_maps = texthash:/etc/postfix/sasl_passwd" in main_cf
    assert "smtp_tls_security_level = encrypt" in main_cf and "smtp_tls_wrappermode" not in main_cf


def test_relay_on_port_465_uses_implicit_tls(tmp_path):
    main_cf = render(tmp_path, relay={"host": "smtp.example.net", "port": 465})["/etc/postfix/main.cf"].content
    assert "smtp_tls_wrappermode = yes" in main_cf and "smtp_sasl_auth_enable" not in main_cf


def test_without_relay_mail_goes_out_directly(tmp_path):
    assert "relayhost" not in render(tmp_path)["/etc/postfix/main.cf"].content


def test_relay_user_name_with_a_space_is_refused_at_validation(tmp_path):
    with pytest.raises(InputError) as refused:
        render(tmp_path, relay={"host": "smtp.example.net", "username": "ses user"})
    assert "mailstack:relay.username" in refused.value.report()


def test_production_placement_uses_the_hosts_own_paths_and_every_interface(tmp_path, dkim_key):
    files = render(tmp_path, dkim_private_key=dkim_key)
    main_cf, dovecot = files["/etc/postfix/main.cf"].content, files["/etc/dovecot/dovecot.conf"].content
    assert "inet_interfaces = all" in main_cf and "queue_directory = /var/spool/postfix" in main_cf
    assert "maillog_file" not in main_cf and "log_path" not in dovecot
    assert "listen = *, ::" in dovecot and "unix_listener /var/spool/postfix/private/dovecot-lmtp" in dovecot
    assert "KeyFile /etc/opendkim/keys/mailstack.private" in files["/etc/opendkim.conf"].content


# Settings a local run may change (see hostfiles.Placement); every other line must be the production one.
LOCAL_ONLY = re.compile(r"^\s*(#|inet_interfaces|inet_protocols|maillog_file|maillog_file_prefixes|relayhost"
                        r"|listen|instance_name|log_path|Socket|  -o smtpd_milters|non_smtpd_milters"
                        # the loopback address of the From check milter, the quota policy and the auth policy
                        r"|mua_milters|  user=nobody argv=|    address = |auth_policy_server_url)")


@pytest.mark.parametrize("path", ["/etc/postfix/main.cf", "/etc/postfix/master.cf", "/etc/dovecot/dovecot.conf",
                                  "/etc/opendkim.conf"])
def test_local_run_differs_from_production_only_in_root_address_logs_and_relay(tmp_path, dkim_key, path):
    local = Placement(root="/run/mailstack-local/x", address="127.0.3.1", log_dir="/run/mailstack-local/x/var/log",
                      relayhost="[127.0.3.2]:25")
    production = render(tmp_path, dkim_private_key=dkim_key)[path].content.splitlines()
    moved = render(tmp_path, local, dkim_private_key=dkim_key)[path].content.replace(local.root, "").splitlines()
    changed = set(moved) ^ set(production)
    assert changed and all(LOCAL_ONLY.match(line) for line in changed), sorted(changed)


def test_mta_sts_policy_names_the_host_in_testing_mode(tmp_path):
    policy = render(tmp_path)["/var/www/mailstack/.well-known/mta-sts.txt"].content
    assert "mode: testing" in policy and "mx: mail.example.com" in policy


def test_mta_sts_policy_enforces_only_the_new_host_after_decommission(tmp_path):
    policy = render(tmp_path, phase="decommission")["/var/www/mailstack/.well-known/mta-sts.txt"].content
    assert "mode: enforce" in policy and "mx: mail.example.com" in policy and "mail.example.net" not in policy


def test_no_web_files_when_web_is_off(tmp_path):
    files = render(tmp_path, web=False)
    assert not [path for path in files if "nginx" in path or path.startswith("/var/www")]


def test_user_data_stays_under_16_kb_and_creates_the_vmail_user():
    settings = settings_from_values(stack_values("r.csv"), source="t")
    data = hostfiles.user_data(settings, bucket="mailstack-test-bundle-1234", key="bundle.json", region="eu-west-1")
    assert len(data.encode()) < 16 * 1024
    assert f"useradd --system --uid {hostfiles.VMAIL_UID}" in data
