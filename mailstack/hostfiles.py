"""The new host's file tree, rendered from ``templates/``.

One pure function turns settings and roster into ``path -> HostFile``; the
config bundle that the host pulls and the local runs both use it, so what is
tested is what is deployed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import jinja2

from mailstack.passwords import initial_password_hash
from mailstack.roster import GeneratePassword, Mailbox, Roster
from mailstack.settings import Settings

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
MAIL_ROOT = "/var/mail/vmail"
BUNDLE_FORMAT = 1

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)


@dataclass(frozen=True)
class HostFile:
    """A file on the host: its content, mode and owner."""

    content: str
    mode: str = "0644"
    owner: str = "root:root"


def render(template: str, **context) -> str:
    """Render one template from ``templates/``."""
    return _env.get_template(template).render(**context)


def password_hash(mailbox: Mailbox, seed: str) -> str:
    """The Dovecot password field of a mailbox: its roster hash or the generated one."""
    if isinstance(mailbox.password, GeneratePassword):
        return initial_password_hash(seed, mailbox.address, mailbox.password.version)
    return mailbox.password.dovecot()


def passwd_line(mailbox: Mailbox, seed: str) -> str:
    """One Dovecot passwd-file line: user:password:uid:gid:gecos:home:shell:extra."""
    extra = "" if mailbox.quota is None else f"userdb_quota_rule=*:storage={mailbox.quota_text}"
    return f"{mailbox.address}:{password_hash(mailbox, seed)}::::::{extra}"


def render_host_files(settings: Settings, roster: Roster, *, password_seed: str, mail_volume_id: str,
                      relay_password_parameter: str | None = None) -> dict[str, HostFile]:
    """Every file the bundle installs on the host, keyed by absolute path."""
    aliases = sorted((alias, box.address) for box in roster for alias in box.aliases)
    host_json = {
        "host": settings.host.name,
        "domains": settings.domains,
        "mail_root": MAIL_ROOT,
        "mail_volume_id": mail_volume_id,
        "relay": settings.relay.model_dump() if settings.relay else None,
        "relay_password_parameter": relay_password_parameter,
    }
    return {
        "/etc/mailstack/host.json": HostFile(json.dumps(host_json, indent=2, sort_keys=True) + "\n"),
        "/etc/dovecot/users": HostFile(
            "".join(passwd_line(box, password_seed) + "\n" for box in roster), "0640", "root:dovecot"
        ),
        "/etc/postfix/virtual_domains": HostFile("".join(f"{d} OK\n" for d in settings.domains)),
        "/etc/postfix/virtual_mailboxes": HostFile("".join(f"{box.address} OK\n" for box in roster)),
        "/etc/postfix/virtual_aliases": HostFile("".join(f"{alias} {target}\n" for alias, target in aliases)),
        "/etc/systemd/system/postfix@-.service.d/mailstack.conf": HostFile(render("host/needs-mail-volume.conf.j2", mail_root=MAIL_ROOT)),
        "/etc/systemd/system/dovecot.service.d/mailstack.conf": HostFile(render("host/needs-mail-volume.conf.j2", mail_root=MAIL_ROOT)),
    }


def bundle_document(files: dict[str, HostFile]) -> str:
    """The config bundle: one JSON document the host pulls from S3."""
    return json.dumps(
        {"format": BUNDLE_FORMAT, "files": {path: vars(f) for path, f in sorted(files.items())}},
        sort_keys=True,
        separators=(",", ":"),
    )


def bundle_version(document: str) -> str:
    """A short content hash: the bundle version shown to operators."""
    return hashlib.sha256(document.encode()).hexdigest()[:16]


def user_data(settings: Settings, *, bucket: str, key: str, region: str) -> str:
    """The EC2 user data: a small cloud-config that installs packages and pulls the bundle."""
    return render(
        "cloud-init/user-data.yaml.j2",
        host=settings.host.name,
        bootstrap=json.dumps({"bucket": bucket, "key": key, "region": region}, sort_keys=True),
        pull_script=(TEMPLATES / "host" / "mailstack-pull").read_text(),
        mail_root=MAIL_ROOT,
    )
