"""A Debian 12 system boots the dev stack's real user data and serves mail, with no step by hand.

One host is booted for this module and the tests run in order on it: first
boot, a volume resize, a second bundle, a certificate renewal, a reboot.
"""

from __future__ import annotations

import re
import stat
import subprocess
import time
from pathlib import Path

import pytest

from mailstack.stack.passwords import initial_password
from tests.boot import probes
from tests.boot.host import PROJECT, booted, evaluate_dev

pytestmark = pytest.mark.boot
UNITS = ("postfix@-", "dovecot", "opendkim", "nginx", "amazon-ssm-agent")
USER = "postmaster@example.com"  # a roster mailbox with a generated password
NEW_USER = "newcomer@example.com"


@pytest.fixture(scope="module")
def host():
    with booted("first") as host:
        host.wait_converged(host.stack.version)
        host.timings["first boot to converged"] = time.monotonic() - host.timings["boot started"]
        yield host
        print("boot timings:", {k: v for k, v in host.timings.items() if k != "boot started"})


def password(host, address: str) -> str:
    return initial_password(host.stack.seed, address)


def active(host, unit: str) -> str:
    return host.machine.run("systemctl", "is-active", unit, check=False).stdout.strip()


def served_serials(host, ca: str) -> dict[int, str]:
    return {port: host.outside(probes.certificate, port, ca, host.stack.host)["serialNumber"]
            for port in probes.MAIL_PORTS}


def monotonic_property(host, unit: str, name: str) -> int:
    return int(host.machine.run("systemctl", "show", unit, "-p", name, "--value").stdout.strip())


def assert_volume_mounted_before_dovecot(host):
    mount = host.machine.run("findmnt", "-n", "-o", "SOURCE", "/var/mail/vmail").stdout.strip()
    assert mount, "the mail volume is not mounted"
    after = host.machine.run("systemctl", "show", "dovecot", "-p", "After", "--value").stdout
    assert "var-mail-vmail.mount" in after.split()
    mounted = monotonic_property(host, "var-mail-vmail.mount", "ActiveEnterTimestampMonotonic")
    started = monotonic_property(host, "dovecot", "ExecMainStartTimestampMonotonic")
    assert 0 < mounted <= started


def test_first_boot_brings_every_unit_up(host):
    assert {unit: active(host, unit) for unit in UNITS} == {unit: "active" for unit in UNITS}
    assert host.machine.wait_booted() == "running", host.machine.run("systemctl", "--failed", check=False).stdout
    status = host.machine.run("cloud-init", "status", "--long", check=False).stdout
    assert "status: done" in status and "DataSourceNoCloud" in status


def test_mail_ports_present_the_hosts_acme_certificate(host):
    ca = host.pebble_root()
    for port in probes.MAIL_PORTS:
        cert = host.outside(probes.certificate, port, ca, host.stack.host)
        names = {value for kind, value in cert["subjectAltName"] if kind == "DNS"}
        assert host.stack.host in names, port
        assert "Pebble" in str(cert["issuer"]), port


def test_submission_with_auth_is_delivered_and_read_back_over_imap(host):
    ca = host.pebble_root()
    host.outside(probes.submit, ca, host.stack.host, USER, password(host, USER), USER, "first boot")
    assert host.outside(probes.wait_for_subject, ca, host.stack.host, USER, password(host, USER), "first boot")
    signature = host.outside(probes.header, ca, host.stack.host, USER, password(host, USER), "first boot",
                             "DKIM-Signature")
    assert "d=example.com" in signature and "s=mail" in signature


def test_relay_credentials_come_from_ssm_readable_by_root_only(host):
    credentials = host.file("/etc/postfix/sasl_passwd")
    mode = credentials.stat()
    assert stat.S_IMODE(mode.st_mode) == 0o600 and mode.st_uid == 0
    assert credentials.read_text() == f"[smtp.relay.example.net]:587 mailer:{host.relay_password}\n"
    assert host.relay_password not in host.stack.user_data and host.relay_password not in host.stack.bundle
    assert host.relay_password not in host.machine.journal()


def test_bundle_is_applied_exactly_once(host):
    runs = host.agent_log().count("Finished mailstack-agent.service")
    host.machine.wait_for(lambda: host.agent_log().count("Finished mailstack-agent.service") >= runs + 2,
                          "two more agent runs", timeout=30)
    assert host.agent_log().count(f"bundle {host.stack.version} applied") == 1


def test_ssm_agent_is_installed_for_shell_access_without_ssh(host):
    assert "SSM agent installed and started" in host.agent_log()
    assert active(host, "amazon-ssm-agent") == "active"
    keys = host.file("/root/.ssh/authorized_keys")
    assert not keys.exists() or not keys.read_text().strip()


def test_mail_volume_is_mounted_before_dovecot_starts(host):
    assert_volume_mounted_before_dovecot(host)


