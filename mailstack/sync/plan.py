"""Decisions of a sync, as pure functions: folder names, what to copy, which flags to change.

The engine (:mod:`mailstack.sync.engine`) feeds them what the servers and the
state say and carries out what they return.
"""

from __future__ import annotations

import enum
from array import array
import fnmatch
import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from typing import Iterable, Iterator, Mapping, Sequence

from mailstack.imap import FolderStatus, Listed, Message, Namespace, utf7
from mailstack.imap.wire import parse_internaldate, uid_set
from mailstack.sync import names


# ---------------------------------------------------------------- folders


@dataclass(frozen=True)
class FolderRules:
    """Which folders to sync and how to rename them.

    Names here are Unicode, without the namespace prefix, with ``/`` between
    levels (``INBOX``, ``Sent``, ``Archive/2024``), whatever the servers use.
    ``renames`` maps a folder (and its subfolders) to a new name.
    """

    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    renames: tuple[tuple[str, str], ...] = ()
    map_invalid: bool = False  # a name the target refuses is mapped (names.mapped) instead of reported

    def missing_explicit(self, found: Iterable[str]) -> list[str]:
        """Include patterns without wildcards that name no folder: the user expects those folders."""
        present = set(found)
        return [p for p in self.include if not _has_wildcard(p) and p not in present]


def parse_rename(text: str) -> tuple[str, str]:
    """``"Sent Items=Sent"`` -> ("Sent Items", "Sent"); ValueError says what is wrong."""
    old, sep, new = text.partition("=")
    old, new = old.strip().strip("/"), new.strip().strip("/")
    if not sep or not old or not new:
        raise ValueError(f"{text!r} is not a folder rename OLD=NEW (for example 'Sent Items=Sent')")
    return old, new


class LeftOut(str, enum.Enum):
    """Why a folder is left out by the operator's own rules (not a problem: nothing to report)."""

    NOT_INCLUDED = "not included"
    EXCLUDED = "excluded"


@dataclass(frozen=True)
class FolderPlan:
    """A source folder and where it goes, or why it is left out."""

    source: str            # wire name on the source
    name: str              # Unicode name without prefix, "/" between levels
    target: str | None     # wire name on the target; None when skipped
    reason: str = ""       # why skipped: a LeftOut, or a problem to report
    mapped_from: str = ""  # the name the target refused, when --map-invalid mapped it (Unicode, "/")

    @property
    def left_out(self) -> bool:
        """Skipped by the operator's --include/--exclude: not a problem."""
        return self.target is None and self.reason in tuple(LeftOut)


def normal_name(wire_name: str, namespace: Namespace) -> str:
    """Wire name -> Unicode name without the namespace prefix, ``/`` between levels."""
    if wire_name.upper() == "INBOX":
        return "INBOX"
    name = wire_name
    if namespace.prefix and name.startswith(namespace.prefix):
        name = name[len(namespace.prefix):]
    return "/".join(utf7.decode(part) for part in name.split(namespace.delimiter))


def wire_name(name: str, namespace: Namespace) -> str:
    """Unicode ``/`` name -> the server's wire name (prefix, delimiter, modified UTF-7)."""
    if name.upper() == "INBOX":
        return "INBOX"
    return namespace.prefix + namespace.delimiter.join(utf7.encode(part) for part in name.split("/"))


def renamed(name: str, renames: Sequence[tuple[str, str]]) -> str:
    """Apply the first rename whose old name is the folder or one of its parents."""
    for old, new in renames:
        if name == old:
            return new
        if name.startswith(old + "/"):
            return new + name[len(old):]
    return name


def plan_folder(source: str, source_ns: Namespace, target_ns: Namespace, rules: FolderRules,
                naming: names.TargetNaming | None = None, existing: frozenset[str] = frozenset()) -> FolderPlan:
    """Where one source folder goes on the target, or why it is skipped.

    ``naming`` holds the target's rules for names (:func:`names.naming_for`);
    without it only its hierarchy separator is checked. A name in
    ``existing`` (wire names the target lists) is taken as it is: the target
    evidently holds it.
    """
    name = normal_name(source, source_ns)
    if not any(fnmatch.fnmatchcase(name, p) for p in rules.include):
        return FolderPlan(source, name, None, LeftOut.NOT_INCLUDED)
    if any(fnmatch.fnmatchcase(name, p) for p in rules.exclude):
        return FolderPlan(source, name, None, LeftOut.EXCLUDED)
    naming = naming or names.separator_only(target_ns.delimiter)
    new = renamed(name, rules.renames)
    refused = names.problem(new.split("/"), naming)
    if refused is None or wire_name(new, target_ns) in existing:
        return FolderPlan(source, name, wire_name(new, target_ns))
    automatic = names.mapped(new.split("/"), naming) if rules.map_invalid else None
    if automatic is not None:
        return FolderPlan(source, name, wire_name("/".join(automatic), target_ns), mapped_from=new)
    return FolderPlan(source, name, None, f"{refused}: {names.remedy(name, new, naming)}")


