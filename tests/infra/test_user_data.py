"""The EC2 user data: valid cloud-config (Debian's cloud-init checks it offline), small, secret-free."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import yaml

from mailstack.host import files as hostfiles
from mailstack.stack.roster import load_roster
from mailstack.stack.settings import settings_from_values
from tests.conftest import require_tool, stack_values, write_roster

SETTINGS = settings_from_values(stack_values("r.csv"), source="t")


def render() -> str:
    return hostfiles.user_data(SETTINGS, bucket="mailstack-test-bundle-1234", key="bundle.json", region="eu-west-1")


def test_user_data_passes_cloud_init_schema(tmp_path):
    cloud_init = require_tool("cloud-init")
    path = tmp_path / "user-data.yaml"
    path.write_text(render())
    result = subprocess.run([cloud_init, "schema", "--config-file", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


def test_cloud_init_schema_check_catches_a_broken_user_data(tmp_path):
    """The check above can fail: a wrongly typed key is refused."""
    cloud_init = require_tool("cloud-init")
    data = yaml.safe_load(render())
    data["packages"] = "postfix"
    path = tmp_path / "user-data.yaml"
    path.write_text("#cloud-config\n" + yaml.safe_dump(data))
    result = subprocess.run([cloud_init, "schema", "--config-file", str(path)], capture_output=True, text=True)
    assert result.returncode != 0 and "packages" in result.stdout + result.stderr


def test_user_data_installs_debian_mail_packages_and_bootstraps_the_agent():
    data = yaml.safe_load(render())
    assert {"postfix", "dovecot-imapd", "dovecot-pop3d", "dovecot-lmtpd", "python3-boto3"} <= set(data["packages"])
    files = {f["path"]: f for f in data["write_files"]}
    assert files["/usr/local/sbin/mailstack-agent"]["permissions"] == "0755"
    assert files["/usr/local/sbin/mailstack-agent"]["content"] == (
        hostfiles.TEMPLATES / "host/mailstack-agent-bootstrap").read_text()
    for unit in ("mailstack-agent.service", "mailstack-agent.timer"):
        assert files[f"/etc/systemd/system/{unit}"]["content"] == (hostfiles.TEMPLATES / "host" / unit).read_text()
    assert yaml.safe_load(files["/etc/mailstack/bootstrap.json"]["content"]) == {
        "bucket": "mailstack-test-bundle-1234", "key": "bundle.json", "region": "eu-west-1"}
    assert ["systemctl", "enable", "--now", "mailstack-agent.timer"] in data["runcmd"]


def test_the_agent_itself_ships_in_the_bundle_so_it_updates_itself():
    """User data carries only a bootstrap; the bundle carries the agent and its units."""
    roster = load_roster(write_roster(Path(tempfile.mkdtemp()) / "r.csv", 2), domains=SETTINGS.domains)
    files = hostfiles.render_host_files(SETTINGS, roster, password_seed="s" * 48, mail_volume_id="vol-0123456789abcdef0")
    agent = files["/usr/local/sbin/mailstack-agent"]
    assert agent.mode == "0755" and agent.content == (hostfiles.TEMPLATES / "host/mailstack-agent").read_text()
    assert "/etc/systemd/system/mailstack-agent.timer" in files
    assert "def converge" not in render()
