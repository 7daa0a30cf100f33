"""The EC2 user data: valid cloud-config (Debian's cloud-init checks it offline), small, secret-free."""

from __future__ import annotations

import subprocess

import yaml

from mailstack.host import files as hostfiles
from mailstack.stack.settings import settings_from_values
from tests.conftest import require_tool, stack_values

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


def test_user_data_installs_debian_mail_packages_and_the_bundle_puller():
    data = yaml.safe_load(render())
    assert {"postfix", "dovecot-imapd", "dovecot-pop3d", "dovecot-lmtpd", "python3-boto3"} <= set(data["packages"])
    files = {f["path"]: f for f in data["write_files"]}
    assert files["/usr/local/sbin/mailstack-pull"]["permissions"] == "0755"
    assert files["/usr/local/sbin/mailstack-pull"]["content"] == (hostfiles.TEMPLATES / "host/mailstack-pull").read_text()
    assert yaml.safe_load(files["/etc/mailstack/bootstrap.json"]["content"]) == {
        "bucket": "mailstack-test-bundle-1234", "key": "bundle.json", "region": "eu-west-1"}
    assert ["systemctl", "enable", "--now", "mailstack-pull.timer"] in data["runcmd"]

