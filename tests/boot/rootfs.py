"""A cached Debian 12 root filesystem for booting the mail host under systemd-nspawn.

Built once per machine and package list (debootstrap, about a minute), then
shared read-only by every boot through an overlay. The packages the user data
installs are downloaded into its apt cache, so cloud-init's ``packages:``
installs them with no registry reachable from the container.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

CACHE = Path(os.environ.get("MAILSTACK_BOOT_CACHE", "/var/cache/mailstack-boot"))
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SOURCES = (
    f"deb {MIRROR} {SUITE} main\n"
    f"deb {MIRROR} {SUITE}-updates main\n"
    f"deb http://deb.debian.org/debian-security {SUITE}-security main\n"
)
# What a Debian cloud image has that the user data relies on (RECIPES.md: python3-cffi-backend for
# python3-cryptography, locales for cloud-init's locale module).
BASE = ("systemd", "systemd-sysv", "dbus", "cloud-init", "python3-boto3", "iproute2", "ca-certificates",
        "python3-cffi-backend", "locales", "e2fsprogs", "openssl", "procps")
# The container never reaches the host's network: cloud-init must not configure it, and only NoCloud applies.
CLOUD_CFG = "datasource_list: [NoCloud]\nnetwork: {config: disabled}\n"
RECIPE = 1  # bump when the build steps below change


def cache_key(packages: list[str]) -> str:
    """The cache entry of a root filesystem with these user-data packages."""
    text = json.dumps({"recipe": RECIPE, "suite": SUITE, "base": BASE, "packages": sorted(packages)})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _chroot(root: Path, *command: str) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    subprocess.run(["chroot", str(root), *command], check=True, env=env, stdout=subprocess.DEVNULL)


def _build(root: Path, packages: list[str]) -> None:
    subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE)}", SUITE, str(root), MIRROR],
                   check=True, stdout=subprocess.DEVNULL)
    (root / "etc/apt/sources.list").write_text(SOURCES)
    proc = root / "proc"
    subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
    try:
        _chroot(root, "apt-get", "update", "-qq")
        _chroot(root, "apt-get", "dist-upgrade", "-y", "-qq")
        _chroot(root, "apt-get", "install", "-y", "-qq", "--download-only", *packages)
        (root / "etc/locale.gen").write_text("en_US.UTF-8 UTF-8\n")
        _chroot(root, "locale-gen")
    finally:
        subprocess.run(["umount", str(proc)], check=True)
    # Every boot is a genuine first boot: systemd makes a new machine id, cloud-init a new instance.
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    (root / "etc/cloud/cloud.cfg.d/90-mailstack-container.cfg").write_text(CLOUD_CFG)
    # No resolver: lookups of the registry fail at once instead of timing out.
    resolv = root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.write_text("nameserver 127.0.0.1\n")


def root_filesystem(packages: list[str]) -> Path:
    """The cached root filesystem for these packages, built when missing (root only)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    entry = CACHE / cache_key(packages)
    with open(CACHE / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (entry / "ready").exists():
            shutil.rmtree(entry, ignore_errors=True)
            _build(entry / "root", packages)
            (entry / "packages").write_text("\n".join(sorted(packages)) + "\n")
            (entry / "ready").write_text("")
    return entry / "root"
