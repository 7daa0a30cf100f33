"""A DNS plan printed for a person (text), a pull request (Markdown) or a program (JSON); pure.

One class per format, each with ``render(plan, stack) -> str``, as
octoDNS's plan outputs. Long lists (a zone of thousands of records) are cut
after ``LISTED`` entries in text and Markdown; JSON has everything.
"""

from __future__ import annotations

import json

from mailstack.host.plan import Change, Plan, RecordSet

LISTED = 100
SHORT = 90  # values longer than this are shortened in text and Markdown (DKIM keys)
_SIGN = {"create": "+", "update": "~", "delete": "-"}


def short(value: str) -> str:
    """A value cut in the middle when long: the start and end a reviewer compares, and its length."""
    if len(value) <= SHORT:
        return value
    return f"{value[:40]}…{value[-12:]} ({len(value)} characters)"


def ttl_text(change: Change) -> str:
    before = change.existing.ttl if change.existing else None
    after = change.desired.ttl if change.desired else None
    if change.action == "update" and before != after:
        return f"{before} -> {after}"
    return str(after if after is not None else before)


def values_of(records: RecordSet | None) -> list[str]:
    if records is None:
        return []
    if records.alias:
        return [f"alias to {records.alias}"]
    return [str(v) for v in records.values]


def summary_line(plan: Plan) -> str:
    return (f"{plan.count('create')} to create, {plan.count('update')} to update, {plan.count('delete')} to delete; "
            f"{len(plan.unchanged)} unchanged; {len(plan.foreign)} not the stack's (left alone)")


class PlanText:
    """Plain text for a terminal or a log."""

    def render(self, plan: Plan, stack: str) -> str:
        lines = [f"DNS plan of stack {stack}: zone {plan.zone}, phase {plan.phase}, "
                 f"{len(plan.existing)} record sets in the zone"]
        lines += [f"  pulumi up would refuse the {plan.phase} phase: {reason}" for reason in plan.gate_refusals]
        lines += [f"  unsafe, needs --force: {reason}" for reason in plan.unsafe_reasons()]
        lines += [f"  refused: {problem}" for problem in plan.problems]
        hazards = plan.hazards
        lines.append(f"Hazards ({len(hazards)}):" if hazards else "Hazards: none")
        lines += [f"  ! {h.kind:<8} {h.message}" for h in hazards]
        fates = plan.fates()
        if fates:
            lines.append(f"Existing records, what each becomes ({len(fates)}):")
            lines += [f"  {rs.name} {rs.type}: {short(f.value)} -> {f.becomes}: {f.reason}" for rs, f in fates]
        lines.append(f"Changes: {summary_line(plan)}")
        for change in plan.changes:
            rec = change.records
            lines.append(f"  {_SIGN[change.action]} {change.action} {rec.name} {rec.type} (ttl {ttl_text(change)})")
            before, after = values_of(change.existing), values_of(change.desired)
            lines += [f"      - {short(v)}" for v in before if v not in after]
            lines += [f"      + {short(v)}" for v in after if v not in before]
            lines += [f"        {short(v)}" for v in after if v in before]
            lines.append(f"      why: {change.reason}")
            if change.stand_in:
                lines.append(f"      stand-in: {change.stand_in}")
        lines += self._listed("Not the stack's, left alone", [
            f"{r.name} {r.type} (ttl {r.ttl}): {short(', '.join(values_of(r)))}" for r in plan.foreign])
        lines += self._listed("Unchanged", [
            f"{d.records.name} {d.records.type} (ttl {d.records.ttl}): {short(', '.join(values_of(d.records)))}"
            + (f" [stand-in: {d.stand_in}]" if d.stand_in else "") for d in plan.unchanged])
        if plan.notes:
            lines.append("Notes:")
            lines += [f"  {note}" for note in plan.notes]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _listed(title: str, rows: list[str]) -> list[str]:
        if not rows:
            return []
        lines = [f"{title} ({len(rows)}):"] + [f"  {row}" for row in rows[:LISTED]]
        if len(rows) > LISTED:
            lines.append(f"  ... and {len(rows) - LISTED} more (--format json lists all)")
        return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(values: list[str]) -> str:
    return "<br>".join(f"`{_cell(short(v)).replace('`', chr(39))}`" for v in values) or "—"


