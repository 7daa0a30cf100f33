"""``sync --verify``: every copied message's flags and keywords compared on both sides, and the target repaired.

A plain sync trusts its state for the target: it carries flag changes made
on the old server, and never looks at what the new server still holds. A
target can lose flags on its own: Dovecot's Maildir keeps at most 26
keywords per folder in the file names, the rest only in its index, so an
index rebuilt after a loss drops them. The full comparison lists every
message on both sides, pairs them through the state's UID pairs (copies a
lost state left unpaired were recognised by the sync just before), and adds
on the target what it lacks. Flags found only on the target are reported
and left alone: a user may have set them on the new server.

:func:`flag_differences` decides (pure); :func:`verify_folder` asks the servers and repairs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Mapping

from mailstack.imap import ImapConnection, Listed
from mailstack.sync.plan import FolderState


@dataclass(frozen=True)
class FlagDifference:
    """One copied message whose flags differ: what the target lacks, and what only it has."""

    source_uid: int
    target_uid: int
    missing: frozenset[str]
    extra: frozenset[str]


def flag_differences(source: Mapping[int, frozenset[str]], target: Mapping[int, frozenset[str]],
                     pairs: Mapping[int, int]) -> tuple[list[FlagDifference], list[int]]:
    """(the paired messages whose flags differ, source UIDs whose copy is no longer on the target).

    ``source`` and ``target`` map UIDs to flags; ``pairs`` source UID -> target UID.
    """
    differences, gone = [], []
    for source_uid, flags in sorted(source.items()):
        target_uid = pairs.get(source_uid)
        if target_uid is None:
            continue
        if target_uid not in target:
            gone.append(source_uid)
            continue
        missing, extra = flags - target[target_uid], target[target_uid] - flags
        if missing or extra:
            differences.append(FlagDifference(source_uid, target_uid, missing, extra))
    return differences, gone


def repairs(differences: list[FlagDifference], target: Mapping[int, frozenset[str]]) -> dict[frozenset[str], list[int]]:
    """Target UIDs grouped by the exact flags they must end with: theirs plus what they lack (one STORE each)."""
    groups: dict[frozenset[str], list[int]] = {}
    for difference in differences:
        if difference.missing:
            groups.setdefault(target[difference.target_uid] | difference.missing, []).append(difference.target_uid)
    return groups


def describe(differences: list[FlagDifference], gone: list[int], *, repaired: bool) -> list[str]:
    """What the comparison found, one line per kind, each flag with the number of messages concerned."""
    lines = []
    lacking = [d for d in differences if d.missing]
    if lacking:
        verb = "repaired" if repaired else "to repair"
        lines.append(f"{len(lacking)} message(s) lacked flags on the new server ({verb}): "
                     f"{_counts(f for d in lacking for f in d.missing)}")
    only_target = [d for d in differences if d.extra]
    if only_target:
        lines.append(f"{len(only_target)} message(s) have flags only on the new server (set there? left alone): "
                     f"{_counts(f for d in only_target for f in d.extra)}")
    if gone:
        lines.append(f"{len(gone)} message(s) copied earlier are no longer on the new server (deleted there?)")
    return lines


def _counts(flags) -> str:
    return ", ".join(f"{flag} ({count})" for flag, count in sorted(Counter(flags).items()))


async def verify_folder(tgt: ImapConnection, target_folder: str, listed: list[Listed], state: FolderState,
                        *, dry_run: bool) -> tuple[int, list[str], list[str]]:
    """Compare one folder's copied messages with the target and repair it: (repaired, report lines, errors).

    ``listed`` holds the source's messages with their current flags. A flag
    the target still lacks after the repair is an error: the target did not
    keep it.
    """
    await tgt.select(target_folder, readonly=dry_run)
    target = {m.uid: m.flags for m in await tgt.list_messages()}
    source = {m.uid: m.flags for m in listed}
    pairs = {uid: state.synced[uid][0] for uid in source if uid in state.synced}
    differences, gone = flag_differences(source, target, pairs)
    lacking = [d for d in differences if d.missing]
    errors: list[str] = []
    if lacking and not dry_run:
        await tgt.store_flags(repairs(differences, target))
        after = {m.uid: m.flags for m in await tgt.list_messages()}
        still = [d for d in flag_differences(source, after, pairs)[0] if d.missing]
        if still:
            errors.append(f"the new server did not keep flags on {len(still)} message(s) after a repair: "
                          f"{_counts(f for d in still for f in d.missing)}")
    return len(lacking), describe(differences, gone, repaired=not dry_run), errors
