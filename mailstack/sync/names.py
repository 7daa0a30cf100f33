"""Folder names the new server accepts: its rules as data, why a name is refused, and a reversible mapping.

The new host keeps mail in Dovecot's Maildir++ layout with ``/`` as the
hierarchy separator. Measured on Dovecot 2.3.19 (CREATE over IMAP), it
refuses a name that
- holds ``.`` anywhere (Maildir++ separates levels with ``.`` on disk):
  ``NO [CANNOT] Character not allowed in mailbox name: '.'``;
- begins with ``~``, holds a control character, or has an empty level;
- is longer than 254 bytes as sent (modified UTF-7): Maildir++ makes the
  whole name one directory name, ``.`` + name, and a file name has at most
  255 bytes.

:func:`problem` says why a name is refused; :func:`remedy` gives the
``--map`` that fixes it; :func:`mapped` is the automatic mapping of
``--map-invalid``: each refused character becomes a look-alike that the
server accepts, so the mapping is stable (the same name always maps the same
way) and reversible (:func:`unmapped`); a name that already holds one of
the look-alikes is not mapped, since it could not be told apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailstack.imap import utf7

MAILDIR_MAX_BYTES = 254

# Refused character -> its stand-in. Leading "~" and control characters are handled apart.
_LOOKALIKES = {".": "\u2024"}  # ONE DOT LEADER
_TILDE = "\uff5e"  # FULLWIDTH TILDE
_CONTROL_PICTURES = 0x2400  # U+2400 + code: the Unicode picture of each C0 control character


@dataclass(frozen=True)
class TargetNaming:
    """What folder names a target accepts.

    ``separator`` is its hierarchy separator; ``refused`` the characters its
    storage refuses inside a level; ``storage`` turns on the rest of
    Dovecot's Maildir++ rules (no leading ``~``, no control character, no
    empty level, at most ``max_bytes`` on the wire).
    """

    separator: str
    refused: str = "."
    storage: bool = True
    max_bytes: int = MAILDIR_MAX_BYTES


def naming_for(delimiter: str) -> TargetNaming:
    """The rules of a Dovecot Maildir++ target whose hierarchy separator is ``delimiter`` (the mailstack host)."""
    return TargetNaming(delimiter, "" if delimiter == "." else ".")


def separator_only(delimiter: str) -> TargetNaming:
    """Only the hierarchy separator: a level may not hold it (a local backup, a target of unknown storage)."""
    return TargetNaming(delimiter, "", storage=False)


def problem(parts: list[str], naming: TargetNaming) -> str | None:
    """Why the target refuses the folder whose levels are ``parts`` (Unicode), or None when it takes it."""
    for part in parts:
        if naming.separator != "/" and naming.separator in part:
            return f"the name part {part!r} contains the target's hierarchy separator {naming.separator!r}"
        refused = next((c for c in part if c in naming.refused), None)
        if refused:
            return f"the new server refuses {refused!r} in folder names (Dovecot Maildir++)"
        if naming.storage and not part:
            return "the name has an empty level (two separators in a row)"
        if naming.storage and any(ord(c) < 0x20 for c in part):
            return "the name holds a control character"
    if naming.storage and parts and parts[0].startswith("~"):
        return "the new server refuses folder names that begin with '~'"
    if naming.storage:
        size = len(naming.separator.join(utf7.encode(p) for p in parts).encode())
        if size > naming.max_bytes:
            return f"the name is {size} bytes long as sent; the new server takes at most {naming.max_bytes}"
    return None


def mapped(parts: list[str], naming: TargetNaming) -> list[str] | None:
    """``--map-invalid``: the levels with every refused character replaced by its look-alike.

    None when no reversible mapping exists (the name already holds a
    look-alike, has an empty level, or is too long): the operator gives a
    ``--map`` instead.
    """
    stand_ins = set(_LOOKALIKES.values()) | {_TILDE} | {chr(_CONTROL_PICTURES + c) for c in range(0x20)}
    if any(c in stand_ins for part in parts for c in part):
        return None
    out = []
    for index, part in enumerate(parts):
        text = "".join(_replacement(c, naming) for c in part)
        if index == 0 and text.startswith("~") and naming.storage:
            text = _TILDE + text[1:]
        out.append(text)
    return None if problem(out, naming) else out


def unmapped(parts: list[str]) -> list[str]:
    """The names :func:`mapped` came from: every look-alike back to the character it stands for."""
    back = {v: k for k, v in _LOOKALIKES.items()} | {chr(_CONTROL_PICTURES + c): chr(c) for c in range(0x20)}
    out = ["".join(back.get(c, c) for c in part) for part in parts]
    if out and out[0].startswith(_TILDE):
        out[0] = "~" + out[0][1:]
    return out


def _replacement(char: str, naming: TargetNaming) -> str:
    if char in naming.refused or (char == naming.separator and char != "/"):
        return _LOOKALIKES.get(char, char)
    if naming.storage and ord(char) < 0x20:
        return chr(_CONTROL_PICTURES + ord(char))
    return char


def readable(parts: list[str], naming: TargetNaming) -> list[str]:
    """A name to suggest to the operator: each refused character as ``_``, cut to the target's length."""
    out = []
    for index, part in enumerate(parts):
        text = "".join("_" if _replacement(c, naming) != c else c for c in part) or "_"
        out.append("_" + text[1:] if index == 0 and text.startswith("~") and naming.storage else text)
    while naming.storage and problem(out, naming) and max(map(len, out)) > 1:
        longest = max(range(len(out)), key=lambda i: len(out[i]))
        out[longest] = out[longest][:-1]
    return out


def remedy(name: str, renamed_to: str, naming: TargetNaming) -> str:
    """What to do about a refused folder: the ``--map`` that fixes it, and what ``--map-invalid`` would do.

    ``name`` is the source folder, ``renamed_to`` its name after the
    operator's ``--map`` (the same when none applies); both Unicode with ``/``.
    """
    parts = renamed_to.split("/")
    if renamed_to != name:
        return f"change the --map that renames {name!r} to {renamed_to!r}"
    # The first refused level: a --map of it renames its subfolders too.
    bad = next((i for i in range(len(parts)) if problem(parts[:i + 1], naming)), len(parts) - 1)
    old = "/".join(parts[:bad + 1])
    new = "/".join(readable(parts[:bad + 1], naming))
    if new == old:  # refused for a reason these rules do not know: the operator chooses the name
        return f"rename it with --map '{old}=NEW NAME'"
    text = f"rename it with --map '{old}={new}'"
    automatic = mapped(parts, naming)
    if automatic is not None:
        text += f", or give --map-invalid (it becomes {'/'.join(automatic)!r})"
    return text
