"""One booted Debian 12 system: systemd-nspawn over an overlay of the cached root filesystem.

This machine's PID 1 is not systemd, so nspawn runs with ``--register=no
--keep-unit`` in a cgroup of its own (RECIPES.md). A reboot inside the
container makes nspawn exit (status 133); :meth:`Machine.reboot` boots the
same filesystem again, as the instance would come back after ``reboot``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

_CGROUPS = ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified")


def _remove_cgroup(path: Path) -> None:
    """Remove a cgroup directory and every child cgroup (bottom-up; the files go with them)."""
    if not path.is_dir():
        return
    for child in path.iterdir():
        if child.is_dir():
            _remove_cgroup(child)
    try:
        path.rmdir()
    except OSError:
        pass


class Machine:
    """A container booted from ``lower`` with its own writable layer under ``directory``."""

    def __init__(self, name: str, lower: Path, directory: Path, netns_path: str, binds: dict[str, str] | None = None):
        self.name, self.lower, self.directory = name, lower, directory
        self.netns_path, self.binds = netns_path, binds or {}
        self.upper, self.work, self.root = directory / "upper", directory / "work", directory / "root"
        self.process: subprocess.Popen | None = None
        self.boots = 0

    def mount(self) -> None:
        for path in (self.upper, self.work, self.root):
            path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={self.lower},upperdir={self.upper},workdir={self.work}", str(self.root)], check=True)

    def write(self, path: str, content: str | bytes, mode: int = 0o644) -> None:
        """Put a file into the container's filesystem (before boot, or while it runs)."""
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)
        target.chmod(mode)

    def boot(self) -> None:
        """Start the container; returns at once (see :meth:`wait_booted`)."""
        self.boots += 1
        cgroups = [Path(base) / self.name for base in _CGROUPS]
        for cgroup in cgroups:
            cgroup.mkdir(exist_ok=True)
        command = ["systemd-nspawn", "-q", "-D", str(self.root), "-b", "-M", self.name, "--register=no",
                   "--keep-unit", "--console=pipe", "--resolv-conf=off", f"--network-namespace-path={self.netns_path}"]
        command += [f"--bind={source}:{target}" for source, target in self.binds.items()]
        enter = "".join(f"echo $$ > {c}/cgroup.procs; " for c in cgroups)
        log = open(self.directory / f"console-{self.boots}.log", "wb")
        self.process = subprocess.Popen(["sh", "-c", enter + 'exec "$@"', "nspawn", *command],
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid1(self) -> int:
        """This machine's PID of the container's init."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nspawn exited with {self.process.returncode}; see {self.directory}/console-*.log")
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        stat = Path(f"/proc/{entry}/stat").read_text()
                    except OSError:
                        continue
                    if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                        return int(entry)
            time.sleep(0.1)
        raise TimeoutError("the container's init did not start")

    def _init_pids(self) -> list[int]:
        try:
            return [self.pid1]
        except (RuntimeError, TimeoutError):
            return []

    def run(self, *command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a command inside the container (every namespace of its PID 1)."""
        result = subprocess.run(["nsenter", "-t", str(self.pid1), "-a", *command], capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {result.returncode}: {result.stdout}{result.stderr}")
        return result

    def wait_booted(self, timeout: float = 300) -> str:
        """Wait until systemd finished booting; return its state (running, degraded...)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=timeout).stdout.strip()
            if state in ("running", "degraded", "maintenance") or time.monotonic() > deadline:
                return state
            time.sleep(0.2)  # systemd's bus not up yet

    def journal(self, *args: str) -> str:
        return self.run("journalctl", "--no-pager", "-o", "cat", *args, check=False).stdout

    def wait_for(self, predicate, what: str, timeout: float = 180, interval: float = 1.0):
        """Poll ``predicate`` until it returns something true; fail with ``what`` and the agent's journal."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n"
                                     + self.journal("-u", "mailstack-agent", "-n", "60"))
            time.sleep(interval)

    def reboot(self, timeout: float = 120) -> None:
        """Reboot the system inside, as ``reboot`` on the instance, and boot it again."""
        self.run("systemctl", "reboot", check=False)
        self.process.wait(timeout)
        self.boot()

    def stop(self) -> None:
        """Power the container off (killing it when it does not stop) and remove its cgroups."""
        if self.process and self.process.poll() is None:
            try:
                subprocess.run(["nsenter", "-t", str(self.pid1), "-a", "systemctl", "poweroff"],
                               capture_output=True, timeout=30)
                self.process.wait(60)
            except (subprocess.TimeoutExpired, RuntimeError, TimeoutError):
                # The container's init outlives nspawn: kill both (its PID namespace goes with its init).
                for pid in self._init_pids():
                    os.kill(pid, 9)
                self.process.kill()
                self.process.wait(30)
        for base in _CGROUPS:
            _remove_cgroup(Path(base) / self.name)

    def remove(self) -> None:
        """Stop, unmount and delete the writable layer."""
        self.stop()
        if os.path.ismount(self.root):
            subprocess.run(["umount", str(self.root)], check=False)
        shutil.rmtree(self.directory, ignore_errors=True)
