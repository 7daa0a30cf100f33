"""Stack settings: every invalid value gives one message naming the key, the place and the reason."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mailstack.problems import InputError
from mailstack.stack.settings import load_stack_file, settings_from_values
from tests.conftest import PROJECT, stack_values


def problems(values: dict) -> list[str]:
    with pytest.raises(InputError) as caught:
        settings_from_values(values, source="stacks/Pulumi.t.yaml")
    return [str(p) for p in caught.value.problems]


def only_problem(**overrides) -> str:
    found = problems(stack_values("r.csv", **overrides))
    assert len(found) == 1, found
    return found[0]


def test_valid_settings_fill_in_documented_defaults():
    settings = settings_from_values(stack_values("r.csv"), source="t")
    assert settings.phase == "provision" and settings.cutover_ttl == 300 and settings.overlap_days == 14
    assert settings.host.instance_type == "t3.small" and settings.host.architecture == "x86_64"
    assert settings.old_server.imap.port == 993 and settings.old_server.imap.tls
    assert settings.contact == "postmaster@example.com"
    assert settings.snapshots.time == "03:00" and settings.web is True


def test_domains_are_normalised_to_lower_case_a_labels():
    settings = settings_from_values(
        stack_values("r.csv", domains=["Example.COM.", "例え.example.com"], host={"name": "MAIL.example.com"}),
        source="t",
    )
    assert settings.domains == ["example.com", "xn--r8jz45g.example.com"]
    assert settings.host.name == "mail.example.com"


@pytest.mark.parametrize("instance_type, arch", [("t4g.small", "arm64"), ("m7gd.large", "arm64"), ("a1.medium", "arm64"),
                                                 ("g4dn.xlarge", "x86_64"), ("m7i-flex.large", "x86_64")])
def test_architecture_follows_the_instance_family(instance_type, arch):
    settings = settings_from_values(stack_values("r.csv", host={"name": "mail.example.com", "instance_type": instance_type}), source="t")
    assert settings.host.architecture == arch


def test_host_name_must_be_a_fqdn():
    assert only_problem(host={"name": "mail"}) == (
        "stacks/Pulumi.t.yaml: mailstack:host.name: 'mail' has no dot: write the whole name, e.g. mail.example.com"
    )


def test_host_name_must_not_be_an_ip_address():
    assert "mailstack:host.name: '192.0.2.1' is an IP address, not a domain name" in only_problem(host={"name": "192.0.2.1"})


def test_bad_instance_type_is_named():
    assert "mailstack:host.instance_type: 'big' is not an EC2 instance type" in only_problem(
        host={"name": "mail.example.com", "instance_type": "big"})


def test_volume_sizes_have_bounds():
    message = only_problem(host={"name": "mail.example.com", "mail_volume_gb": 0})
    assert "mailstack:host.mail_volume_gb: Input should be greater than or equal to 1 (got 0)" in message
    message = only_problem(host={"name": "mail.example.com", "root_volume_gb": 4})
    assert "mailstack:host.root_volume_gb" in message and "greater than or equal to 8" in message


def test_unknown_key_is_refused_as_a_likely_typo():
    assert only_problem(overlap_dayz=3) == (
        "stacks/Pulumi.t.yaml: mailstack:overlap_dayz: is not a known setting (see the settings reference in README.md)"
    )


def test_missing_required_key_is_named():
    values = stack_values("r.csv")
    del values["zone"]
    assert problems(values) == ["stacks/Pulumi.t.yaml: mailstack:zone: is required"]


def test_unknown_phase_lists_the_phases():
    assert "'provision', 'cutover' or 'decommission' (got 'flip')" in only_problem(phase="flip")


def test_old_server_endpoint_scheme_is_checked():
    message = only_problem(old_server={"host": "mail.example.net", "imap": "http://mail.example.net"})
    assert "mailstack:old_server.imap: 'http://mail.example.net': scheme must be one of imap, imaps" in message


def test_old_server_endpoint_port_is_checked():
    message = only_problem(old_server={"host": "mail.example.net", "imap": "imaps://mail.example.net:99999"})
    assert "mailstack:old_server.imap" in message and "port is not a number from 1 to 65535" in message


def test_old_server_ip_must_be_ipv4():
    assert "mailstack:old_server.ip" in only_problem(old_server={"host": "mail.example.net", "ip": "300.1.1.1",
                                                                 "imap": "imaps://mail.example.net"})


def test_old_server_instance_id_shape_is_checked():
    message = only_problem(old_server={"host": "mail.example.net", "imap": "imaps://mail.example.net", "instance_id": "web-1"})
    assert "mailstack:old_server.instance_id: 'web-1' does not look like an EC2 instance id" in message


def test_domains_outside_the_zone_are_refused():
    message = only_problem(domains=["example.com", "example.org"])
    assert message == ("stacks/Pulumi.t.yaml: mailstack:zone: example.org not inside the zone example.com: "
                       "every domain and the host name must be in it")


def test_cross_field_problems_are_reported_separately():
    found = problems(stack_values("r.csv", cutover_ttl=600, normal_ttl=300,
                                  old_server={"host": "mail.example.com", "imap": "imaps://mail.example.com"}))
    assert found == [
        "stacks/Pulumi.t.yaml: mailstack:host.name: the new host mail.example.com has the old server's name; give the new host its own name",
        "stacks/Pulumi.t.yaml: mailstack:cutover_ttl: 600 is above normal_ttl 300: the cutover TTL must be the lower one",
    ]


def test_default_quota_must_be_a_quota_dovecot_understands():
    message = only_problem(default_quota="lots")
    assert message.startswith("stacks/Pulumi.t.yaml: mailstack:default_quota: quota 'lots'")


def test_snapshot_time_must_be_hh_mm():
    assert "mailstack:snapshots.time: '3am' is not a 24-hour time HH:MM (UTC)" in only_problem(snapshots={"time": "3am"})


def test_every_problem_is_reported_at_once():
    found = problems(stack_values("r.csv", phase="x", cutover_ttl="soon", host={"name": "m"}))
    assert [p.split(": ")[1] for p in found] == ["mailstack:host.name", "mailstack:phase", "mailstack:cutover_ttl"]


# ----------------------------------------------------------- stack files


def write_stack(project: Path, env: str, body: str) -> None:
    (project / "stacks").mkdir(exist_ok=True)
    (project / "Pulumi.yaml").write_text("name: mailstack\nruntime: python\nstackConfigDir: stacks\n")
    (project / "stacks" / f"Pulumi.{env}.yaml").write_text(body)


GOOD = textwrap.dedent("""\
    config:
      aws:region: eu-west-1
      mailstack:domains: [example.com]
      mailstack:zone: example.com
      mailstack:host:
        name: mail.example.com
      mailstack:old_server:
        host: mail.example.net
        imap: imaps://mail.example.net
      mailstack:roster: stacks/mailboxes/t.csv
    """)


def test_stack_file_problems_name_the_file_and_line(tmp_path):
    write_stack(tmp_path, "t", GOOD.replace("name: mail.example.com", "name: mail_host"))
    with pytest.raises(InputError) as caught:
        load_stack_file("t", tmp_path)
    assert [str(p) for p in caught.value.problems] == [
        "stacks/Pulumi.t.yaml:6: mailstack:host.name: 'mail_host' has no dot: write the whole name, e.g. mail.example.com"
    ]


def test_stack_file_with_broken_yaml_names_the_line(tmp_path):
    write_stack(tmp_path, "t", GOOD + "  mailstack:phase: [unclosed\n")
    with pytest.raises(InputError) as caught:
        load_stack_file("t", tmp_path)
    (problem,) = caught.value.problems
    assert problem.where.startswith("stacks/Pulumi.t.yaml:") and "not valid YAML" in problem.message


def test_unknown_stack_lists_the_known_ones(tmp_path):
    write_stack(tmp_path, "dev", GOOD)
    with pytest.raises(InputError) as caught:
        load_stack_file("prod", tmp_path)
    assert str(caught.value.problems[0]) == "stacks/Pulumi.prod.yaml: no such stack file; known stacks: dev"


def test_plaintext_relay_password_in_a_stack_file_is_refused_without_echoing_it(tmp_path):
    write_stack(tmp_path, "t", GOOD + "  mailstack:relay_password: hunter2-plain\n")
    with pytest.raises(InputError) as caught:
        load_stack_file("t", tmp_path)
    report = caught.value.report()
    assert "stacks/Pulumi.t.yaml:11: mailstack:relay_password is stored in plain text" in report
    assert "pulumi config set --secret mailstack:relay_password" in report and "hunter2" not in report


def test_encrypted_relay_password_is_accepted(tmp_path):
    write_stack(tmp_path, "t", GOOD + "  mailstack:relay_password:\n    secure: v1:abc\n")
    assert load_stack_file("t", tmp_path).has_relay_password


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_example_stacks_are_valid(env):
    stack = load_stack_file(env, PROJECT)
    assert stack.settings.domains and stack.region


def test_exempt_mailboxes_need_an_address_and_a_reason():
    assert problems(stack_values("r.csv", exempt_mailboxes={"bob": "left", "carol@example.com": " "})) == [
        "stacks/Pulumi.t.yaml: mailstack:exempt_mailboxes: 'bob' is not an address: give the mailbox's roster address",
        "stacks/Pulumi.t.yaml: mailstack:exempt_mailboxes: carol@example.com: give the reason this mailbox is not migrated"]
    settings = settings_from_values(stack_values("r.csv", exempt_mailboxes={"bob@example.com": "new hire"}), source="t")
    assert settings.exempt_mailboxes == {"bob@example.com": "new hire"}
