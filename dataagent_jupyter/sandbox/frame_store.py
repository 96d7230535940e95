"""Frames written once per version, as immutable files every child can map but none can change.

A fresh child per question must not cost a fresh copy of every frame: the user's kernel
writes each version of a frame once (pickle 5 with out-of-band buffers, see
:func:`.transfer.write_pickled`) into a private folder, in ``/dev/shm`` where there is
room. A question's child sees only the frames that question names: each is hard-linked
(no bytes copied) into that child's own frame folder, which Landlock makes read-only for
it, and the child maps the file copy-on-write, so its writes stay in its own memory.

Where Landlock is missing, a child could still write to a file through its link, so
every version also keeps the file's ``stat`` signature including ``st_ctime``, which any
write, ``chmod`` or ``utime`` changes and nobody can set back. The store re-reads it
around each of its own link operations and before every reuse; a changed file is dropped
and written again from the user's frame.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FrameError, SandboxError
from .pool import shm_prefix, user_parent
from .sent_frames import SentFrames
from .transfer import engine_tag, write_pickled

__all__ = ["FrameStore"]


def _signature(path: Path) -> tuple[int, ...] | None:
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_mode)


@dataclass
class _File:
    path: Path
    size: int
    signature: tuple[int, ...] | None

    def intact(self) -> bool:
        return self.signature is not None and _signature(self.path) == self.signature

    def resign(self) -> None:
        # After our own link/unlink (which change st_ctime), the file is known good.
        self.signature = _signature(self.path)


class FrameStore:
    """Per-sandbox folders of frame files, one file per frame version, shared by children."""

    def __init__(self, owner: Any) -> None:
        #: writes the folder's owner record, so stale folders can be swept (see pool)
        self._owner = owner
        self._lock = threading.Lock()
        self._roots: list[Path] = []
        self._tracker = SentFrames()
        self._files: dict[str, _File] = {}
        self._links: dict[Path, list[tuple[str, Path, _File]]] = {}
        self.bytes_written = 0

    # --- folders -------------------------------------------------------------------------

    def _ensure_roots(self) -> list[Path]:
        if not self._roots:
            shm = Path("/dev/shm")
            disk = Path(tempfile.mkdtemp(prefix="dataagent-sandbox-frames-", dir=user_parent()))
            roots = [disk]
            if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
                roots.insert(0, Path(tempfile.mkdtemp(prefix=shm_prefix() + "frames-", dir=shm)))
            self._owner(disk, roots[0] if len(roots) > 1 else None)
            for root in roots:
                (root / "v").mkdir(mode=0o700)
            self._roots = roots
        return self._roots

    def child_folders(self) -> tuple[Path, ...]:
        """New, empty frame folders for one child (one per store folder, fastest first)."""
        with self._lock:
            token = uuid.uuid4().hex
            folders = []
            for root in self._ensure_roots():
                folder = root / f"c-{token}"
                folder.mkdir(mode=0o700)
                folders.append(folder)
            return tuple(folders)

    # --- versions ------------------------------------------------------------------------

    def link(self, name: str, obj: Any, folders: tuple[Path, ...]) -> tuple[str, int]:
        """A path in ``folders`` where the child can read ``obj``, and the bytes written for it.

        Unchanged frames (same version, file intact) cost a hard link; others are written
        once, for this and every later child.
        """
        with self._lock:
            written = 0
            self._drop_expired()
            current = self._files.get(name)
            if current is None or not (self._tracker.is_current(name, obj) and current.intact()):
                self._drop(name)
                current = self._write(name, obj)
                written = current.size
            root = current.path.parent.parent
            folder = next((f for f in folders if f.parent == root), None)
            if folder is None:
                raise SandboxError("The analysis kernel has no frame folder beside the frames.")
            target = folder / f"{name}-{uuid.uuid4().hex[:8]}.pkl"
            os.link(current.path, target)
            current.resign()
            self._links.setdefault(folder, []).append((name, target, current))
            return str(target), written

    def release(self, folders: tuple[Path, ...]) -> None:
        """Remove a (dead) child's folders; drop any version it managed to change."""
        with self._lock:
            for folder in folders:
                for name, target, file in self._links.pop(folder, []):
                    changed = not file.intact()
                    try:
                        os.unlink(target)
                    except OSError:
                        pass
                    if changed:
                        if self._files.get(name) is file:
                            self._drop(name)
                    else:
                        file.resign()
                shutil.rmtree(folder, ignore_errors=True)

    def names(self) -> list[str]:
        """Frames that have a current file (as far as the fingerprints know)."""
        return self._tracker.names()

    def close(self) -> None:
        """Delete every file and folder (the children are gone)."""
        with self._lock:
            self._tracker.forget()
            self._files.clear()
            self._links.clear()
            for root in self._roots:
                shutil.rmtree(root, ignore_errors=True)
            self._roots = []

    def _drop(self, name: str) -> None:
        file = self._files.pop(name, None)
        self._tracker.forget(name)
        if file is not None:
            try:
                os.unlink(file.path)
            except OSError:
                pass

    def _drop_expired(self) -> None:
        for name in self._tracker.pop_expired():
            self._drop(name)

    def _write(self, name: str, obj: Any) -> _File:
        table = engine_tag(obj) is not None  # a polars/DuckDB frame, as tagged Arrow
        if table:
            estimate = int(obj.nbytes)
        else:
            usage = obj.memory_usage(index=True, deep=False)  # an int for a Series
            estimate = int(usage.sum() if hasattr(usage, "sum") else usage)
        last_error: OSError | None = None
        for root in self._ensure_roots():
            folder = root / "v"
            try:
                info = os.statvfs(folder)
                if info.f_bavail * info.f_frsize < estimate * 1.1:
                    continue
            except OSError:
                continue
            path = folder / f"{name}-{uuid.uuid4().hex}.pkl"
            try:
                size = write_pickled(obj, str(path))
            except OSError as exc:  # full after all: try the next folder
                last_error = exc
                _unlink_quietly(path)
                continue
            except (TypeError, ValueError, AttributeError, RecursionError) as exc:
                # pickle refuses some cell values (open files, locks, lambdas, generators)
                _unlink_quietly(path)
                raise FrameError(
                    f"{name!r} holds a value that cannot be copied to the analysis kernel "
                    f"({type(exc).__name__}: {str(exc)[:200]}).",
                    hint="Drop or convert that column (e.g. df[col].astype(str)), or ask in "
                    "insert mode, which runs nothing in the sandbox.",
                ) from None
            os.chmod(path, 0o400)
            if table:  # made afresh for every question: never current, nothing to track
                self._tracker.forget(name)
            else:
                self._tracker.remember(name, obj)
            file = _File(path=path, size=size, signature=_signature(path))
            self._files[name] = file
            self.bytes_written += size
            return file
        raise SandboxError(
            f"There is no room to copy {name!r} to the analysis kernel"
            + (f" ({last_error.strerror})" if last_error else "")
            + ".",
            hint="Free some disk or /dev/shm space, or ask about a smaller frame.",
        )


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