def plan_folders(sources: Iterable[str], source_ns: Namespace, target_ns: Namespace, rules: FolderRules,
                 naming: names.TargetNaming | None = None, existing: Iterable[str] = ()) -> list[FolderPlan]:
    """Every source folder planned; an automatic mapping that lands on another folder's target is refused.

    Two folders an operator's ``--map`` sends to one target are merged on
    purpose; a mapping made by ``--map-invalid`` never merges anything.
    """
    existing = frozenset(existing)
    plans = [plan_folder(s, source_ns, target_ns, rules, naming, existing) for s in sources]
    plain = {p.target for p in plans if p.target is not None and not p.mapped_from}
    taken: set[str] = set()
    out = []
    for folder in plans:
        if folder.mapped_from and (folder.target in plain or folder.target in taken):
            folder = FolderPlan(folder.source, folder.name, None,
                                f"--map-invalid would map it to {normal_name(folder.target, target_ns)!r}, which "
                                f"another folder already takes: rename it with --map")
        elif folder.mapped_from:
            taken.add(folder.target)
        out.append(folder)
    return out


def _has_wildcard(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


# ---------------------------------------------------------------- messages


@dataclass(frozen=True)
class FolderMark:
    """Both sides of a folder as the last complete run of it left them, and the ``since`` cutoff it ran with."""

    source: FolderStatus
    target: FolderStatus
    since: int | None = None


@dataclass
class FolderState:
    """What the last runs recorded for one source folder."""

    source_uidvalidity: int = 0
    target_uidvalidity: int = 0
    # source UID -> (target UID, the source flags last carried over)
    synced: dict[int, tuple[int, frozenset[str]]] = field(default_factory=dict)
    # highest target UID already examined (copied by us or found there)
    target_seen: int = 0
    # both sides as the last complete run left them, if any: a folder found so again is not listed
    complete: FolderMark | None = None
    # target UIDs examined that are no copy of a source message (mail delivered to the target itself): looked
    # at again when new source messages come, since one may be its copy (a rollback's reverse sync, a forward)
    unpaired: set[int] = field(default_factory=set)


def still_valid(state: FolderState, source_uidvalidity: int, target_uidvalidity: int) -> FolderState:
    """The state, or a fresh one when either side's UIDVALIDITY changed (UIDs mean nothing any more)."""
    if state.source_uidvalidity == source_uidvalidity and state.target_uidvalidity == target_uidvalidity:
        return state
    return FolderState(source_uidvalidity, target_uidvalidity)


def why_look(mark: FolderMark | None, source: FolderStatus, target: FolderStatus, since: int | None) -> str:
    """Why a folder must be listed and compared this run, or "" when nothing a run could act on changed since the
    last complete run of it (it is skipped: one STATUS per side told).

    Sound by construction: any change a run could act on moves one of the
    values compared. A forward run acts only on what changed on the source:
    a new or removed message moves UIDNEXT or MESSAGES; a flag change moves
    only HIGHESTMODSEQ, so a source without CONDSTORE is always listed
    (STATUS alone cannot show a flag change there). On the target only a new
    UIDVALIDITY matters (the folder was made again: every message is copied
    again); mail delivered there, moved out or re-flagged is never carried
    back, so it does not make the source be listed (after the MX change every
    INBOX gets new mail there, run after run). A run with an earlier
    ``since`` than the last one must look for the older mail.
    """
    if mark is None:
        return "no complete run of it recorded"
    if mark.since is not None and (since is None or since < mark.since):
        return "this run copies older mail than the last one"
    if mark.target.uidvalidity != target.uidvalidity:
        return "the folder was made again on the target (new UIDVALIDITY)"
    if source.highestmodseq is None or mark.source.highestmodseq is None:
        return "the source does not offer CONDSTORE: only a listing shows flag changes"
    if (mark.source.uidvalidity, mark.source.uidnext, mark.source.messages) != (
            source.uidvalidity, source.uidnext, source.messages):
        return "messages added or removed on the source"
    if mark.source.highestmodseq != source.highestmodseq:
        return "messages changed on the source"
    return ""


def to_copy(listed: Iterable[Listed], state: FolderState) -> list[Listed]:
    """Source messages not yet on the target, in UID order."""
    return sorted((m for m in listed if m.uid not in state.synced), key=lambda m: m.uid)


def flag_changes(listed: Iterable[Listed], state: FolderState) -> dict[int, frozenset[str]]:
    """{source UID: new flags} for copied messages whose flags changed on the source since last carried over.

    Only source-side changes are carried: a flag a user set on the new server is
    left alone unless the same message changed on the old one too.
    """
    return {m.uid: m.flags for m in listed if m.uid in state.synced and state.synced[m.uid][1] != m.flags}


def group_by_flags(changes: Mapping[int, frozenset[str]], state: FolderState) -> dict[frozenset[str], list[int]]:
    """Target UIDs grouped by the exact flags to set: one STORE per group."""
    groups: dict[frozenset[str], list[int]] = defaultdict(list)
    for uid, flags in changes.items():
        groups[flags].append(state.synced[uid][0])
    return dict(groups)


# A batch of messages (one UID FETCH, one MULTIAPPEND) holds at most this many bytes, or one larger message...
BATCH_BYTES = 2 * 1024 * 1024
# ...and at most this many messages: small messages go in large batches, because the new server pays for each
# append transaction (Dovecot scans a Maildir folder again for each: 100,000 messages of 2 KB took 70 s into
# one folder in batches of 250, 55 s in batches of 1,000, and the time per 10,000 no longer grew with the folder).
BATCH_COUNT = 1000
# UID ranges in one batch (its UID FETCH names them): at most 250 keeps the command line far under the 8,192
# octets servers are asked to take (RFC 7162, section 4), however sparse the UIDs.
MAX_RUNS = 250


def batches(messages: Sequence[Listed], *, max_bytes: int, max_count: int) -> list[list[Listed]]:
    """Messages grouped so a batch holds at most ``max_bytes`` (or one larger message), ``max_count`` messages
    and :data:`MAX_RUNS` ranges of UIDs.

    Bounds memory: at most a few batches are held at once, however large the folder.
    """
    groups = _groups([m.size for m in messages], [m.uid for m in messages], max_bytes, max_count)
    return [list(messages[start:end]) for start, end in groups]


def _groups(sizes: Sequence[int], uids: Sequence[int], max_bytes: int, max_count: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each batch of :func:`batches`, in order, as they are asked for."""
    start, size, runs = 0, 0, 0
    for index, message_size in enumerate(sizes):
        gap = index == start or uids[index] != uids[index - 1] + 1
        if index > start and (size + message_size > max_bytes or index - start >= max_count
                              or gap and runs >= MAX_RUNS):
            yield start, index
            start, size, runs, gap = index, 0, 0, True
        size += message_size
        runs += gap
    if start < len(sizes):
        yield start, len(sizes)


@dataclass
class Pending:
    """The messages a folder still needs copied, compact: UIDs and announced sizes in two arrays (16 bytes a
    message), their flags (one shared set per combination) and internal dates as listed; so a folder of 100,000
    holds no record per message while it is copied, and the bodies are fetched without their metadata again."""

    uids: array
    sizes: array
    flags: list[frozenset[str]]
    dates: list[str]

    @classmethod
    def of(cls, messages: Iterable[Listed]) -> "Pending":
        uids, sizes, flags, dates = array("Q"), array("Q"), [], []
        for message in messages:
            uids.append(message.uid)
            sizes.append(message.size)
            flags.append(message.flags)
            dates.append(message.internaldate)
        return cls(uids, sizes, flags, dates)

    def __len__(self) -> int:
        return len(self.uids)

    @property
    def bytes(self) -> int:
        return sum(self.sizes)

    def batches(self, *, max_bytes: int, max_count: int) -> Iterator[tuple[list[int], int, dict]]:
        """The UIDs of each batch (grouped as :func:`batches` groups), the bytes announced for it and
        {uid: (flags, internal date)} as listed, made as they are asked for."""
        for start, end in _groups(self.sizes, self.uids, max_bytes, max_count):
            uids = list(self.uids[start:end])
            yield uids, sum(self.sizes[start:end]), dict(zip(uids, zip(self.flags[start:end], self.dates[start:end])))


def within_size(messages: Iterable[Listed], largest: int) -> tuple[list[Listed], list[str]]:
    """The messages not announced larger than ``largest``, and a problem for each that is."""
    kept, problems = [], []
    for message in messages:
        if message.size > largest:
            problems.append((message.uid, f" left out: {message.size} bytes (RFC822.SIZE), over the largest message "
                                          f"copied ({largest} bytes: --max-message-size)"))
        else:
            kept.append(message)
    return kept, grouped_problems(problems)


# ---------------------------------------------------------------- what a server answered


def grouped_problems(problems: Iterable[tuple[int, str]]) -> list[str]:
    """One line per distinct problem, naming every UID it concerns: ``messages UID 3:9,12 left out: ...``.

    A server that sends the same bad flag on a whole folder gives one line per
    batch, not one per message.
    """
    grouped: dict[str, list[int]] = defaultdict(list)
    for uid, problem in problems:
        grouped[problem].append(uid)
    return [f"{'message' if len(uids) == 1 else 'messages'} UID {uid_set(uids)}{problem}"
            for problem, uids in grouped.items()]


def unanswered(asked: Iterable[int], answered: Iterable[Listed | Message], why: str) -> list[str]:
    """The UIDs asked for and not in the answer: the folder is not in sync."""
    got = {m.uid for m in answered}
    return grouped_problems((uid, f" left out: {why}") for uid in asked if uid not in got)


def remarks(messages: Iterable[Listed | Message]) -> list[str]:
    """What was dropped of messages' metadata (invalid flags, a date that is not one)."""
    return grouped_problems((m.uid, f": {problem}") for m in messages for problem in m.problems)


def check_answer(asked: Sequence[int], fetched: Sequence[Message]) -> tuple[list[Message], list[str]]:
    """The messages of a FETCH answer that can be stored, and the problems of the others asked for.

    A UID asked for and not answered is missing; a body the client did not
    keep (too large) is left out; a message with invalid flags or date is
    stored without them, and said.
    """
    complete = [m for m in fetched if not m.not_kept]
    problems = (unanswered(asked, fetched, "asked for, and not sent by the source")
                + grouped_problems((m.uid, f" left out: {m.not_kept}") for m in fetched if m.not_kept))
    return complete, problems + remarks(complete)


# ---------------------------------------------------------------- recognising messages already on the target


def quick_key(message: Listed) -> tuple[int, int]:
    """Size and internal date: cheap, compared before any header is fetched (-1 for a date that is not one)."""
    moment = parse_internaldate(message.internaldate) if message.internaldate else None
    return message.size, int(moment.timestamp()) if moment else (-1 if message.internaldate else 0)


def fingerprint(message: Listed, header: bytes) -> tuple[int, int, str]:
    """Size, internal date and a digest of the header section; no Message-ID needed."""
    return (*quick_key(message), hashlib.sha256(header).hexdigest())


def candidates(unsynced: Iterable[Listed], unknown: Iterable[Listed]) -> tuple[list[int], list[int]]:
    """Source and target UIDs worth comparing by header: same size and internal date on both sides."""
    unknown = list(unknown)
    keys = {quick_key(m) for m in unknown}
    chosen = [(m.uid, key) for m in unsynced if (key := quick_key(m)) in keys]
    source_keys = {key for _, key in chosen}
    target = [m.uid for m in unknown if quick_key(m) in source_keys]
    return [uid for uid, _ in chosen], target


def match_copies(source: Mapping[int, tuple], target: Mapping[int, tuple]) -> dict[int, int]:
    """Pair source and target UIDs with equal fingerprints, one to one, in UID order.

    Identical messages (same bytes and date) pair up by count, so two equal
    source messages need two target copies: no loss and no duplicate.
    """
    free: dict[tuple, list[int]] = defaultdict(list)
    for uid in sorted(target, reverse=True):  # each pool in descending order: the lowest UID is popped from the end
        free[target[uid]].append(uid)
    pairs = {}
    for uid in sorted(source):
        pool = free.get(source[uid])
        if pool:
            pairs[uid] = pool.pop()
    return pairs


def since_day(today: date, since: date | None, max_age_days: int | None) -> date | None:
    """The earliest internal date to copy: the later of --since and today minus --max-age."""
    days = [d for d in (since, date.fromordinal(today.toordinal() - max_age_days) if max_age_days else None) if d]
    return max(days) if days else None
