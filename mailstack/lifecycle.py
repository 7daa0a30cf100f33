"""Where a stack stands in the migration lifecycle, and what to run next."""

from __future__ import annotations

from mailstack.settings import Settings

_NEXT = {
    "provision": (
        "back up and copy the mailboxes (mailstack backup; mailstack sync -s {env}), "
        "then prove the new host works (mailstack verify -s {env} --record) "
        "and set mailstack:phase to cutover"
    ),
    "cutover": (
        "watch propagation and keep syncing stragglers from {old} "
        "(mailstack status -s {env} --record; mailstack sync -s {env}) for {days} days, "
        "then set mailstack:phase to decommission"
    ),
    "decommission": "the old server {old} is out of DNS; cancel its hosting once nothing reaches it",
}


def next_step(settings: Settings, env: str) -> str:
    """One sentence telling the operator what to do after this phase's ``pulumi up``."""
    return _NEXT[settings.phase].format(env=env, old=settings.old_server.host, days=settings.overlap_days)