class PlanMarkdown:
    """GitHub-flavoured Markdown for a pull-request comment: hazards first, unchanged records collapsed."""

    def render(self, plan: Plan, stack: str) -> str:
        out = [f"### DNS plan of stack `{stack}`: zone `{plan.zone}`, phase `{plan.phase}`", ""]
        if plan.gate_refusals:
            out += ["> [!CAUTION]", f"> `pulumi up` would refuse the {plan.phase} phase now:"]
            out += [f"> - {_cell(reason)}" for reason in plan.gate_refusals]
            out.append("")
        if plan.problems:
            out += ["> [!CAUTION]", "> Refused: `pulumi up` stops before changing anything:"]
            out += [f"> - {_cell(problem)}" for problem in plan.problems]
            out.append("")
        unsafe = plan.unsafe_reasons()
        if unsafe:
            out += ["> [!CAUTION]", "> Over the safety thresholds: `mailstack plan --force` must accept it:"]
            out += [f"> - {_cell(reason)}" for reason in unsafe]
            out.append("")
        hazards = plan.hazards
        if hazards:
            out += ["> [!WARNING]", f"> **{len(hazards)} hazard(s): where mail goes, who may send**"]
            out += [f"> - **{h.kind}** `{h.name}`: {_cell(h.message)}" for h in hazards]
            out.append("")
        else:
            out += ["No hazard.", ""]
        fates = plan.fates()
        if fates:
            out += [f"**Existing records, what each becomes ({len(fates)})**", "",
                    "| name | type | served now | becomes | why |", "|---|---|---|---|---|"]
            out += [f"| `{_cell(rs.name)}` | {rs.type} | {_code([f.value])} | {f.becomes} | {_cell(f.reason)} |"
                    for rs, f in fates[:LISTED]]
            out.append("")
        out += [f"**{summary_line(plan)}**", ""]
        if plan.changes:
            out += ["| | name | type | TTL | before | after | why |", "|---|---|---|---|---|---|---|"]
            for change in plan.changes:
                rec = change.records
                why = _cell(change.reason) + (f" *(stand-in: {_cell(change.stand_in)})*" if change.stand_in else "")
                out.append(f"| {_SIGN[change.action]} {change.action} | `{_cell(rec.name)}` | {rec.type} | "
                           f"{ttl_text(change)} | {_code(values_of(change.existing))} | "
                           f"{_code(values_of(change.desired))} | {why} |")
            out.append("")
        out += self._details(f"{len(plan.unchanged)} unchanged record sets", ["name", "type", "TTL", "value", "why"], [
            [f"`{_cell(d.records.name)}`", d.records.type, str(d.records.ttl), _code(values_of(d.records)),
             _cell(d.reason) + (f" *(stand-in: {_cell(d.stand_in)})*" if d.stand_in else "")] for d in plan.unchanged])
        out += self._details(f"{len(plan.foreign)} record sets the stack does not own (left alone)",
                             ["name", "type", "TTL", "value"], [
            [f"`{_cell(r.name)}`", r.type, str(r.ttl), _code(values_of(r)[:5])] for r in plan.foreign])
        if plan.notes:
            out += ["", *(f"- {_cell(note)}" for note in plan.notes)]
        return "\n".join(out) + "\n"

    @staticmethod
    def _details(summary: str, header: list[str], rows: list[list[str]]) -> list[str]:
        if not rows:
            return []
        out = ["<details>", f"<summary>{summary}</summary>", "", "| " + " | ".join(header) + " |",
               "|" + "---|" * len(header)]
        out += ["| " + " | ".join(row) + " |" for row in rows[:LISTED]]
        if len(rows) > LISTED:
            out += ["", f"… and {len(rows) - LISTED} more (`--format json` lists all)."]
        return out + ["", "</details>", ""]


def _set(records: RecordSet | None) -> dict | None:
    if records is None:
        return None
    return {"ttl": records.ttl, "values": values_of(records), "served": list(records.raw)}


class PlanJson:
    """Everything in the plan, as data."""

    def render(self, plan: Plan, stack: str) -> str:
        return json.dumps({
            "stack": stack, "zone": plan.zone, "phase": plan.phase,
            "counts": {"create": plan.count("create"), "update": plan.count("update"),
                       "delete": plan.count("delete"), "unchanged": len(plan.unchanged), "foreign": len(plan.foreign),
                       "existing": len(plan.existing)},
            "hazards": [{"kind": h.kind, "name": h.name, "message": h.message} for h in plan.hazards],
            "unsafe": list(plan.unsafe_reasons()),
            "problems": list(plan.problems),
            "existing": [{"name": rs.name, "type": rs.type, "value": f.value, "becomes": f.becomes, "reason": f.reason}
                         for rs, f in plan.fates()],
            "gate_refusals": list(plan.gate_refusals),
            "changes": [{"action": c.action, "name": c.records.name, "type": c.records.type, "reason": c.reason,
                         "before": _set(c.existing), "after": _set(c.desired), "stand_in": c.stand_in,
                         "takes_over": c.takes_over, "hazards": [h.kind for h in c.hazards]} for c in plan.changes],
            "unchanged": [{"name": d.records.name, "type": d.records.type, "reason": d.reason,
                           **_set(d.records), "stand_in": d.stand_in} for d in plan.unchanged],
            "foreign": [{"name": r.name, "type": r.type, "set_identifier": r.set_identifier or None, **_set(r)}
                        for r in plan.foreign],
            "notes": list(plan.notes),
        }, indent=2) + "\n"


FORMATS = {"text": PlanText, "markdown": PlanMarkdown, "json": PlanJson}
