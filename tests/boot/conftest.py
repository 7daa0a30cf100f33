"""Boot tests need root and Debian's debootstrap, systemd-nspawn and pebble (scripts/bootstrap installs them)."""

from __future__ import annotations

import os

import pytest

from tests.conftest import require_tool

TOOLS = ("debootstrap", "systemd-nspawn", "nsenter", "losetup", "pebble", "dpkg-deb")


@pytest.fixture(scope="session", autouse=True)
def boot_prerequisites():
    for tool in TOOLS:
        require_tool(tool)
    if os.geteuid() != 0:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("the boot tests must run as root")
