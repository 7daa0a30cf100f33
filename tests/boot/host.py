"""A mail host booted from the user data the Pulumi program renders, and everything around it.

:func:`booted` evaluates the program offline for ``stacks/Pulumi.dev.yaml``
(Pulumi mocks), boots the cached Debian 12 root filesystem with that user
data through cloud-init's NoCloud datasource, serves the bundle from moto,
and undoes all of it (container, loop device, namespaces, cgroups, fakes)
even on failure.

Test seams, all outside the user data and the bundle:
- AWS and Let's Encrypt names resolve to the fakes through /etc/hosts, and
  the fakes' test CA is added to the system's trust store;
- credentials come from /root/.aws/credentials (EC2: the instance role via IMDS);
- timing only: the agent's timer runs every 3 s instead of 2 min, and its
  certificate retries start at 5 s instead of 5 min (systemd drop-ins);
- the mail volume is a loop device at the Nitro by-id path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mailstack.infra import offline
from tests.boot import fakes as fakes_module
from tests.boot.machine import Machine
from tests.boot.netns import HOST_ADDRESS, NETWORK_ADDRESS, Network
from tests.boot.rootfs import root_filesystem

PROJECT = Path(__file__).resolve().parents[2]
STACK_FILE = PROJECT / "stacks" / "Pulumi.dev.yaml"
REGION = "eu-west-1"
# The dev stack declares no relay: the test adds one, so the relay password's way from SSM is exercised.
RELAY = {"host": "smtp.relay.example.net", "port": 587, "username": "mailer"}
TIMER_DROP_IN = "[Timer]\nOnBootSec=\nOnBootSec=1s\nOnUnitActiveSec=\nOnUnitActiveSec=3s\nAccuracySec=1s\n"
SERVICE_DROP_IN = "[Service]\nEnvironment=MAILSTACK_RETRY_BASE=5\n"
SSM_AGENT_UNIT = "[Unit]\nDescription=Amazon SSM agent (test stand-in)\n[Service]\nExecStart=/bin/sleep infinity\n" \
                 "[Install]\nWantedBy=multi-user.target\n"


@dataclass
class Stack:
    """What the Pulumi program declared for the dev stack, as the host will see it."""

    user_data: str
    bundle: str
    bucket: str
    volume_id: str
    host: str
    relay_parameter: str
    seed: str

    @property
    def version(self) -> str:
        return hashlib.sha256(self.bundle.encode()).hexdigest()[:16]


def evaluate_dev(relay_password: str, roster: Path | None = None, domains: list[str] | None = None) -> Stack:
    """The dev stack under Pulumi mocks: its user data unchanged; its bundle with a relay (and ``roster``, ``domains``)."""
    config, secret_keys = offline.stack_config(STACK_FILE)
    user_data = offline.evaluate(config, project_dir=PROJECT, stack="dev", secret_keys=secret_keys)
    user_data = user_data.one("aws:ec2/instance:Instance").inputs["userData"]
    config = dict(config, **{"mailstack:relay": json.dumps(RELAY), "mailstack:relay_password": relay_password})
    if roster is not None:
        config["mailstack:roster"] = str(roster)
    if domains is not None:
        config["mailstack:domains"] = json.dumps(domains)
    evaluation = offline.evaluate(config, project_dir=PROJECT, stack="dev",
                                  secret_keys=[*secret_keys, "mailstack:relay_password"])
    bundle = offline.reveal(evaluation.one("aws:s3/bucketObjectv2:BucketObjectv2").inputs["content"])
    return Stack(
        user_data=user_data, bundle=bundle, bucket=evaluation.outputs["bundle_bucket"],
        volume_id=evaluation.outputs["mail_volume_id"], host=evaluation.outputs["host_name"],
        relay_parameter=evaluation.one("aws:ssm/parameter:Parameter").inputs["name"],
        # The mocks' RandomPassword result (offline.RecordingMocks): the generated passwords derive from it.
        seed=hashlib.sha256(b"mailstack-dev-password-seed").hexdigest()[:48],
    )


def user_data_packages(user_data: str) -> list[str]:
    return yaml.safe_load(user_data)["packages"]


def aws_names(stack: Stack) -> list[str]:
    return [f"{stack.bucket}.s3.{REGION}.amazonaws.com", f"s3.{REGION}.amazonaws.com",
            f"ssm.{REGION}.amazonaws.com", "route53.amazonaws.com"]


def volume_device(stack: Stack) -> str:
    """The mail volume's path on a Nitro instance."""
    return f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{stack.volume_id.replace('-', '')}"