def may_resize_mounted_filesystems() -> bool:
    """Whether this machine lets root resize a mounted ext4 (CAP_SYS_RESOURCE in the bounding set)."""
    bounding = re.search(r"CapBnd:\s*([0-9a-f]+)", Path("/proc/self/status").read_text()).group(1)
    return bool(int(bounding, 16) & 1 << 24)


def test_a_resized_volume_grows_the_filesystem_online(host):
    def size():
        return int(host.machine.run("df", "--output=size", "-B1", "/var/mail/vmail").stdout.split()[1])

    before = size()
    image = host.directory / "mail-volume.img"
    subprocess.run(["truncate", "-s", "128M", str(image)], check=True)
    subprocess.run(["losetup", "-c", host.loop], check=True)
    if may_resize_mounted_filesystems():
        host.machine.wait_for(lambda: size() > before * 1.8, "the filesystem grown to the volume", timeout=30)
        assert "mail filesystem grown to the volume's 128 MiB" in host.agent_log()
    else:
        # Here the kernel refuses the online resize to every process (no CAP_SYS_RESOURCE): the agent must
        # still notice the larger volume, try, and say why it could not, without stopping mail.
        host.machine.wait_for(lambda: "the volume grew to 128 MiB but resize2fs failed" in host.agent_log(),
                              "the agent's attempt to grow the filesystem", timeout=30)
        assert "Permission denied to resize filesystem" in host.agent_log()


def test_second_bundle_is_applied_without_reboot_and_its_new_mailbox_logs_in(host, tmp_path):
    roster = tmp_path / "roster.csv"
    original = (PROJECT / "stacks/mailboxes/dev.csv").read_text()
    roster.write_text(original.rstrip("\n") + f"\n{NEW_USER},New Comer,1G,imap,,generate\n")
    second = evaluate_dev(host.relay_password, roster)
    assert second.user_data == host.stack.user_data
    boot_id = host.machine.run("cat", "/proc/sys/kernel/random/boot_id").stdout
    started = time.monotonic()
    host.publish(second.bundle)
    host.machine.wait_for(lambda: host.applied() == second.version, f"bundle {second.version} applied", timeout=60)
    host.timings["second bundle published to applied"] = time.monotonic() - started
    ca = host.pebble_root()
    assert host.outside(probes.imap_subjects, ca, host.stack.host, NEW_USER, password(host, NEW_USER)) == []
    host.outside(probes.submit, ca, host.stack.host, USER, password(host, USER), NEW_USER, "welcome")
    assert host.outside(probes.wait_for_subject, ca, host.stack.host, NEW_USER, password(host, NEW_USER), "welcome")
    assert host.machine.run("cat", "/proc/sys/kernel/random/boot_id").stdout == boot_id
    assert host.agent_log().count(f"bundle {second.version} applied") == 1


def test_a_new_domain_expands_the_certificate(host, tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_text((PROJECT / "stacks/mailboxes/dev.csv").read_text().rstrip("\n")
                      + f"\n{NEW_USER},New Comer,1G,imap,,generate\n")
    third = evaluate_dev(host.relay_password, roster, domains=["example.com", "shop.example.com"])
    host.publish(third.bundle)
    host.machine.wait_for(lambda: host.applied() == third.version and not host.agent_running(),
                          f"bundle {third.version} applied", timeout=60)
    ca = host.pebble_root()
    for port in probes.MAIL_PORTS:
        cert = host.outside(probes.certificate, port, ca, host.stack.host)
        assert ("DNS", "mta-sts.shop.example.com") in cert["subjectAltName"], port
    assert "names changed from" in host.agent_log()
    assert host.agent_log().count("issued by Let's Encrypt") == 2


def test_a_renewed_certificate_reaches_every_service_through_the_deploy_hook(host):
    ca = host.pebble_root()
    before = served_serials(host, ca)
    host.machine.run("certbot", "renew", "--force-renewal", "--no-random-sleep-on-renew", timeout=180)
    after = served_serials(host, ca)
    assert all(after[port] != before[port] for port in probes.MAIL_PORTS), (before, after)
    assert len(set(after.values())) == 1


def test_reboot_keeps_everything_working(host):
    started = time.monotonic()
    host.machine.reboot()
    assert host.machine.wait_booted() == "running"
    host.timings["reboot"] = time.monotonic() - started
    assert {unit: active(host, unit) for unit in UNITS} == {unit: "active" for unit in UNITS}
    assert_volume_mounted_before_dovecot(host)
    ca = host.pebble_root()
    assert "first boot" in host.outside(probes.imap_subjects, ca, host.stack.host, USER, password(host, USER))
    assert host.outside(probes.pop_count, ca, host.stack.host, NEW_USER, password(host, NEW_USER)) == 1
    host.outside(probes.submit, ca, host.stack.host, USER, password(host, USER), USER, "after reboot")
    assert host.outside(probes.wait_for_subject, ca, host.stack.host, USER, password(host, USER), "after reboot")
    log = host.agent_log()
    assert len(re.findall(r"bundle \w+ applied", log)) == 3, "each of the three bundles once, none again at boot"
