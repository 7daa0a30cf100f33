"""Which DNS changes put mail at risk, and why (pure).

A reviewer reads these first: where mail goes (MX and its TTL), who may send
(SPF), and what receivers do with mail that fails (DMARC, MTA-STS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

_ALL_RANK = {"+all": 0, "all": 0, "?all": 1, "~all": 2, "-all": 3}
_DMARC_RANK = {"none": 0, "quarantine": 1, "reject": 2}
_STS_RANK = {None: 0, "testing": 1, "enforce": 2}


@dataclass(frozen=True)
class Hazard:
    """A change a reviewer must see first: its kind (mx, mx-ttl, spf, dmarc, mta-sts), where, and what it does."""

    kind: str
    name: str
    message: str


def tag_value(text: str, tag: str) -> str | None:
    """The value of ``tag`` in a ``k=v; k=v`` record (DMARC, MTA-STS, DKIM), or None."""
    for part in text.split(";"):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == tag:
            return value.strip()
    return None


def _texts(record_set, prefix: str) -> list[str]:
    if record_set is None:
        return []
    return [str(v) for v in record_set.values if str(v).lower().startswith(prefix)]


def _mx(name: str, before, after) -> list[Hazard]:
    kept = [v for v in before.values if v in after.values] if before and after else []
    old = ", ".join(str(v) for v in (before.values if before else ()) if v not in kept)
    new = ", ".join(str(v) for v in (after.values if after else ()) if v not in kept)
    # Entries in both (a backup MX the stack keeps) are named apart: the hazard is what moves.
    also = f" ({', '.join(map(str, kept))} kept)" if kept else ""
    hazards = []
    if (before.values if before else ()) != (after.values if after else ()):
        if not before:
            message = f"mail for {name} goes to {new} (no MX was published: senders used the name's address)"
        elif not after:
            message = f"mail for {name} has no MX any more (was {old})"
        elif not new:
            message = f"mail for {name} no longer goes to {old}{also}"
        elif not old:
            message = f"mail for {name} may also go to {new}{also}"
        else:
            message = f"mail for {name} goes to {new} instead of {old}{also}"
        hazards.append(Hazard("mx", name, message))
    if before and after and before.ttl != after.ttl:
        hazards.append(Hazard("mx-ttl", name, f"MX TTL {before.ttl} s -> {after.ttl} s: the next MX change (or a "
                                              f"rollback) reaches every resolver within {after.ttl} s"))
    return hazards


def _spf_terms(spf: str) -> tuple[list[str], str]:
    terms = spf.split()[1:]
    rest = [t for t in terms if t.lower() not in _ALL_RANK]
    last = next((t.lower() for t in reversed(terms) if t.lower() in _ALL_RANK), "?all")
    return rest, last


def _spf(name: str, before, after) -> list[Hazard]:
    old, new = _texts(before, "v=spf1"), _texts(after, "v=spf1")
    if old == new:
        return []
    if old and not new:
        return [Hazard("spf", name, f"SPF record removed (was {old[0]}): receivers no longer know who may send")]
    new_terms, new_all = _spf_terms(new[0])
    if not old:
        return [Hazard("spf", name, f"SPF published: only {' '.join(new_terms) or 'nobody'} may send for {name} "
                                    f"({new_all} for the rest); any other host that sends for it now fails SPF")]
    old_terms, old_all = _spf_terms(old[0])
    dropped = [t for t in old_terms if t.lower() not in {n.lower() for n in new_terms}]
    parts = []
    if dropped:
        parts.append(f"stops authorising {' '.join(dropped)}: mail such a host still sends for {name} fails SPF")
    if _ALL_RANK[new_all] > _ALL_RANK[old_all]:
        parts.append(f"tightens {old_all} to {new_all}: mail from hosts not listed is "
                     f"{'rejected' if new_all == '-all' else 'marked'} by receivers that honour SPF")
    return [Hazard("spf", name, "SPF " + "; ".join(parts))] if parts else []


def _dmarc(name: str, before, after) -> list[Hazard]:
    old = tag_value(_texts(before, "v=dmarc1")[0], "p") if _texts(before, "v=dmarc1") else None
    new = tag_value(_texts(after, "v=dmarc1")[0], "p") if _texts(after, "v=dmarc1") else None
    old_rank, new_rank = _DMARC_RANK.get(old or "none", 0), _DMARC_RANK.get(new or "none", 0)
    if new_rank > old_rank:
        return [Hazard("dmarc", name, f"DMARC tightens p={old or 'none (no record)'} -> p={new}: mail failing SPF "
                                      f"and DKIM is {'refused' if new == 'reject' else 'sent to spam'}")]
    if new_rank < old_rank:
        return [Hazard("dmarc", name, f"DMARC loosens p={old} -> p={new or 'none (record removed)'}: "
                                      "mail forged in the domain's name is no longer stopped")]
    return []


def _mta_sts(name: str, before, after, modes: Mapping[str, str]) -> list[Hazard]:
    old_id = tag_value(_texts(before, "v=stsv1")[0], "id") if _texts(before, "v=stsv1") else None
    new_id = tag_value(_texts(after, "v=stsv1")[0], "id") if _texts(after, "v=stsv1") else None
    if old_id == new_id:
        return []
    old_mode = modes.get(old_id) if old_id else None
    new_mode = modes.get(new_id) if new_id else None
    if old_id and old_mode is None:
        return [Hazard("mta-sts", name, f"MTA-STS policy changes (id {old_id} -> {new_id}); the policy served now is "
                                        f"not one this stack publishes; the new one is in {new_mode} mode")]
    if _STS_RANK.get(new_mode, 0) > _STS_RANK.get(old_mode, 0) and new_mode == "enforce":
        return [Hazard("mta-sts", name, f"MTA-STS tightens {old_mode or 'none'} -> enforce: senders that cannot "
                                        "deliver over verified TLS to a listed MX keep the mail instead of sending it "
                                        "in the clear")]
    return []


def hazards_of(name: str, rtype: str, before, after, mta_sts_modes: Mapping[str, str]) -> tuple[Hazard, ...]:
    """The hazards of one record set's change (``before``/``after`` are record sets or None)."""
    if rtype == "MX":
        return tuple(_mx(name, before, after))
    if rtype != "TXT":
        return ()
    if name.startswith("_dmarc."):
        return tuple(_dmarc(name, before, after))
    if name.startswith("_mta-sts."):
        return tuple(_mta_sts(name, before, after, mta_sts_modes))
    return tuple(_spf(name, before, after))
