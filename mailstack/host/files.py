"""The new host's file tree, rendered from ``templates/``.

One pure function turns settings and roster into ``path -> HostFile``; the
config bundle that the host pulls and the local runs both use it, so what is
tested is what is deployed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path

import jinja2

from mailstack.clients.autodiscover import autodiscover_xml
from mailstack.clients.values import mail_servers
from mailstack.host import records
from mailstack.stack.passwords import initial_password_hash
from mailstack.stack.roster import GeneratePassword, Mailbox, Roster
from mailstack.stack.settings import DEFAULT_DKIM_SELECTOR, Relay, Settings

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
MAIL_ROOT = "/var/mail/vmail"
BUNDLE_FORMAT = 1
AGENT = "/usr/local/sbin/mailstack-agent"

VMAIL_UID = 5000
"""uid and gid of the ``vmail`` user owning every Maildir (fixed, so Dovecot can pin ``first_valid_uid``)."""

DKIM_SELECTOR = DEFAULT_DKIM_SELECTOR
"""The default DKIM selector (``mailstack:dns.dkim_selector`` sets the stack's): the key is published at
``<selector>._domainkey.<domain>``. A key rotation publishes the new key under a new selector first, then switches."""

DKIM_PORT = 8891
"""OpenDKIM's milter port, on a loopback address only."""

FROM_MILTER_PORT = 8892
"""The From check milter's port (templates/postfix/from-milter), on a loopback address only."""

AUTH_POLICY_PORT = 8893
"""Dovecot's authentication policy server's port (templates/dovecot/auth-policy), on a loopback address only."""

QUOTA_STATUS_PORT = 8894
"""Dovecot's quota-status service's port, on a loopback address only (asked by templates/postfix/quota-policy)."""

GUARDS = {
    # systemd unit: (script in templates/, what it guards)
    "mailstack-from-milter": ("postfix/from-milter", "postfix@-"),
    "mailstack-auth-policy": ("dovecot/auth-policy", "dovecot"),
}
"""The host's own small daemons, each started with (systemd ``Wants=``) the service it guards."""
GUARD_DIR = "/usr/local/lib/mailstack"
GUARD_SCRIPTS = ("postfix/from-milter", "postfix/quota-policy", "dovecot/auth-policy")
"""The host's own scripts, installed in GUARD_DIR; quota-policy is run by Postfix itself (spawn)."""

TLS_CIPHERS = ":".join((
    # Mozilla's "intermediate" TLS 1.2 suites without DHE: forward secret, AEAD only.
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
))
MESSAGE_SIZE_LIMIT = 50 * 1024 * 1024

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)


@dataclass(frozen=True)
class HostFile:
    """A file on the host: its content, mode and owner."""

    content: str
    mode: str = "0644"
    owner: str = "root:root"


@dataclass(frozen=True)
class Placement:
    """Where the rendered host runs. The defaults are production; a local run changes only these.

    ``root``: directory every configured path lives under ("" on the host;
    a temporary directory on a local run, so nothing of the machine's own
    /etc or /var is touched). ``address``: the one address the services
    listen on (None: every interface; a local run has only its loopback
    address). ``log_dir``: where the daemons write logs (None: syslog, as on
    the host; no syslog runs on a local run). ``relayhost``: where outgoing
    mail goes instead of the settings' relay (a local run has no DNS and no
    internet, so it sends to a sink it runs itself).
    The services run as the same users (postfix, dovecot, dovenull, vmail,
    opendkim) in both places: the local run is started as root, as on the host.
    """

    root: str = ""
    address: str | None = None
    log_dir: str | None = None
    relayhost: str | None = None

    @property
    def instance(self) -> str:
        """Dovecot's instance name: local runs get their own, so several can run side by side."""
        return "dovecot" if self.address is None else f"mailstack-{self.address}"


PRODUCTION = Placement()


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


def _url_host(address: str) -> str:
    """An address as the host part of ``host:port`` (IPv6 in brackets)."""
    return f"[{address}]" if ":" in address else address


