"""The journal's outage buffer, mirrored on local disk so it survives its process.

While PostgreSQL is unreachable a host keeps its exit commits in memory
(:class:`~valux.persistence.journal.Journal`, outage mode) and acts on them: the sale
goes to the venue. If the host process then dies, those commits would be gone while
their effects are not — a wallet that sold, an agent that no longer knows it did. The
spool closes that hole on one machine: every buffered commit is appended here and
``fsync``-ed *before* the caller proceeds, each one written to PostgreSQL is
acknowledged, and a host that starts again on this machine writes what is left
before it recovers its entities.

Format: ``<name>.spool`` holds length-prefixed pickles of commits (pickle: the records
hold read-model rows of any Python type; the file is written and read by this program
only, mode 0600); ``<name>.ack`` holds how many of them are already in PostgreSQL. A
torn last record (a crash mid-write) is ignored: its caller never went on.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from valux.persistence.journal import Commit

_LENGTH = struct.Struct(">I")


class Spool:
    """Append-only file of buffered commits plus an acknowledged count."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ack_path = path.with_suffix(".ack")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._acked = 0

    def load(self) -> list[Commit]:
        """The commits not yet acknowledged, in order (empty if there is no spool)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        commits: list[Commit] = []
        offset = 0
        while offset + _LENGTH.size <= len(data):
            (size,) = _LENGTH.unpack_from(data, offset)
            start = offset + _LENGTH.size
            if start + size > len(data):
                break  # torn tail: that commit's caller never proceeded
            commits.append(pickle.loads(data[start : start + size]))
            offset = start + size
        try:
            self._acked = int(self._ack_path.read_text() or 0)
        except (FileNotFoundError, ValueError):
            self._acked = 0
        left = commits[self._acked :]
        self.rewrite(left)
        return left

    def append(self, commit: Commit) -> None:
        """Durably add ``commit`` (returns after ``fsync``)."""
        record = pickle.dumps(commit, protocol=pickle.HIGHEST_PROTOCOL)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, _LENGTH.pack(len(record)) + record)
            os.fsync(fd)
        finally:
            os.close(fd)

    def acknowledge(self) -> None:
        """The oldest unacknowledged commit is in PostgreSQL."""
        self._acked += 1
        self._write_ack()

    def rewrite(self, commits: list[Commit]) -> None:
        """Replace the spool with ``commits`` (after a fork dropped some, or on load)."""
        if not commits:
            self.clear()
            return
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for commit in commits:
                record = pickle.dumps(commit, protocol=pickle.HIGHEST_PROTOCOL)
                os.write(fd, _LENGTH.pack(len(record)) + record)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._acked = 0
        self._write_ack()
        os.replace(tmp, self.path)

    def clear(self) -> None:
        """Nothing is buffered any more."""
        self._acked = 0
        for path in (self.path, self._ack_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _write_ack(self) -> None:
        tmp = self._ack_path.with_suffix(".acktmp")
        tmp.write_text(str(self._acked))
        os.replace(tmp, self._ack_path)
