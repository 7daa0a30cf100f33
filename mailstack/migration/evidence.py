"""Evidence: what `mailstack verify --record`, `mailstack sync -s` and `mailstack status --record` measured.

Kept in ``stacks/evidence/<env>.json`` so that the cutover pull request carries
it and the Pulumi program's gates read it. Times are timezone-aware UTC.

Coverage is recorded per mailbox (the roster's address, lowercase), each with
its own time: a run updates only the mailboxes it covered and keeps the
others, so several partial runs (parts of the accounts file) add up to one
picture the gates can check against the whole roster.

A sync sharded over N machines (``mailstack sync -s ENV --shard K/N``) writes
each shard to its own file beside the evidence, ``<env>.sync-shard-K-of-N.json``:
machines never write the same file (no lost update on a shared disk, no merge
conflict in git), and :func:`load_evidence` reads them all back into
``sync_shards``. The gates count a sharded sync only when every shard of its
count has reported.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from mailstack.files import write_file
from mailstack.problems import InputError, Problem


class OutboundProof(BaseModel):
    """A probe message seen leaving the host: the delivery report its own Postfix returned for it."""

    model_config = ConfigDict(extra="forbid")
    route: str = Field(description="The stack's outbound declaration when verified: ses, relay or port25.")
    summary: str = Field(description="That declaration in words (relay host and port, SES region, the port-25 case).")
    probe: str = Field(description="The external address the probe was sent to.")
    action: str = Field(description="What the delivery report said: relayed or delivered.")
    remote_mta: str = Field("", description="The server that accepted the probe, as the report names it.")


class Verification(BaseModel):
    """A passing run of every verify check against the new host."""

    model_config = ConfigDict(extra="forbid")
    at: AwareDatetime
    host_name: str
    host_ip: str
    certificate_sha256: str
    checks: list[str] = Field(min_length=1)
    mailboxes: list[str] = Field(default_factory=list, description="Roster addresses whose every folder was compared "
                                                                   "with the old server and matched.")
    outbound: OutboundProof | None = Field(None, description="Mail seen leaving the host (verify's outbound check).")


class FinalSync(BaseModel):
    """Summary of the latest ``mailstack sync -s`` run (the gates read the per-mailbox ``synced``)."""

    model_config = ConfigDict(extra="forbid")
    at: AwareDatetime
    differences: int = Field(ge=0)


class MailboxSync(BaseModel):
    """The latest sync of one mailbox: when, what it still found to do, and whether it ended in sync."""

    model_config = ConfigDict(extra="forbid")
    at: AwareDatetime
    differences: int = Field(ge=0, description="Copies and flag updates made, plus 1 if it did not end in sync.")
    in_sync: bool
    partial: str | None = Field(None, description="Why the run did not cover the whole mailbox (--include, --since).")


class ShardSync(BaseModel):
    """The latest run of one shard of a sharded sync: its own file, written only by the machine that ran it."""

    model_config = ConfigDict(extra="forbid")
    shard: str = Field(pattern=r"^[1-9][0-9]*/[1-9][0-9]*$", description="K/N: shard K of N.")
    at: AwareDatetime = Field(description="When this shard last ran.")
    accounts: int = Field(ge=0, description="Accounts of the accounts file in this shard.")
    skipped: int = Field(ge=0, description="Accounts of the accounts file left to the other shards.")
    differences: int = Field(ge=0, description="What the run still found to do, plus account rows it could not run.")
    synced: dict[str, MailboxSync] = Field(default_factory=dict, description="Latest sync per roster address.")

    @field_validator("shard")
    @classmethod
    def _k_of_n(cls, value: str) -> str:
        index, count = (int(n) for n in value.split("/"))
        if index > count:
            raise ValueError(f"shard {value}: K must be between 1 and N")
        return value

    @property
    def index(self) -> int:
        return int(self.shard.split("/")[0])

    @property
    def count(self) -> int:
        return int(self.shard.split("/")[1])


class OldServerCheck(BaseModel):
    """When ``mailstack status --record`` last looked at one mailbox on the old server, and what it saw."""

    model_config = ConfigDict(extra="forbid")
    at: AwareDatetime
    newest: AwareDatetime | None = Field(None, description="Newest arrival since the cutover; None: nothing arrived.")


class Rollback(BaseModel):
    """The MX seen back on the old server after a cutover: mail that reached the new host meanwhile is there."""

    model_config = ConfigDict(extra="forbid")
    at: AwareDatetime = Field(description="When status first saw the old MX served again.")
    cutover_at: AwareDatetime = Field(description="When the new MX had first been served.")


class Evidence(BaseModel):
    """Everything the lifecycle gates decide on; each part is written by the command that measured it."""

    model_config = ConfigDict(extra="forbid")
    verification: Verification | None = None
    previous_mx_ttl: int | None = Field(None, ge=0, description="MX TTL served before the stack lowered it.")
    lowered_ttl_seen_at: AwareDatetime | None = Field(None, description="When every name server first served the lowered TTL.")
    new_mx_first_seen_at: AwareDatetime | None = Field(None, description="When the new MX was first served: starts the overlap clock.")
    old_server_last_mail_at: AwareDatetime | None = Field(None, description="Newest message that reached the old server after the cutover.")
    final_sync: FinalSync | None = None
    synced: dict[str, MailboxSync] = Field(default_factory=dict, description="Latest sync per roster address.")
    old_server_checked: dict[str, OldServerCheck] = Field(
        default_factory=dict, description="Latest look at the old server per roster address.")
    rollback: Rollback | None = None
    reverse_synced: dict[str, MailboxSync] = Field(
        default_factory=dict, description="Latest reverse sync (new host back to the old server) per roster address.")
    backup_at: AwareDatetime | None = None
    sync_shards: dict[str, ShardSync] = Field(
        default_factory=dict, description="Shards of a sharded sync by K/N, read from their own files; never "
                                          "written to this one.")


_PER_MAILBOX = ("synced", "old_server_checked", "reverse_synced")
_SHARD_FILE = "{stem}.sync-shard-{index}-of-{count}.json"


def mailbox_syncs(evidence: Evidence) -> dict[str, MailboxSync]:
    """The latest sync of each mailbox, whichever run made it: unsharded, or any shard."""
    latest = dict(evidence.synced)
    for shard in evidence.sync_shards.values():
        for address, run in shard.synced.items():
            if address not in latest or run.at > latest[address].at:
                latest[address] = run
    return latest


def shard_path(path: Path, shard: str) -> Path:
    """The file of shard ``K/N`` beside the evidence file ``path``."""
    index, count = shard.split("/")
    return path.with_name(_SHARD_FILE.format(stem=path.stem, index=index, count=count))


def evidence_path(project_dir: Path, env: str) -> Path:
    return project_dir / "stacks" / "evidence" / f"{env}.json"


def load_evidence(path: Path) -> Evidence | None:
    """The evidence file with the shard files beside it, or None when there is none yet.

    Every broken file is a problem of one InputError, each naming its file.
    """
    problems: list[Problem] = []
    evidence = _read(path, Evidence, problems) if path.exists() else None
    shards = {}
    for shard_file, key in _shard_files(path):
        shard = _read(shard_file, ShardSync, problems)
        if shard is not None and shard.shard != key:
            problems.append(Problem(str(shard_file), f"holds shard {shard.shard}, but its name says {key}: "
                                                     "a shard file is written only by mailstack sync --shard"))
        elif shard is not None:
            shards[key] = shard
    if problems:
        raise InputError(f"evidence {path}", problems)
    if shards:
        evidence = (evidence or Evidence()).model_copy(update={"sync_shards": shards})
    return evidence


def _read(path: Path, model, problems: list[Problem]):
    """``model`` read from ``path``, or None with a problem naming the file and, when known, the key."""
    try:
        return model.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        problems.append(Problem(str(path), f"not a valid evidence file: {key + ': ' if key else ''}{first['msg']}"))
    except (OSError, ValueError) as exc:
        problems.append(Problem(str(path), f"not a valid evidence file: {exc}".splitlines()[0]))
    return None


def _shard_files(path: Path) -> list[tuple[Path, str]]:
    """(file, K/N) of every shard file beside ``path``, in order."""
    if not path.parent.is_dir():
        return []
    pattern = re.compile(re.escape(path.stem) + r"\.sync-shard-([1-9][0-9]*)-of-([1-9][0-9]*)\.json")
    found = []
    for candidate in path.parent.iterdir():
        match = pattern.fullmatch(candidate.name)
        if match:
            found.append((int(match.group(2)), int(match.group(1)), candidate))
    return [(file, f"{index}/{count}") for count, index, file in sorted(found)]


def save_evidence(path: Path, evidence: Evidence) -> None:
    """Write the evidence file atomically (a reviewer reads it in the cutover pull request).

    The shards' parts stay in their own files: they are not written here.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # Readable by all: it holds no secret, and it is committed for reviewers.
    write_file(path, evidence.model_dump_json(indent=2, exclude_none=True, exclude={"sync_shards"}) + "\n",
               mode=0o644)


