"""Writing files that may hold secrets: one writer, atomic, owner-only by default, never through a symlink."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def private_dir(path: Path) -> None:
    """Create a directory (and its parents) readable by the owner only; an existing one is left as it is."""
    if path.is_dir():
        return
    if not path.parent.exists():
        private_dir(path.parent)
    path.mkdir(mode=0o700, exist_ok=True)


def write_file(path: Path, data: bytes | str, *, mode: int = 0o600, overwrite: bool = True, sync: bool = True,
               encoding: str = "utf-8") -> None:
    """Write ``path`` atomically: readers see no file, or the old one, or the whole new one.

    The file gets ``mode`` (0600 unless said otherwise) from its creation on.
    A symbolic link at ``path`` is refused (``OSError`` ELOOP), so a planted
    link cannot redirect a secret. Without ``overwrite``, an existing file
    raises ``FileExistsError``, even one that appeared during the write.
    ``sync`` flushes the data to disk before the file appears.
    """
    path = Path(path)
    if path.is_symlink():
        raise OSError(errno.ELOOP, "is a symbolic link: refusing to write through it", str(path))
    if not overwrite and path.exists():
        raise FileExistsError(errno.EEXIST, "already exists", str(path))
    payload = data.encode(encoding) if isinstance(data, str) else data
    import tempfile  # here: the sync command writes no file this way, and its start-up is kept short

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # created 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            if mode != 0o600:
                os.fchmod(handle.fileno(), mode)
            if sync:
                os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)  # fails if path appeared meanwhile, where replace() would clobber it
        except FileExistsError:
            raise
        except OSError:
            os.replace(tmp, path)  # no hard links on this file system: the check above has to do
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_private(path: Path, data: bytes | str, *, overwrite: bool = True, sync: bool = True,
                  encoding: str = "utf-8") -> None:
    """:func:`write_file` with mode 0600: for anything holding a password, a key or a mailbox's mail."""
    write_file(path, data, mode=0o600, overwrite=overwrite, sync=sync, encoding=encoding)


def fsync_dir(path: Path) -> None:
    """Make the entries of a directory (renames into it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def work_tree_of(path: Path) -> Path | None:
    """The git work tree ``path`` is (or would be) inside, or None.

    For files that must never be committed: a ``.git`` directory, or a
    ``.git`` file as in a linked worktree, marks the top of a work tree.
    """
    here = Path(path).expanduser().resolve()
    for candidate in (here, *here.parents):
        if (candidate / ".git").exists():
            return candidate
    return None