def host_context(settings: Settings, *, dkim: bool, dkim_selector: str | None = None,
                 relay_password_parameter: str | None = None, relay: Relay | None = None,
                 placement: Placement = PRODUCTION) -> dict:
    """The values every host template is rendered with; ``placement`` moves a local run.

    ``dkim_selector`` defaults to the stack's (``mailstack:dns.dkim_selector``), the one its records publish.
    ``relay``: where outgoing mail goes when it is not the settings' own relay (SES, whose SMTP user the
    stack makes: :meth:`mailstack.stack.settings.SesRelay.relay`)."""
    dkim_selector = dkim_selector or settings.dns.dkim_selector
    root, host = placement.root, settings.host.name
    relay = relay or settings.relay
    if placement.relayhost:
        relay, relayhost = None, placement.relayhost
    else:
        relayhost = f"[{relay.host}]:{relay.port}" if relay else None
    loopback = placement.address or "127.0.0.1"
    web_names = records.certificate_names(settings)
    return {
        "host": host,
        "primary_domain": settings.primary_domain,
        "domains": settings.domains,
        "contact": settings.contact,
        "postmaster": f"postmaster@{settings.primary_domain}",
        "root": root,
        "inet_interfaces": placement.address or "all",
        "inet_protocols": "all" if placement.address is None else ("ipv6" if ":" in placement.address else "ipv4"),
        "dovecot_listen": placement.address or "*, ::",
        "instance": placement.instance,
        "log_dir": placement.log_dir,
        "postfix_queue": f"{root}/var/spool/postfix",
        "mail_root": root + MAIL_ROOT,
        "vmail_uid": VMAIL_UID,
        "tls_cert": f"{root}/etc/letsencrypt/live/{host}/fullchain.pem",
        "tls_key": f"{root}/etc/letsencrypt/live/{host}/privkey.pem",
        "tls_ciphers": TLS_CIPHERS,
        "message_size_limit": MESSAGE_SIZE_LIMIT,
        "dkim": dkim,
        "dkim_selector": dkim_selector,
        "dkim_key_path": f"/etc/opendkim/keys/{dkim_selector}.private",
        "dkim_socket": f"inet:{DKIM_PORT}@{loopback}",
        "dkim_milter": f"inet:{loopback}:{DKIM_PORT}",
        "from_milter_socket": f"inet:{FROM_MILTER_PORT}@{loopback}",
        "from_milter": f"inet:{loopback}:{FROM_MILTER_PORT}",
        "auth_policy_listen": f"{_url_host(loopback)}:{AUTH_POLICY_PORT}",
        "quota_status": f"{_url_host(loopback)}:{QUOTA_STATUS_PORT}",
        "quota_status_address": loopback,
        "quota_status_port": QUOTA_STATUS_PORT,
        "guard_dir": root + GUARD_DIR,
        "relay": relay,
        "relayhost": relayhost,
        "relay_password_parameter": relay_password_parameter,
        "web": settings.web,
        "web_names": web_names,
        "web_listen": [placement.address] if placement.address else ["*", "[::]"],
        "certificate_names": web_names,
        "servers": mail_servers(host),
    }


