"""The mailbox roster: every mailbox the new host gets, with its quota and password.

Operators keep the roster in a spreadsheet (CSV, XLSX) or a YAML file, one
mailbox per row: address, password, quota and a few optional columns. It is
committed to git, so it never holds a plain-text password: a password cell is
a Dovecot crypt hash or ``generate[:N]``. :func:`hash_roster` turns the
operators' spreadsheet of plain-text passwords into such a roster.

Reading is thin (:mod:`.readers` turns any format into rows of text cells,
each with its file position); every decision is a pure function of those rows
(:mod:`.rows`), and all problems of all rows are reported together.
"""

from mailstack.stack.roster.addresses import parse_address
from mailstack.stack.roster.columns import FIELDS, SYNONYMS, field_of_header
from mailstack.stack.roster.hashes import SUPPORTED_SCHEMES, parse_password
from mailstack.stack.roster.model import GeneratePassword, Mailbox, PasswordHash, Roster
from mailstack.stack.roster.readers import check_roster, load_roster
from mailstack.stack.roster.writer import hash_roster

__all__ = ["FIELDS", "SUPPORTED_SCHEMES", "SYNONYMS", "GeneratePassword", "Mailbox", "PasswordHash", "Roster",
           "check_roster", "field_of_header", "hash_roster", "load_roster", "parse_address", "parse_password"]
