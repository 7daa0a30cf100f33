"""IMAP for the sync engine: an asyncio client (pipelined, LITERAL+, MULTIAPPEND) and folder name codecs.

Protocol details stay in this package: callers see folders, messages and flags.
"""

from mailstack.imap.client import (
    AuthFailed,
    CommandFailed,
    ConnectError,
    ConnectionLost,
    Folder,
    FolderStatus,
    ImapConnection,
    ImapError,
    Limits,
    Listed,
    Message,
    Namespace,
    NoSuchFolder,
    OverQuota,
    ServerMisbehaved,
)

__all__ = ["AuthFailed", "CommandFailed", "ConnectError", "ConnectionLost", "Folder", "FolderStatus", "ImapConnection",
           "ImapError", "Limits", "Listed", "Message", "Namespace", "NoSuchFolder", "OverQuota", "ServerMisbehaved"]