def ssm_agent_package(directory: Path) -> bytes:
    """A stand-in for Amazon's amazon-ssm-agent .deb: same package and unit name, a process that waits."""
    tree = directory / "ssm-agent"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text("Package: amazon-ssm-agent\nVersion: 3.3.0-test\nArchitecture: all\n"
                                         "Maintainer: mailstack tests <root@localhost>\n"
                                         "Description: stand-in for the Amazon SSM agent\n")
    (tree / "lib/systemd/system").mkdir(parents=True)
    (tree / "lib/systemd/system/amazon-ssm-agent.service").write_text(SSM_AGENT_UNIT)
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(tree), str(directory / "ssm.deb")],
                   check=True, capture_output=True)
    return (directory / "ssm.deb").read_bytes()


@dataclass
class Host:
    """A booted host and its world; every network call to it goes through :meth:`outside`."""

    stack: Stack
    machine: Machine
    network: Network
    fakes: fakes_module.Fakes
    directory: Path
    loop: str
    relay_password: str
    timings: dict = field(default_factory=dict)

    def outside(self, function, *args):
        """Run ``function`` in the network around the host (where the clients and the fakes are)."""
        return self.network.call(function, *args)

    def attach_volume(self) -> None:
        """Make the loop device appear at the volume's Nitro path inside the running host."""
        number = os.stat(self.loop).st_rdev
        self.machine.run("mkdir", "-p", "/dev/disk/by-id")
        self.machine.run("mknod", volume_device(self.stack), "b", str(os.major(number)), str(os.minor(number)))

    def aws(self, service: str):
        import boto3

        return boto3.client(service, region_name=REGION, endpoint_url=self.fakes.moto_endpoint,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def publish(self, bundle: str) -> None:
        self.outside(lambda: self.aws("s3").put_object(Bucket=self.stack.bucket, Key="bundle.json",
                                                         Body=bundle.encode()))

    def file(self, path: str) -> Path:
        """A file of the running host, read through its root filesystem."""
        return self.machine.root / path.lstrip("/")

    def applied(self) -> str | None:
        path = self.file("/var/lib/mailstack/applied")
        return path.read_text().strip() if path.exists() else None

    def has_acme_certificate(self) -> bool:
        return self.file(f"/etc/letsencrypt/renewal/{self.stack.host}.conf").exists()

    def agent_log(self) -> str:
        return self.machine.journal("-u", "mailstack-agent")

    def wait_converged(self, version: str, timeout: float = 240) -> None:
        """Wait until the bundle ``version`` is applied, the certificate is Let's Encrypt's, and the agent's run is over."""
        self.machine.wait_for(lambda: self.applied() == version and self.has_acme_certificate() and not self.agent_running(),
                              f"bundle {version} applied with an ACME certificate", timeout)

    def agent_running(self) -> bool:
        state = self.machine.run("systemctl", "is-active", "mailstack-agent.service", check=False).stdout.strip()
        return state in ("activating", "deactivating", "reloading")

    def pebble_root(self) -> str:
        return self.outside(self.fakes.pebble_root)


def _setup_fakes(host_stack: Stack, fakes: fakes_module.Fakes, relay_password: str, deb: bytes) -> None:
    import boto3

    def client(service):
        return boto3.client(service, region_name=REGION, endpoint_url=fakes.moto_endpoint,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    # moto keeps its state per process: start from an empty account.
    urllib.request.urlopen(urllib.request.Request(f"{fakes.moto_endpoint}/moto-api/reset", method="POST"), timeout=10)
    s3 = client("s3")
    for bucket in (host_stack.bucket, f"amazon-ssm-{REGION}"):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket=host_stack.bucket, Key="bundle.json", Body=host_stack.bundle.encode())
    for arch in ("amd64", "arm64"):
        s3.put_object(Bucket=f"amazon-ssm-{REGION}", Key=f"latest/debian_{arch}/amazon-ssm-agent.deb", Body=deb,
                      ACL="public-read")  # as Amazon's bucket: anyone may download the agent
    client("ssm").put_parameter(Name=host_stack.relay_parameter, Value=relay_password, Type="SecureString")
    client("route53").create_hosted_zone(Name="example.com.", CallerReference="mailstack-boot")


@contextlib.contextmanager
def booted(name: str, *, aws_down: bool = False, acme_failures: int = 0, volume_attached: bool = True,
           before_boot=None):
    """Boot a fresh host from the dev stack's user data; yield a :class:`Host`; remove everything after.

    ``volume_attached=False``: the mail volume appears only at :meth:`Host.attach_volume`, as on EC2
    where the volume attachment follows the instance.
    """
    relay_password = secrets.token_urlsafe(18)
    started = time.monotonic()
    stack = evaluate_dev(relay_password)
    lower = root_filesystem(user_data_packages(stack.user_data))
    timings = {"root filesystem (cached or built)": time.monotonic() - started}
    directory = Path(tempfile.mkdtemp(prefix=f"mailstack-boot-{name}-", dir="/var/tmp"))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, directory, ignore_errors=True)
        network = Network.create(f"msb-{name}-{os.getpid()}")
        cleanup.callback(network.remove)
        fakes = network.call(fakes_module.start, directory / "fakes", aws_names(stack), NETWORK_ADDRESS,
                             network.outside)
        cleanup.callback(network.call, fakes.stop)
        fakes.faults.aws_down, fakes.faults.acme_failures = aws_down, acme_failures
        network.call(_setup_fakes, stack, fakes, relay_password, ssm_agent_package(directory))

        image = directory / "mail-volume.img"
        subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
        loop = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True,
                              check=True).stdout.strip()
        cleanup.callback(subprocess.run, ["losetup", "-d", loop], capture_output=True)
        device = volume_device(stack)
        machine = Machine(f"msb-{name}-{os.getpid()}", lower, directory / "machine",
                          network.path(network.host), {loop: device} if volume_attached else {})
        cleanup.callback(machine.remove)
        machine.mount()
        instance = "i-" + secrets.token_hex(8)
        machine.write("/var/lib/cloud/seed/nocloud/meta-data",
                      f"instance-id: {instance}\nlocal-hostname: {stack.host.split('.')[0]}\n")
        machine.write("/var/lib/cloud/seed/nocloud/user-data", stack.user_data)
        machine.write("/etc/hosts", "127.0.0.1 localhost\n::1 localhost\n"
                      f"{HOST_ADDRESS} {stack.host}\n"
                      f"{NETWORK_ADDRESS} {' '.join(aws_names(stack))} {fakes_module.ACME_NAME}\n")
        bundle_ca = (lower / "etc/ssl/certs/ca-certificates.crt").read_text() + fakes.ca.read_text()
        machine.write("/etc/ssl/certs/ca-certificates.crt", bundle_ca)
        machine.write("/root/.aws/credentials", "[default]\naws_access_key_id = testing\n"
                      "aws_secret_access_key = testing\n", 0o600)
        machine.write("/etc/systemd/system/mailstack-agent.timer.d/test-timing.conf", TIMER_DROP_IN)
        machine.write("/etc/systemd/system/mailstack-agent.service.d/test-timing.conf", SERVICE_DROP_IN)
        host = Host(stack, machine, network, fakes, directory, loop, relay_password, timings)
        if before_boot:
            before_boot(host)
        started = time.monotonic()
        machine.boot()
        host.timings["boot to systemd running"] = (machine.wait_booted(), time.monotonic() - started)
        host.timings["boot started"] = started
        yield host
        if os.environ.get("MAILSTACK_BOOT_JOURNAL"):
            Path(os.environ["MAILSTACK_BOOT_JOURNAL"] + f".{name}").write_text(host.machine.journal())
