"""A bound on the total the child writes: its work folder plus its /dev/shm folder.

``RLIMIT_FSIZE`` bounds one file; a loop writing many files, or many copies of a frame,
could still fill the disk or ``/dev/shm`` (which is memory). No unprivileged mechanism
gives a folder a quota, so a watcher thread sums the space the child's folders use a few
times a second and, once ``DataAgent.disk_limit`` is passed, kills the child with a
message that says why. Files the parent itself wrote (frames going in) do not count.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Set
from pathlib import Path

__all__ = ["DiskWatch", "folder_usage"]

#: Seconds between two measurements; the child may overshoot by what it writes in one.
_INTERVAL = 0.25
#: Stop walking a tree this big (only the child makes it): that alone means "too much".
_MAX_ENTRIES = 200_000


def folder_usage(folders: Iterable[Path], exempt: Set[tuple[str, int]] = frozenset()) -> int:
    """Bytes of storage used by everything under ``folders`` (symlinks not followed).

    Counted in allocated blocks, so a sparse file costs what it really holds. Entries in
    ``exempt`` ((path, inode) pairs the parent wrote) are skipped.
    """
    total, seen = 0, 0
    stack = [str(f) for f in folders]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue  # removed meanwhile
        for entry in entries:
            seen += 1
            if seen > _MAX_ENTRIES:
                return 1 << 62
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif (entry.path, st.st_ino) not in exempt:
                total += st.st_blocks * 512
    return total


class DiskWatch:
    """Calls ``exceeded(used)`` once when ``folders`` together use more than ``limit``."""

    def __init__(
        self,
        folders: Iterable[Path],
        limit: int,
        exceeded: Callable[[int], None],
        *,
        interval: float = _INTERVAL,
    ) -> None:
        self.folders = tuple(folders)
        self.limit = limit
        self.exempt: set[tuple[str, int]] = set()
        self._exceeded = exceeded
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dataagent-disk", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def parent_wrote(self, path: str) -> None:
        """Exempt a file the parent wrote into one of the folders (a frame going in)."""
        with contextlib.suppress(OSError):
            self.exempt.add((path, os.stat(path).st_ino))

    def forget(self, paths: Iterable[str]) -> None:
        """Stop exempting these paths (they were deleted)."""
        gone = set(paths)
        self.exempt = {item for item in self.exempt if item[0] not in gone}

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            used = folder_usage(self.folders, set(self.exempt))
            if used > self.limit:
                self._stop.set()
                self._exceeded(used)