def verification_of(results, host_name: str, host_ip: str, at) -> Verification:
    """The evidence of a passing verify run: when, which host and address, its certificate, every check run."""
    from mailstack.checks.mailboxes import CHECK as MAILBOX_CHECK
    from mailstack.checks.outbound import CHECK as OUTBOUND_CHECK

    certificate = next(r for r in results if r.check == "certificate")
    compared = next((r.facts.get("addresses", []) for r in results if r.check == MAILBOX_CHECK), [])
    # Only a passing outbound check carries the proof; anything else records none (the gate then refuses).
    left = next((r.facts["outbound"] for r in results if r.check == OUTBOUND_CHECK and r.facts.get("outbound")), None)
    return Verification(at=at, host_name=host_name, host_ip=host_ip, certificate_sha256=certificate.facts["sha256"],
                        checks=[r.check for r in results], mailboxes=compared,
                        outbound=OutboundProof(**left) if left else None)


def record(path: Path, **parts) -> Evidence:
    """Merge measured parts into the evidence file (other parts are kept) and return the result.

    The per-mailbox maps (``synced``, ``old_server_checked``, ``reverse_synced``)
    are merged entry by entry: a run replaces only the mailboxes it covered.
    ``sync_shards`` go to their own files (:func:`shard_path`), each merged
    the same way with what that shard recorded before.
    """
    for key, shard in parts.pop("sync_shards", {}).items():
        _record_shard(shard_path(path, key), shard)
    evidence = load_evidence(path) or Evidence()
    if not parts:
        return evidence
    for name in _PER_MAILBOX:
        if name in parts:
            parts[name] = {**getattr(evidence, name), **parts[name]}
    evidence = evidence.model_copy(update=parts)
    evidence = Evidence.model_validate(evidence.model_dump())
    save_evidence(path, evidence)
    return evidence


def _record_shard(path: Path, shard: ShardSync) -> None:
    problems: list[Problem] = []
    earlier = _read(path, ShardSync, problems) if path.exists() else None
    if problems:
        raise InputError(f"evidence {path}", problems)
    if earlier is not None and earlier.shard == shard.shard:
        shard = shard.model_copy(update={"synced": {**earlier.synced, **shard.synced}})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, ShardSync.model_validate(shard.model_dump()).model_dump_json(indent=2, exclude_none=True) + "\n",
               mode=0o644)