def render_host_files(settings: Settings, roster: Roster, *, password_seed: str, mail_volume_id: str,
                      relay_password_parameter: str | None = None, dkim_private_key: str | None = None,
                      dkim_selector: str | None = None, relay: Relay | None = None,
                      placement: Placement = PRODUCTION) -> dict[str, HostFile]:
    """Every file the bundle installs on the host, keyed by its path on the host.

    ``dkim_private_key`` is the PEM of the DKIM signing key (publish
    :func:`mailstack.host.records.dkim_value` of its public half at ``<dkim_selector>._domainkey.<domain>``);
    without it no DKIM files are rendered and mail goes out unsigned.
    ``placement`` is for local runs: the keys stay the host's paths, the
    contents point under ``placement.root`` (see :class:`Placement`).
    ``relay`` replaces the settings' relay (SES: see :func:`host_context`); its password is
    read from the SSM parameter ``relay_password_parameter`` on the host.
    """
    relay = relay or settings.relay
    ctx = host_context(settings, dkim=dkim_private_key is not None, dkim_selector=dkim_selector,
                       relay_password_parameter=relay_password_parameter, relay=relay, placement=placement)
    # Dovecot insists on a hash nonce for its policy requests; no password hash is sent, but keep it unguessable.
    ctx["auth_policy_nonce"] = hmac.new(password_seed.encode(), b"dovecot auth policy nonce", hashlib.sha256).hexdigest()
    aliases = sorted((alias, box.address) for box in roster for alias in box.aliases)
    # Who may send as which address on 587/465: each mailbox as itself and as its aliases.
    logins = sorted([(box.address, box.address) for box in roster] + aliases)
    host_json = {
        "host": settings.host.name,
        "domains": settings.domains,
        "mail_root": ctx["mail_root"],
        "mail_volume_id": mail_volume_id,
        "relay": relay.model_dump() if relay else None,
        "relay_password_parameter": relay_password_parameter,
        "certificate_names": ctx["certificate_names"],
    }
    files = {
        "/etc/mailstack/host.json": HostFile(json.dumps(host_json, indent=2, sort_keys=True) + "\n"),
        "/etc/dovecot/users": HostFile(
            "".join(passwd_line(box, password_seed) + "\n" for box in roster), "0640", "root:dovecot"
        ),
        "/etc/dovecot/dovecot.conf": HostFile(render("dovecot/dovecot.conf.j2", **ctx)),
        "/etc/postfix/main.cf": HostFile(render("postfix/main.cf.j2", **ctx)),
        "/etc/postfix/master.cf": HostFile(render("postfix/master.cf.j2", **ctx)),
        "/etc/postfix/virtual_domains": HostFile("".join(f"{d} OK\n" for d in settings.domains)),
        "/etc/postfix/virtual_mailboxes": HostFile("".join(f"{box.address} OK\n" for box in roster)),
        "/etc/postfix/virtual_aliases": HostFile("".join(f"{alias} {target}\n" for alias, target in aliases)),
        "/etc/postfix/sender_logins": HostFile("".join(f"{sender} {login}\n" for sender, login in logins)),
        "/etc/systemd/system/postfix@-.service.d/mailstack.conf": HostFile(render("host/needs-mail-volume.conf.j2", **ctx)),
        "/etc/systemd/system/dovecot.service.d/mailstack.conf": HostFile(render("host/needs-mail-volume.conf.j2", **ctx)),
        # The host agent ships in the bundle, so the bundle updates it (it replaces itself, then runs).
        AGENT: HostFile(_host_template("mailstack-agent"), "0755"),
        "/etc/systemd/system/mailstack-agent.service": HostFile(_host_template("mailstack-agent.service")),
        "/etc/systemd/system/mailstack-agent.timer": HostFile(_host_template("mailstack-agent.timer")),
        "/etc/letsencrypt/cli.ini": HostFile(render("certbot/cli.ini.j2", **ctx)),
        "/etc/letsencrypt/renewal-hooks/deploy/mailstack-reload": HostFile(render("certbot/deploy-hook.j2", **ctx), "0755"),
        "/etc/apt/apt.conf.d/20auto-upgrades": HostFile(render("apt/20auto-upgrades.j2", **ctx)),
        "/etc/apt/apt.conf.d/52mailstack-unattended-upgrades": HostFile(render("apt/52mailstack-unattended-upgrades.j2", **ctx)),
        "/usr/local/sbin/mailstack-pop3-uidls": HostFile(render("host/mailstack-pop3-uidls.j2", **ctx), "0755"),
    }
    files.update(guard_files(ctx))
    if dkim_private_key is not None:
        files["/etc/opendkim.conf"] = HostFile(render("opendkim/opendkim.conf.j2", **ctx))
        files["/etc/default/opendkim"] = HostFile(render("opendkim/default.j2", **ctx))
        files[ctx["dkim_key_path"]] = HostFile(dkim_private_key, "0600", "opendkim:opendkim")
    if settings.web:
        files["/etc/nginx/conf.d/mailstack.conf"] = HostFile(render("nginx/mailstack.conf.j2", **ctx))
        files["/var/www/mailstack/.well-known/mta-sts.txt"] = HostFile(records.mta_sts_policy(settings))
        files["/var/www/mailstack/mail/config-v1.1.xml"] = HostFile(render("nginx/config-v1.1.xml.j2", **ctx))
        files["/var/www/mailstack/autodiscover/autodiscover.xml"] = HostFile(autodiscover_xml(ctx["servers"]))
    return files


def guard_files(ctx: dict) -> dict[str, HostFile]:
    """The From check milter and the authentication policy server: scripts, units, and the drop-ins that start them."""
    files = {f"{GUARD_DIR}/{script.split('/')[1]}": HostFile((TEMPLATES / script).read_text(), "0755")
             for script in GUARD_SCRIPTS}
    for unit, (script, guarded) in GUARDS.items():
        files[f"/etc/systemd/system/{unit}.service"] = HostFile(render(f"{script.split('/')[0]}/{unit}.service.j2", **ctx))
        files[f"/etc/systemd/system/{guarded}.service.d/{unit}.conf"] = HostFile(
            f"# Rendered by mailstack: {guarded} starts {unit} with it.\n[Unit]\nWants={unit}.service\nAfter={unit}.service\n")
    return files


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


def _host_template(name: str) -> str:
    """A file of ``templates/host/`` as it is (the agent and its units are not Jinja templates)."""
    return (TEMPLATES / "host" / name).read_text()


def user_data(settings: Settings, *, bucket: str, key: str, region: str) -> str:
    """The EC2 user data: a small cloud-config that installs the packages and starts the host agent.

    It carries only a bootstrap in place of the agent: its first run installs
    the agent shipped in the bundle, which from then on updates itself.
    """
    return render(
        "cloud-init/user-data.yaml.j2",
        host=settings.host.name,
        bootstrap=json.dumps({"bucket": bucket, "key": key, "region": region}, sort_keys=True),
        agent_bootstrap=_host_template("mailstack-agent-bootstrap"),
        agent_service=_host_template("mailstack-agent.service"),
        agent_timer=_host_template("mailstack-agent.timer"),
        mail_root=MAIL_ROOT,
        vmail_uid=VMAIL_UID,
    )
