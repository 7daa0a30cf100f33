"""Mailbox sync from the old server to the new one: accounts, decisions, state, engine."""
