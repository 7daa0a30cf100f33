"""Boot tests need root and Debian's debootstrap, systemd-nspawn and pebble (scripts/bootstrap installs them)."""

from __future__ import annotations

import os
import shutil

import pytest

TOOLS = ("debootstrap", "systemd-nspawn", "nsenter", "losetup", "pebble", "dpkg-deb")


@pytest.fixture(scope="session", autouse=True)
def boot_prerequisites():
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    problem = "must run as root" if os.geteuid() != 0 else None
    if missing:
        problem = f"need {' '.join(missing)} (scripts/bootstrap installs them)"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"the boot tests {problem}")
        pytest.skip(f"the boot tests {problem}")
