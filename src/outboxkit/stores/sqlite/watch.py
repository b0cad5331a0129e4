"""Waking the relay when another process commits to the SQLite file, without polling while idle.

SQLite has no notifications. ``PRAGMA data_version`` tells whether another connection committed,
but asking it every 2 ms costs an idle relay about 14% of a core (the embedded default's relay is
idle most of the time). On Linux the kernel can tell instead: a commit writes to the ``-wal`` file
(or to the database file itself outside WAL mode), and inotify reports the write. So an idle relay
sleeps on the inotify descriptor and asks ``data_version`` only after a write happened — and a few
times shortly after, because the write that inotify reports can come a moment before the commit is
visible (the WAL index is updated in shared memory, which inotify does not see).

Elsewhere (no inotify, or a file system that does not report writes such as NFS) the relay polls
``data_version``, quickly right after activity and more slowly the longer it stays idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

log = logging.getLogger("outboxkit.sqlite")

#: After a write event: ask data_version after these delays (seconds), then sleep again.
SETTLE = (0.0, 0.002, 0.005, 0.01, 0.025, 0.05)
#: Polling without inotify: from every 2 ms right after activity to every 50 ms when idle.
POLL_FAST, POLL_SLOW = 0.002, 0.05

try:  # Linux only; a base install elsewhere polls instead
    from inotify_simple import INotify, flags
except ImportError:  # pragma: no cover - non-Linux
    INotify = None


class FileWatcher:
    """Reports writes to ``path`` and its ``-wal``/``-journal`` companions (one directory watch)."""

    def __init__(self, path: str) -> None:
        self.directory = os.path.dirname(os.path.abspath(path)) or "."
        base = os.path.basename(path)
        self.names = {base, f"{base}-wal", f"{base}-journal"}
        self._inotify: Any = None
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> bool:
        """Start watching; False where the platform cannot (the caller then polls)."""
        if INotify is None:
            return False
        try:
            inotify = INotify(nonblocking=True)
            mask = flags.MODIFY | flags.CREATE | flags.MOVED_TO | flags.CLOSE_WRITE
            inotify.add_watch(self.directory, mask)
        except OSError as exc:  # inotify limits reached, a file system without it
            log.info("no inotify for %s (%s): polling data_version instead", self.directory, exc)
            return False
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(inotify.fileno(), self._readable)
        self._inotify = inotify
        return True

    @property
    def active(self) -> bool:
        return self._inotify is not None

    def _readable(self) -> None:
        try:
            events = self._inotify.read(timeout=0)
        except (BlockingIOError, OSError):
            return
        if any(e.name in self.names for e in events):
            self._event.set()

    async def wait(self, timeout: float) -> bool:
        """True when a write was seen within ``timeout`` seconds (clears it)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        seen = self._event.is_set()
        self._event.clear()
        return seen

    def close(self) -> None:
        if self._inotify is not None:
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(self._inotify.fileno())
            with contextlib.suppress(OSError):
                self._inotify.close()
            self._inotify = None
