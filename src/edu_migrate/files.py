"""Files that hold what others on the machine must not read (dumps, screenshots of marks and
rosters): created readable by their owner alone before their first byte, in folders that are
the owner's alone."""

from __future__ import annotations

import os
from pathlib import Path


def owner_only_folder(folder: Path) -> Path:
    """`folder`, created 0700 when missing, and tightened to 0700 when it is ours and was
    opened to others."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = folder.stat()
    if info.st_uid == os.geteuid() and info.st_mode & 0o077:
        folder.chmod(0o700)
    return folder


def reserve_private_file(path: Path, *, exclusive: bool = True) -> Path:
    """`path` created empty with mode 0600 (whatever the umask), for a program to write into
    afterwards: it never exists with wider permissions, not even for its first bytes."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    os.close(os.open(path, flags, 0o600))
    path.chmod(0o600)  # an existing file (exclusive=False) keeps its mode otherwise
    return path


def write_private_file(path: Path, data: bytes) -> Path:
    """`path` holding `data`, mode 0600 from its first byte."""
    reserve_private_file(path, exclusive=False)
    with path.open("wb") as handle:
        handle.write(data)
    return path
